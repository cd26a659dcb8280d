//! `Queue` and `JoinableQueue` (both CPython's `queue.Queue`, served without a
//! proxy type so their exposed methods are `queue.Queue`'s public methods in
//! `dir()` order): `put`, `get`, their `_nowait` forms, `qsize`, `empty`, `full`,
//! `task_done` and `join`.
//!
//! A `put` with a blocked `get` hands the item straight to the earliest getter; a
//! `get` from a full queue lets the earliest blocked `put` in. Timeouts raise
//! `queue.Empty` / `queue.Full`. `join()` is answered once every item put has had
//! its `task_done()`.

use std::collections::VecDeque;

use super::size::{memory_error, value_bytes};
use super::waiters::{int_arg, queue_timeout, Wait, WaitQueue};
use crate::proto::{ObjectId, RemoteError, Value};
use crate::server::context::{CallId, Context, TimerId};
use crate::server::registry::{CallArgs, CallResult, Outcome, SharedObject, TypeSpec};
use crate::server::Server;

/// `queue.Queue`'s public methods, as CPython's server lists them.
const EXPOSED: &[&str] = &[
    "empty",
    "full",
    "get",
    "get_nowait",
    "join",
    "put",
    "put_nowait",
    "qsize",
    "task_done",
];

fn empty() -> RemoteError {
    RemoteError::new("queue.Empty", "")
}

fn full() -> RemoteError {
    RemoteError::new("queue.Full", "")
}

/// A shared FIFO queue, bounded when `maxsize > 0`.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    maxsize: i64,
    /// The type name of a `maxsize` that does not compare with an int (a str,
    /// say): queue.Queue takes it, and fails the calls that compare it.
    uncomparable: Option<String>,
    items: VecDeque<Value>,
    /// Blocked `get`s; only while `items` is empty.
    getters: WaitQueue<()>,
    /// Blocked `put`s with their items; only while the queue is full.
    putters: WaitQueue<Value>,
    /// Blocked `join`s; only while `unfinished > 0`.
    joiners: WaitQueue<()>,
    /// Items put and not yet marked done.
    unfinished: u64,
    /// Estimated bytes of the items and of the blocked putters' items.
    bytes: usize,
    addr: super::Addr,
}

impl Queue {
    fn new(mut args: CallArgs) -> Result<Queue, RemoteError> {
        args.check("Queue", 1, &["maxsize"])?;
        // queue.Queue stores any maxsize and compares it with ints later.
        let (maxsize, uncomparable) = match args.take(0, "maxsize") {
            None => (0, None),
            Some(v @ (Value::Int(_) | Value::Bool(_))) => (int_arg(&v)?, None),
            // Beyond 64 bits: never full when positive, unbounded when negative.
            Some(Value::BigInt(ref b)) if b.last().is_some_and(|&x| x & 0x80 != 0) => (0, None),
            Some(Value::BigInt(_)) => (i64::MAX, None),
            // Full at the first length >= maxsize.
            Some(Value::Float(f)) if f > 0.0 => (f.ceil().min(i64::MAX as f64) as i64, None),
            Some(Value::Float(_)) => (0, None),
            Some(other) => (0, Some(other.type_name().to_string())),
        };
        Ok(Queue {
            maxsize,
            uncomparable,
            ..Queue::default()
        })
    }

    /// The TypeError of comparing an uncomparable maxsize, as `op` would raise it
    /// (`'>'` in put: `maxsize > 0`, `'<'` in full: `0 < maxsize`).
    fn compare(&self, op: &str) -> Result<(), RemoteError> {
        match &self.uncomparable {
            None => Ok(()),
            Some(t) if op == ">" => Err(RemoteError::type_error(format!(
                "'>' not supported between instances of '{t}' and 'int'"
            ))),
            Some(t) => Err(RemoteError::type_error(format!(
                "'{op}' not supported between instances of 'int' and '{t}'"
            ))),
        }
    }

    fn is_full(&self) -> bool {
        self.maxsize > 0 && self.items.len() as u64 >= self.maxsize as u64
    }

