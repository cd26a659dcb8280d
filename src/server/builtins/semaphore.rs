//! `Semaphore` and `BoundedSemaphore` (CPython's `threading` classes behind an
//! `AcquirerProxy`): `acquire(blocking=True, timeout=None)`, `release(n=1)`.
//!
//! A release hands its units straight to the waiters, first come first served, so
//! the counter stays zero while anyone waits. A semaphore has no owner: a
//! connection that closes keeps nothing and gives nothing back, as in CPython.
//!
//! With [`ServerConfig::release_locks_of_dead`](crate::server::ServerConfig::release_locks_of_dead)
//! it counts the units each process (of known pid: Unix-socket peers) holds —
//! acquired, less those it released itself — and gives them back when that
//! process exits (a `BoundedSemaphore` never past its bound).

use super::waiters::{cond_timeout, int_arg, Wait, WaitQueue};
use crate::proto::{RemoteError, Value};
use crate::server::context::{CallId, Context, TimerId};
use crate::server::fasthash::FastMap;
use crate::server::registry::{CallArgs, CallResult, Outcome, SharedObject, TypeSpec};
use crate::server::Server;

/// A shared counting semaphore; bounded when `bound` is set.
#[derive(Debug)]
pub(crate) struct Semaphore {
    value: u64,
    /// `BoundedSemaphore`'s initial value, which releases may not exceed.
    bound: Option<u64>,
    /// Each waiter's process, when units are given back at its exit.
    waiters: WaitQueue<Option<u32>>,
    /// Units each process holds (only with `release_locks_of_dead`).
    held: FastMap<u32, u64>,
    addr: super::Addr,
}

impl Semaphore {
    fn new(mut args: CallArgs, bounded: bool) -> Result<Semaphore, RemoteError> {
        let name = if bounded {
            "BoundedSemaphore"
        } else {
            "Semaphore"
        };
        args.check(name, 1, &["value"])?;
        let value = match args.take(0, "value") {
            Some(v) => int_arg(&v)?,
            None => 1,
        };
        let value = u64::try_from(value)
            .map_err(|_| RemoteError::value_error("semaphore initial value must be >= 0"))?;
        Ok(Semaphore {
            value,
            bound: bounded.then_some(value),
            waiters: WaitQueue::default(),
            addr: super::Addr::default(),
            held: FastMap::default(),
        })
    }

    fn acquire(&mut self, cx: &mut Context<'_>, mut args: CallArgs) -> CallResult {
        args.check("acquire", 2, &["blocking", "timeout"])?;
        let blocking = args.take(0, "blocking").is_none_or(|b| b.truthy());
        let timeout = args.take(1, "timeout").filter(|t| *t != Value::None);
        if !blocking && timeout.is_some() {
            return Err(RemoteError::value_error(
                "can't specify timeout for non-blocking acquire",
            ));
        }
        let pid = if cx.releases_locks_of_dead() {
            cx.watch_process_exit()
        } else {
            None
        };
        if self.value > 0 {
            self.value -= 1;
            self.count_in(pid);
            return Ok(Value::Bool(true).into());
        }
        let wait = if blocking {
            cond_timeout(timeout)?
        } else {
            Wait::Never
        };
        if wait == Wait::Never {
            return Ok(Value::Bool(false).into());
        }
        self.waiters.defer(cx, wait, pid);
        Ok(Outcome::Deferred)
    }

    /// One more unit held by `pid` (if tracked).
    fn count_in(&mut self, pid: Option<u32>) {
        if let Some(pid) = pid {
            *self.held.entry(pid).or_insert(0) += 1;
        }
    }

    fn release(&mut self, cx: &mut Context<'_>, mut args: CallArgs) -> CallResult {
        args.check("release", 1, &["n"])?;
        let n = match args.take(0, "n") {
            Some(v) => int_arg(&v)?,
            None => 1,
        };
        if n < 1 {
            return Err(RemoteError::value_error("n must be one or more"));
        }
        let n = n as u64;
        if let Some(bound) = self.bound {
            if self.value.saturating_add(n) > bound {
                return Err(RemoteError::value_error(
                    "Semaphore released too many times",
                ));
            }
        }
        if let Some(pid) = cx.peer().and_then(|p| p.pid) {
            if let Some(h) = self.held.get_mut(&pid) {
                *h = h.saturating_sub(n);
                if *h == 0 {
                    self.held.remove(&pid);
                }
            }
        }
        self.give(cx, n)?;
        Ok(Value::None.into())
    }

    /// Hands `n` units to the waiters, first come first served, and adds what
    /// is left to the value.
    fn give(&mut self, cx: &mut Context<'_>, mut n: u64) -> Result<(), RemoteError> {
        while n > 0 {
            let Some(w) = self.waiters.pop_front(cx) else {
                break;
            };
            if cx.reply(w.handle, Ok(Value::Bool(true))) {
                n -= 1;
                self.count_in(w.data);
            }
        }
        self.value = self
            .value
            .checked_add(n)
            .ok_or_else(|| RemoteError::new("OverflowError", "semaphore value overflowed"))?;
        Ok(())
    }
}

