//! `mgr_request` (the context of one host callback: how a call is answered) and
//! `mgr_reply` (a deferred answer, completed later from anywhere).
//!
//! A request lives exactly as long as the callback it was passed to. A reply is
//! owned by the host until [`mgr_reply_free`]; it wraps the call's owned
//! [`ReplyHandle`], and answering it goes through the server's mailbox (a queue
//! plus a wake of the server's fd), so it never touches the server directly and
//! is safe from any thread and from inside callbacks.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::host_type::HostType;
use super::status::{mgr_status, Fail};
use super::value::{mgr_value, take_value};
use super::{arg_str, out_ptr};
use crate::proto::{RemoteError, Value};
use crate::server::{CallId, Context, Peer, PeerAddr, ReplyHandle};

/// [`mgr_peer::family`] of a TCP peer.
pub const MGR_PEER_TCP: u32 = 1;
/// [`mgr_peer::family`] of a Unix-socket peer.
pub const MGR_PEER_UNIX: u32 = 2;

/// Who sent a request, as [`mgr_request_peer`] (and the log callback of
/// `mgr_server_set_log`) report it. A plain struct the caller owns: nothing in
/// it needs freeing. Set `size` to `sizeof(mgr_peer)` before the call: the
/// library fills that many bytes at most (fields it does not know of stay as
/// they were), so the struct can grow without breaking older hosts.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgr_peer {
    /// Set by the caller to `sizeof(mgr_peer)`; left as it is.
    pub size: u32,
    /// [`MGR_PEER_TCP`] or [`MGR_PEER_UNIX`].
    pub family: u32,
    /// The connection's id: stable for its life, never reused by a later one.
    pub conn_id: u64,
    /// The peer process's id (`SO_PEERCRED`, Unix sockets); -1 on TCP.
    pub pid: i64,
    /// The peer process's user id (Unix sockets); -1 on TCP.
    pub uid: i64,
    /// The peer process's group id (Unix sockets); -1 on TCP.
    pub gid: i64,
    /// Where it connected from, NUL-terminated (truncated to fit):
    /// `host:port` on TCP (IPv6 in brackets), `unix:` plus the peer's bound
    /// path (usually none) on a Unix socket.
    pub address: [c_char; 128],
}

impl mgr_peer {
    /// The C form of `peer`, with `size` set to the full struct.
    pub(crate) fn of(peer: &Peer) -> mgr_peer {
        let n = |x: Option<u32>| x.map_or(-1, i64::from);
        let mut address = [0 as c_char; 128];
        let text = peer.addr.to_string();
        for (dst, &b) in address.iter_mut().zip(text.as_bytes().iter().take(127)) {
            *dst = b as c_char;
        }
        mgr_peer {
            size: std::mem::size_of::<mgr_peer>() as u32,
            family: match peer.addr {
                PeerAddr::Tcp(_) => MGR_PEER_TCP,
                _ => MGR_PEER_UNIX,
            },
            conn_id: peer.conn.to_raw(),
            pid: n(peer.pid),
            uid: n(peer.uid),
            gid: n(peer.gid),
            address,
        }
    }
}

/// Copies the first `out.size` bytes of `full` (at most all of it) into
/// `out`, keeping `out.size`; fails for a size below the fixed header.
pub(crate) unsafe fn fill_sized<T: Copy>(out: *mut T, full: &T, header: usize) -> Result<(), Fail> {
    let size = out.cast::<u32>().read_unaligned() as usize;
    if size < header {
        return Err(Fail::new(
            mgr_status::MGR_ERR_INVALID_ARGUMENT,
            format!("size is {size}: set it to sizeof the struct (at least {header})"),
        ));
    }
    let n = size.min(std::mem::size_of::<T>());
    std::ptr::copy_nonoverlapping(
        (full as *const T).cast::<u8>().add(4),
        out.cast::<u8>().add(4),
        n - 4,
    );
    Ok(())
}

