//! What every blocking built-in shares: a fair (FIFO) queue of deferred calls with
//! optional timers, and the parsing of Python's `timeout` arguments.
//!
//! A [`WaitQueue`] only books waiters; answering them is up to the type that owns
//! it. It never scans its waiters to find one: a waiter is found by its reply
//! handle or its timer through an index, so thousands of waiters cost memory, not
//! quadratic wakeups.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::proto::{RemoteError, Value};
use crate::server::context::{CallId, Context, ReplyHandle, TimerId};

/// `threading.TIMEOUT_MAX` on Linux: longer timeouts raise `OverflowError`.
pub(crate) const TIMEOUT_MAX: f64 = 9_223_372_036.0;

/// How long a call may block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Wait {
    /// Until woken.
    Forever,
    /// Until woken or this much time has passed.
    For(Duration),
    /// Not at all: answer from the current state.
    Never,
}

/// One deferred call in a [`WaitQueue`].
#[derive(Debug)]
pub(crate) struct Waiter<T> {
    /// The call's reply handle.
    pub(crate) handle: ReplyHandle,
    /// Its timeout timer, if it has one.
    pub(crate) timer: Option<TimerId>,
    /// What the owning type needs to answer it.
    pub(crate) data: T,
}

/// Deferred calls in arrival order, findable by reply handle and by timer.
///
/// The indexes are allocated on the first deferred call: most objects never have
/// a waiter, and an idle one then pays a pointer here instead of the 128 bytes of
/// a map and two hash maps (which made an idle `Event` 144 bytes of heap).
#[derive(Debug)]
pub(crate) struct WaitQueue<T> {
    queued: Option<Box<Queued<T>>>,
}

#[derive(Debug)]
struct Queued<T> {
    next: u64,
    queue: BTreeMap<u64, Waiter<T>>,
    by_handle: HashMap<CallId, u64>,
    by_timer: HashMap<TimerId, u64>,
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue { queued: None }
    }
}

impl<T> Queued<T> {
    fn unlink(&mut self, w: &Waiter<T>) {
        self.by_handle.remove(&w.handle.id());
        if let Some(t) = w.timer {
            self.by_timer.remove(&t);
        }
    }
}

impl<T> WaitQueue<T> {
    /// Defers the running call and queues it last, with a timer when `wait` is
    /// [`Wait::For`]. (A [`Wait::Never`] call should have been answered instead;
    /// it is queued without a timer.)
    pub(crate) fn defer(&mut self, cx: &mut Context<'_>, wait: Wait, data: T) -> CallId {
        let handle = cx.defer();
        let id = handle.id();
        let timer = match wait {
            Wait::For(d) => Some(cx.set_timer(d)),
            Wait::Forever | Wait::Never => None,
        };
        self.push(handle, timer, data);
        id
    }

    /// Queues an already deferred call last.
    pub(crate) fn push(&mut self, handle: ReplyHandle, timer: Option<TimerId>, data: T) {
        let q = self.queued.get_or_insert_with(|| {
            Box::new(Queued {
                next: 0,
                queue: BTreeMap::new(),
                by_handle: HashMap::new(),
                by_timer: HashMap::new(),
            })
        });
        let seq = q.next;
        q.next += 1;
        q.by_handle.insert(handle.id(), seq);
        if let Some(t) = timer {
            q.by_timer.insert(t, seq);
        }
        q.queue.insert(
            seq,
            Waiter {
                handle,
                timer,
                data,
            },
        );
    }

    /// Takes the earliest waiter out and cancels its timer.
    pub(crate) fn pop_front(&mut self, cx: &mut Context<'_>) -> Option<Waiter<T>> {
        let q = self.queued.as_mut()?;
        let (_, w) = q.queue.pop_first()?;
        q.unlink(&w);
        if let Some(t) = w.timer {
            cx.cancel_timer(t);
        }
        Some(w)
    }

    /// Takes out the waiter whose timer fired (its timer is spent).
    pub(crate) fn take_timer(&mut self, timer: TimerId) -> Option<Waiter<T>> {
        let q = self.queued.as_mut()?;
        let seq = q.by_timer.remove(&timer)?;
        let w = q.queue.remove(&seq).expect("indexed waiter is queued");
        q.by_handle.remove(&w.handle.id());
        Some(w)
    }

