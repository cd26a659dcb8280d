//! `Lock` and `RLock` (CPython's `_thread.lock` and `_thread.RLock` behind an
//! `AcquirerProxy`), and [`LockCore`], the fair lock [`Condition`](super::condition)
//! is built on.
//!
//! Ownership follows Python's: an `RLock` belongs to the connection (CPython: the
//! thread) that acquired it — only it re-enters and releases it, and when that
//! connection closes the RLock is released and passed to the next waiter (CPython
//! would leave it held forever by a thread that no longer exists). A plain `Lock`
//! has no owner: any client may release it, and it stays held when the connection,
//! thread or process that acquired it ends, exactly as on CPython's server ("the
//! first worker to `acquire(False)` does the setup" and hand-off patterns rely on
//! it; a stock client's threads each have a connection of their own). Waiters get
//! the lock in the order they asked.
//!
//! With [`ServerConfig::release_locks_of_dead`](crate::server::ServerConfig::release_locks_of_dead)
//! a plain `Lock` remembers the process that acquired it (when the server knows
//! its pid: Unix-socket peers) and is released when that process exits —
//! unless someone released it meanwhile.

use super::waiters::{lock_timeout, Wait, WaitQueue};
use crate::proto::{RemoteError, Value};
use crate::server::context::{CallId, ConnId, Context, ReplyHandle, TimerId};
use crate::server::registry::{CallArgs, CallResult, Outcome, SharedObject, TypeSpec};
use crate::server::Server;

/// A queued acquirer: the connection that will own the lock, the recursion count it
/// will hold, and what its call returns once it has the lock.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) conn: Option<ConnId>,
    pub(crate) count: u64,
    pub(crate) result: Value,
    /// The acquiring process, for a plain lock released when it exits.
    pub(crate) pid: Option<u32>,
}

/// A fair lock owned by connections; re-entrant or not.
///
/// Invariant: while a waiter is queued the lock is held (releasing hands it to
/// the first waiter at once).
#[derive(Debug)]
pub(crate) struct LockCore {
    reentrant: bool,
    owner: Option<ConnId>,
    count: u64,
    waiters: WaitQueue<Grant>,
    addr: super::Addr,
    /// The process holding a plain lock, when it is released at its exit.
    holder_pid: Option<u32>,
}

impl LockCore {
    /// An unlocked lock.
    pub(crate) fn new(reentrant: bool) -> LockCore {
        LockCore {
            reentrant,
            owner: None,
            count: 0,
            waiters: WaitQueue::default(),
            addr: super::Addr::default(),
            holder_pid: None,
        }
    }