    /// Puts `item` in now: to the earliest getter if one waits, else at the back.
    fn enter(&mut self, cx: &mut Context<'_>, item: Value) {
        self.unfinished += 1;
        while let Some(w) = self.getters.pop_front(cx) {
            // A getter's client that went away was forgotten already (on_cancel),
            // so this answer lands; the loop only guards against a stale handle.
            if cx.reply(w.handle, Ok(item.clone())) {
                return;
            }
        }
        self.bytes += value_bytes(&item);
        self.items.push_back(item);
    }

    /// Forgets the bytes of an item that left the queue or a putter.
    fn forget(&mut self, item: &Value) {
        self.bytes = self.bytes.saturating_sub(value_bytes(item));
    }

    fn put(&mut self, cx: &mut Context<'_>, item: Value, wait: Wait) -> CallResult {
        let stays = self.getters.len() == 0 || self.is_full();
        if stays {
            // Refused before anything changes when the server may not hold it.
            cx.check_growth(value_bytes(&item))?;
            self.items
                .try_reserve(1)
                .map_err(|_| memory_error("cannot allocate memory for one more item"))?;
        }
        if !self.is_full() {
            self.enter(cx, item);
            return Ok(Value::None.into());
        }
        if wait == Wait::Never {
            return Err(full());
        }
        self.bytes += value_bytes(&item);
        self.putters.defer(cx, wait, item);
        Ok(Outcome::Deferred)
    }

    fn get(&mut self, cx: &mut Context<'_>, wait: Wait) -> CallResult {
        if let Some(item) = self.items.pop_front() {
            self.forget(&item);
            while !self.is_full() {
                let Some(w) = self.putters.pop_front(cx) else {
                    break;
                };
                self.forget(&w.data);
                if cx.reply(w.handle, Ok(Value::None)) {
                    self.enter(cx, w.data);
                }
            }
            return Ok(item.into());
        }
        if wait == Wait::Never {
            return Err(empty());
        }
        self.getters.defer(cx, wait, ());
        Ok(Outcome::Deferred)
    }

    fn task_done(&mut self, cx: &mut Context<'_>) -> CallResult {
        if self.unfinished == 0 {
            return Err(RemoteError::value_error(
                "task_done() called too many times",
            ));
        }
        self.unfinished -= 1;
        if self.unfinished == 0 {
            for w in self.joiners.drain(cx) {
                cx.reply(w.handle, Ok(Value::None));
            }
        }
        Ok(Value::None.into())
    }
}

impl SharedObject for Queue {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, mut args: CallArgs) -> CallResult {
        match method {
            "put" => {
                args.check("put", 3, &["item", "block", "timeout"])?;
                let item = args.take(0, "item").ok_or_else(|| {
                    RemoteError::type_error(
                        "Queue.put() missing 1 required positional argument: 'item'",
                    )
                })?;
                let (block, timeout) = (args.take(1, "block"), args.take(2, "timeout"));
                self.compare(">")?;
                // CPython reads block and timeout only for a bounded queue.
                let wait = if self.maxsize > 0 {
                    queue_timeout(block, timeout)?
                } else {
                    Wait::Never
                };
                self.put(cx, item, wait)
            }
            "put_nowait" => {
                args.check("put_nowait", 1, &["item"])?;
                let item = args.take(0, "item").ok_or_else(|| {
                    RemoteError::type_error(
                        "Queue.put_nowait() missing 1 required positional argument: 'item'",
                    )
                })?;
                self.compare(">")?;
                self.put(cx, item, Wait::Never)
            }
            "get" => {
                args.check("get", 2, &["block", "timeout"])?;
                let wait = queue_timeout(args.take(0, "block"), args.take(1, "timeout"))?;
                self.get(cx, wait)
            }
            "get_nowait" => {
                args.check("get_nowait", 0, &[])?;
                self.get(cx, Wait::Never)
            }
            "qsize" => {
                args.check("qsize", 0, &[])?;
                Ok(Value::Int(self.items.len() as i64).into())
            }
            "empty" => {
                args.check("empty", 0, &[])?;
                Ok(Value::Bool(self.items.is_empty()).into())
            }
            "full" => {
                args.check("full", 0, &[])?;
                self.compare("<")?;
                Ok(Value::Bool(self.is_full()).into())
            }
            "task_done" => {
                args.check("task_done", 0, &[])?;
                self.task_done(cx)
            }
            "join" => {
                args.check("join", 0, &[])?;
                if self.unfinished == 0 {
                    return Ok(Value::None.into());
                }
                self.joiners.defer(cx, Wait::Forever, ());
                Ok(Outcome::Deferred)
            }
            other => Err(RemoteError::new(
                "AttributeError",
                format!("'Queue' object has no attribute '{other}'"),
            )),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if let Some(w) = self.getters.take_timer(timer) {
            cx.reply(w.handle, Err(empty()));
        } else if let Some(w) = self.putters.take_timer(timer) {
            self.forget(&w.data);
            cx.reply(w.handle, Err(full()));
        }
    }

