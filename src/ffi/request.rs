//! `mgr_request` (the context of one host callback: how a call is answered) and
//! `mgr_reply` (a deferred answer, completed later from anywhere).
//!
//! A request lives exactly as long as the callback it was passed to. A reply is
//! owned by the host until [`mgr_reply_free`]; answering it goes through the
//! server's [`ServerHandle`] (a queue plus a wake of the server's fd), so it never
//! touches the server directly and is safe from any thread and from inside
//! callbacks.

use std::ffi::{c_char, c_void};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Arc;

use super::host_type::HostType;
use super::status::{mgr_status, Fail};
use super::value::{mgr_value, take_value};
use super::{arg_str, out_ptr};
use crate::proto::{RemoteError, Value};
use crate::server::{Context, ReplyHandle, ServerHandle};

/// The context of one host callback (opaque). Valid only while that callback
/// runs; never free it.
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

impl Request<'_, '_> {
    pub(crate) fn as_c(&mut self) -> *mut mgr_request {
        (self as *mut Self).cast()
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

unsafe fn arg_request<'a>(p: *mut mgr_request) -> Result<&'a mut Request<'a, 'a>, Fail> {
    p.cast::<Request<'a, 'a>>()
        .as_mut()
        .ok_or_else(|| Fail::null("req"))
}

/// Shared between a [`ReplyBox`] and the object that deferred it.
#[derive(Debug)]
pub(crate) struct ReplyState {
    pub(crate) handle: ReplyHandle,
    answered: AtomicBool,
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

    /// The host's `mgr_reply` for this call (NULL before `mgr_request_defer` returns).
    pub(crate) fn boxed(&self) -> *mut mgr_reply {
        self.boxed.load(Ordering::SeqCst)
    }
}

/// The Rust side of `mgr_reply`.
struct ReplyBox {
    server: ServerHandle,
    state: Arc<ReplyState>,
}

impl ReplyBox {
    fn answer(&self, result: Result<Value, RemoteError>) -> Result<mgr_status, Fail> {
        if self.state.answered.swap(true, Ordering::SeqCst) {
            return Err(Fail::new(
                mgr_status::MGR_ERR_STATE,
                "this deferred reply was answered already",
            ));
        }
        if self.state.stale.load(Ordering::SeqCst)
            || !self.state.server_alive.load(Ordering::SeqCst)
        {
            return Err(Fail::new(
                mgr_status::MGR_ERR_STALE,
                "the caller of this deferred reply has gone; the answer was dropped",
            ));
        }
        self.server.complete(self.state.handle, result);
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
            handle,
            answered: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            server_alive: req.ty.server_alive.clone(),
            boxed: AtomicPtr::new(std::ptr::null_mut()),
        });
        req.set(Answer::Deferred(state.clone()))?;
        let b = ReplyBox { server: req.ty.server.clone(), state: state.clone() };
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
        if !b.state.answered.load(Ordering::SeqCst) {
            let _ = b.answer(Err(RemoteError::new(
                "RuntimeError",
                "the host freed the deferred reply without answering it",
            )));
        }
        Ok(())
    }
}
