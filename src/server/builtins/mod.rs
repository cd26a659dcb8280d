//! The built-in `SyncManager` types, one file each, with CPython's typeids, exposed
//! methods, arguments and semantics, registered together by [`register_builtins`]:
//! the blocking types (Queue, JoinableQueue, Event, Lock, RLock, Semaphore,
//! BoundedSemaphore, Condition, Barrier) on deferred replies and the wait queues of
//! `waiters`, and the data types (`dict`, `list`, `Namespace`, `Value`, `Array`,
//! `Iterator`) with the Python semantics helpers they share (`pykey`, `pymap`,
//! `pyseq`), and the byte-size estimates that bound what a call may build
//! (`size`).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Server;

mod array;
mod barrier;
mod condition;
mod dict;
mod event;
mod iterator;
mod list;
mod lock;
mod namespace;
mod pykey;
mod pymap;
mod pyseq;
mod queue;
mod semaphore;
pub(crate) mod size;
mod value;
mod waiters;

/// What a sync object's repr shows where CPython prints the object's address
/// (`<threading.Event at 0x… : unset>`): distinct for every object, and made
/// up — never a real pointer, so a repr tells a client nothing about the host's
/// memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addr(usize);

impl Default for Addr {
    /// The next address.
    fn default() -> Addr {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Addr(0x7f00_0000_1000 + 0x40 * NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// `s` with every `0x` and the hex digits after it written `0x…`, so tests
/// can compare reprs whatever the addresses.
#[cfg(test)]
pub(crate) fn mask_addrs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        out.push_str("0x…");
        rest = rest[i + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
}

/// Registers every built-in SyncManager type on `server`.
pub fn register_builtins(server: &mut Server) {
    queue::register(server);
    event::register(server);
    lock::register(server);
    semaphore::register(server);
    condition::register(server);
    barrier::register(server);
    array::register(server);
    dict::register(server);
    iterator::register(server);
    list::register(server);
    namespace::register(server);
    value::register(server);
}
