//! The server's socket-free state (`Core`) and the [`Context`] every object
//! callback receives.
//!
//! `Core` owns the object table, the type registry, deferred replies awaiting an
//! answer, timers, and the completions waiting to be written to their connections.
//! It never touches a socket: completed replies go to `outbox`, and the reactor
//! delivers them once the callback that produced them has returned.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use slab::Slab;

use super::builtins::size;
use super::fasthash::FastMap;
use super::guard;
use super::loans::Loans;
use super::objects::{held_bytes_of, ObjectTable, Slot};
use super::peer::Peer;
use super::procs::Procs;
use super::registry::{CallArgs, Registry, SharedObject, TypeSpec};
use super::segments::Segments;
use super::stats::{self, Counters, ServerStats};
use super::ServerConfig;
use crate::proto::frame::DEFAULT_MAX_FRAME;
use crate::proto::{ObjectId, RemoteError, Token, Value};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) u64);

        impl $name {
            pub(crate) fn new(index: usize, generation: u32) -> $name {
                $name((u64::from(generation) << 32) | index as u64)
            }
            pub(crate) fn index(self) -> usize {
                self.0 as u32 as usize
            }
            pub(crate) fn generation(self) -> u32 {
                (self.0 >> 32) as u32
            }
            /// The raw 64-bit value (for handing across the C ABI).
            pub fn to_raw(self) -> u64 {
                self.0
            }
            /// Rebuilds an id from [`to_raw`](Self::to_raw); a forged value is just unknown.
            pub fn from_raw(raw: u64) -> $name {
                $name(raw)
            }
        }
    };
}

id_type!(
    /// A client connection: slab index plus generation, so a closed connection's id
    /// never names a later one.
    ConnId
);
id_type!(
    /// The identity of a deferred call: what [`SharedObject::on_cancel`] names
    /// and what an object keys its waiters by. It answers nothing; the call's
    /// [`ReplyHandle`] does.
    CallId
);

/// Work handed to the server from [`ReplyHandle`]s and
/// [`ServerHandle`](super::ServerHandle)s, possibly on other threads.
#[derive(Debug)]
pub(crate) enum Command {
    Complete(CallId, Result<Value, RemoteError>),
    /// A handle was dropped unanswered: answer RuntimeError (if still waiting).
    Dropped(CallId),
    Shutdown,
}

/// The server's mailbox, shared with its handles on any thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    queue: Mutex<Vec<Command>>,
    /// Wakes the server's fd (set once its poll exists; unit tests have none).
    pub(crate) waker: OnceLock<mio::Waker>,
}

impl Shared {
    /// Queues `c` and wakes the server when the queue was empty (a non-empty
    /// queue has a wake pending already: it is drained whole, after the wake).
    pub(crate) fn send(&self, c: Command) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = q.is_empty();
        q.push(c);
        drop(q);
        if was_empty {
            if let Some(w) = self.waker.get() {
                let _ = w.wake();
            }
        }
    }

    fn take(&self) -> Vec<Command> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The answer to one deferred call, from [`Context::defer`]: an owned handle
/// that answers exactly once. Every way to answer it ([`Context::reply`] on
/// the server's thread, [`Server::complete`](super::Server::complete),
/// [`ReplyHandle::answer`] from any thread) consumes it, so a second answer does
/// not compile:
///
/// ```compile_fail,E0382
/// # use mgr::server::{Context, ReplyHandle};
/// # use mgr::Value;
/// fn twice(cx: &mut Context<'_>, h: ReplyHandle) {
///     cx.reply(h, Ok(Value::Int(1)));
///     cx.reply(h, Ok(Value::Int(2))); // error[E0382]: use of moved value: `h`
/// }
/// ```
///
/// It is not `Clone` or `Copy`; it is `Send`, so it may be answered from
/// another thread. Dropping it unanswered answers the caller with a
/// `RuntimeError` ("the deferred reply was dropped unanswered"), as C's
/// `mgr_reply_free` does, so no client waits forever on a forgotten call. An
/// answer to a call whose client has gone, or that the call's own return value
/// answered, is dropped harmlessly.
///
/// Keep it with what the call waits for, keyed by its [`id`](Self::id) if
/// [`SharedObject::on_cancel`] should find it:
///
/// ```
/// use mgr::server::{CallArgs, CallResult, Context, Outcome, ReplyHandle, SharedObject};
/// use mgr::Value;
///
/// /// `wait()` returns when someone calls `open()`.
/// #[derive(Default)]
/// struct Gate {
///     waiting: Vec<ReplyHandle>,
/// }
///
/// impl SharedObject for Gate {
///     fn call(&mut self, cx: &mut Context<'_>, method: &str, _: CallArgs) -> CallResult {
///         match method {
///             "wait" => {
///                 self.waiting.push(cx.defer());
///                 Ok(Outcome::Deferred)
///             }
///             _ => {
///                 let n = self.waiting.len();
///                 for h in self.waiting.drain(..) {
///                     cx.reply(h, Ok(Value::Bool(true)));
///                 }
///                 Ok(Value::from(n).into())
///             }
///         }
///     }
/// }
/// ```
pub struct ReplyHandle {
    id: CallId,
    /// The server's mailbox; taken when the handle answers.
    server: Option<Arc<Shared>>,
}

impl fmt::Debug for ReplyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReplyHandle").field(&self.id).finish()
    }
}

impl ReplyHandle {
    /// The call this handle answers.
    pub fn id(&self) -> CallId {
        self.id
    }

    /// Answers the call from any thread: the answer is queued and the server's
    /// fd woken; the server writes it on its next turn (an answer to a call
    /// whose client has gone is dropped there). On the server's own thread,
    /// [`Context::reply`] answers at once.
    ///
    /// # Examples
    ///
    /// A method whose work runs on a thread of its own, without holding up the
    /// server:
    ///
    /// ```
    /// use mgr::server::{CallArgs, CallResult, Context, Outcome, SharedObject};
    /// use mgr::{RemoteError, Value};
    ///
    /// struct Hasher;
    /// impl SharedObject for Hasher {
    ///     fn call(&mut self, cx: &mut Context<'_>, _: &str, args: CallArgs) -> CallResult {
    ///         let (data,): (Vec<i64>,) = args.extract()?;
    ///         let reply = cx.defer();
    ///         std::thread::spawn(move || {
    ///             let sum: i64 = data.iter().sum(); // the slow part
    ///             reply.answer(Ok(Value::Int(sum)));
    ///         });
    ///         Ok(Outcome::Deferred)
    ///     }
    /// }
    /// ```
    pub fn answer(mut self, result: Result<Value, RemoteError>) {
        if let Some(s) = self.server.take() {
            s.send(Command::Complete(self.id, result));
        }
    }

