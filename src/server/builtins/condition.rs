//! `Condition` (CPython's `threading.Condition` behind a `ConditionProxy`):
//! `acquire`, `release`, `wait(timeout=None)`, `notify(n=1)`, `notify_all()`.
//!
//! The condition's lock is its own re-entrant lock, owned per connection (the
//! default `Condition()` of CPython, whose lock is an `RLock`). A waiter gives the
//! lock up completely, and once notified (or timed out) queues to take it back with
//! its recursion count; its `wait` is answered only when it holds the lock again.
//! `Condition(lock)` with a shared lock is refused: the lock would live in another
//! object, which this one cannot hold while it waits.

use super::lock::{Grant, LockCore};
use super::waiters::{cond_timeout, seconds, Wait, WaitQueue};
use crate::proto::{RemoteError, Value};
use crate::server::context::{CallId, ConnId, Context, ReplyHandle, TimerId};
use crate::server::registry::{CallArgs, CallResult, Outcome, SharedObject, TypeSpec};
use crate::server::Server;

/// A connection waiting to be notified, with the recursion count it gave up.
#[derive(Debug)]
struct Sleeper {
    conn: Option<ConnId>,
    count: u64,
}

/// A shared condition variable.
#[derive(Debug)]
pub(crate) struct Condition {
    lock: LockCore,
    sleepers: WaitQueue<Sleeper>,
}

impl Condition {
    fn new() -> Condition {
        Condition {
            lock: LockCore::new(true),
            sleepers: WaitQueue::default(),
        }
    }

    fn wait(&mut self, cx: &mut Context<'_>, mut args: CallArgs) -> CallResult {
        args.check("wait", 1, &["timeout"])?;
        let conn = cx.conn();
        if !self.lock.owned_by(conn) {
            return Err(RemoteError::new(
                "RuntimeError",
                "cannot wait on un-acquired lock",
            ));
        }
        let wait = cond_timeout(args.take(0, "timeout"))?;
        let count = self.lock.release_save(cx);
        if wait != Wait::Never {
            self.sleepers.defer(cx, wait, Sleeper { conn, count });
            return Ok(Outcome::Deferred);
        }
        // Not notified; the lock was given up and is taken back, as CPython does.
        if self.lock.try_take(conn, count) {
            return Ok(Value::Bool(false).into());
        }
        let handle = cx.defer();
        let grant = Grant {
            conn,
            count,
            result: Value::Bool(false),
            pid: None,
        };
        self.lock.enqueue(cx, handle, grant);
        Ok(Outcome::Deferred)
    }

    /// Wakes up to `n` sleepers: each queues to re-take the lock, then returns True.
    fn notify(&mut self, cx: &mut Context<'_>, mut n: f64) -> CallResult {
        if !self.lock.owned_by(cx.conn()) {
            return Err(RemoteError::new(
                "RuntimeError",
                "cannot notify on un-acquired lock",
            ));
        }
        while n > 0.0 {
            let Some(w) = self.sleepers.pop_front(cx) else {
                break;
            };
            self.wake(cx, w.handle, w.data, true);
            n -= 1.0;
        }
        Ok(Value::None.into())
    }

    fn wake(&mut self, cx: &mut Context<'_>, handle: ReplyHandle, s: Sleeper, notified: bool) {
        let grant = Grant {
            conn: s.conn,
            count: s.count,
            result: Value::Bool(notified),
            pid: None,
        };
        self.lock.enqueue(cx, handle, grant);
    }
}

impl SharedObject for Condition {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, mut args: CallArgs) -> CallResult {
        match method {
            "acquire" => self.lock.acquire(cx, args),
            "release" => {
                args.check("release", 0, &[])?;
                self.lock.release(cx)?;
                Ok(Value::None.into())
            }
            "wait" => self.wait(cx, args),
            "notify" => {
                args.check("notify", 1, &["n"])?;
                let n = match args.take(0, "n") {
                    Some(v) => seconds(&v).map_err(|_| {
                        RemoteError::type_error(format!(
                            "'>' not supported between instances of '{}' and 'int'",
                            v.type_name()
                        ))
                    })?,
                    None => 1.0,
                };
                self.notify(cx, n)
            }
            "notify_all" => {
                args.check("notify_all", 0, &[])?;
                self.notify(cx, f64::INFINITY)
            }
            other => Err(RemoteError::new(
                "AttributeError",
                format!("'Condition' object has no attribute '{other}'"),
            )),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if self.lock.on_timer(cx, timer) {
            return;
        }
        if let Some(w) = self.sleepers.take_timer(timer) {
            self.wake(cx, w.handle, w.data, false);
        }
    }

    fn on_cancel(&mut self, cx: &mut Context<'_>, reply: CallId) {
        if !self.lock.on_cancel(cx, reply) {
            self.sleepers.take_handle(cx, reply);
        }
    }

