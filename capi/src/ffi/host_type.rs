//! Host types: the `mgr_type` vtable a C host registers, and `HostObject`, the
//! [`SharedObject`] that forwards every call to it.
//!
//! A callback runs inside the server's turn; it receives a `mgr_request*` through
//! which it answers, and may call any libmgr function that does not need the
//! whole server (those return `MGR_ERR_BUSY` from inside a callback).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CString};
use std::rc::{Rc, Weak};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak as AWeak};

use super::request::{mgr_reply, Answer, Mode, ReplyState, Request};
use super::status::{mgr_status, Fail};
use super::value::{as_ptr, from_raw, mgr_value};
use super::{arg_str, mgr_request};
use crate::proto::{RemoteError, Value};
use crate::server::{CallArgs, CallId, CallResult, Context, Outcome, SharedObject, TypeSpec};

/// The vtable version this library understands; put it in [`mgr_type::version`].
/// Version 1 (the same struct without `cancel`) is still accepted.
pub const MGR_TYPE_VERSION: u32 = 2;

/// One method_to_typeid entry: calling `method` returns a new shared object of
/// `type_id` (the caller gets a proxy). (Not `typeid`: a C++ keyword.)
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgr_method_typeid {
    /// The method name (NUL-terminated UTF-8).
    pub method: *const c_char,
    /// The registered typeid its result becomes.
    pub type_id: *const c_char,
}

/// Builds an object's state: `args` is a tuple, `kwargs` a dict (both borrowed
/// for the call). Write the state to `*out_object` (NULL is a valid state) and
/// return `MGR_OK`; on failure call `mgr_request_raise` and/or return an error
/// status (a RuntimeError for the caller).
pub type mgr_create_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        args: *const mgr_value,
        kwargs: *const mgr_value,
        req: *mut mgr_request,
        out_object: *mut *mut c_void,
    ) -> mgr_status,
>;

/// Runs `method` on `object`: answer through `req` (`mgr_request_return`,
/// `_raise`, `_return_object` or `_defer`) and return `MGR_OK`. Not answering
/// returns None. An error status makes the call fail with a RuntimeError (or with
/// the error raised through `req`). `method`, `args` (a tuple) and `kwargs` (a
/// dict) are borrowed for the duration of the callback.
pub type mgr_call_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        object: *mut c_void,
        method: *const c_char,
        args: *const mgr_value,
        kwargs: *const mgr_value,
        req: *mut mgr_request,
    ) -> mgr_status,
>;

/// Releases an object's state (its last reference went, or the server is freed).
pub type mgr_destroy_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, object: *mut c_void)>;

/// Returns the object's `repr()` as a new str `mgr_value` (the library frees it),
/// or NULL for the default `<typeid object, id=…>`.
pub type mgr_repr_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, object: *mut c_void) -> *mut mgr_value>;

/// Told that the caller of a deferred call went away (its connection closed)
/// before `reply` — the pointer `mgr_request_defer` gave for that call, not yet
/// freed — was answered. Called only for a reply that no `mgr_reply_return` /
/// `mgr_reply_raise` / `mgr_reply_free` has answered, and at most once: a reply
/// the host answered is never handed to `cancel`, so the host frees each reply
/// exactly once (here, or wherever it answered it). Answering a cancelled reply
/// is a harmless no-op (`MGR_ERR_STALE`); the host should drop it from its
/// waiters and `mgr_reply_free` it, here or later. Runs inside the server's turn,
/// like the other callbacks.
pub type mgr_cancel_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, object: *mut c_void, reply: *mut mgr_reply)>;