    /// Takes out the waiter answering through `handle` and cancels its timer.
    pub(crate) fn take_handle(
        &mut self,
        cx: &mut Context<'_>,
        handle: CallId,
    ) -> Option<Waiter<T>> {
        let q = self.queued.as_mut()?;
        let seq = q.by_handle.remove(&handle)?;
        let w = q.queue.remove(&seq).expect("indexed waiter is queued");
        if let Some(t) = w.timer {
            q.by_timer.remove(&t);
            cx.cancel_timer(t);
        }
        Some(w)
    }

    /// Takes every waiter out, in order, cancelling their timers.
    pub(crate) fn drain(&mut self, cx: &mut Context<'_>) -> Vec<Waiter<T>> {
        let Some(q) = self.queued.as_mut() else {
            return Vec::new();
        };
        let all = std::mem::take(&mut q.queue);
        q.by_handle.clear();
        q.by_timer.clear();
        all.into_values()
            .inspect(|w| {
                if let Some(t) = w.timer {
                    cx.cancel_timer(t);
                }
            })
            .collect()
    }

    /// The waiters, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Waiter<T>> {
        self.queued.iter().flat_map(|q| q.queue.values())
    }

    /// Number of waiters.
    pub(crate) fn len(&self) -> usize {
        self.queued.as_ref().map_or(0, |q| q.queue.len())
    }
}

/// A number of seconds, as Python accepts them (int, float, bool).
pub(crate) fn seconds(v: &Value) -> Result<f64, RemoteError> {
    v.as_float().ok_or_else(|| {
        RemoteError::type_error(format!(
            "'{}' object cannot be interpreted as a number of seconds",
            v.type_name()
        ))
    })
}

/// Seconds to a timer duration; `OverflowError` beyond `threading.TIMEOUT_MAX`.
pub(crate) fn duration(secs: f64) -> Result<Duration, RemoteError> {
    if secs > TIMEOUT_MAX {
        return Err(RemoteError::new(
            "OverflowError",
            "timeout value is too large",
        ));
    }
    Ok(Duration::from_secs_f64(secs.max(0.0)))
}

/// `timeout=None` as `threading.Condition.wait` reads it (and so `Event.wait`,
/// `Semaphore.acquire`, `Barrier.wait`): `None` waits forever, a positive number
/// that long, anything else (zero, negative, NaN) not at all.
pub(crate) fn cond_timeout(v: Option<Value>) -> Result<Wait, RemoteError> {
    match v {
        None | Some(Value::None) => Ok(Wait::Forever),
        Some(v) => {
            let secs = seconds(&v)?;
            if secs > 0.0 {
                duration(secs).map(Wait::For)
            } else {
                Ok(Wait::Never)
            }
        }
    }
}

/// `block=True, timeout=None` as `queue.Queue.get` and `put` read them.
pub(crate) fn queue_timeout(block: Option<Value>, v: Option<Value>) -> Result<Wait, RemoteError> {
    if !block.is_none_or(|b| b.truthy()) {
        return Ok(Wait::Never);
    }
    match v {
        None | Some(Value::None) => Ok(Wait::Forever),
        Some(v) => {
            let secs = seconds(&v)?;
            if secs < 0.0 {
                Err(RemoteError::value_error(
                    "'timeout' must be a non-negative number",
                ))
            } else if secs > 0.0 {
                duration(secs).map(Wait::For)
            } else {
                Ok(Wait::Never)
            }
        }
    }
}

/// `blocking=True, timeout=-1` as `_thread.lock.acquire` and `_thread.RLock.acquire`
/// read them.
pub(crate) fn lock_timeout(blocking: Option<Value>, v: Option<Value>) -> Result<Wait, RemoteError> {
    let blocking = blocking.is_none_or(|b| b.truthy());
    let secs = match v {
        None => -1.0,
        Some(Value::None) => {
            return Err(RemoteError::type_error(
                "'NoneType' object cannot be interpreted as an integer",
            ))
        }
        Some(v) => seconds(&v)?,
    };
    if secs.is_nan() {
        return Err(RemoteError::value_error("Invalid value NaN (not a number)"));
    }
    if !blocking {
        if secs != -1.0 {
            return Err(RemoteError::value_error(
                "can't specify a timeout for a non-blocking call",
            ));
        }
        return Ok(Wait::Never);
    }
    if secs == -1.0 {
        Ok(Wait::Forever)
    } else if secs < 0.0 {
        Err(RemoteError::value_error("timeout value must be positive"))
    } else if secs == 0.0 {
        Ok(Wait::Never)
    } else {
        duration(secs).map(Wait::For)
    }
}