    /// Takes the handle's mailbox if it is `core`'s own (so the caller answers
    /// directly); a handle of another server is answered through its mailbox.
    fn claim(
        mut self,
        core: &Core,
        result: Result<Value, RemoteError>,
    ) -> Option<(CallId, Result<Value, RemoteError>)> {
        let s = self.server.take()?;
        if Arc::ptr_eq(&s, &core.shared) {
            Some((self.id, result))
        } else {
            s.send(Command::Complete(self.id, result));
            None
        }
    }
}

impl Drop for ReplyHandle {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.send(Command::Dropped(self.id));
        }
    }
}

/// A timer set by an object; delivered to its `on_timer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub(crate) u64);

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerTarget {
    /// An object's own timer.
    Object(ObjectId),
    /// A connection's handshake deadline.
    Handshake(ConnId),
    /// Try accepting again after running out of descriptors.
    Accept,
    /// Give back references lent to replies (see `loans`).
    Loans,
    /// Check the client processes watched without a pidfd (see `procs`).
    Processes,
}

struct Pending {
    generation: u32,
    conn: Option<ConnId>,
    object: ObjectId,
    proxy: Option<Rc<str>>,
}

/// A deferred call's answer, on its way to the connection that asked.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) conn: ConnId,
    /// The call it answers: delivered only while its connection waits on
    /// that call.
    pub(crate) handle: Option<CallId>,
    /// The typeid the value becomes (method_to_typeid), if any.
    pub(crate) proxy: Option<Rc<str>>,
    pub(crate) result: Result<Value, RemoteError>,
}

/// Timers in a heap, cancelled lazily.
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: FastMap<u64, TimerTarget>,
    next: u64,
}

/// The bounds on what calls may build and hold (from [`ServerConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Largest estimated result of one call (a repeat, a copy …): `max_frame`.
    pub(crate) max_result: usize,
    /// Cap on the bytes all objects hold together.
    pub(crate) max_held_bytes: Option<usize>,
    /// Cap on the live objects one connection created.
    pub(crate) max_objects_per_conn: Option<usize>,
    /// Which globals values in requests may name.
    pub(crate) globals: crate::proto::codec::Globals,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_result: DEFAULT_MAX_FRAME as usize,
            max_held_bytes: None,
            max_objects_per_conn: None,
            globals: crate::proto::codec::Globals::Default,
        }
    }
}

impl Limits {
    pub(crate) fn of(config: &ServerConfig) -> Limits {
        Limits {
            max_result: usize::try_from(config.max_frame).unwrap_or(usize::MAX),
            max_held_bytes: config.max_held_bytes,
            max_objects_per_conn: config.max_objects_per_conn,
            globals: config.globals,
        }
    }
}

/// The server's state apart from sockets.
pub(crate) struct Core {
    pub(crate) objects: ObjectTable,
    pub(crate) registry: Registry,
    pending: Slab<Pending>,
    pending_generation: u32,
    timers: Timers,
    /// Answers of deferred calls, to be written by the reactor.
    pub(crate) outbox: Vec<Completion>,
    watchers: FastMap<ConnId, Vec<ObjectId>>,
    pub(crate) shutdown_requested: bool,
    pub(crate) now: Instant,
    /// Shared-memory segments unlinked at shutdown.
    pub(crate) segments: Segments,
    /// References lent to replies in flight.
    pub(crate) loans: Loans,
    /// What calls may build and hold.
    pub(crate) limits: Limits,
    /// What the reactor and the dispatcher count (see `stats`).
    pub(crate) stats: Counters,
    /// Who is behind each open connection (read at accept).
    pub(crate) peers: FastMap<ConnId, Peer>,
    /// The mailbox [`ReplyHandle`]s and `ServerHandle`s answer through.
    pub(crate) shared: Arc<Shared>,
    /// Client processes holding references, locks or places (see `procs`).
    pub(crate) procs: Procs,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("objects", &self.objects)
            .field("pending", &self.pending.len())
            .field("timers", &self.timers.live.len())
            .finish_non_exhaustive()
    }
}

/// When to recount the references an object holds after one of its callbacks
/// (besides when the callback says so with [`Context::refs_changed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recount {
    /// Always: the call's arguments carried references it may have stored.
    Always,
    /// If it holds any: it may have let go of some.
    IfHolding,
    /// Never on its own: a method declared reads-only.
    IfAsked,
    /// No recount: it now holds these references (from its arguments) more,
    /// and lets go of none — a method declared adds-only. (If the callback
    /// failed, the caller recounts.)
    Added(Vec<ObjectId>),
}

/// Why an object could not be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// No such object (never existed, or destroyed).
    Unknown,
    /// A callback of the same object is running (a re-entrant call).
    Busy,
    /// This callback panicked (the message); the object is now broken.
    Panicked(Rc<str>),
    /// An earlier callback panicked (its message); the object is not called again.
    Broken(Rc<str>),
}

impl Core {
    pub(crate) fn new() -> Core {
        Core {
            objects: ObjectTable::default(),
            registry: Registry::default(),
            pending: Slab::new(),
            pending_generation: 0,
            timers: Timers::default(),
            outbox: Vec::new(),
            watchers: FastMap::default(),
            shutdown_requested: false,
            segments: Segments::default(),
            loans: Loans::default(),
            now: Instant::now(),
            limits: Limits::default(),
            stats: Counters::default(),
            peers: FastMap::default(),
            procs: Procs::default(),
            shared: Arc::default(),
        }
    }

    /// Takes in what handles sent from anywhere: answers (a dropped handle's
    /// is a RuntimeError) and a shutdown request.
    pub(crate) fn drain_commands(&mut self) {
        for c in self.shared.take() {
            match c {
                Command::Complete(h, result) => {
                    self.complete(h, result);
                }
                Command::Dropped(h) => {
                    self.complete(h, Err(dropped_unanswered()));
                }
                Command::Shutdown => self.shutdown_requested = true,
            }
        }
    }