/// A host type's description and callbacks, given to `mgr_server_register`. The
/// library copies it (and the strings it points to) during registration. Every
/// callback gets the registration's `userdata` first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgr_type {
    /// Must be [`MGR_TYPE_VERSION`]; lets the struct grow without breaking hosts.
    pub version: u32,
    /// The exposed method names (`exposed_len` NUL-terminated strings).
    pub exposed: *const *const c_char,
    /// Number of entries in `exposed`.
    pub exposed_len: usize,
    /// method_to_typeid pairs (may be NULL when `method_to_typeid_len` is 0); the
    /// methods are exposed too.
    pub method_to_typeid: *const mgr_method_typeid,
    /// Number of entries in `method_to_typeid`.
    pub method_to_typeid_len: usize,
    /// Builds an object (optional: without it every object's state is NULL).
    pub create: mgr_create_fn,
    /// Runs a method (required).
    pub call: mgr_call_fn,
    /// Releases an object's state (optional).
    pub destroy: mgr_destroy_fn,
    /// The object's repr (optional).
    pub repr: mgr_repr_fn,
    /// A deferred call's caller went away (optional; version 2 and later).
    pub cancel: mgr_cancel_fn,
}

/// Version 1 of [`mgr_type`]: the same fields, without `cancel`.
#[repr(C)]
#[derive(Clone, Copy)]
struct TypeV1 {
    version: u32,
    exposed: *const *const c_char,
    exposed_len: usize,
    method_to_typeid: *const mgr_method_typeid,
    method_to_typeid_len: usize,
    create: mgr_create_fn,
    call: mgr_call_fn,
    destroy: mgr_destroy_fn,
    repr: mgr_repr_fn,
}

/// Copies the host's vtable, reading only as many bytes as its version has.
///
/// # Safety
/// `vt` is NULL or points to a `mgr_type` of the version it states.
pub(crate) unsafe fn read_vtable(vt: *const mgr_type) -> Result<mgr_type, Fail> {
    if vt.is_null() {
        return Err(Fail::null("vtable"));
    }
    match std::ptr::addr_of!((*vt).version).read() {
        1 => {
            let v1 = vt.cast::<TypeV1>().read();
            Ok(mgr_type {
                version: v1.version,
                exposed: v1.exposed,
                exposed_len: v1.exposed_len,
                method_to_typeid: v1.method_to_typeid,
                method_to_typeid_len: v1.method_to_typeid_len,
                create: v1.create,
                call: v1.call,
                destroy: v1.destroy,
                repr: v1.repr,
                cancel: None,
            })
        }
        MGR_TYPE_VERSION => Ok(vt.read()),
        v => Err(Fail::new(
            mgr_status::MGR_ERR_INVALID_ARGUMENT,
            format!("mgr_type.version is {v}, this library supports 1 to {MGR_TYPE_VERSION}"),
        )),
    }
}

/// A registered host type, shared by its objects.
pub(crate) struct HostType {
    typeid: String,
    vt: mgr_type,
    userdata: *mut c_void,
    targets: HashMap<String, String>,
    types: Weak<RefCell<Types>>,
    pub(crate) server_alive: Arc<AtomicBool>,
}

/// The host types registered on one server, by typeid.
pub(crate) type Types = HashMap<String, Rc<HostType>>;

impl HostType {
    /// Validates and copies a vtable. Returns the type and its [`TypeSpec`].
    pub(crate) unsafe fn new(
        typeid: &str,
        vt: &mgr_type,
        userdata: *mut c_void,
        types: &Rc<RefCell<Types>>,
        server_alive: Arc<AtomicBool>,
    ) -> Result<(Rc<HostType>, TypeSpec), Fail> {
        if vt.call.is_none() {
            return Err(Fail::null("mgr_type.call"));
        }
        let mut exposed = Vec::with_capacity(vt.exposed_len);
        if vt.exposed_len > 0 && vt.exposed.is_null() {
            return Err(Fail::null("mgr_type.exposed"));
        }
        for i in 0..vt.exposed_len {
            exposed.push(arg_str(*vt.exposed.add(i), "mgr_type.exposed[i]")?.to_owned());
        }
        if vt.method_to_typeid_len > 0 && vt.method_to_typeid.is_null() {
            return Err(Fail::null("mgr_type.method_to_typeid"));
        }
        let mut targets = HashMap::new();
        for i in 0..vt.method_to_typeid_len {
            let pair = *vt.method_to_typeid.add(i);
            targets.insert(
                arg_str(pair.method, "mgr_type.method_to_typeid[i].method")?.to_owned(),
                arg_str(pair.type_id, "mgr_type.method_to_typeid[i].type_id")?.to_owned(),
            );
        }
        let mut copy = *vt;
        copy.exposed = std::ptr::null();
        copy.method_to_typeid = std::ptr::null();
        let ty = Rc::new(HostType {
            typeid: typeid.to_owned(),
            vt: copy,
            userdata,
            targets,
            types: Rc::downgrade(types),
            server_alive,
        });
        let names: Vec<&str> = exposed.iter().map(String::as_str).collect();
        let for_ctor = ty.clone();
        let mut spec = TypeSpec::new(typeid, &names, move |cx, args| for_ctor.construct(cx, args));
        for (m, t) in &ty.targets {
            spec = spec.method_to_typeid(m, t);
        }
        Ok((ty, spec))
    }