/// The context of one host callback (opaque). Valid only while that callback
/// runs, on the server's thread; never free it. A request kept and used after
/// its callback returned is refused with `MGR_ERR_STATE` (the pointer is a
/// handle that is never reused, not an address).
#[derive(Debug)]
pub struct mgr_request {
    _private: [u8; 0],
}

/// A deferred reply (opaque), from [`mgr_request_defer`]. Owned by the host:
/// answer it with [`mgr_reply_return`] or [`mgr_reply_raise`], then free it with
/// [`mgr_reply_free`]. May be moved to and used from any thread.
#[derive(Debug)]
pub struct mgr_reply {
    _private: [u8; 0],
}

/// How a callback answered.
#[derive(Debug)]
pub(crate) enum Answer {
    Value(Value),
    Raise(RemoteError),
    Object(*mut c_void),
    Deferred(Arc<ReplyState>),
}

/// Which callback a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A `create` callback: only [`mgr_request_raise`] is allowed.
    Create,
    /// A `call` callback.
    Call,
}

/// The Rust side of `mgr_request`.
pub(crate) struct Request<'r, 'c> {
    pub(crate) cx: &'r mut Context<'c>,
    pub(crate) mode: Mode,
    pub(crate) ty: &'r Rc<HostType>,
    pub(crate) method: &'r str,
    pub(crate) answer: Option<Answer>,
}

thread_local! {
    /// The requests whose callbacks are running on this thread (innermost last,
    /// as callbacks nest when a host calls back into the library): each with the
    /// handle the host was given for it.
    static LIVE: RefCell<Vec<(usize, *mut c_void)>> = const { RefCell::new(Vec::new()) };
    /// The next handle: never reused, so a handle kept past its callback can never
    /// name a later request.
    static NEXT_HANDLE: Cell<usize> = const { Cell::new(1) };
}

/// Unregisters a live request when its callback returns (or unwinds).
struct LiveGuard(usize);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        LIVE.with(|l| l.borrow_mut().retain(|&(h, _)| h != self.0));
    }
}

impl Request<'_, '_> {
    /// Runs `f` (which calls the host's callback) with a handle for this request
    /// that is valid only until `f` returns. The handle is an opaque number, not
    /// the request's address: one kept and used after its callback returned is
    /// found in no live slot and refused with `MGR_ERR_STATE`, never written through.
    pub(crate) fn with_handle<R>(&mut self, f: impl FnOnce(*mut mgr_request) -> R) -> R {
        let handle = NEXT_HANDLE.with(|n| {
            let h = n.get();
            n.set(h.wrapping_add(1).max(1));
            h
        });
        let me: *mut Self = self;
        LIVE.with(|l| l.borrow_mut().push((handle, me.cast())));
        let _guard = LiveGuard(handle);
        // The handle is an integer in pointer clothing; it is never dereferenced.
        f(std::ptr::without_provenance_mut(handle))
    }

    fn set(&mut self, a: Answer) -> Result<(), Fail> {
        if self.answer.is_some() {
            return Err(Fail::new(
                mgr_status::MGR_ERR_STATE,
                "this request was answered already",
            ));
        }
        self.answer = Some(a);
        Ok(())
    }

    fn call_only(&self, what: &str) -> Result<(), Fail> {
        match self.mode {
            Mode::Call => Ok(()),
            Mode::Create => Err(Fail::new(
                mgr_status::MGR_ERR_STATE,
                format!("{what} is not allowed in a create callback (only mgr_request_raise)"),
            )),
        }
    }
}

/// The live request behind handle `p` (see [`Request::with_handle`]).
unsafe fn arg_request<'a>(p: *mut mgr_request) -> Result<&'a mut Request<'a, 'a>, Fail> {
    if p.is_null() {
        return Err(Fail::null("req"));
    }
    let handle = p as usize;
    let live = LIVE.with(|l| {
        l.borrow()
            .iter()
            .find(|&&(h, _)| h == handle)
            .map(|&(_, r)| r)
    });
    match live {
        // SAFETY: registered by `with_handle`, whose frame (and so the request)
        // is still running: the entry is removed before it returns.
        Some(r) => Ok(&mut *r.cast::<Request<'a, 'a>>()),
        None => Err(Fail::new(
            mgr_status::MGR_ERR_STATE,
            "this mgr_request is not live: a request is valid only while its callback \
             runs (on the server's thread)",
        )),
    }
}