    /// A snapshot of the counters (one pass over the objects for the
    /// by-typeid counts).
    pub(crate) fn snapshot(&self) -> ServerStats {
        let c = &self.stats;
        ServerStats {
            connections_open: c.open,
            connections_preauth: c.preauth,
            connections_accepted: c.accepted,
            connections_refused: c.refused,
            preauth_dropped: c.preauth_dropped,
            auth_failures: c.auth_failures,
            requests_served: c.served,
            errors: c.errors,
            protocol_errors: c.protocol_errors,
            bytes_in: c.io.bytes_in.get(),
            bytes_out: c.io.bytes_out.get(),
            deferred_pending: self.pending.len() as u64,
            objects: self.objects.len() as u64,
            objects_by_type: stats::count_by_type(
                self.objects.iter().map(|(_, slot)| slot.spec.typeid()),
            ),
            held_bytes: self.objects.held_bytes() as u64,
            loans: self.loans.lent().map(|(_, n)| u64::from(n)).sum(),
            timers: self.timers.live.len() as u64,
            turns: c.turns,
            longest_turn: c.longest_turn,
            gc_collections: self.objects.gc.collections,
            gc_freed: self.objects.gc.freed,
            gc_longest_step: self.objects.gc.longest_step,
        }
    }

    /// A context for code running on behalf of `conn` but not inside an object.
    pub(crate) fn context(&mut self, conn: Option<ConnId>) -> Context<'_> {
        Context {
            core: self,
            conn,
            this: None,
            proxy: None,
            deferred: None,
            refs_changed: false,
        }
    }

    /// Checks the object out, runs `f` on it with a context, checks it back in and
    /// brings the table's count of the references it holds up to date.
    ///
    /// `f` runs inside the panic boundary: a panic marks the object broken (see
    /// [`break_object`](Self::break_object)), drops the reply handle the call
    /// may have taken and comes back as [`Unavailable::Panicked`]. A broken object
    /// is not called at all.
    pub(crate) fn with_object<R>(
        &mut self,
        id: ObjectId,
        conn: Option<ConnId>,
        proxy: Option<Rc<str>>,
        recount: Recount,
        f: impl FnOnce(&mut dyn SharedObject, &mut Context<'_>) -> R,
    ) -> Result<(R, Option<CallId>), Unavailable> {
        let slot = self.objects.get_mut(id).ok_or(Unavailable::Unknown)?;
        if let Some(why) = &slot.broken {
            return Err(Unavailable::Broken(why.clone()));
        }
        let mut object = slot.object.take().ok_or(Unavailable::Busy)?;
        let mut cx = Context {
            core: self,
            conn,
            this: Some(id),
            proxy,
            deferred: None,
            refs_changed: false,
        };
        let r = guard::catch(|| f(&mut *object, &mut cx));
        let (deferred, refs_changed) = (cx.deferred, cx.refs_changed);
        let slot = self.objects.check_in(id, object);
        let rescan = refs_changed
            || match &recount {
                Recount::Always => true,
                Recount::IfHolding => !slot.holds.is_empty(),
                Recount::IfAsked | Recount::Added(_) => false,
            };
        if slot.refcount == 0 {
            self.objects.recheck(id);
        }
        if rescan {
            self.rescan_refs(id);
        } else if let (Recount::Added(refs), Ok(_)) = (recount, &r) {
            self.hold_more(id, refs);
        }
        match r {
            Ok(r) => Ok((r, deferred)),
            Err(why) => {
                if let Some(h) = deferred {
                    self.discard(h);
                }
                let why: Rc<str> = why.into();
                self.break_object(id, why.clone());
                Err(Unavailable::Panicked(why))
            }
        }
    }

    /// Quarantines an object whose callback panicked: its state may be
    /// half-updated, so it is never called again (calls get a RuntimeError
    /// naming the panic), and the deferred calls waiting on it are answered with
    /// that error rather than left hanging. Its references and refcount are kept:
    /// clients release it as usual and the sweep drops it.
    pub(crate) fn break_object(&mut self, id: ObjectId, why: Rc<str>) {
        let Some(slot) = self.objects.get_mut(id) else {
            return;
        };
        if slot.broken.is_some() {
            return;
        }
        slot.broken = Some(why.clone());
        let typeid = slot.spec.typeid_rc();
        self.fail_pending_of(id, || {
            format!("shared object {id} ({typeid}) broke while the call waited: a callback panicked: {why}")
        });
    }

    /// Object `id` now holds `refs` as well: counts each in (a sorted insert
    /// into what it holds), without visiting what it held already.
    fn hold_more(&mut self, id: ObjectId, refs: Vec<ObjectId>) {
        for r in refs {
            if self.objects.incref(r) {
                if let Some(slot) = self.objects.get_mut(id) {
                    let at = slot.holds.partition_point(|h| *h <= r);
                    slot.holds.insert(at, r);
                }
            }
        }
    }

    /// Recounts the references object `id` holds, increfing new ones and decrefing
    /// the ones it let go of.
    pub(crate) fn rescan_refs(&mut self, id: ObjectId) {
        let Some(slot) = self.objects.get(id) else {
            return;
        };
        let Some(object) = slot.object.as_ref() else {
            return;
        };
        let mut now = Vec::new();
        if let Err(why) = guard::catch(|| object.visit_refs(&mut |r| now.push(r))) {
            // Keep the counts as they were: what it holds is unknown now.
            self.break_object(id, why.into());
            return;
        }
        now.sort_unstable();
        let before = std::mem::take(&mut self.objects.get_mut(id).expect("live").holds);
        let mut kept = Vec::with_capacity(now.len());
        let (mut i, mut j) = (0, 0);
        while i < before.len() || j < now.len() {
            match (before.get(i), now.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    kept.push(*a);
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a < b => {
                    self.objects.decref(*a);
                    i += 1;
                }
                (Some(a), None) => {
                    self.objects.decref(*a);
                    i += 1;
                }
                (_, Some(b)) => {
                    if self.objects.incref(*b) {
                        kept.push(*b);
                    }
                    j += 1;
                }
                (None, None) => unreachable!(),
            }
        }
        if let Some(slot) = self.objects.get_mut(id) {
            slot.holds = kept;
        }
    }

    /// Drops every object whose last reference went, after running its destroy
    /// hook, and releases what it held (which may free more).
    pub(crate) fn sweep(&mut self) {
        while let Some((id, slot)) = self.objects.pop_dead() {
            for held in self.destroy(id, slot) {
                self.objects.decref(held);
            }
        }
    }

    /// Runs the destroy hook of an object taken out of the table, drops it and
    /// fails the calls waiting on it; returns the references it held, for the
    /// caller to release.
    pub(crate) fn destroy(&mut self, id: ObjectId, mut slot: Slot) -> Vec<ObjectId> {
        if let Some(mut object) = slot.object.take() {
            let mut cx = self.context(None);
            cx.this = Some(id);
            // A panicking destroy hook or Drop costs only this object.
            let _ = guard::catch(|| object.on_destroy(&mut cx));
            let _ = guard::catch(move || drop(object));
        }
        self.fail_pending_of(id, || {
            format!("shared object {id} was destroyed while the call waited")
        });
        std::mem::take(&mut slot.holds)
    }

    /// The objects deferred calls wait on (roots for the cycle collector).
    pub(crate) fn pending_objects(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.pending.iter().map(|(_, p)| p.object)
    }

    /// Deferred calls waiting on a destroyed or broken object get an error
    /// (RuntimeError, `why`), not silence.
    fn fail_pending_of(&mut self, id: ObjectId, why: impl Fn() -> String) {
        let orphans: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| p.object == id)
            .map(|(k, _)| k)
            .collect();
        for k in orphans {
            let p = self.pending.remove(k);
            if let Some(conn) = p.conn {
                self.outbox.push(Completion {
                    conn,
                    handle: Some(CallId::new(k, p.generation)),
                    proxy: None,
                    result: Err(RemoteError::new("RuntimeError", why())),
                });
            }
        }
    }

    pub(crate) fn defer(
        &mut self,
        conn: Option<ConnId>,
        object: ObjectId,
        proxy: Option<Rc<str>>,
    ) -> CallId {
        self.pending_generation = self.pending_generation.wrapping_add(1);
        let generation = self.pending_generation;
        self.objects.touch(object);
        let index = self.pending.insert(Pending {
            generation,
            conn,
            object,
            proxy,
        });
        CallId::new(index, generation)
    }

    /// An owned handle answering call `id` through this server's mailbox.
    pub(crate) fn handle(&self, id: CallId) -> ReplyHandle {
        ReplyHandle {
            id,
            server: Some(self.shared.clone()),
        }
    }

    /// Answers the call `handle` answers (at once when it is this server's;
    /// a handle of another server is answered through that server's mailbox,
    /// and false returned).
    pub(crate) fn answer(
        &mut self,
        handle: ReplyHandle,
        result: Result<Value, RemoteError>,
    ) -> bool {
        match handle.claim(self, result) {
            Some((id, result)) => self.complete(id, result),
            None => false,
        }
    }

    fn take_pending(&mut self, h: CallId) -> Option<Pending> {
        let live = self
            .pending
            .get(h.index())
            .is_some_and(|p| p.generation == h.generation());
        live.then(|| self.pending.remove(h.index()))
    }

    /// Answers a deferred call. False when the handle is stale (answered already,
    /// or its client has gone).
    pub(crate) fn complete(&mut self, h: CallId, result: Result<Value, RemoteError>) -> bool {
        let Some(p) = self.take_pending(h) else {
            return false;
        };
        match p.conn {
            Some(conn) => {
                if let Ok(v) = &result {
                    self.lend(v);
                }
                self.outbox.push(Completion {
                    conn,
                    handle: Some(h),
                    proxy: p.proxy,
                    result,
                });
                true
            }
            None => false,
        }
    }

    /// Lends one reference to every object `v` names, for the grace period, so a
    /// reply on its way keeps them alive until the receiver takes its own.
    pub(crate) fn lend(&mut self, v: &Value) {
        if !v.has_refs() {
            return;
        }
        let mut ids = Vec::new();
        v.visit_refs(&mut |t| ids.push(t.id));
        for id in ids {
            if self.objects.incref(id) {
                self.loans.push(self.now, id);
            }
        }
        if self.loans.timer.is_none() {
            if let Some(due) = self.loans.next_due() {
                self.loans.timer = Some(self.add_timer(due, TimerTarget::Loans));
            }
        }
    }

    /// Gives back the loans that are due (their timer fired), and re-arms the
    /// timer for the next one.
    pub(crate) fn repay_loans(&mut self) {
        self.loans.timer = None;
        while let Some(id) = self.loans.pop_due(self.now) {
            self.objects.decref(id);
        }
        if let Some(due) = self.loans.next_due() {
            self.loans.timer = Some(self.add_timer(due, TimerTarget::Loans));
        }
    }

    /// Live objects that something other than an in-flight reply holds: what
    /// `number_of_objects` reports, as CPython counts its objects. An object that
    /// only a reply's grace keeps alive is on its way out and is not counted,
    /// nor is what only such objects hold (see `gc`).
    pub(crate) fn held_objects(&self) -> usize {
        self.objects.len() - self.on_loan_only()
    }

    /// Gives back every loan now (at shutdown, so the sweep can free everything).
    pub(crate) fn repay_all_loans(&mut self) {
        if let Some(t) = self.loans.timer {
            self.cancel_timer(t);
        }
        let ids: Vec<ObjectId> = self.loans.drain().collect();
        for id in ids {
            self.objects.decref(id);
        }
    }

    /// Forgets a deferred call whose client is gone, telling the object so.
    pub(crate) fn cancel(&mut self, h: CallId) {
        if let Some(p) = self.take_pending(h) {
            let _ = self.with_object(p.object, None, None, Recount::IfHolding, |o, cx| {
                o.on_cancel(cx, h)
            });
        }
    }

    /// Drops a handle that was taken but not used: the call answered by
    /// returning (or panicked). An answer given through the handle before the
    /// call returned is a second answer: it is taken back out of the outbox,
    /// never sent, so the call's own result is its only answer. True when there
    /// was one to take back.
    pub(crate) fn discard(&mut self, h: CallId) -> bool {
        if self.take_pending(h).is_some() {
            return false;
        }
        match self.outbox.iter().rposition(|c| c.handle == Some(h)) {
            Some(i) => {
                // Loans of the refused value are repaid by their timer as usual.
                self.outbox.remove(i);
                true
            }
            None => false,
        }
    }

    /// Number of deferred calls awaiting an answer.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn add_timer(&mut self, deadline: Instant, target: TimerTarget) -> TimerId {
        let t = &mut self.timers;
        t.next += 1;
        t.heap.push(Reverse((deadline, t.next)));
        t.live.insert(t.next, target);
        TimerId(t.next)
    }

    pub(crate) fn cancel_timer(&mut self, id: TimerId) {
        self.timers.live.remove(&id.0);
    }

    /// The earliest live timer's deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        let t = &mut self.timers;
        while let Some(Reverse((when, id))) = t.heap.peek() {
            if t.live.contains_key(id) {
                return Some(*when);
            }
            t.heap.pop();
        }
        None
    }

    /// Removes and returns one timer due at `now`.
    pub(crate) fn pop_due_timer(&mut self, now: Instant) -> Option<(TimerId, TimerTarget)> {
        let t = &mut self.timers;
        while let Some(Reverse((when, id))) = t.heap.peek().copied() {
            if when > now {
                return None;
            }
            t.heap.pop();
            if let Some(target) = t.live.remove(&id) {
                return Some((TimerId(id), target));
            }
        }
        None
    }

    /// Objects watching `conn` for its disconnection.
    pub(crate) fn take_watchers(&mut self, conn: ConnId) -> Vec<ObjectId> {
        self.watchers.remove(&conn).unwrap_or_default()
    }

    /// Builds a new object of `typeid` (refcount zero: the caller takes a reference).
    pub(crate) fn construct(
        &mut self,
        conn: Option<ConnId>,
        typeid: &str,
        args: CallArgs,
    ) -> Result<ObjectId, RemoteError> {
        let spec = self
            .registry
            .get(typeid)
            .cloned()
            .ok_or_else(|| RemoteError::value_error(format!("unknown typeid '{typeid}'")))?;
        self.check_owner(conn)?;
        let has_refs = args.has_refs();
        let constructor = spec.constructor();
        let mut cx = self.context(conn);
        let built = guard::catch(|| constructor(&mut cx, args));
        // A constructor answers by returning: a handle it took answers nothing
        // (its caller waits for the new object, not for the handle).
        if let Some(h) = cx.deferred {
            self.discard(h);
        }
        let object = built.map_err(|why| {
            RemoteError::new(
                "RuntimeError",
                format!("creating a '{typeid}' failed: its constructor panicked: {why}"),
            )
        })??;
        let id = self.admit(conn, spec, object)?;
        if has_refs {
            self.rescan_refs(id);
        }
        Ok(id)
    }

    /// Refuses a creation on behalf of `conn` once it has as many live objects
    /// as `max_objects_per_conn` allows.
    fn check_owner(&self, conn: Option<ConnId>) -> Result<(), RemoteError> {
        if let (Some(max), Some(c)) = (self.limits.max_objects_per_conn, conn) {
            let n = self.objects.owned_by(c);
            if n >= max {
                return Err(size::memory_error(format!(
                    "this connection has created {n} live shared objects, the server's limit (max_objects_per_conn = {max})"
                )));
            }
        }
        Ok(())
    }

    /// Puts a new object in the table on behalf of `conn`, or drops it and
    /// fails when it would take the held bytes past `max_held_bytes` or `conn`
    /// past `max_objects_per_conn`.
    pub(crate) fn admit(
        &mut self,
        conn: Option<ConnId>,
        spec: Rc<TypeSpec>,
        object: Box<dyn SharedObject>,
    ) -> Result<ObjectId, RemoteError> {
        let bytes = held_bytes_of(&*object, 0);
        let fits = self
            .check_owner(conn)
            .and_then(|()| self.check_growth(bytes));
        if let Err(e) = fits {
            // A panicking Drop costs only this object.
            let _ = guard::catch(move || drop(object));
            return Err(e);
        }
        Ok(self.objects.insert_owned(spec, object, conn, bytes))
    }

    /// Fails with `MemoryError` when `more` bytes held would take the total
    /// past `max_held_bytes`.
    pub(crate) fn check_growth(&self, more: usize) -> Result<(), RemoteError> {
        let Some(cap) = self.limits.max_held_bytes else {
            return Ok(());
        };
        let total = self.objects.held_bytes().saturating_add(more);
        if more > 0 && total > cap {
            return Err(size::memory_error(format!(
                "shared objects would hold about {total} bytes, over the server's limit of {cap} bytes (max_held_bytes)"
            )));
        }
        Ok(())
    }
}