/// An `int` argument, or a `TypeError` naming what was given.
pub(crate) fn int_arg(v: &Value) -> Result<i64, RemoteError> {
    match v {
        Value::Int(_) | Value::Bool(_) => Ok(v.as_int().expect("int or bool")),
        Value::BigInt(_) => Err(RemoteError::new(
            "OverflowError",
            "Python int too large to convert to C long",
        )),
        other => Err(RemoteError::type_error(format!(
            "'{}' object cannot be interpreted as an integer",
            other.type_name()
        ))),
    }
}

#[cfg(test)]
pub(crate) mod harness {
    //! Runs one built-in object inside a real [`Core`] without sockets: calls from
    //! numbered connections, the replies they got, timers, cancellations and
    //! disconnections, all with a fake clock.

    use std::rc::Rc;

    use crate::server::context::Recount;
    use std::time::Duration;

    use crate::proto::{ObjectId, RemoteError, Value};
    use crate::server::context::{CallId, ConnId, Core, TimerTarget};
    use crate::server::registry::{CallArgs, Outcome, SharedObject, TypeSpec};

    /// One object in a socket-free server core.
    pub(crate) struct Harness {
        pub(crate) core: Core,
        pub(crate) id: ObjectId,
    }

    /// What a call did right away.
    #[derive(Debug, PartialEq)]
    pub(crate) enum Now {
        /// Answered with a value.
        Value(Value),
        /// Raised: the error's kind.
        Error(String),
        /// Deferred with this handle.
        Deferred(CallId),
    }

    pub(crate) fn conn(n: usize) -> ConnId {
        ConnId::new(n, 1)
    }

    impl Harness {
        pub(crate) fn new(object: Box<dyn SharedObject>) -> Harness {
            let mut core = Core::new();
            let spec = TypeSpec::new("T", &[], |_, _| Err(RemoteError::type_error("unused")));
            let id = core.objects.insert(Rc::new(spec), object);
            core.objects.incref(id);
            Harness { core, id }
        }

        /// Calls `method` with positional `args` from connection `n`.
        pub(crate) fn call(&mut self, n: usize, method: &str, args: Vec<Value>) -> Now {
            self.call_kw(n, method, args, vec![])
        }

        /// Calls `method` with keyword arguments too.
        pub(crate) fn call_kw(
            &mut self,
            n: usize,
            method: &str,
            args: Vec<Value>,
            kwargs: Vec<(&str, Value)>,
        ) -> Now {
            let args = CallArgs {
                args,
                kwargs: kwargs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            };
            let (r, h) = self
                .core
                .with_object(self.id, Some(conn(n)), None, Recount::IfHolding, |o, cx| {
                    o.call(cx, method, args)
                })
                .expect("object is there");
            match r {
                Ok(Outcome::Deferred) => Now::Deferred(h.expect("deferred with a handle")),
                Ok(Outcome::Value(v)) => {
                    assert!(h.is_none(), "answered at once but took a handle");
                    Now::Value(v)
                }
                Ok(Outcome::Object(_)) => panic!("no built-in here returns objects"),
                Err(e) => Now::Error(e.kind),
            }
        }

        /// Takes the answers of deferred calls delivered so far.
        /// (Handles dropped unanswered answer RuntimeError, as in a server.)
        pub(crate) fn replies(&mut self) -> Vec<(ConnId, Result<Value, RemoteError>)> {
            self.core.drain_commands();
            self.core
                .outbox
                .drain(..)
                .map(|c| (c.conn, c.result))
                .collect()
        }

        /// Moves the clock on and fires the timers now due.
        pub(crate) fn advance(&mut self, by: Duration) {
            self.core.now += by;
            let now = self.core.now;
            while let Some((timer, target)) = self.core.pop_due_timer(now) {
                assert_eq!(target, TimerTarget::Object(self.id));
                let _ = self
                    .core
                    .with_object(self.id, None, None, Recount::IfHolding, |o, cx| {
                        o.on_timer(cx, timer)
                    });
            }
        }

        /// The client of deferred call `h` went away.
        pub(crate) fn cancel(&mut self, h: CallId) {
            self.core.cancel(h);
        }

