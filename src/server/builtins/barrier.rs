//! `Barrier` (CPython's `threading.Barrier` behind a `BarrierProxy`):
//! `wait(timeout=None)`, `abort()`, `reset()`, and `parties`, `n_waiting` and
//! `broken` read through `__getattribute__`.
//!
//! The last of `parties` arrivals releases the round: every waiter gets its
//! arrival index (0 for the first). CPython's draining and resetting phases take no
//! time here, since the whole round is answered at once. A wait that times out
//! breaks the barrier, as in CPython; a broken barrier answers every wait with
//! `threading.BrokenBarrierError` until `reset()`. An `action` callable cannot
//! cross the wire and is refused.
//!
//! A party that arrived counts for its round even if its connection dies before
//! the round is released, as on CPython (whose server thread stays in `wait()`
//! for a client that has gone): the round completes when the remaining parties
//! arrive, the departed party's answer is dropped, and its timeout (if it gave
//! one) still breaks the barrier when it expires. But when the server knows a
//! waiter's process (a Unix-socket peer, whose pid it has) and that process
//! exits, the barrier breaks: the others get `BrokenBarrierError` rather than
//! wait for a party that will never call again.

use super::waiters::{cond_timeout, int_arg, seconds, Wait, WaitQueue};
use crate::proto::{RemoteError, Value};
use crate::server::context::{CallId, Context, TimerId};
use crate::server::registry::{CallArgs, CallResult, Outcome, SharedObject, TypeSpec};
use crate::server::Server;

fn broken_error() -> RemoteError {
    RemoteError::new("threading.BrokenBarrierError", "")
}

/// A shared barrier for `parties` waiters.
#[derive(Debug)]
pub(crate) struct Barrier {
    parties: i64,
    /// The default timeout of `wait()`.
    timeout: Option<Value>,
    broken: bool,
    /// Waiters of the round being filled, in arrival order: a waiter's index is
    /// its position when the round is released. A waiter whose client went away
    /// stays (its answer is dropped), as its arrival counts. Each with its
    /// process, when the server knows it.
    waiters: WaitQueue<Option<u32>>,
    addr: super::Addr,
}

impl Barrier {
    fn new(mut args: CallArgs) -> Result<Barrier, RemoteError> {
        args.check("Barrier", 3, &["parties", "action", "timeout"])?;
        let parties = args.take(0, "parties").ok_or_else(|| {
            RemoteError::type_error(
                "Barrier.__init__() missing 1 required positional argument: 'parties'",
            )
        })?;
        // As threading.Barrier: any count is taken; one below 1 never fills, so
        // its waiters leave only by timeout, abort or reset.
        let parties = int_arg(&parties)?;
        if !matches!(args.take(1, "action"), None | Some(Value::None)) {
            return Err(RemoteError::type_error(
                "Barrier(action=...): a callable cannot be sent to the server",
            ));
        }
        let timeout = args.take(2, "timeout").filter(|t| *t != Value::None);
        if let Some(t) = &timeout {
            seconds(t)?;
        }
        Ok(Barrier {
            parties,
            timeout,
            broken: false,
            waiters: WaitQueue::default(),
            addr: super::Addr::default(),
        })
    }

    fn wait(&mut self, cx: &mut Context<'_>, mut args: CallArgs) -> CallResult {
        args.check("wait", 1, &["timeout"])?;
        let timeout = match args.take(0, "timeout") {
            None | Some(Value::None) => self.timeout.clone(),
            t => t,
        };
        let wait = cond_timeout(timeout)?;
        if self.broken {
            return Err(broken_error());
        }
        let index = self.waiters.len() as i64;
        if index + 1 == self.parties {
            for (i, w) in self.waiters.drain(cx).into_iter().enumerate() {
                cx.reply(w.handle, Ok(Value::Int(i as i64)));
            }
            return Ok(Value::Int(index).into());
        }
        if wait == Wait::Never {
            self.break_barrier(cx);
            return Err(broken_error());
        }
        let pid = cx.watch_process_exit();
        self.waiters.defer(cx, wait, pid);
        Ok(Outcome::Deferred)
    }