    /// Whether someone holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        self.count > 0
    }

    /// Whether connection `conn` holds the lock.
    pub(crate) fn owned_by(&self, conn: Option<ConnId>) -> bool {
        conn.is_some() && self.count > 0 && self.owner == conn
    }

    /// `acquire(blocking=True, timeout=-1)` for the calling connection.
    pub(crate) fn acquire(&mut self, cx: &mut Context<'_>, mut args: CallArgs) -> CallResult {
        args.check("acquire", 2, &["blocking", "timeout"])?;
        let blocking = args.take(0, "blocking");
        let timeout = args.take(1, "timeout");
        let wait = lock_timeout(blocking, timeout)?;
        let conn = cx.conn();
        if self.reentrant && self.owned_by(conn) {
            self.count = self.count.checked_add(1).ok_or_else(|| {
                RemoteError::new("OverflowError", "Internal lock count overflowed")
            })?;
            return Ok(Value::Bool(true).into());
        }
        if self.reentrant {
            cx.watch_disconnect();
        }
        let pid = if !self.reentrant && cx.releases_locks_of_dead() {
            cx.watch_process_exit()
        } else {
            None
        };
        if !self.is_locked() {
            self.owner = conn;
            self.count = 1;
            self.holder_pid = pid;
            return Ok(Value::Bool(true).into());
        }
        if wait == Wait::Never {
            return Ok(Value::Bool(false).into());
        }
        let grant = Grant {
            conn,
            count: 1,
            result: Value::Bool(true),
            pid,
        };
        self.waiters.defer(cx, wait, grant);
        Ok(Outcome::Deferred)
    }

    /// `release()` by the calling connection.
    pub(crate) fn release(&mut self, cx: &mut Context<'_>) -> Result<(), RemoteError> {
        if self.reentrant {
            if !self.owned_by(cx.conn()) {
                return Err(RemoteError::new(
                    "RuntimeError",
                    "cannot release un-acquired lock",
                ));
            }
            self.count -= 1;
        } else {
            if !self.is_locked() {
                return Err(RemoteError::new("RuntimeError", "release unlocked lock"));
            }
            self.count = 0;
        }
        if self.count == 0 {
            self.owner = None;
            self.holder_pid = None;
            self.hand_off(cx);
        }
        Ok(())
    }

    /// Releases the lock completely (the caller checked it owns it) and returns the
    /// recursion count it held, for [`Condition`](super::condition) to restore.
    pub(crate) fn release_save(&mut self, cx: &mut Context<'_>) -> u64 {
        let count = std::mem::take(&mut self.count);
        self.owner = None;
        self.hand_off(cx);
        count
    }

    /// Takes the lock for `conn` with recursion count `count` if it is free.
    pub(crate) fn try_take(&mut self, conn: Option<ConnId>, count: u64) -> bool {
        if self.is_locked() {
            return false;
        }
        self.owner = conn;
        self.count = count;
        true
    }

    /// Gives the lock to `grant` now if it is free, or queues the already deferred
    /// call `handle` for it (without a timer: re-acquiring never times out).
    pub(crate) fn enqueue(&mut self, cx: &mut Context<'_>, handle: ReplyHandle, grant: Grant) {
        self.waiters.push(handle, None, grant);
        self.hand_off(cx);
    }

    /// While the lock is free, gives it to the first waiter and answers its call.
    fn hand_off(&mut self, cx: &mut Context<'_>) {
        while !self.is_locked() {
            let Some(w) = self.waiters.pop_front(cx) else {
                return;
            };
            if cx.reply(w.handle, Ok(w.data.result)) {
                self.owner = w.data.conn;
                self.count = w.data.count;
                self.holder_pid = w.data.pid;
            }
        }
    }

    /// A waiter's timeout: it gives up, its call returns `False`. True if the timer
    /// was one of this lock's.
    pub(crate) fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) -> bool {
        match self.waiters.take_timer(timer) {
            Some(w) => {
                cx.reply(w.handle, Ok(Value::Bool(false)));
                true
            }
            None => false,
        }
    }

    /// A waiter's client went away: forget it. True if it was one of this lock's.
    pub(crate) fn on_cancel(&mut self, cx: &mut Context<'_>, handle: CallId) -> bool {
        self.waiters.take_handle(cx, handle).is_some()
    }

    /// The connection `conn` closed: if it held a re-entrant lock, the next waiter
    /// gets it (only that connection could ever have released it). A plain lock
    /// has no owner and stays held: another client may still release it, as on
    /// CPython's server.
    pub(crate) fn on_disconnect(&mut self, cx: &mut Context<'_>, conn: ConnId) {
        if self.reentrant && self.owned_by(Some(conn)) {
            self.release_save(cx);
        }
    }

    /// Process `pid` exited: a plain lock it holds (acquired while
    /// `release_locks_of_dead` was on) is released and handed on.
    pub(crate) fn on_process_exit(&mut self, cx: &mut Context<'_>, pid: u32) {
        if !self.reentrant && self.is_locked() && self.holder_pid == Some(pid) {
            self.count = 0;
            self.owner = None;
            self.holder_pid = None;
            self.hand_off(cx);
        }
    }

    /// The repr of `_thread.lock` or `_thread.RLock`.
    pub(crate) fn repr(&self) -> String {
        let state = if self.is_locked() {
            "locked"
        } else {
            "unlocked"
        };
        if self.reentrant {
            let owner = self.owner.map_or(0, ConnId::to_raw);
            format!(
                "<{state} _thread.RLock object owner={owner} count={} at {}>",
                self.count, self.addr
            )
        } else {
            format!("<{state} _thread.lock object at {}>", self.addr)
        }
    }
}