/// The error a caller gets when the handle of its deferred call was dropped
/// unanswered.
pub(crate) fn dropped_unanswered() -> RemoteError {
    RemoteError::new(
        "RuntimeError",
        "the deferred reply was dropped unanswered (its ReplyHandle was dropped)",
    )
}

/// What a callback may do besides computing its result: defer its answer
/// ([`defer`](Self::defer)) and answer deferred calls ([`reply`](Self::reply)),
/// set timers, create objects, check size limits, and see who is calling.
///
/// A context lives for one callback, on the server's thread.
///
/// # Examples
///
/// A lease: `take()` hands the caller a lease that runs out after a second
/// unless renewed; the timer answers the waiting `expired()` calls.
///
/// ```
/// use std::time::Duration;
/// use mgr::server::{CallArgs, CallResult, Context, Outcome, ReplyHandle, SharedObject, TimerId};
/// use mgr::{RemoteError, Value};
///
/// #[derive(Default)]
/// struct Lease {
///     timer: Option<TimerId>,
///     watchers: Vec<ReplyHandle>,
/// }
///
/// impl SharedObject for Lease {
///     fn call(&mut self, cx: &mut Context<'_>, method: &str, _: CallArgs) -> CallResult {
///         match method {
///             "take" => {
///                 if let Some(t) = self.timer.take() {
///                     cx.cancel_timer(t);
///                 }
///                 self.timer = Some(cx.set_timer(Duration::from_secs(1)));
///                 let who = cx.peer().map(|p| p.addr.to_string()).unwrap_or_default();
///                 Ok(Value::from(who).into())
///             }
///             "expired" => {
///                 self.watchers.push(cx.defer());
///                 Ok(Outcome::Deferred)
///             }
///             _ => Err(RemoteError::new("AttributeError", method)),
///         }
///     }
///
///     fn on_timer(&mut self, cx: &mut Context<'_>, _: TimerId) {
///         self.timer = None;
///         for h in self.watchers.drain(..) {
///             cx.reply(h, Ok(Value::Bool(true)));
///         }
///     }
/// }
/// ```
pub struct Context<'a> {
    core: &'a mut Core,
    conn: Option<ConnId>,
    this: Option<ObjectId>,
    proxy: Option<Rc<str>>,
    deferred: Option<CallId>,
    refs_changed: bool,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("conn", &self.conn)
            .field("this", &self.this)
            .finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// The connection whose request is running; `None` in timer, cancel and destroy
    /// callbacks.
    pub fn conn(&self) -> Option<ConnId> {
        self.conn
    }

    /// Who sent the running request: the connection's id, its address and, on
    /// a Unix socket, the peer's pid, uid and gid (read once at accept).
    /// `None` where [`conn`](Self::conn) is.
    pub fn peer(&self) -> Option<&Peer> {
        self.conn.and_then(|c| self.core.peers.get(&c))
    }

    /// The object whose callback is running; `None` inside a constructor.
    pub fn object_id(&self) -> Option<ObjectId> {
        self.this
    }

    /// The time the reactor last read the clock (cheaper than `Instant::now`).
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// Defers the running call's answer: take the handle, return
    /// [`Outcome::Deferred`] from `call`, and answer later through the handle
    /// ([`reply`](Self::reply) here, [`ReplyHandle::answer`] from anywhere). The
    /// connection's later requests wait until then, in order. Dropping the handle
    /// unanswered answers the caller with a `RuntimeError`.
    ///
    /// A call has one answer: if `call` returns anything but
    /// [`Outcome::Deferred`] (a value, an object, an error), that is the answer,
    /// and an answer already given through the handle is taken back, never sent.
    ///
    /// # Panics
    ///
    /// If the running call has deferred already (one handle per call). The
    /// panic is caught at the callback's boundary, like any other: the call
    /// fails with a `RuntimeError` and the object is marked broken. (Outside a
    /// call — a timer, cancel or destroy callback — the handle answers no one.)
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::server::{CallArgs, CallResult, Context, Outcome, SharedObject};
    /// use mgr::Value;
    ///
    /// /// `later()` is answered by the next call of `now()`.
    /// #[derive(Default)]
    /// struct Later(Option<mgr::server::ReplyHandle>);
    ///
    /// impl SharedObject for Later {
    ///     fn call(&mut self, cx: &mut Context<'_>, method: &str, _: CallArgs) -> CallResult {
    ///         if method == "later" {
    ///             self.0 = Some(cx.defer());
    ///             return Ok(Outcome::Deferred);
    ///         }
    ///         if let Some(h) = self.0.take() {
    ///             cx.reply(h, Ok(Value::from("answered")));
    ///         }
    ///         Ok(Value::None.into())
    ///     }
    /// }
    /// ```
    ///
    /// [`Outcome::Deferred`]: super::registry::Outcome::Deferred
    #[must_use = "dropping the handle answers the call with a RuntimeError"]
    pub fn defer(&mut self) -> ReplyHandle {
        assert!(
            self.deferred.is_none(),
            "Context::defer called twice in one call: a call has one ReplyHandle"
        );
        let object = self.this.unwrap_or(ObjectId(u64::MAX));
        let id = self.core.defer(self.conn, object, self.proxy.clone());
        self.deferred = Some(id);
        self.core.handle(id)
    }

    /// Answers a deferred call now, consuming its handle. Returns false when
    /// the answer goes nowhere: the client has gone, or the object broke or was
    /// destroyed meanwhile (its caller got a `RuntimeError` then). Answering
    /// the running call's own handle before `call` returns counts only if
    /// `call` then returns
    /// [`Outcome::Deferred`](super::registry::Outcome::Deferred) (see
    /// [`defer`](Self::defer)). A handle of another server is answered through
    /// that server (and false returned).
    pub fn reply(&mut self, handle: ReplyHandle, result: Result<Value, RemoteError>) -> bool {
        self.core.answer(handle, result)
    }

    /// Calls this object's `on_timer` after `after`; cancel with
    /// [`cancel_timer`](Self::cancel_timer). Inside a constructor (no object yet)
    /// the timer is never delivered.
    pub fn set_timer(&mut self, after: Duration) -> TimerId {
        let deadline = self.core.now + after;
        let target = TimerTarget::Object(self.this.unwrap_or(ObjectId(u64::MAX)));
        self.core.add_timer(deadline, target)
    }

    /// Cancels a timer; cancelling a fired or unknown timer does nothing.
    pub fn cancel_timer(&mut self, timer: TimerId) {
        self.core.cancel_timer(timer)
    }

    /// Asks for `on_disconnect` when the calling connection closes (once per
    /// connection and object; repeated calls are merged).
    pub fn watch_disconnect(&mut self) {
        if let (Some(conn), Some(this)) = (self.conn, self.this) {
            let list = self.core.watchers.entry(conn).or_default();
            if !list.contains(&this) {
                list.push(this);
            }
        }
    }

    /// Asks for `on_process_exit` when the calling connection's process
    /// exits (once per process and object), and returns its pid. `None` when
    /// the server does not know the pid (TCP peers) or outside a call.
    pub fn watch_process_exit(&mut self) -> Option<u32> {
        let pid = self.peer()?.pid?;
        let this = self.this?;
        let objects = &self.core.objects;
        self.core.procs.watch(pid, this, |id| objects.contains(id));
        Some(pid)
    }

    /// Whether a plain lock or semaphore a process held is to be released when
    /// it exits ([`ServerConfig::release_locks_of_dead`]).
    pub fn releases_locks_of_dead(&self) -> bool {
        self.core.procs.release_locks
    }

    /// Creates a new shared object of a registered `typeid`. It lives while
    /// something holds it: store the returned token in this object (and report it
    /// from `visit_refs`) or hand it to a client.
    ///
    /// # Errors
    ///
    /// A `ValueError` for an unknown typeid, a `MemoryError` past the server's
    /// `max_held_bytes` or `max_objects_per_conn`, or what the constructor
    /// raised (a `RuntimeError` if it panicked).
    pub fn create(&mut self, typeid: &str, args: CallArgs) -> Result<Token, RemoteError> {
        let id = self.core.construct(self.conn, typeid, args)?;
        self.refs_changed = true;
        Ok(Token {
            typeid: typeid.to_owned(),
            id,
        })
    }

    /// Tells the table that this object's held references changed in a way it
    /// cannot see from the call's arguments (it dropped or gained a proxy).
    pub fn refs_changed(&mut self) {
        self.refs_changed = true;
    }

    /// The current value of the shared object `t` names, for a built-in method
    /// given a proxy where Python would iterate or read it (`l.extend(proxy)`,
    /// `d.update(proxy)`, `list(proxy)`): a copy of a built-in `list`, `dict`
    /// or `Array`, bounded like any result
    /// ([`max_result_bytes`](Self::max_result_bytes): `MemoryError`, checked
    /// before copying). Any other type (a host type, a sync object, a
    /// `Value`) is a `TypeError` as in Python (`'EventProxy' object is not
    /// iterable`), and so is the running object itself, which a caller
    /// handles first.
    pub(crate) fn snapshot(&self, t: &Token) -> Result<Value, RemoteError> {
        let not_iterable = || {
            let name = match crate::proto::codec::pickle::proxy_type(&t.typeid) {
                "AutoProxy" => format!("AutoProxy[{}]", t.typeid),
                name => name.to_owned(),
            };
            RemoteError::type_error(format!("'{name}' object is not iterable"))
        };
        let Some(slot) = self.core.objects.get(t.id) else {
            return Err(RemoteError::new(
                "KeyError",
                format!("'{}' (argument refers to no shared object)", t.id),
            ));
        };
        if !slot.spec.is_read_by_value() {
            return Err(not_iterable());
        }
        if let Some(why) = &slot.broken {
            return Err(RemoteError::new(
                "RuntimeError",
                format!("shared object {} is broken: {why}", t.id),
            ));
        }
        let Some(object) = slot.object.as_ref() else {
            return Err(RemoteError::new(
                "RuntimeError",
                format!("shared object {} is busy (re-entrant call)", t.id),
            ));
        };
        size::check_result(slot.bytes, self.core.limits.max_result)?;
        guard::catch(|| object.get_value()).map_err(|why| {
            RemoteError::new(
                "RuntimeError",
                format!("reading shared object {} panicked: {why}", t.id),
            )
        })?
    }

    /// Whether `id` names a live object.
    pub fn object_exists(&self, id: ObjectId) -> bool {
        self.core.objects.contains(id)
    }

    /// The largest result one call may build, in the bytes
    /// [`SharedObject::held_bytes`] counts: the server's `max_frame`. A call
    /// whose result (a repeat, a copy, the items a string expands into) would
    /// be larger should fail with `MemoryError` before allocating it.
    pub fn max_result_bytes(&self) -> usize {
        self.core.limits.max_result
    }

    /// Checks a result's size before building it.
    ///
    /// # Errors
    ///
    /// A `MemoryError` when a result of `bytes` is over
    /// [`max_result_bytes`](Self::max_result_bytes).
    pub fn check_result(&self, bytes: usize) -> Result<(), RemoteError> {
        size::check_result(bytes, self.core.limits.max_result)
    }

    /// Whether the server caps the bytes objects hold (so a growing call
    /// should size its growth for [`check_growth`](Self::check_growth)).
    pub fn held_bytes_capped(&self) -> bool {
        self.core.limits.max_held_bytes.is_some()
    }

    /// Checks growth against the server's cap before growing. Call it before
    /// changing anything, so a refused call changes nothing.
    ///
    /// # Errors
    ///
    /// A `MemoryError` when holding `more` bytes more would take the
    /// server's total past its
    /// [`max_held_bytes`](super::ServerConfig::max_held_bytes).
    pub fn check_growth(&self, more: usize) -> Result<(), RemoteError> {
        self.core.check_growth(more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_and_cancel() {
        let mut core = Core::new();
        let t0 = core.now;
        let a = core.add_timer(
            t0 + Duration::from_millis(20),
            TimerTarget::Object(ObjectId(1)),
        );
        let b = core.add_timer(
            t0 + Duration::from_millis(10),
            TimerTarget::Object(ObjectId(2)),
        );
        let c = core.add_timer(
            t0 + Duration::from_millis(5),
            TimerTarget::Object(ObjectId(3)),
        );
        core.cancel_timer(c);
        assert_eq!(core.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert!(core.pop_due_timer(t0).is_none());
        let late = t0 + Duration::from_millis(30);
        assert_eq!(core.pop_due_timer(late).map(|x| x.0), Some(b));
        assert_eq!(core.pop_due_timer(late).map(|x| x.0), Some(a));
        assert!(core.pop_due_timer(late).is_none());
        assert_eq!(core.next_deadline(), None);
    }

    /// Holds one reference and counts how often the table asks what it holds.
    struct Counted(ObjectId, Rc<std::cell::Cell<u32>>);
    impl SharedObject for Counted {
        fn call(
            &mut self,
            _: &mut Context<'_>,
            _: &str,
            _: CallArgs,
        ) -> super::super::registry::CallResult {
            Ok(Value::None.into())
        }
        fn visit_refs(&self, f: &mut dyn FnMut(ObjectId)) {
            self.1.set(self.1.get() + 1);
            f(self.0)
        }
    }

    #[test]
    fn reads_only_and_adds_only_calls_skip_the_recount_and_others_do_it() {
        use crate::server::registry::TypeSpec;
        let mut core = Core::new();
        let plain = Rc::new(TypeSpec::new("plain", &[], |_, _| unreachable!()));
        let held = core
            .objects
            .insert(plain.clone(), Box::new(Counted(ObjectId(0), Rc::default())));
        assert!(core.objects.incref(held));
        let visits = Rc::new(std::cell::Cell::new(0));
        let holder = core
            .objects
            .insert(plain, Box::new(Counted(held, visits.clone())));
        assert!(core.objects.incref(holder));
        core.rescan_refs(holder);
        assert_eq!(core.objects.get(held).unwrap().refcount, 2);
        let seen = visits.get();
        let call = |core: &mut Core, recount| {
            core.with_object(holder, None, None, recount, |_, _| ())
                .unwrap();
        };
        call(&mut core, Recount::IfAsked);
        assert_eq!(visits.get(), seen, "a reads-only call does not recount");
        call(&mut core, Recount::IfHolding);
        assert_eq!(visits.get(), seen + 1, "other calls recount what it holds");
        core.with_object(holder, None, None, Recount::IfAsked, |_, cx| {
            cx.refs_changed()
        })
        .unwrap();
        assert_eq!(visits.get(), seen + 2, "unless the callback asks");
        assert_eq!(
            core.objects.get(held).unwrap().refcount,
            2,
            "counts unchanged"
        );
        // An adds-only call counts the references it was given, without a visit.
        call(&mut core, Recount::Added(vec![held, held]));
        assert_eq!(visits.get(), seen + 2, "an adds-only call does not recount");
        assert_eq!(core.objects.get(held).unwrap().refcount, 4);
        assert_eq!(core.objects.get(holder).unwrap().holds, vec![held; 3]);
    }

    struct Touchy(Option<ReplyHandle>);
    impl SharedObject for Touchy {
        fn call(
            &mut self,
            cx: &mut Context<'_>,
            method: &str,
            _: CallArgs,
        ) -> super::super::registry::CallResult {
            match method {
                "wait" => {
                    self.0 = Some(cx.defer());
                    Ok(super::super::registry::Outcome::Deferred)
                }
                _ => panic!("touched"),
            }
        }
    }

    #[test]
    fn a_panicking_callback_breaks_its_object_and_fails_its_waiters() {
        use super::super::registry::TypeSpec;
        let mut core = Core::new();
        core.registry.insert(TypeSpec::new("touchy", &[], |_, _| {
            Ok(Box::new(Touchy(None)))
        }));
        let id = core.construct(None, "touchy", CallArgs::default()).unwrap();
        assert!(core.objects.incref(id));
        let waiter = ConnId::new(0, 1);
        let (_, h) = core
            .with_object(id, Some(waiter), None, Recount::IfHolding, |o, cx| {
                o.call(cx, "wait", CallArgs::default())
            })
            .unwrap();
        assert!(h.is_some());
        let r = core.with_object(id, None, None, Recount::IfHolding, |o, cx| {
            o.call(cx, "poke", CallArgs::default())
        });
        assert_eq!(r.err(), Some(Unavailable::Panicked("touched".into())));
        // The waiter is answered with the error; later calls are refused.
        assert_eq!(core.pending_len(), 0);
        let failed = core.outbox.pop().unwrap();
        assert_eq!(failed.conn, waiter);
        assert!(failed.result.unwrap_err().message.contains("touched"));
        let again = core.with_object(id, None, None, Recount::IfHolding, |_, _| ());
        assert_eq!(again.err(), Some(Unavailable::Broken("touched".into())));
        // Released and swept as usual.
        assert!(core.objects.decref(id));
        core.sweep();
        assert_eq!(core.objects.len(), 0);
    }

    #[test]
    fn a_panicking_constructor_is_a_runtime_error() {
        use super::super::registry::TypeSpec;
        let mut core = Core::new();
        core.registry
            .insert(TypeSpec::new("bad", &[], |_, _| panic!("no")));
        let e = core
            .construct(None, "bad", CallArgs::default())
            .unwrap_err();
        assert_eq!(e.kind, "RuntimeError");
        assert!(
            e.message.contains("constructor panicked: no"),
            "{}",
            e.message
        );
        assert_eq!(core.objects.len(), 0);
    }

    /// Answers its own call through its handle and then by returning, or
    /// drops its handle unanswered, as `method` says.
    struct Twice;
    impl SharedObject for Twice {
        fn call(
            &mut self,
            cx: &mut Context<'_>,
            method: &str,
            _: CallArgs,
        ) -> super::super::registry::CallResult {
            let h = cx.defer();
            match method {
                "reply_then_return" => {
                    assert!(cx.reply(h, Ok(Value::Int(1))));
                    Ok(Value::Int(2).into())
                }
                "drop" => {
                    drop(h);
                    Ok(super::super::registry::Outcome::Deferred)
                }
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn a_call_is_answered_once() {
        use super::super::registry::{Outcome, TypeSpec};
        let mut core = Core::new();
        core.registry
            .insert(TypeSpec::new("twice", &[], |_, _| Ok(Box::new(Twice))));
        let id = core.construct(None, "twice", CallArgs::default()).unwrap();
        assert!(core.objects.incref(id));
        let conn = ConnId::new(0, 1);
        let run = |core: &mut Core, method: &str| {
            core.with_object(id, Some(conn), None, Recount::IfHolding, |o, cx| {
                o.call(cx, method, CallArgs::default())
            })
            .unwrap()
        };
        // Answered through the handle, then by returning: the return wins
        // (dispatch discards the handle), the early answer is taken back.
        let (r, h) = run(&mut core, "reply_then_return");
        assert!(matches!(r, Ok(Outcome::Value(Value::Int(2)))));
        assert_eq!(core.outbox.len(), 1);
        assert!(core.discard(h.unwrap()), "the early answer is taken back");
        assert!(core.outbox.is_empty(), "and never sent");
        assert_eq!(core.pending_len(), 0);
        // Dropped unanswered: the caller gets a RuntimeError once the mailbox
        // is read (the server reads it on its next turn).
        let (r, h) = run(&mut core, "drop");
        assert!(matches!(r, Ok(Outcome::Deferred)));
        assert!(h.is_some());
        assert_eq!(core.pending_len(), 1);
        core.drain_commands();
        assert_eq!(core.pending_len(), 0);
        let e = core.outbox.pop().unwrap().result.unwrap_err();
        assert_eq!(e.kind, "RuntimeError");
        assert!(e.message.contains("dropped unanswered"), "{}", e.message);
    }

    #[test]
    fn stale_call_ids_answer_nothing() {
        let mut core = Core::new();
        let conn = ConnId::new(0, 1);
        let h = core.defer(Some(conn), ObjectId(9), None);
        assert!(core.answer(core.handle(h), Ok(Value::Int(1))));
        assert_eq!(core.outbox.len(), 1);
        // A reused slot does not revive the old call.
        let h2 = core.defer(Some(conn), ObjectId(9), None);
        assert_eq!(h.index(), h2.index());
        assert!(!core.complete(h, Ok(Value::None)));
        // A dropped handle of an answered call answers nothing more.
        drop(core.handle(h));
        core.drain_commands();
        assert_eq!(core.outbox.len(), 1);
        assert!(core.complete(h2, Ok(Value::None)));
    }

    #[test]
    fn a_handle_of_another_server_is_answered_there() {
        let (mut a, mut b) = (Core::new(), Core::new());
        let conn = ConnId::new(0, 1);
        let ha = a.defer(Some(conn), ObjectId(9), None);
        let hb = b.defer(Some(conn), ObjectId(9), None);
        assert_eq!(ha, hb, "the same id on two servers");
        assert!(!b.answer(a.handle(ha), Ok(Value::Int(1))), "not b's call");
        assert_eq!(b.pending_len(), 1, "b's own call is untouched");
        a.drain_commands();
        assert!(matches!(a.outbox[0].result, Ok(Value::Int(1))));
    }

    #[test]
    fn reply_handles_are_send() {
        fn send<T: Send>() {}
        send::<ReplyHandle>();
    }
}