    /// Fails every waiter with `BrokenBarrierError`.
    fn fail_all(&mut self, cx: &mut Context<'_>) {
        for w in self.waiters.drain(cx) {
            cx.reply(w.handle, Err(broken_error()));
        }
    }

    fn break_barrier(&mut self, cx: &mut Context<'_>) {
        self.broken = true;
        self.fail_all(cx);
    }

    fn attribute(&self, mut args: CallArgs) -> CallResult {
        args.check("__getattribute__", 1, &[])?;
        let name = match args.take(0, "name").map(Value::into_str) {
            Some(Ok(s)) => s,
            Some(Err(other)) => {
                return Err(RemoteError::type_error(format!(
                    "attribute name must be string, not '{}'",
                    other.type_name()
                )))
            }
            None => return Err(RemoteError::type_error("expected 1 argument, got 0")),
        };
        let v = match name.as_str() {
            "parties" => Value::Int(self.parties),
            "n_waiting" => Value::Int(self.waiters.len() as i64),
            "broken" => Value::Bool(self.broken),
            _ => {
                return Err(RemoteError::new(
                    "AttributeError",
                    format!("'Barrier' object has no attribute '{name}'"),
                ))
            }
        };
        Ok(v.into())
    }
}

impl SharedObject for Barrier {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        match method {
            "wait" => self.wait(cx, args),
            "abort" => {
                args.check("abort", 0, &[])?;
                self.break_barrier(cx);
                Ok(Value::None.into())
            }
            "reset" => {
                args.check("reset", 0, &[])?;
                self.fail_all(cx);
                self.broken = false;
                Ok(Value::None.into())
            }
            "__getattribute__" => self.attribute(args),
            other => Err(RemoteError::new(
                "AttributeError",
                format!("'Barrier' object has no attribute '{other}'"),
            )),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if let Some(w) = self.waiters.take_timer(timer) {
            cx.reply(w.handle, Err(broken_error()));
            self.break_barrier(cx);
        }
    }

    fn on_process_exit(&mut self, cx: &mut Context<'_>, pid: u32) {
        if self.waiters.iter().any(|w| w.data == Some(pid)) {
            self.break_barrier(cx);
        }
    }

    fn on_cancel(&mut self, _cx: &mut Context<'_>, _reply: CallId) {
        // The party arrived: it keeps its place in the round (as on CPython), and
        // answering it when the round is released is a no-op.
    }

    fn repr(&self) -> Option<String> {
        Some(if self.broken {
            format!("<threading.Barrier at {}: broken>", self.addr)
        } else {
            format!(
                "<threading.Barrier at {}: waiters={}/{}>",
                self.addr,
                self.waiters.len(),
                self.parties
            )
        })
    }

    fn get_value(&self) -> Result<Value, RemoteError> {
        Err(RemoteError::type_error(
            "cannot pickle '_thread.lock' object",
        ))
    }
}