/// A shared `Lock` or `RLock`: `acquire(blocking=True, timeout=-1)`, `release()`.
#[derive(Debug)]
pub(crate) struct LockObject(LockCore);

impl SharedObject for LockObject {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        match method {
            "acquire" => self.0.acquire(cx, args),
            "release" => {
                args.check("release", 0, &[])?;
                self.0.release(cx)?;
                Ok(Value::None.into())
            }
            other => Err(RemoteError::new(
                "AttributeError",
                format!("'lock' object has no attribute '{other}'"),
            )),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        self.0.on_timer(cx, timer);
    }

    fn on_cancel(&mut self, cx: &mut Context<'_>, reply: CallId) {
        self.0.on_cancel(cx, reply);
    }

    fn on_disconnect(&mut self, cx: &mut Context<'_>, conn: ConnId) {
        self.0.on_disconnect(cx, conn);
    }

    fn on_process_exit(&mut self, cx: &mut Context<'_>, pid: u32) {
        self.0.on_process_exit(cx, pid);
    }

    fn repr(&self) -> Option<String> {
        Some(self.0.repr())
    }

    fn get_value(&self) -> Result<Value, RemoteError> {
        let name = if self.0.reentrant {
            "_thread.RLock"
        } else {
            "_thread.lock"
        };
        Err(RemoteError::type_error(format!(
            "cannot pickle '{name}' object"
        )))
    }
}