    fn on_disconnect(&mut self, cx: &mut Context<'_>, conn: ConnId) {
        self.lock.on_disconnect(cx, conn);
    }

    fn repr(&self) -> Option<String> {
        Some(format!(
            "<Condition({}, {})>",
            self.lock.repr(),
            self.sleepers.len()
        ))
    }

    fn get_value(&self) -> Result<Value, RemoteError> {
        Err(RemoteError::type_error(
            "cannot pickle '_thread.RLock' object",
        ))
    }
}

/// Registers `Condition` with `ConditionProxy`'s exposed methods.
pub(crate) fn register(server: &mut Server) {
    server.register(TypeSpec::new(
        "Condition",
        &["acquire", "release", "wait", "notify", "notify_all"],
        |_, mut args| {
            args.check("Condition", 1, &["lock"])?;
            match args.take(0, "lock") {
                None | Some(Value::None) => Ok(Box::new(Condition::new())),
                Some(other) => Err(RemoteError::type_error(format!(
                    "Condition(lock): libmgr's shared Condition always uses its own \
                     per-connection RLock and cannot wait on another shared object \
                     ({}); create it without a lock",
                    other.type_name()
                ))),
            }
        },
    ));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::waiters::harness::{conn, Harness, Now};
    use super::*;

    fn deferred(n: Now) -> CallId {
        match n {
            Now::Deferred(h) => h,
            other => panic!("expected a deferred call, got {other:?}"),
        }
    }

    #[test]
    fn notified_waiter_answers_only_after_retaking_the_lock() {
        let mut h = Harness::new(Box::new(Condition::new()));
        h.call(1, "acquire", vec![]);
        h.call(1, "acquire", vec![]);
        deferred(h.call(1, "wait", vec![]));
        assert!(h.repr().contains(", 1)>"), "{}", h.repr());
        h.call(0, "acquire", vec![]);
        assert_eq!(h.call(0, "notify", vec![]), Now::Value(Value::None));
        assert!(h.replies().is_empty(), "the notifier still holds the lock");
        h.call(0, "release", vec![]);
        assert_eq!(h.replies(), vec![(conn(1), Ok(Value::Bool(true)))]);
        // The waiter got its recursion count back: two releases.
        assert_eq!(h.call(1, "release", vec![]), Now::Value(Value::None));
        assert_eq!(h.call(1, "release", vec![]), Now::Value(Value::None));
        assert_eq!(
            h.call(1, "release", vec![]),
            Now::Error("RuntimeError".into())
        );
    }

    #[test]
    fn wait_and_notify_need_the_lock() {
        let mut h = Harness::new(Box::new(Condition::new()));
        assert_eq!(h.call(0, "wait", vec![]), Now::Error("RuntimeError".into()));
        assert_eq!(
            h.call(0, "notify", vec![]),
            Now::Error("RuntimeError".into())
        );
        h.call(0, "acquire", vec![]);
        assert_eq!(
            h.call(0, "wait", vec![Value::Int(0)]),
            Now::Value(Value::Bool(false))
        );
        assert_eq!(h.call(0, "notify_all", vec![]), Now::Value(Value::None));
    }

    #[test]
    fn timeout_and_notify_all_order() {
        let mut h = Harness::new(Box::new(Condition::new()));
        for n in 1..=3 {
            h.call(n, "acquire", vec![]);
            let timeout = if n == 2 {
                Value::Float(0.1)
            } else {
                Value::None
            };
            deferred(h.call(n, "wait", vec![timeout]));
        }
        h.advance(Duration::from_secs(1));
        assert_eq!(h.replies(), vec![(conn(2), Ok(Value::Bool(false)))]);
        // Conn 2 timed out and holds the lock again.
        deferred(h.call(0, "acquire", vec![]));
        h.call(2, "notify_all", vec![]);
        assert!(h.replies().is_empty(), "conn 2 holds the lock");
        h.call(2, "release", vec![]);
        assert_eq!(h.replies(), vec![(conn(0), Ok(Value::Bool(true)))]);
        h.call(0, "release", vec![]);
        assert_eq!(h.replies(), vec![(conn(1), Ok(Value::Bool(true)))]);
        h.call(1, "release", vec![]);
        assert_eq!(h.replies(), vec![(conn(3), Ok(Value::Bool(true)))]);
    }

    #[test]
    fn a_lock_argument_is_refused() {
        let config = crate::server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), b"k");
        let mut server = Server::bind(config).unwrap();
        register(&mut server);
        let lock = Value::Ref(crate::proto::Token {
            typeid: "Lock".into(),
            id: crate::proto::ObjectId(1),
        });
        let e = server
            .core
            .construct(None, "Condition", CallArgs::positional(vec![lock]))
            .unwrap_err();
        assert_eq!(e.kind, "TypeError");
        assert!(server
            .core
            .construct(None, "Condition", CallArgs::positional(vec![Value::None]))
            .is_ok());
    }
}
