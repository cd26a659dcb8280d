//! The server's counters and the snapshot [`Server::stats`](super::Server::stats)
//! returns (also served to clients by the public method `stats`, libmgr's own:
//! CPython's server has none, so stock CPython clients never call it; `mgrctl
//! stats` does).
//!
//! Counting costs an add where the event happens; bytes are counted by the
//! connections into cells shared with the core, so no pass over the
//! connections is needed to read them. Only the by-typeid object counts are
//! computed when asked (one pass over the object table), keeping the create
//! and destroy paths free of any bookkeeping.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::proto::Value;

/// A snapshot of a server's counters, from [`Server::stats`](super::Server::stats).
///
/// Counts since the server started unless said otherwise; gauges (open
/// connections, objects …) are as of the snapshot. More fields may come:
/// read the ones you know by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections open now, authenticated or not.
    pub connections_open: u64,
    /// Connections open now that are still authenticating.
    pub connections_preauth: u64,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections closed at once because `max_connections` were
    /// authenticated already (at accept, or when their handshake completed).
    pub connections_refused: u64,
    /// Connections still authenticating closed to make room for a newer one
    /// (`max_preauth_connections`), or because their handshake timed out.
    pub preauth_dropped: u64,
    /// Handshakes that failed (a wrong key, or a malformed answer).
    pub auth_failures: u64,
    /// Frames served: requests, and handshake messages.
    pub requests_served: u64,
    /// Requests answered with an error (`#ERROR` or `#TRACEBACK`), deferred
    /// answers included.
    pub errors: u64,
    /// Frames the server could not get past or refused to decode (a frame over
    /// the limit, a malformed or forbidden request).
    pub protocol_errors: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Deferred calls waiting for their answer now.
    pub deferred_pending: u64,
    /// Live shared objects now (every object in the table, including those a
    /// reply's grace keeps alive).
    pub objects: u64,
    /// Live shared objects by typeid, sorted by typeid.
    pub objects_by_type: Vec<(String, u64)>,
    /// Bytes the shared objects hold (the `max_held_bytes` estimate).
    pub held_bytes: u64,
    /// References lent to replies in flight now (see
    /// [`ServerConfig::reply_ref_grace`](super::ServerConfig::reply_ref_grace)).
    pub loans: u64,
    /// Timers set now (objects' own, handshake deadlines, …).
    pub timers: u64,
    /// Turns run ([`Server::process`](super::Server::process) calls that found
    /// the server open).
    pub turns: u64,
    /// The longest turn so far, measured from after the wait for events to the
    /// end of the turn's work.
    pub longest_turn: Duration,
    /// Cycle collections finished (see
    /// [`ServerConfig::gc_work_per_turn`](super::ServerConfig::gc_work_per_turn)).
    pub gc_collections: u64,
    /// Objects the cycle collector freed (garbage only other garbage held).
    pub gc_freed: u64,
    /// The most work units one cycle-collector step did.
    pub gc_longest_step: u64,
}