        /// Connection `n` closed (after its deferred call was cancelled).
        pub(crate) fn disconnect(&mut self, n: usize) {
            let c = conn(n);
            for object in self.core.take_watchers(c) {
                let _ = self
                    .core
                    .with_object(object, None, None, Recount::IfHolding, |o, cx| {
                        o.on_disconnect(cx, c)
                    });
            }
        }

        /// The object's `repr()`, its address written `0x…`.
        pub(crate) fn repr(&self) -> String {
            let slot = self.core.objects.get(self.id).expect("live");
            let repr = slot.object.as_ref().and_then(|o| o.repr()).expect("a repr");
            super::super::mask_addrs(&repr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::context::{ConnId, Core};

    #[test]
    fn fifo_with_removal_by_handle_and_timer() {
        let mut core = Core::new();
        // One context per call: a call defers (at most) one answer.
        let conn = Some(ConnId::new(0, 1));
        let mut q = WaitQueue::default();
        let a = q.defer(&mut core.context(conn), Wait::Forever, 'a');
        let b = q.defer(
            &mut core.context(conn),
            Wait::For(Duration::from_secs(1)),
            'b',
        );
        let c = q.defer(
            &mut core.context(conn),
            Wait::For(Duration::from_secs(2)),
            'c',
        );
        let tb = q.iter().nth(1).unwrap().timer.unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(
            q.take_handle(&mut core.context(conn), a).map(|w| w.data),
            Some('a')
        );
        assert_eq!(q.take_timer(tb).map(|w| w.data), Some('b'));
        assert!(q.take_timer(tb).is_none(), "a spent timer is gone");
        core.context(conn).cancel_timer(tb); // as if it had fired
        assert_eq!(q.iter().next().map(|w| w.handle.id()), Some(c));
        let d = q.defer(&mut core.context(conn), Wait::Forever, 'd');
        let order: Vec<_> = std::iter::from_fn(|| q.pop_front(&mut core.context(conn)))
            .map(|w| (w.handle.id(), w.data))
            .collect();
        assert_eq!(order, vec![(c, 'c'), (d, 'd')]);
        assert_eq!(q.len(), 0);
        let _ = b;
        assert_eq!(
            core.next_deadline(),
            None,
            "popped waiters' timers cancelled"
        );
    }

    #[test]
    fn drain_cancels_timers() {
        let mut core = Core::new();
        let conn = Some(ConnId::new(0, 1));
        let mut q = WaitQueue::default();
        for i in 0..1000 {
            // One context per call: a call defers one answer.
            q.defer(
                &mut core.context(conn),
                Wait::For(Duration::from_secs(5)),
                i,
            );
        }
        let all: Vec<i32> = q
            .drain(&mut core.context(conn))
            .into_iter()
            .map(|w| w.data)
            .collect();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(core.next_deadline(), None);
    }

    #[test]
    fn timeouts_read_like_python() {
        let f = |x: f64| Some(Value::Float(x));
        assert_eq!(cond_timeout(None).unwrap(), Wait::Forever);
        assert_eq!(cond_timeout(f(-1.0)).unwrap(), Wait::Never);
        assert_eq!(
            cond_timeout(Some(Value::Int(2))).unwrap(),
            Wait::For(Duration::from_secs(2))
        );
        assert_eq!(cond_timeout(f(1e300)).unwrap_err().kind, "OverflowError");
        assert_eq!(
            cond_timeout(Some(Value::Str("x".into()))).unwrap_err().kind,
            "TypeError"
        );
        assert_eq!(queue_timeout(None, f(-1.0)).unwrap_err().kind, "ValueError");
        assert_eq!(
            queue_timeout(Some(Value::Bool(false)), f(-1.0)).unwrap(),
            Wait::Never
        );
        assert_eq!(queue_timeout(None, f(0.0)).unwrap(), Wait::Never);
        assert_eq!(lock_timeout(None, None).unwrap(), Wait::Forever);
        assert_eq!(
            lock_timeout(None, Some(Value::Int(-1))).unwrap(),
            Wait::Forever
        );
        let e = lock_timeout(Some(Value::Bool(false)), f(1.0)).unwrap_err();
        assert_eq!(e.message, "can't specify a timeout for a non-blocking call");
        assert_eq!(
            lock_timeout(None, f(-2.0)).unwrap_err().message,
            "timeout value must be positive"
        );
        assert_eq!(
            lock_timeout(None, Some(Value::None)).unwrap_err().kind,
            "TypeError"
        );
        assert_eq!(lock_timeout(None, f(0.0)).unwrap(), Wait::Never);
    }
}