    /// A method_to_typeid entry `(method, target)` whose target `known` refuses.
    pub(crate) fn unknown_target(&self, known: impl Fn(&str) -> bool) -> Option<(&str, &str)> {
        self.targets
            .iter()
            .find(|(_, t)| !known(t))
            .map(|(m, t)| (m.as_str(), t.as_str()))
    }

    /// The host type `method`'s result becomes (method_to_typeid), if it is one.
    pub(crate) fn target_of(&self, method: &str) -> Option<Rc<HostType>> {
        let typeid = self.targets.get(method)?;
        self.types.upgrade()?.borrow().get(typeid).cloned()
    }

    /// Wraps the host's state `object` as an object of this type (released
    /// with its destroy callback when it goes).
    pub(crate) fn wrap(self: &Rc<Self>, object: *mut c_void) -> Box<dyn SharedObject> {
        Box::new(HostObject::new(self.clone(), object))
    }

    fn construct(
        self: &Rc<Self>,
        cx: &mut Context<'_>,
        args: CallArgs,
    ) -> Result<Box<dyn SharedObject>, RemoteError> {
        let mut object: *mut c_void = std::ptr::null_mut();
        if let Some(create) = self.vt.create {
            let (a, k) = c_args(args);
            let mut req = Request {
                cx,
                mode: Mode::Create,
                ty: self,
                method: "",
                answer: None,
            };
            // SAFETY: the host promised a valid callback; every pointer lives for the call.
            let status = req.with_handle(|r| unsafe {
                create(self.userdata, as_ptr(&a), as_ptr(&k), r, &mut object)
            });
            let raised = match req.answer {
                Some(Answer::Raise(e)) => Some(e),
                _ => None,
            };
            if status != mgr_status::MGR_OK || raised.is_some() {
                if status == mgr_status::MGR_OK && !object.is_null() {
                    // Raised but reported success: the state is still ours to release.
                    drop(HostObject::new(self.clone(), object));
                }
                return Err(raised.unwrap_or_else(|| failed(&self.typeid, "create", status)));
            }
        }
        Ok(Box::new(HostObject::new(self.clone(), object)))
    }
}

fn failed(typeid: &str, method: &str, status: mgr_status) -> RemoteError {
    RemoteError::new(
        "RuntimeError",
        format!(
            "host callback {typeid}.{method} failed with status {}",
            status as i32
        ),
    )
}

/// Positional args as a tuple, kwargs as a dict with str keys.
fn c_args(args: CallArgs) -> (Value, Value) {
    (
        Value::Tuple(args.args),
        Value::Dict(
            args.kwargs
                .into_iter()
                .map(|(k, v)| (Value::Str(k), v))
                .collect(),
        ),
    )
}

/// An object of a host type: the host's state pointer plus its type.
pub(crate) struct HostObject {
    ty: Rc<HostType>,
    object: *mut c_void,
    /// Deferred replies not yet known answered, to mark stale when their caller or
    /// this object goes.
    pending: Vec<AWeak<ReplyState>>,
}

