//! `Event` (CPython's `threading.Event` behind an `EventProxy`): `is_set()`,
//! `set()`, `clear()`, `wait(timeout=None)`.
//!
//! `set()` answers every waiter `True` at once; a waiter whose timeout passes first
//! gets `False`.

use super::waiters::{cond_timeout, Wait, WaitQueue};
use crate::proto::{RemoteError, Value};
use crate::server::context::{CallId, Context, TimerId};
use crate::server::registry::{CallArgs, CallResult, Outcome, SharedObject, TypeSpec};
use crate::server::Server;

/// A shared event flag.
#[derive(Debug, Default)]
pub(crate) struct Event {
    flag: bool,
    waiters: WaitQueue<()>,
    addr: super::Addr,
}

impl SharedObject for Event {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, mut args: CallArgs) -> CallResult {
        match method {
            "is_set" => {
                args.check("is_set", 0, &[])?;
                Ok(Value::Bool(self.flag).into())
            }
            "set" => {
                args.check("set", 0, &[])?;
                self.flag = true;
                for w in self.waiters.drain(cx) {
                    cx.reply(w.handle, Ok(Value::Bool(true)));
                }
                Ok(Value::None.into())
            }
            "clear" => {
                args.check("clear", 0, &[])?;
                self.flag = false;
                Ok(Value::None.into())
            }
            "wait" => {
                args.check("wait", 1, &["timeout"])?;
                if self.flag {
                    // CPython looks at the timeout only when it has to wait.
                    return Ok(Value::Bool(true).into());
                }
                let wait = cond_timeout(args.take(0, "timeout"))?;
                if wait == Wait::Never {
                    return Ok(Value::Bool(false).into());
                }
                self.waiters.defer(cx, wait, ());
                Ok(Outcome::Deferred)
            }
            other => Err(RemoteError::new(
                "AttributeError",
                format!("'Event' object has no attribute '{other}'"),
            )),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if let Some(w) = self.waiters.take_timer(timer) {
            cx.reply(w.handle, Ok(Value::Bool(self.flag)));
        }
    }

    fn on_cancel(&mut self, cx: &mut Context<'_>, reply: CallId) {
        self.waiters.take_handle(cx, reply);
    }

    fn repr(&self) -> Option<String> {
        let state = if self.flag { "set" } else { "unset" };
        Some(format!("<threading.Event at {}: {state}>", self.addr))
    }

    fn get_value(&self) -> Result<Value, RemoteError> {
        Err(RemoteError::type_error(
            "cannot pickle '_thread.lock' object",
        ))
    }
}

/// Registers `Event` with `EventProxy`'s exposed methods.
pub(crate) fn register(server: &mut Server) {
    server.register(TypeSpec::new(
        "Event",
        &["is_set", "set", "clear", "wait"],
        |_, args| {
            args.check("Event", 0, &[])?;
            Ok(Box::new(Event::default()))
        },
    ));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::waiters::harness::{conn, Harness, Now};
    use super::*;

    #[test]
    fn set_wakes_everyone_and_timeouts_say_false() {
        let mut h = Harness::new(Box::new(Event::default()));
        assert_eq!(
            h.call(0, "wait", vec![Value::Int(0)]),
            Now::Value(Value::Bool(false))
        );
        assert!(matches!(h.call(1, "wait", vec![]), Now::Deferred(_)));
        assert!(matches!(
            h.call(2, "wait", vec![Value::Float(0.2)]),
            Now::Deferred(_)
        ));
        let gone = match h.call(3, "wait", vec![]) {
            Now::Deferred(g) => g,
            other => panic!("{other:?}"),
        };
        h.cancel(gone);
        h.advance(Duration::from_secs(1));
        assert_eq!(h.replies(), vec![(conn(2), Ok(Value::Bool(false)))]);
        h.call(0, "set", vec![]);
        assert_eq!(h.replies(), vec![(conn(1), Ok(Value::Bool(true)))]);
        assert_eq!(h.call(0, "wait", vec![]), Now::Value(Value::Bool(true)));
        assert_eq!(h.repr(), "<threading.Event at 0x…: set>");
        h.call(0, "clear", vec![]);
        assert_eq!(h.call(0, "is_set", vec![]), Now::Value(Value::Bool(false)));
    }
}