/// Registers `Lock` and `RLock` with `AcquirerProxy`'s exposed methods.
pub(crate) fn register(server: &mut Server) {
    for (typeid, reentrant) in [("Lock", false), ("RLock", true)] {
        server.register(TypeSpec::new(
            typeid,
            &["acquire", "release"],
            move |_, args| {
                args.check(typeid, 0, &[])?;
                Ok(Box::new(LockObject(LockCore::new(reentrant))))
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::waiters::harness::{conn, Harness, Now};
    use super::*;

    fn t() -> Value {
        Value::Bool(true)
    }

    fn deferred(n: Now) -> CallId {
        match n {
            Now::Deferred(h) => h,
            other => panic!("expected a deferred call, got {other:?}"),
        }
    }

    #[test]
    fn waiters_get_the_lock_in_order() {
        let mut h = Harness::new(Box::new(LockObject(LockCore::new(false))));
        assert_eq!(h.call(0, "acquire", vec![]), Now::Value(t()));
        for n in 1..=3 {
            deferred(h.call(n, "acquire", vec![]));
        }
        for n in 1..=3 {
            // Plain locks may be released by anyone; the owner releases here.
            assert_eq!(h.call(n - 1, "release", vec![]), Now::Value(Value::None));
            assert_eq!(h.replies(), vec![(conn(n), Ok(t()))]);
        }
        assert!(h.repr().starts_with("<locked _thread.lock"));
        assert_eq!(h.call(0, "release", vec![]), Now::Value(Value::None));
        assert_eq!(
            h.call(0, "release", vec![]),
            Now::Error("RuntimeError".into())
        );
    }

    #[test]
    fn timed_out_and_cancelled_waiters_are_skipped() {
        let mut h = Harness::new(Box::new(LockObject(LockCore::new(false))));
        h.call(0, "acquire", vec![]);
        deferred(h.call(1, "acquire", vec![t(), Value::Float(0.5)]));
        let gone = deferred(h.call(2, "acquire", vec![]));
        deferred(h.call(3, "acquire", vec![]));
        assert_eq!(
            h.call(4, "acquire", vec![Value::Bool(false)]),
            Now::Value(Value::Bool(false))
        );
        h.advance(Duration::from_secs(1));
        assert_eq!(h.replies(), vec![(conn(1), Ok(Value::Bool(false)))]);
        h.cancel(gone);
        h.call(0, "release", vec![]);
        assert_eq!(h.replies(), vec![(conn(3), Ok(t()))]);
    }

    #[test]
    fn rlock_is_reentrant_and_owned() {
        let mut h = Harness::new(Box::new(LockObject(LockCore::new(true))));
        assert_eq!(h.call(0, "acquire", vec![]), Now::Value(t()));
        assert_eq!(h.call(0, "acquire", vec![]), Now::Value(t()));
        assert_eq!(
            h.call(1, "release", vec![]),
            Now::Error("RuntimeError".into())
        );
        deferred(h.call(1, "acquire", vec![]));
        h.call(0, "release", vec![]);
        assert!(h.replies().is_empty(), "still held once");
        h.call(0, "release", vec![]);
        assert_eq!(h.replies(), vec![(conn(1), Ok(t()))]);
        assert!(h.repr().contains("count=1"), "{}", h.repr());
    }

    #[test]
    fn an_rlock_owner_that_disconnects_hands_it_on() {
        let mut h = Harness::new(Box::new(LockObject(LockCore::new(true))));
        h.call(0, "acquire", vec![]);
        h.call(0, "acquire", vec![t(), Value::Int(0)]);
        deferred(h.call(1, "acquire", vec![]));
        h.disconnect(0);
        assert_eq!(h.replies(), vec![(conn(1), Ok(t()))]);
        h.disconnect(2);
        assert_eq!(
            h.call(2, "acquire", vec![Value::Bool(false)]),
            Now::Value(Value::Bool(false))
        );
    }

    #[test]
    fn a_plain_lock_stays_held_when_its_acquirer_disconnects() {
        let mut h = Harness::new(Box::new(LockObject(LockCore::new(false))));
        h.call(0, "acquire", vec![]);
        deferred(h.call(1, "acquire", vec![]));
        h.disconnect(0);
        assert!(h.replies().is_empty(), "still held: nobody released it");
        assert_eq!(
            h.call(2, "acquire", vec![Value::Bool(false)]),
            Now::Value(Value::Bool(false))
        );
        // Anyone may release it (a hand-off); the waiter gets it.
        assert_eq!(h.call(2, "release", vec![]), Now::Value(Value::None));
        assert_eq!(h.replies(), vec![(conn(1), Ok(t()))]);
    }

    #[test]
    fn arguments_checked_like_cpython() {
        let mut h = Harness::new(Box::new(LockObject(LockCore::new(false))));
        assert_eq!(
            h.call(0, "acquire", vec![Value::Bool(false), Value::Int(1)]),
            Now::Error("ValueError".into())
        );
        assert_eq!(
            h.call_kw(0, "acquire", vec![], vec![("timeout", Value::Int(-5))]),
            Now::Error("ValueError".into())
        );
        assert_eq!(
            h.call(0, "acquire", vec![t(), t(), t()]),
            Now::Error("TypeError".into())
        );
        assert_eq!(
            h.call_kw(0, "acquire", vec![], vec![("blocking", Value::Int(0))]),
            Now::Value(t())
        );
    }

    #[test]
    fn ten_thousand_waiters_with_timers_and_departures() {
        let mut h = Harness::new(Box::new(LockObject(LockCore::new(false))));
        h.call(0, "acquire", vec![]);
        let handles: Vec<CallId> = (1..=10_000)
            .map(|n| deferred(h.call(n, "acquire", vec![t(), Value::Int(60)])))
            .collect();
        for (i, handle) in handles.iter().enumerate() {
            if i % 2 == 0 {
                h.cancel(*handle);
            }
        }
        for n in (2..=10_000).step_by(2) {
            h.call(0, "release", vec![]);
            assert_eq!(h.replies(), vec![(conn(n), Ok(t()))]);
        }
        h.advance(Duration::from_secs(120));
        assert!(h.replies().is_empty(), "every timer was cancelled");
    }
}