impl ServerStats {
    /// The scalar fields by name, in a fixed order (what `mgrctl stats` prints;
    /// the longest turn is in microseconds).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("connections_open", self.connections_open),
            ("connections_preauth", self.connections_preauth),
            ("connections_accepted", self.connections_accepted),
            ("connections_refused", self.connections_refused),
            ("preauth_dropped", self.preauth_dropped),
            ("auth_failures", self.auth_failures),
            ("requests_served", self.requests_served),
            ("errors", self.errors),
            ("protocol_errors", self.protocol_errors),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("deferred_pending", self.deferred_pending),
            ("objects", self.objects),
            ("held_bytes", self.held_bytes),
            ("loans", self.loans),
            ("timers", self.timers),
            ("turns", self.turns),
            (
                "longest_turn_us",
                self.longest_turn.as_micros().min(u64::MAX as u128) as u64,
            ),
            ("gc_collections", self.gc_collections),
            ("gc_freed", self.gc_freed),
            ("gc_longest_step", self.gc_longest_step),
        ]
    }

    /// The snapshot as a dict of `name: int`, plus `objects_by_type`: a dict
    /// of `typeid: int` (what the public method `stats` returns).
    pub fn to_value(&self) -> Value {
        let mut entries: Vec<(Value, Value)> = self
            .counters()
            .into_iter()
            .map(|(k, v)| (Value::from(k), Value::Int(v.min(i64::MAX as u64) as i64)))
            .collect();
        let by_type = self
            .objects_by_type
            .iter()
            .map(|(t, n)| (Value::from(t.as_str()), Value::Int(*n as i64)))
            .collect();
        entries.push((Value::from("objects_by_type"), Value::Dict(by_type)));
        Value::Dict(entries)
    }

    /// Reads a snapshot back from [`to_value`](Self::to_value)'s form (what a
    /// client receives). Names it does not know are skipped, names missing
    /// read as 0, so either side may be newer.
    ///
    /// # Errors
    ///
    /// A message when `v` is not a dict.
    pub fn from_value(v: &Value) -> Result<ServerStats, String> {
        let Value::Dict(entries) = v else {
            return Err(format!("stats: expected a dict, got {v}"));
        };
        let mut s = ServerStats::default();
        for (k, v) in entries {
            let Value::Str(k) = k else { continue };
            if k == "objects_by_type" {
                if let Value::Dict(types) = v {
                    for (t, n) in types {
                        if let (Value::Str(t), Value::Int(n)) = (t, n) {
                            s.objects_by_type.push((t.clone(), (*n).max(0) as u64));
                        }
                    }
                }
                continue;
            }
            let Value::Int(n) = v else { continue };
            let n = (*n).max(0) as u64;
            match k.as_str() {
                "connections_open" => s.connections_open = n,
                "connections_preauth" => s.connections_preauth = n,
                "connections_accepted" => s.connections_accepted = n,
                "connections_refused" => s.connections_refused = n,
                "preauth_dropped" => s.preauth_dropped = n,
                "auth_failures" => s.auth_failures = n,
                "requests_served" => s.requests_served = n,
                "errors" => s.errors = n,
                "protocol_errors" => s.protocol_errors = n,
                "bytes_in" => s.bytes_in = n,
                "bytes_out" => s.bytes_out = n,
                "deferred_pending" => s.deferred_pending = n,
                "objects" => s.objects = n,
                "held_bytes" => s.held_bytes = n,
                "loans" => s.loans = n,
                "timers" => s.timers = n,
                "turns" => s.turns = n,
                "longest_turn_us" => s.longest_turn = Duration::from_micros(n),
                "gc_collections" => s.gc_collections = n,
                "gc_freed" => s.gc_freed = n,
                "gc_longest_step" => s.gc_longest_step = n,
                _ => {}
            }
        }
        Ok(s)
    }
}

/// Bytes moved, counted by every connection into cells the core shares.
#[derive(Debug, Default)]
pub(crate) struct Io {
    pub(crate) bytes_in: Cell<u64>,
    pub(crate) bytes_out: Cell<u64>,
}

impl Io {
    pub(crate) fn add_in(&self, n: usize) {
        self.bytes_in
            .set(self.bytes_in.get().wrapping_add(n as u64));
    }
    pub(crate) fn add_out(&self, n: usize) {
        self.bytes_out
            .set(self.bytes_out.get().wrapping_add(n as u64));
    }
}

/// The counters the reactor and dispatcher bump, kept in the core so the
/// public method `stats` can read them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) open: u64,
    pub(crate) preauth: u64,
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
    pub(crate) preauth_dropped: u64,
    pub(crate) auth_failures: u64,
    pub(crate) served: u64,
    pub(crate) errors: u64,
    pub(crate) protocol_errors: u64,
    pub(crate) turns: u64,
    pub(crate) longest_turn: Duration,
    pub(crate) io: std::rc::Rc<Io>,
}

/// Live objects by typeid, sorted.
pub(crate) fn count_by_type<'a>(typeids: impl Iterator<Item = &'a str>) -> Vec<(String, u64)> {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for t in typeids {
        *by.entry(t).or_insert(0) += 1;
    }
    by.into_iter().map(|(t, n)| (t.to_owned(), n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_through_a_value() {
        let s = ServerStats {
            connections_open: 2,
            bytes_in: 300,
            objects: 3,
            objects_by_type: vec![("Queue".into(), 1), ("dict".into(), 2)],
            longest_turn: Duration::from_micros(1500),
            ..ServerStats::default()
        };
        assert_eq!(ServerStats::from_value(&s.to_value()), Ok(s));
        assert!(ServerStats::from_value(&Value::None).is_err());
        // Unknown names are skipped; missing ones read as zero.
        let v = Value::Dict(vec![
            (Value::from("future_counter"), Value::Int(9)),
            (Value::from("errors"), Value::Int(4)),
        ]);
        let s = ServerStats::from_value(&v).unwrap();
        assert_eq!((s.errors, s.objects), (4, 0));
        assert_eq!(
            count_by_type(["dict", "Queue", "dict"].into_iter()),
            vec![("Queue".to_owned(), 1), ("dict".to_owned(), 2)]
        );
    }
}