impl SharedObject for Semaphore {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        match method {
            "acquire" => self.acquire(cx, args),
            "release" => self.release(cx, args),
            other => Err(RemoteError::new(
                "AttributeError",
                format!("'Semaphore' object has no attribute '{other}'"),
            )),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if let Some(w) = self.waiters.take_timer(timer) {
            cx.reply(w.handle, Ok(Value::Bool(false)));
        }
    }

    fn on_cancel(&mut self, cx: &mut Context<'_>, reply: CallId) {
        self.waiters.take_handle(cx, reply);
    }

    fn on_process_exit(&mut self, cx: &mut Context<'_>, pid: u32) {
        let Some(mut n) = self.held.remove(&pid) else {
            return;
        };
        if let Some(bound) = self.bound {
            n = n.min(bound.saturating_sub(self.value));
        }
        let _ = self.give(cx, n);
    }

    fn repr(&self) -> Option<String> {
        Some(match self.bound {
            Some(b) => format!(
                "<threading.BoundedSemaphore at {}: value={}/{b}>",
                self.addr, self.value
            ),
            None => format!(
                "<threading.Semaphore at {}: value={}>",
                self.addr, self.value
            ),
        })
    }

    fn get_value(&self) -> Result<Value, RemoteError> {
        Err(RemoteError::type_error(
            "cannot pickle '_thread.lock' object",
        ))
    }
}

/// Registers `Semaphore` and `BoundedSemaphore` with `AcquirerProxy`'s methods.
pub(crate) fn register(server: &mut Server) {
    for (typeid, bounded) in [("Semaphore", false), ("BoundedSemaphore", true)] {
        server.register(TypeSpec::new(
            typeid,
            &["acquire", "release"],
            move |_, args| Ok(Box::new(Semaphore::new(args, bounded)?)),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::waiters::harness::{conn, Harness, Now};
    use super::*;

    fn sem(value: i64, bounded: bool) -> Harness {
        let s = Semaphore::new(CallArgs::positional(vec![Value::Int(value)]), bounded).unwrap();
        Harness::new(Box::new(s))
    }

    #[test]
    fn release_n_wakes_n_waiters_in_order() {
        let mut h = sem(1, false);
        assert_eq!(h.call(0, "acquire", vec![]), Now::Value(Value::Bool(true)));
        for n in 1..=3 {
            assert!(matches!(h.call(n, "acquire", vec![]), Now::Deferred(_)));
        }
        h.call(0, "release", vec![Value::Int(2)]);
        let t = Ok(Value::Bool(true));
        assert_eq!(
            h.replies(),
            vec![(conn(1), t.clone()), (conn(2), t.clone())]
        );
        h.call(0, "release", vec![Value::Int(3)]);
        assert_eq!(h.replies(), vec![(conn(3), t)]);
        assert_eq!(h.repr(), "<threading.Semaphore at 0x…: value=2>");
    }

    #[test]
    fn timeouts_and_nonblocking() {
        let mut h = sem(0, false);
        assert_eq!(
            h.call(0, "acquire", vec![Value::Bool(false)]),
            Now::Value(Value::Bool(false))
        );
        assert_eq!(
            h.call(0, "acquire", vec![Value::Bool(false), Value::Int(1)]),
            Now::Error("ValueError".into())
        );
        assert_eq!(
            h.call(0, "acquire", vec![Value::Bool(true), Value::Int(-1)]),
            Now::Value(Value::Bool(false))
        );
        let kw = vec![("timeout", Value::Float(0.5))];
        assert!(matches!(
            h.call_kw(1, "acquire", vec![], kw),
            Now::Deferred(_)
        ));
        h.advance(Duration::from_secs(1));
        assert_eq!(h.replies(), vec![(conn(1), Ok(Value::Bool(false)))]);
        h.call(0, "release", vec![]);
        assert!(h.replies().is_empty(), "the timed-out waiter got nothing");
        assert_eq!(h.repr(), "<threading.Semaphore at 0x…: value=1>");
    }

    #[test]
    fn bounded_refuses_extra_releases() {
        let mut h = sem(2, true);
        assert_eq!(
            h.call(0, "release", vec![]),
            Now::Error("ValueError".into())
        );
        h.call(0, "acquire", vec![]);
        assert_eq!(h.call(0, "release", vec![]), Now::Value(Value::None));
        assert_eq!(
            h.call(0, "release", vec![Value::Int(0)]),
            Now::Error("ValueError".into())
        );
        assert_eq!(h.repr(), "<threading.BoundedSemaphore at 0x…: value=2/2>");
        assert!(Semaphore::new(CallArgs::positional(vec![Value::Int(-1)]), false).is_err());
    }
}
