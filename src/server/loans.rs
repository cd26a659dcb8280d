//! References lent to replies in flight.
//!
//! A reply whose value names shared objects (a `Queue.get` that returns a proxy, a
//! `list[0]` that is a dict) hands the receiver a token, not a reference: the
//! receiver takes its own reference when it rebuilds the proxy (CPython's client
//! increfs over a new connection; the Rust client with `Manager::proxy`). Until
//! then the object must not die, even if the last holder let go of it in the very
//! call that returned it. So every object named in a reply gets one reference,
//! lent for a grace period and given back by a timer. CPython avoids the same race
//! by never freeing objects its server-side proxies saw; this frees them, later.
//!
//! This module keeps the queue of loans; `Core` takes and repays the references.

use std::collections::VecDeque;

use super::fasthash::FastMap;
use std::time::{Duration, Instant};

use super::context::TimerId;
use crate::proto::ObjectId;

/// How long a reply's references are held by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Outstanding loans, oldest first (deadlines only grow, so a queue suffices).
#[derive(Debug)]
pub(crate) struct Loans {
    queue: VecDeque<(Instant, ObjectId)>,
    /// Outstanding loans per object.
    per_object: FastMap<ObjectId, u32>,
    /// The timer armed for the oldest loan, if any.
    pub(crate) timer: Option<TimerId>,
    /// How long each loan lasts.
    pub(crate) grace: Duration,
}

impl Default for Loans {
    fn default() -> Loans {
        Loans {
            queue: VecDeque::new(),
            per_object: FastMap::default(),
            timer: None,
            grace: DEFAULT_GRACE,
        }
    }
}

impl Loans {
    /// Records a loan of one reference to `id`, due back `grace` after `now`.
    pub(crate) fn push(&mut self, now: Instant, id: ObjectId) {
        self.queue.push_back((now + self.grace, id));
        *self.per_object.entry(id).or_insert(0) += 1;
    }

    /// The objects on loan, with how many references each is lent.
    pub(crate) fn lent(&self) -> impl Iterator<Item = (ObjectId, u32)> + '_ {
        self.per_object.iter().map(|(&id, &n)| (id, n))
    }

    fn returned(&mut self, id: ObjectId) {
        if let Some(n) = self.per_object.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.per_object.remove(&id);
            }
        }
    }

    /// The next loan due back (its deadline, and the object), without removing it.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|&(due, _)| due)
    }

    /// Removes and returns one loan due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<ObjectId> {
        match self.queue.front() {
            Some(&(due, id)) if due <= now => {
                self.queue.pop_front();
                self.returned(id);
                Some(id)
            }
            _ => None,
        }
    }

    /// Removes every loan (at shutdown), returning the objects.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = ObjectId> + '_ {
        self.timer = None;
        self.per_object.clear();
        self.queue.drain(..).map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loans_come_due_in_order() {
        let mut l = Loans {
            grace: Duration::from_secs(1),
            ..Loans::default()
        };
        let t0 = Instant::now();
        l.push(t0, ObjectId(1));
        l.push(t0 + Duration::from_millis(500), ObjectId(2));
        assert_eq!(l.next_due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(l.lent().count(), 2);
        assert_eq!(l.pop_due(t0), None);
        assert_eq!(l.pop_due(t0 + Duration::from_secs(1)), Some(ObjectId(1)));
        assert_eq!(l.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.drain().collect::<Vec<_>>(), vec![ObjectId(2)]);
        assert_eq!(l.next_due(), None);
    }
}
