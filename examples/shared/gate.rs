//! `Gate`, the host type the examples serve: `wait()` blocks its caller (a
//! deferred reply, no thread) until another client calls `open()`, which answers
//! every waiter with the host's frame count so far (`open(n)`: the first `n`
//! waiters); `waiting()`, `ticks()`.

use std::cell::Cell;
use std::rc::Rc;

use mgr::server::{
    CallArgs, CallId, CallResult, Context, Outcome, ReplyHandle, SharedObject, TypeSpec,
};
use mgr::Value;

/// A gate that callers wait at until someone opens it; it reads the host's
/// frame counter (state shared with the loop, on the same thread).
struct Gate {
    waiting: Vec<ReplyHandle>,
    ticks: Rc<Cell<u64>>,
}

impl SharedObject for Gate {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        match method {
            "wait" => {
                let () = args.extract()?; // a TypeError for any argument
                self.waiting.push(cx.defer());
                Ok(Outcome::Deferred)
            }
            "open" => {
                // open() or open(n): an optional int (a TypeError otherwise).
                let (n,): (Option<usize>,) = args.extract()?;
                let n = n.unwrap_or(self.waiting.len()).min(self.waiting.len());
                let mut woken = 0;
                // Each handle answers once: `reply` consumes it.
                for h in self.waiting.drain(..n) {
                    if cx.reply(h, Ok(Value::from(self.ticks.get()))) {
                        woken += 1;
                    }
                }
                Ok(Value::Int(woken).into())
            }
            "waiting" => {
                let () = args.extract()?;
                Ok(Value::from(self.waiting.len()).into())
            }
            "ticks" => {
                let () = args.extract()?;
                Ok(Value::from(self.ticks.get()).into())
            }
            _ => unreachable!("the server checks the exposed methods"),
        }
    }

    /// The waiter's client went: forget its handle (dropping it answers no
    /// one: the call is no longer waiting).
    fn on_cancel(&mut self, _cx: &mut Context<'_>, call: CallId) {
        self.waiting.retain(|h| h.id() != call);
    }
}

/// The `Gate` type, reading the host's frame counter `ticks`.
pub fn gate_type(ticks: &Rc<Cell<u64>>) -> TypeSpec {
    let clock = ticks.clone();
    TypeSpec::new(
        "Gate",
        &["wait", "open", "waiting", "ticks"],
        move |_, _| {
            Ok(Box::new(Gate {
                waiting: Vec::new(),
                ticks: clock.clone(),
            }))
        },
    )
}