/// A deferred reply not answered yet.
const OPEN: u8 = 0;
/// Answered by the host (`mgr_reply_return` / `_raise` / `_free`).
const ANSWERED: u8 = 1;
/// Its caller went away first and the host's `cancel` callback was told.
const CANCELLED: u8 = 2;

/// Shared between a [`ReplyBox`] and the object that deferred it.
#[derive(Debug)]
pub(crate) struct ReplyState {
    /// The call it answers (what `on_cancel` names).
    pub(crate) id: CallId,
    /// The call's handle, taken by the answer. A handle left here when the
    /// state goes (the call was cancelled, or answered stale) is dropped: a
    /// harmless no-op for a call that is no longer waiting.
    handle: Mutex<Option<ReplyHandle>>,
    /// [`OPEN`], [`ANSWERED`] or [`CANCELLED`]: set once, by whichever of the
    /// host's answer and the `cancel` callback comes first.
    fate: AtomicU8,
    /// Its client went away, or its object was destroyed.
    stale: AtomicBool,
    server_alive: Arc<AtomicBool>,
    /// The `mgr_reply` the host holds for it (set once it is made).
    boxed: AtomicPtr<mgr_reply>,
}

impl ReplyState {
    pub(crate) fn mark_stale(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// Marks the reply stale and claims it for the `cancel` callback: true when
    /// it was not answered yet (the host is told), false when an answer got there
    /// first (the host, which answered, is not told — it frees the reply itself).
    pub(crate) fn claim_for_cancel(&self) -> bool {
        self.mark_stale();
        self.fate
            .compare_exchange(OPEN, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Takes the reply for the host's answer: `MGR_ERR_STATE` when it was
    /// answered already, `MGR_ERR_STALE` when its caller has gone (the `cancel`
    /// callback had it, or the server or object is gone).
    fn take_for_answer(&self) -> Result<(), Fail> {
        let fate = self
            .fate
            .compare_exchange(OPEN, ANSWERED, Ordering::SeqCst, Ordering::SeqCst);
        if fate == Err(ANSWERED) {
            return Err(Fail::new(
                mgr_status::MGR_ERR_STATE,
                "this deferred reply was answered already",
            ));
        }
        if fate == Err(CANCELLED)
            || self.stale.load(Ordering::SeqCst)
            || !self.server_alive.load(Ordering::SeqCst)
        {
            return Err(Fail::new(
                mgr_status::MGR_ERR_STALE,
                "the caller of this deferred reply has gone; the answer was dropped",
            ));
        }
        Ok(())
    }

    /// The host's `mgr_reply` for this call (NULL before `mgr_request_defer` returns).
    pub(crate) fn boxed(&self) -> *mut mgr_reply {
        self.boxed.load(Ordering::SeqCst)
    }
}

/// The Rust side of `mgr_reply`.
struct ReplyBox {
    state: Arc<ReplyState>,
}

impl ReplyBox {
    fn answer(&self, result: Result<Value, RemoteError>) -> Result<mgr_status, Fail> {
        self.state.take_for_answer()?;
        let handle = self
            .state
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            h.answer(result);
        }
        Ok(mgr_status::MGR_OK)
    }
}

unsafe fn arg_reply<'a>(p: *mut mgr_reply) -> Result<&'a ReplyBox, Fail> {
    p.cast::<ReplyBox>()
        .as_ref()
        .ok_or_else(|| Fail::null("reply"))
}

fn remote_error(kind: *const c_char, message: *const c_char) -> Result<RemoteError, Fail> {
    // SAFETY: the caller passes NUL-terminated strings or NULL.
    let kind = unsafe { arg_str(kind, "kind")? };
    let message = if message.is_null() {
        ""
    } else {
        unsafe { arg_str(message, "message")? }
    };
    if kind.is_empty() {
        return Err(Fail::new(
            mgr_status::MGR_ERR_INVALID_ARGUMENT,
            "kind must not be empty",
        ));
    }
    Ok(RemoteError::new(kind, message))
}

/// Fills `*out` with who sent this request: the connection's id, its address,
/// and on a Unix socket the peer process's pid, uid and gid (read once when
/// the connection was accepted). Set `out->size = sizeof(mgr_peer)` first.
/// Works in `create` and `call` callbacks. `*out` is plain data owned by the
/// caller. `MGR_ERR_INVALID_ARGUMENT` for a `size` below 16 (the fields up to
/// `conn_id`).
#[no_mangle]
pub unsafe extern "C" fn mgr_request_peer(
    req: *const mgr_request,
    out: *mut mgr_peer,
) -> mgr_status {
    ffi_boundary! {
        let req = arg_request(req.cast_mut())?;
        if out.is_null() {
            return Err(Fail::null("out"));
        }
        let peer = req.cx.peer().ok_or_else(|| {
            Fail::new(mgr_status::MGR_ERR_STATE, "this request has no peer")
        })?;
        fill_sized(out, &mgr_peer::of(peer), 16)?;
        Ok(mgr_status::MGR_OK)
    }
}

/// Answers the call with `value`. Takes ownership of `value` (freed even when the
/// call fails). `MGR_ERR_STATE` if the request was answered already or is a create
/// request. For a method listed in the type's method_to_typeid, the value becomes
/// a new object of the target typeid (its create callback receives it as the only
/// argument) and the caller gets a proxy.
#[no_mangle]
pub unsafe extern "C" fn mgr_request_return(
    req: *mut mgr_request,
    value: *mut mgr_value,
) -> mgr_status {
    ffi_boundary! {
        let value = take_value(value, "value")?;
        let req = arg_request(req)?;
        req.call_only("mgr_request_return")?;
        req.set(Answer::Value(value))?;
        Ok(mgr_status::MGR_OK)
    }
}

/// Answers the call (or fails a create) with a Python-style exception: `kind`
/// such as "KeyError" or "queue.Empty" (non-empty), `message` (NULL for none).
/// Both strings are copied. Return any status from the callback afterwards; the
/// raised error is what the caller sees.
#[no_mangle]
pub unsafe extern "C" fn mgr_request_raise(
    req: *mut mgr_request,
    kind: *const c_char,
    message: *const c_char,
) -> mgr_status {
    ffi_boundary! {
        let req = arg_request(req)?;
        let e = remote_error(kind, message)?;
        req.set(Answer::Raise(e))?;
        Ok(mgr_status::MGR_OK)
    }
}

/// Answers a method listed in the type's method_to_typeid with a new object of
/// the target type, whose state is `object` (it must be a host type registered on
/// this server). On success the library owns `object` and calls the target type's
/// destroy callback when the object dies; on failure the host still owns it.
#[no_mangle]
pub unsafe extern "C" fn mgr_request_return_object(
    req: *mut mgr_request,
    object: *mut c_void,
) -> mgr_status {
    ffi_boundary! {
        let req = arg_request(req)?;
        req.call_only("mgr_request_return_object")?;
        if req.answer.is_some() {
            return Err(Fail::new(mgr_status::MGR_ERR_STATE, "this request was answered already"));
        }
        if req.ty.target_of(req.method).is_none() {
            return Err(Fail::new(
                mgr_status::MGR_ERR_STATE,
                format!("method '{}' has no method_to_typeid entry naming a host type", req.method),
            ));
        }
        req.set(Answer::Object(object))?;
        Ok(mgr_status::MGR_OK)
    }
}

/// Defers the answer: writes a new reply handle to `*out` and return `MGR_OK`
/// from the callback. The caller's connection waits (its later requests queue up)
/// until the reply is answered with [`mgr_reply_return`] / [`mgr_reply_raise`],
/// from this callback, a later callback, the host's loop or another thread. The
/// host owns `*out`: free it with [`mgr_reply_free`].
#[no_mangle]
pub unsafe extern "C" fn mgr_request_defer(
    req: *mut mgr_request,
    out: *mut *mut mgr_reply,
) -> mgr_status {
    ffi_boundary! {
        let req = arg_request(req)?;
        req.call_only("mgr_request_defer")?;
        let out = out_ptr(out, "out")?;
        if req.answer.is_some() {
            return Err(Fail::new(mgr_status::MGR_ERR_STATE, "this request was answered already"));
        }
        let handle = req.cx.defer();
        let state = Arc::new(ReplyState {
            id: handle.id(),
            handle: Mutex::new(Some(handle)),
            fate: AtomicU8::new(OPEN),
            stale: AtomicBool::new(false),
            server_alive: req.ty.server_alive.clone(),
            boxed: AtomicPtr::new(std::ptr::null_mut()),
        });
        req.set(Answer::Deferred(state.clone()))?;
        let b = ReplyBox { state: state.clone() };
        let boxed: *mut mgr_reply = Box::into_raw(Box::new(b)).cast();
        state.boxed.store(boxed, Ordering::SeqCst);
        *out = boxed;
        Ok(mgr_status::MGR_OK)
    }
}

/// Answers a deferred call with `value` (taking ownership of it, even on
/// failure). Safe from any thread. `MGR_ERR_STALE` when the library already knows
/// the caller is gone (the answer is dropped — harmless); `MGR_ERR_STATE` if the
/// reply was answered already. The reply still has to be freed.
#[no_mangle]
pub unsafe extern "C" fn mgr_reply_return(
    reply: *mut mgr_reply,
    value: *mut mgr_value,
) -> mgr_status {
    ffi_boundary! {
        let value = take_value(value, "value")?;
        arg_reply(reply)?.answer(Ok(value))
    }
}

/// Answers a deferred call with an exception `kind` (non-empty) and `message`
/// (NULL for none); both are copied. Same rules as [`mgr_reply_return`].
#[no_mangle]
pub unsafe extern "C" fn mgr_reply_raise(
    reply: *mut mgr_reply,
    kind: *const c_char,
    message: *const c_char,
) -> mgr_status {
    ffi_boundary! {
        let r = arg_reply(reply)?;
        let e = remote_error(kind, message)?;
        r.answer(Err(e))
    }
}

/// Frees a reply handle. NULL is a no-op. Freeing a reply that was never answered
/// answers its caller with a RuntimeError, so no client waits forever.
#[no_mangle]
pub unsafe extern "C" fn mgr_reply_free(reply: *mut mgr_reply) {
    ffi_boundary! {
        if reply.is_null() {
            return Ok(());
        }
        let b = Box::from_raw(reply.cast::<ReplyBox>());
        if b.state.fate.load(Ordering::SeqCst) == OPEN {
            let _ = b.answer(Err(RemoteError::new(
                "RuntimeError",
                "the host freed the deferred reply without answering it",
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ReplyState {
        ReplyState {
            id: CallId::from_raw(1),
            handle: Mutex::new(None),
            fate: AtomicU8::new(OPEN),
            stale: AtomicBool::new(false),
            server_alive: Arc::new(AtomicBool::new(true)),
            boxed: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    #[test]
    fn an_answered_reply_is_never_handed_to_cancel() {
        let s = state();
        assert!(s.take_for_answer().is_ok());
        assert!(
            !s.claim_for_cancel(),
            "answered first: the host is not told"
        );
        let again = s.take_for_answer().unwrap_err();
        assert_eq!(again.status, mgr_status::MGR_ERR_STATE);
    }

    #[test]
    fn a_cancelled_reply_answers_stale() {
        let s = state();
        assert!(s.claim_for_cancel(), "not answered yet: the host is told");
        assert!(!s.claim_for_cancel(), "told once");
        let late = s.take_for_answer().unwrap_err();
        assert_eq!(late.status, mgr_status::MGR_ERR_STALE);
    }
}