    fn on_cancel(&mut self, cx: &mut Context<'_>, reply: CallId) {
        if self.getters.take_handle(cx, reply).is_some() {
            return;
        }
        match self.putters.take_handle(cx, reply) {
            Some(w) => self.forget(&w.data),
            None => {
                self.joiners.take_handle(cx, reply);
            }
        }
    }

    fn repr(&self) -> Option<String> {
        Some(format!("<queue.Queue object at {}>", self.addr))
    }

    fn get_value(&self) -> Result<Value, RemoteError> {
        Err(RemoteError::type_error(
            "cannot pickle '_thread.lock' object",
        ))
    }

    fn visit_refs(&self, f: &mut dyn FnMut(ObjectId)) {
        let mut each = |t: &crate::proto::Token| f(t.id);
        self.items.iter().for_each(|v| v.visit_refs(&mut each));
        self.putters
            .iter()
            .for_each(|w| w.data.visit_refs(&mut each));
    }

    fn held_bytes(&self) -> usize {
        self.bytes
    }
}

/// Registers `Queue` and `JoinableQueue`.
pub(crate) fn register(server: &mut Server) {
    for typeid in ["Queue", "JoinableQueue"] {
        server.register(
            TypeSpec::new(typeid, EXPOSED, |_, args| Ok(Box::new(Queue::new(args)?)))
                .reads_only(&["empty", "full", "qsize"]),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::waiters::harness::{conn, Harness, Now};
    use super::*;

    fn queue(maxsize: i64) -> Harness {
        let q = Queue::new(CallArgs::positional(vec![Value::Int(maxsize)])).unwrap();
        Harness::new(Box::new(q))
    }

    fn int(i: i64) -> Value {
        Value::Int(i)
    }

    #[test]
    fn any_maxsize_is_taken_and_compared_when_used() {
        // As queue.Queue: a str maxsize is stored; put and full fail comparing it,
        // the rest works.
        let q = Queue::new(CallArgs::positional(vec![Value::Str("2".into())])).unwrap();
        let mut h = Harness::new(Box::new(q));
        let put = h.call(0, "put", vec![int(1)]);
        assert_eq!(put, Now::Error("TypeError".into()));
        let put = h.call(0, "put_nowait", vec![int(1)]);
        assert_eq!(put, Now::Error("TypeError".into()));
        assert_eq!(h.call(0, "full", vec![]), Now::Error("TypeError".into()));
        assert_eq!(h.call(0, "qsize", vec![]), Now::Value(int(0)));
        assert_eq!(
            h.call(0, "get_nowait", vec![]),
            Now::Error("queue.Empty".into())
        );
        // A float bounds at the first length >= it.
        let q = Queue::new(CallArgs::positional(vec![Value::Float(2.5)])).unwrap();
        let mut h = Harness::new(Box::new(q));
        for i in 0..3 {
            assert_eq!(h.call(0, "full", vec![]), Now::Value(Value::Bool(false)));
            assert_eq!(
                h.call(0, "put_nowait", vec![int(i)]),
                Now::Value(Value::None)
            );
        }
        assert_eq!(h.call(0, "full", vec![]), Now::Value(Value::Bool(true)));
        // An int beyond 64 bits never fills.
        let big = Value::BigInt([vec![0; 9], vec![1]].concat());
        let q = Queue::new(CallArgs::positional(vec![big])).unwrap();
        assert_eq!(q.maxsize, i64::MAX);
        let negative = Value::BigInt([vec![0; 9], vec![0xff]].concat());
        let q = Queue::new(CallArgs::positional(vec![negative])).unwrap();
        assert_eq!(q.maxsize, 0);
    }

    #[test]
    fn put_hands_items_to_getters_in_order() {
        let mut h = queue(0);
        assert!(matches!(h.call(1, "get", vec![]), Now::Deferred(_)));
        assert!(matches!(h.call(2, "get", vec![]), Now::Deferred(_)));
        h.call(0, "put", vec![int(10)]);
        h.call(0, "put", vec![int(20)]);
        h.call(0, "put", vec![int(30)]);
        assert_eq!(
            h.replies(),
            vec![(conn(1), Ok(int(10))), (conn(2), Ok(int(20)))]
        );
        assert_eq!(h.call(0, "qsize", vec![]), Now::Value(int(1)));
        assert_eq!(h.call(0, "get_nowait", vec![]), Now::Value(int(30)));
        assert_eq!(
            h.call(0, "get_nowait", vec![]),
            Now::Error("queue.Empty".into())
        );
    }

    #[test]
    fn bounded_queue_blocks_putters_and_times_out() {
        let mut h = queue(1);
        h.call(0, "put", vec![int(1)]);
        assert_eq!(h.call(0, "full", vec![]), Now::Value(Value::Bool(true)));
        assert_eq!(
            h.call(0, "put", vec![int(2), Value::Bool(false)]),
            Now::Error("queue.Full".into())
        );
        assert_eq!(
            h.call(0, "put", vec![int(2), Value::Bool(true), int(-1)]),
            Now::Error("ValueError".into())
        );
        let kw = vec![("timeout", Value::Float(0.5))];
        assert!(matches!(
            h.call_kw(1, "put", vec![int(2)], kw),
            Now::Deferred(_)
        ));
        assert!(matches!(h.call(2, "put", vec![int(3)]), Now::Deferred(_)));
        h.advance(Duration::from_secs(1));
        let r = h.replies();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, conn(1));
        assert_eq!(r[0].1.as_ref().unwrap_err().kind, "queue.Full");
        assert_eq!(h.call(0, "get", vec![]), Now::Value(int(1)));
        assert_eq!(h.replies(), vec![(conn(2), Ok(Value::None))]);
        assert_eq!(h.call(0, "get", vec![]), Now::Value(int(3)));
        assert!(matches!(
            h.call(0, "get", vec![Value::Bool(true), Value::Float(0.1)]),
            Now::Deferred(_)
        ));
        h.advance(Duration::from_secs(1));
        let r = h.replies();
        assert_eq!(r[0].1.as_ref().unwrap_err().kind, "queue.Empty");
    }

    #[test]
    fn join_waits_for_every_task_done() {
        let mut h = queue(0);
        assert_eq!(h.call(0, "join", vec![]), Now::Value(Value::None));
        h.call(0, "put", vec![int(1)]);
        h.call(0, "put", vec![int(2)]);
        assert!(matches!(h.call(1, "join", vec![]), Now::Deferred(_)));
        h.call(0, "get", vec![]);
        h.call(0, "task_done", vec![]);
        assert!(h.replies().is_empty());
        h.call(0, "task_done", vec![]);
        assert_eq!(h.replies(), vec![(conn(1), Ok(Value::None))]);
        assert_eq!(
            h.call(0, "task_done", vec![]),
            Now::Error("ValueError".into())
        );
    }

    #[test]
    fn a_cancelled_getter_does_not_swallow_an_item() {
        let mut h = queue(0);
        let gone = match h.call(1, "get", vec![]) {
            Now::Deferred(g) => g,
            other => panic!("{other:?}"),
        };
        assert!(matches!(h.call(2, "get", vec![]), Now::Deferred(_)));
        h.cancel(gone);
        h.call(0, "put", vec![int(7)]);
        assert_eq!(h.replies(), vec![(conn(2), Ok(int(7)))]);
    }
}