/// Registers `Barrier` with `BarrierProxy`'s exposed methods.
pub(crate) fn register(server: &mut Server) {
    server.register(TypeSpec::new(
        "Barrier",
        &["__getattribute__", "wait", "abort", "reset"],
        |_, args| Ok(Box::new(Barrier::new(args)?)),
    ));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::waiters::harness::{conn, Harness, Now};
    use super::*;

    fn barrier(parties: i64) -> Harness {
        let b = Barrier::new(CallArgs::positional(vec![Value::Int(parties)])).unwrap();
        Harness::new(Box::new(b))
    }

    fn attr(h: &mut Harness, name: &str) -> Now {
        h.call(0, "__getattribute__", vec![Value::Str(name.into())])
    }

    #[test]
    fn rounds_give_each_index_once() {
        let mut h = barrier(3);
        for _round in 0..2 {
            assert!(matches!(h.call(1, "wait", vec![]), Now::Deferred(_)));
            assert!(matches!(h.call(2, "wait", vec![]), Now::Deferred(_)));
            assert_eq!(attr(&mut h, "n_waiting"), Now::Value(Value::Int(2)));
            assert_eq!(h.call(3, "wait", vec![]), Now::Value(Value::Int(2)));
            assert_eq!(
                h.replies(),
                vec![(conn(1), Ok(Value::Int(0))), (conn(2), Ok(Value::Int(1)))]
            );
        }
        assert_eq!(attr(&mut h, "parties"), Now::Value(Value::Int(3)));
        assert_eq!(attr(&mut h, "_count"), Now::Error("AttributeError".into()));
    }

    #[test]
    fn timeout_breaks_and_reset_mends() {
        let mut h = barrier(3);
        assert!(matches!(h.call(1, "wait", vec![]), Now::Deferred(_)));
        assert!(matches!(
            h.call(2, "wait", vec![Value::Float(0.1)]),
            Now::Deferred(_)
        ));
        h.advance(Duration::from_secs(1));
        let e = |r: Result<Value, RemoteError>| r.unwrap_err().kind;
        let got: Vec<_> = h.replies().into_iter().map(|(c, r)| (c, e(r))).collect();
        let kind = "threading.BrokenBarrierError".to_owned();
        assert_eq!(got, vec![(conn(2), kind.clone()), (conn(1), kind.clone())]);
        assert_eq!(attr(&mut h, "broken"), Now::Value(Value::Bool(true)));
        assert_eq!(h.call(3, "wait", vec![]), Now::Error(kind.clone()));
        assert_eq!(h.repr(), "<threading.Barrier at 0x…: broken>");
        h.call(0, "reset", vec![]);
        assert_eq!(attr(&mut h, "broken"), Now::Value(Value::Bool(false)));
        assert!(matches!(h.call(1, "wait", vec![]), Now::Deferred(_)));
        h.call(0, "abort", vec![]);
        assert_eq!(h.replies().len(), 1);
        assert_eq!(h.call(0, "wait", vec![Value::Int(0)]), Now::Error(kind));
    }

    #[test]
    fn a_barrier_of_no_parties_never_fills() {
        // As threading.Barrier(0) and Barrier(-1): taken, and a wait leaves only
        // by its timeout (which breaks the barrier), abort or reset.
        for parties in [0, -1] {
            let mut h = barrier(parties);
            assert_eq!(attr(&mut h, "parties"), Now::Value(Value::Int(parties)));
            assert!(matches!(h.call(1, "wait", vec![]), Now::Deferred(_)));
            assert!(matches!(h.call(2, "wait", vec![]), Now::Deferred(_)));
            assert_eq!(attr(&mut h, "n_waiting"), Now::Value(Value::Int(2)));
            assert!(h.replies().is_empty());
            let kind = "threading.BrokenBarrierError".to_owned();
            assert_eq!(h.call(3, "wait", vec![Value::Int(0)]), Now::Error(kind));
            assert_eq!(h.replies().len(), 2);
        }
    }

    #[test]
    fn a_party_whose_client_went_away_still_counts() {
        let mut h = barrier(3);
        let gone = match h.call(1, "wait", vec![]) {
            Now::Deferred(r) => r,
            other => panic!("{other:?}"),
        };
        assert!(matches!(h.call(2, "wait", vec![]), Now::Deferred(_)));
        h.cancel(gone);
        assert_eq!(attr(&mut h, "n_waiting"), Now::Value(Value::Int(2)));
        // The third arrival releases the round; the departed party's answer is dropped.
        assert_eq!(h.call(3, "wait", vec![]), Now::Value(Value::Int(2)));
        assert_eq!(h.replies(), vec![(conn(2), Ok(Value::Int(1)))]);
        assert_eq!(attr(&mut h, "n_waiting"), Now::Value(Value::Int(0)));
        assert_eq!(attr(&mut h, "broken"), Now::Value(Value::Bool(false)));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let a = |v: Vec<Value>| Barrier::new(CallArgs::positional(v)).map(|_| ());
        assert_eq!(a(vec![]).unwrap_err().kind, "TypeError");
        assert_eq!(
            a(vec![Value::Str("2".into())]).unwrap_err().kind,
            "TypeError"
        );
        assert_eq!(
            a(vec![Value::Int(2), Value::Str("f".into())])
                .unwrap_err()
                .kind,
            "TypeError"
        );
        assert!(a(vec![Value::Int(1), Value::None, Value::Float(1.0)]).is_ok());
    }
}