impl HostObject {
    fn new(ty: Rc<HostType>, object: *mut c_void) -> HostObject {
        HostObject {
            ty,
            object,
            pending: Vec::new(),
        }
    }
}

impl SharedObject for HostObject {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        let call = self.ty.vt.call.expect("checked at registration");
        let cmethod = CString::new(method)
            .map_err(|_| RemoteError::value_error("method name contains NUL"))?;
        let (a, k) = c_args(args);
        let ty = self.ty.clone();
        let mut req = Request {
            cx,
            mode: Mode::Call,
            ty: &ty,
            method,
            answer: None,
        };
        // SAFETY: the host promised a valid callback; every pointer lives for the call.
        let status = req.with_handle(|r| unsafe {
            call(
                ty.userdata,
                self.object,
                cmethod.as_ptr(),
                as_ptr(&a),
                as_ptr(&k),
                r,
            )
        });
        let answer = req.answer.take();
        if status != mgr_status::MGR_OK {
            return Err(match answer {
                Some(Answer::Raise(e)) => e,
                Some(Answer::Deferred(state)) => {
                    state.mark_stale();
                    failed(&ty.typeid, method, status)
                }
                Some(Answer::Object(p)) => {
                    // The host handed the state over: release it with its type.
                    if let Some(t) = ty.target_of(method) {
                        drop(HostObject::new(t, p));
                    }
                    failed(&ty.typeid, method, status)
                }
                _ => failed(&ty.typeid, method, status),
            });
        }
        match answer {
            None => Ok(Outcome::Value(Value::None)),
            Some(Answer::Value(v)) => Ok(Outcome::Value(v)),
            Some(Answer::Raise(e)) => Err(e),
            Some(Answer::Object(p)) => match ty.target_of(method) {
                Some(t) => Ok(Outcome::Object(Box::new(HostObject::new(t, p)))),
                None => Err(RemoteError::type_error(format!(
                    "{method}() has no host method_to_typeid target"
                ))),
            },
            Some(Answer::Deferred(state)) => {
                self.pending.retain(|w| w.strong_count() > 0);
                self.pending.push(Arc::downgrade(&state));
                Ok(Outcome::Deferred)
            }
        }
    }

    fn on_cancel(&mut self, _cx: &mut Context<'_>, call: CallId) {
        let mut cancelled = None;
        self.pending.retain(|w| match w.upgrade() {
            Some(s) if s.id == call => {
                if s.claim_for_cancel() {
                    cancelled = Some(s);
                }
                false
            }
            Some(_) => true,
            None => false,
        });
        // The state is alive only while the host's mgr_reply is (the reply holds
        // the only strong reference once the call has deferred), so the pointer
        // handed over has not been freed.
        if let (Some(s), Some(cancel)) = (cancelled, self.ty.vt.cancel) {
            let boxed = s.boxed();
            if !boxed.is_null() {
                // SAFETY: the host promised a valid callback; `boxed` is its live reply.
                unsafe { cancel(self.ty.userdata, self.object, boxed) };
            }
        }
    }

    fn on_destroy(&mut self, _cx: &mut Context<'_>) {
        for s in self.pending.drain(..).filter_map(|w| w.upgrade()) {
            s.mark_stale();
        }
    }

    fn repr(&self) -> Option<String> {
        let repr = self.ty.vt.repr?;
        // SAFETY: the host promised a valid callback returning an owned value or NULL.
        let v = unsafe { from_raw(repr(self.ty.userdata, self.object)) }?;
        Some(v.into_str().unwrap_or_else(|other| other.to_string()))
    }
}

impl Drop for HostObject {
    fn drop(&mut self) {
        for s in self.pending.drain(..).filter_map(|w| w.upgrade()) {
            s.mark_stale();
        }
        if let Some(destroy) = self.ty.vt.destroy {
            // SAFETY: the host promised a valid callback; the state is released once.
            unsafe { destroy(self.ty.userdata, self.object) };
        }
    }
}
