//! The hash maps on the per-call path.
//!
//! `std`'s default SipHash-1-3 costs more than the rest of a small call's dispatch
//! (the profile in BENCHMARKS.md: 16 % of the server's instructions). foldhash is
//! several times cheaper and still seeded at random per map, so a client cannot
//! choose dict keys that collide on purpose without first learning the seed.

use std::collections::HashMap;

/// A `HashMap` with foldhash's per-map random seed.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
