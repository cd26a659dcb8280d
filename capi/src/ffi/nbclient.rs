//! `mgr_nb_client` and `mgr_nb_proxy`: the non-blocking client from C, over
//! [`NbClient`] and [`NbProxy`], for use inside the host's own poll/epoll loop
//! (next to an embedded `mgr_server`, other clients, anything).
//!
//! Shape, after hiredis's async API: the host polls [`mgr_nb_client_fd`] for
//! [`mgr_nb_client_events`] with at most [`mgr_nb_client_timeout_ms`], and
//! calls [`mgr_nb_client_process`] when it is ready (spurious calls are
//! harmless). Every call takes one callback plus a `userdata` pointer and
//! returns at once; the callback runs later, only from inside
//! `mgr_nb_client_process` (or `mgr_nb_client_free`), on the loop's thread.
//! A callback per call (rather than a queue of finished calls to poll) fits C
//! best: the caller's per-call context travels in `userdata` with no table to
//! look it up in, and because every call that returned `MGR_OK` completes
//! exactly once — with its result, a remote error, or `MGR_ERR_CLOSED` when the
//! connection fails or the client is freed — the caller can always free that
//! context in the callback.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};
use std::ptr::{addr_of, addr_of_mut};
use std::time::Duration;

use super::status::{mgr_status, Fail};
use super::value::{arg_args, arg_kwargs, into_raw, mgr_value};
use super::{arg_bytes, arg_str, out_ptr};
use crate::client::{NbClient, NbConfig, NbProxy, NbResult, NbReturned};
use crate::proto::session::Phase;
use crate::proto::Value;

/// The options layout version this library understands.
pub const MGR_NB_OPTIONS_VERSION: u32 = 1;

/// [`mgr_nb_client_events`]: poll for reading (`POLLIN`).
pub const MGR_NB_READ: u32 = 1;
/// [`mgr_nb_client_events`]: poll for writing too (`POLLOUT`).
pub const MGR_NB_WRITE: u32 = 2;

/// Bounds of a non-blocking client, for [`mgr_nb_client_connect`]. Fill with
/// [`mgr_nb_options_init`] (or zero it and set `version`): a zero field keeps
/// its default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgr_nb_options {
    /// Must be [`MGR_NB_OPTIONS_VERSION`].
    pub version: u32,
    /// Calls outstanding at once (default 4096); a call beyond is refused with
    /// `MGR_ERR_WOULD_BLOCK`.
    pub max_pending: u32,
    /// Largest reply accepted, in bytes (default 64 MiB); a larger one closes
    /// the connection before it is buffered.
    pub max_frame: u64,
    /// Bytes of requests waiting unsent (default 16 MiB) beyond which a call is
    /// refused with `MGR_ERR_WOULD_BLOCK`.
    pub max_output: u64,
    /// The connect and handshake must finish within this many milliseconds
    /// (default 10000).
    pub handshake_timeout_ms: u32,
}

/// Where a non-blocking client stands ([`mgr_nb_client_phase`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgr_nb_phase {
    /// Connecting and authenticating; calls started now wait for it.
    MGR_NB_CONNECTING = 0,
    /// Authenticated: calls go out as they are started.
    MGR_NB_READY = 1,
    /// Failed or closed: every call has completed; free the client.
    MGR_NB_CLOSED = 2,
}

/// NULL: closed.
impl super::status::FfiReturn for mgr_nb_phase {
    fn failed(_: mgr_status) -> Self {
        mgr_nb_phase::MGR_NB_CLOSED
    }
}

/// A non-blocking connection to a manager server (opaque). Owned: free with
/// [`mgr_nb_client_free`]. Belongs to the thread that runs its loop.
#[derive(Debug)]
pub struct mgr_nb_client {
    _private: [u8; 0],
}

/// A reference to a shared object held through a non-blocking client
/// (opaque). Owned: free with [`mgr_nb_proxy_free`], which queues the release
/// of the reference without blocking.
#[derive(Debug)]
pub struct mgr_nb_proxy {
    _private: [u8; 0],
}

/// A completion callback. `userdata` is the pointer given with the call.
/// `client` is the client (to start more calls from the callback), or NULL
/// when the callback runs from [`mgr_nb_client_free`]. On `MGR_OK` exactly
/// one of `value` (a plain result) and `proxy` (a new shared object, from
/// [`mgr_nb_create`] or a method in the type's method_to_typeid) is non-NULL,
/// and it is owned by the callback: free it with `mgr_value_free` /
/// [`mgr_nb_proxy_free`]. Otherwise both are NULL and the status says why:
/// `MGR_ERR_REMOTE` (kind and message from `mgr_last_error_kind()` /
/// `mgr_last_error()`, valid during the callback), `MGR_ERR_CLOSED` or
/// `MGR_ERR_IO` (the connection failed or closed), `MGR_ERR_AUTH` (the
/// handshake failed), `MGR_ERR_PROTOCOL` (a reply that could not be read).
///
/// Every call that returned `MGR_OK` gets its callback exactly once, and
/// callbacks run only inside `mgr_nb_client_process` and
/// `mgr_nb_client_free` (never inside the call that started them), so a
/// call's context can travel in `userdata` and be freed in the callback: no
/// table of calls to look up, as a queue of finished calls to poll would
/// need (hiredis's shape). Callbacks may start more calls on `client`, read
/// it, or free it ([`mgr_nb_client_free`]); `client` stays owned by the
/// caller of [`mgr_nb_client_connect`]. `userdata` is the caller's: the
/// library never reads or frees it. The callback must not unwind (no C++
/// exception or `longjmp` out of it).
pub type mgr_nb_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        client: *mut mgr_nb_client,
        status: mgr_status,
        value: *mut mgr_value,
        proxy: *mut mgr_nb_proxy,
    ),
>;

/// The Rust side of `mgr_nb_client`. `#[repr(C)]` with the client first, so
/// the box's pointer is the client's.
///
/// Aliasing: a C callback may call back into its own client (`mgr_nb_call`,
/// `mgr_nb_client_free`, `mgr_nb_client_pending` …) while
/// `mgr_nb_client_process` is running it, i.e. while `NbClient::process`
/// holds `&mut NbClient` and has passed a reborrow of it to the callback. So
/// no function here ever makes a `&mut NbBox` or `&NbBox`: the box is reached
/// only through its raw pointer (from `Box::into_raw`), the flags are `Cell`s
/// reached by shared references to those fields alone (never overlapping the
/// client's bytes), and the client is reached through [`client_of`], which
/// inside a callback returns the pointer *derived from the `&mut NbClient`
/// the callback was given* (`current`) instead of a fresh one from the box.
/// A nested call thus reborrows the borrow that is live (the callback does
/// not use it while C runs) and never creates a second, sibling `&mut` to the
/// same client. The box is dropped only when no borrow of it is live: from
/// `mgr_nb_client_free` outside any callback, after `close` has run every
/// callback, or at the end of `mgr_nb_client_process`.
#[repr(C)]
struct NbBox {
    client: NbClient,
    /// Being freed: callbacks get NULL for the client.
    freeing: Cell<bool>,
    /// Freed from inside one of its callbacks: freed when `process` returns.
    free_after: Cell<bool>,
    /// While a C callback runs: the `&mut NbClient` that callback was given,
    /// as a raw pointer (see the type's docs). NULL otherwise.
    current: Cell<*mut NbClient>,
}

/// The box behind a non-NULL handle.
fn arg_box(p: *const mgr_nb_client) -> Result<*mut NbBox, Fail> {
    if p.is_null() {
        return Err(Fail::null("client"));
    }
    Ok(p.cast_mut().cast())
}

/// The box's flag cells, borrowed without touching the client's bytes.
///
/// # Safety
/// `b` is a live box.
unsafe fn flags<'a>(b: *mut NbBox) -> (&'a Cell<bool>, &'a Cell<bool>, &'a Cell<*mut NbClient>) {
    (
        &*addr_of!((*b).freeing),
        &*addr_of!((*b).free_after),
        &*addr_of!((*b).current),
    )
}

/// The client to use now: inside one of its callbacks, the pointer derived
/// from the `&mut NbClient` that callback was given; else the box's own.
///
/// # Safety
/// `b` is a live box; the caller's reference made from the result must end
/// before it returns to C.
unsafe fn client_of(b: *mut NbBox) -> *mut NbClient {
    let cur = flags(b).2.get();
    if cur.is_null() {
        addr_of_mut!((*b).client)
    } else {
        cur
    }
}

struct NbProxyBox {
    proxy: NbProxy,
    typeid: CString,
}

fn boxed_proxy(proxy: NbProxy) -> *mut mgr_nb_proxy {
    let typeid = CString::new(proxy.token().typeid.clone()).unwrap_or_default();
    Box::into_raw(Box::new(NbProxyBox { proxy, typeid })).cast()
}

/// A shared borrow of the client behind a handle, for the readers (see
/// [`NbBox`] on why it goes through [`client_of`]).
unsafe fn arg_nb_ref<'a>(p: *const mgr_nb_client) -> Result<&'a NbClient, Fail> {
    Ok(&*client_of(arg_box(p)?))
}

unsafe fn arg_nb_proxy<'a>(p: *const mgr_nb_proxy) -> Result<&'a NbProxyBox, Fail> {
    p.cast::<NbProxyBox>()
        .as_ref()
        .ok_or_else(|| Fail::null("proxy"))
}

/// The Rust callback that hands a result to the C one.
fn completion(
    boxp: *mut NbBox,
    cb: mgr_nb_callback,
    userdata: *mut c_void,
) -> impl FnOnce(&mut NbClient, NbResult) + 'static {
    let userdata = userdata as usize;
    move |c: &mut NbClient, r: NbResult| {
        let Some(cb) = cb else {
            return; // fire and forget: the result is dropped here
        };
        // SAFETY: the box is alive while its callbacks run (they run from its
        // process, its close or its drop); the flags are reached without
        // touching the client's bytes (see `NbBox`).
        let (freeing, _, current) = unsafe { flags(boxp) };
        let client = if freeing.get() {
            std::ptr::null_mut()
        } else {
            boxp.cast::<mgr_nb_client>()
        };
        let userdata = userdata as *mut c_void;
        let (status, value, proxy) = match r {
            Ok(NbReturned::Value(v)) => (mgr_status::MGR_OK, into_raw(v), std::ptr::null_mut()),
            Ok(NbReturned::Proxy(p)) => (mgr_status::MGR_OK, std::ptr::null_mut(), boxed_proxy(p)),
            Err(e) => {
                let f = Fail::from(e);
                f.record();
                (f.status, std::ptr::null_mut(), std::ptr::null_mut())
            }
        };
        // Calls back into this client from C reborrow `c` (not used again
        // until C returns) through `current`.
        let outer = current.replace(c as *mut NbClient);
        // A panic must not unwind into C, nor C's unwinding into Rust: the
        // callback is C's and does not unwind.
        unsafe { cb(userdata, client, status, value, proxy) };
        current.set(outer);
    }
}

/// Fills `*out` with the current version and every default.
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_options_init(out: *mut mgr_nb_options) -> mgr_status {
    ffi_boundary! {
        let out = out_ptr(out, "out")?;
        let d = NbConfig::default();
        *out = mgr_nb_options {
            version: MGR_NB_OPTIONS_VERSION,
            max_pending: d.max_pending.min(u32::MAX as usize) as u32,
            max_frame: d.max_frame,
            max_output: d.max_output as u64,
            handshake_timeout_ms: d
                .handshake_timeout
                .map_or(0, |t| t.as_millis().min(u32::MAX as u128) as u32),
        };
        Ok(mgr_status::MGR_OK)
    }
}

/// Starts connecting to `address` (`host:port` or `unix:/path`) with the
/// `authkey_len`-byte `authkey` (NULL allowed when the length is 0), without
/// waiting: the connect and handshake go on in [`mgr_nb_client_process`], and
/// calls may be started at once (they are sent after the handshake; if it
/// fails they complete with `MGR_ERR_AUTH` or `MGR_ERR_IO`). `options` may be
/// NULL for defaults. On success writes an owned client to `*out` (free with
/// [`mgr_nb_client_free`]). Fails at once only when the socket cannot be made
/// (`MGR_ERR_IO`) or the address is malformed. A host name is looked up here,
/// which blocks: pass an IP address to avoid it. `address`, `authkey` and
/// `options` are borrowed (read before it returns).
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_client_connect(
    address: *const c_char,
    authkey: *const u8,
    authkey_len: usize,
    options: *const mgr_nb_options,
    out: *mut *mut mgr_nb_client,
) -> mgr_status {
    ffi_boundary! {
        let address = arg_str(address, "address")?
            .parse::<crate::address::Address>()
            .map_err(crate::Error::from)?;
        let key = arg_bytes(authkey, authkey_len, "authkey")?;
        let out = out_ptr(out, "out")?;
        let mut config = NbConfig::default();
        if let Some(o) = options.as_ref() {
            if o.version != MGR_NB_OPTIONS_VERSION {
                return Err(Fail::new(
                    mgr_status::MGR_ERR_INVALID_ARGUMENT,
                    format!("unknown mgr_nb_options version {}", o.version),
                ));
            }
            if o.max_pending != 0 {
                config.max_pending = o.max_pending as usize;
            }
            if o.max_frame != 0 {
                config.max_frame = o.max_frame;
            }
            if o.max_output != 0 {
                config.max_output = o.max_output.min(usize::MAX as u64) as usize;
            }
            if o.handshake_timeout_ms != 0 {
                config.handshake_timeout = Some(Duration::from_millis(o.handshake_timeout_ms.into()));
            }
        }
        let client = NbClient::connect(&address, key, config)?;
        *out = Box::into_raw(Box::new(NbBox {
            client,
            freeing: Cell::new(false),
            free_after: Cell::new(false),
            current: Cell::new(std::ptr::null_mut()),
        }))
        .cast();
        Ok(mgr_status::MGR_OK)
    }
}

/// Frees the client and closes its connection. Every call not yet completed
/// completes now, with `MGR_ERR_CLOSED` and a NULL client, so its userdata can
/// be freed. NULL is a no-op. From inside one of this client's callbacks the
/// client is closed at once and freed when [`mgr_nb_client_process`] returns
/// (which then returns `MGR_ERR_CLOSED`): do not use it after this call.
/// Proxies made from it stay valid (free them as usual; their decref is then
/// dropped: the server releases a closed connection's references itself).
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_client_free(client: *mut mgr_nb_client) {
    ffi_boundary! {
        let b = client.cast::<NbBox>();
        if b.is_null() {
            return Ok(());
        }
        let (freeing, free_after, _) = flags(b);
        freeing.set(true);
        let c = &mut *client_of(b);
        if c.is_processing() {
            free_after.set(true);
            c.close();
        } else {
            // Runs every callback not yet run (with a NULL client) while only
            // the client field is borrowed; the drop then finds none.
            c.close();
            drop(Box::from_raw(b));
        }
        Ok(())
    }
}

/// The socket to poll (its events: [`mgr_nb_client_events`]). Owned by the
/// client: never close it. -1 for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_client_fd(client: *const mgr_nb_client) -> i32 {
    ffi_boundary! { Ok(arg_nb_ref(client)?.fd()) }
}

/// What to poll the fd for: [`MGR_NB_READ`], plus [`MGR_NB_WRITE`] while
/// requests wait unsent or the connect is in progress. Ask again after every
/// call and every [`mgr_nb_client_process`] (they change it). 0 for NULL and
/// once closed.
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_client_events(client: *const mgr_nb_client) -> u32 {
    ffi_boundary! {
        let c = arg_nb_ref(client)?;
        if c.phase() == Phase::Closed {
            return Ok(0);
        }
        Ok(MGR_NB_READ | if c.wants_write() { MGR_NB_WRITE } else { 0 })
    }
}

/// The longest the loop may wait before calling [`mgr_nb_client_process`]
/// even if the fd stays quiet, in milliseconds (rounded up): 0 while work
/// waits (a freed proxy's decref), the time left for the handshake while it
/// runs, -1 when no timer runs (and for NULL).
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_client_timeout_ms(client: *const mgr_nb_client) -> i32 {
    ffi_boundary! {
        Ok(match arg_nb_ref(client)?.timeout() {
            None => -1,
            Some(t) => {
                let ms = t.as_micros().div_ceil(1000);
                ms.min(i32::MAX as u128) as i32
            }
        })
    }
}

/// Does the ready work without blocking: finishes connecting, reads, writes,
/// fires the handshake deadline and runs the callbacks of finished calls
/// (callbacks may start further calls). Writes to `*did_work` (NULL allowed)
/// (caller-owned) whether it did anything: a loop may call again until it
/// is false. Call it
/// when the fd is ready or the timeout passed; spurious calls are harmless.
/// `MGR_OK`; `MGR_ERR_CLOSED` once the connection has closed (its calls have
/// all completed; the reason is `mgr_last_error()`; free the client), and if
/// the client was freed from inside a callback (it is gone now);
/// `MGR_ERR_BUSY` from inside one of this client's callbacks.
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_client_process(
    client: *mut mgr_nb_client,
    did_work: *mut bool,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_box(client)?;
        let c = &mut *client_of(b);
        if c.is_processing() {
            return Err(Fail::new(
                mgr_status::MGR_ERR_BUSY,
                "mgr_nb_client_process called from inside one of its callbacks",
            ));
        }
        // Not inside a callback (checked above), so `c` is the only borrow
        // of the client; callbacks reach it through `current` (see `NbBox`).
        let did = c.process();
        if !did_work.is_null() {
            *did_work = did;
        }
        if flags(b).1.get() {
            drop(Box::from_raw(b));
            return Err(Fail::new(mgr_status::MGR_ERR_CLOSED, "the client was freed"));
        }
        if let Some(e) = (*client_of(b)).close_reason() {
            let mut f = Fail::from(e);
            f.status = mgr_status::MGR_ERR_CLOSED;
            return Err(f);
        }
        Ok(mgr_status::MGR_OK)
    }
}

/// Where the client stands. `MGR_NB_CLOSED` for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_client_phase(client: *const mgr_nb_client) -> mgr_nb_phase {
    ffi_boundary! {
        Ok(match arg_nb_ref(client)?.phase() {
            Phase::Handshaking => mgr_nb_phase::MGR_NB_CONNECTING,
            Phase::Ready => mgr_nb_phase::MGR_NB_READY,
            Phase::Closed => mgr_nb_phase::MGR_NB_CLOSED,
        })
    }
}

/// Calls started whose callbacks have not run yet (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_client_pending(client: *const mgr_nb_client) -> usize {
    ffi_boundary! { Ok(arg_nb_ref(client)?.pending()) }
}

/// The body of the three call starters.
unsafe fn start(
    client: *mut mgr_nb_client,
    cb: mgr_nb_callback,
    userdata: *mut c_void,
    go: impl FnOnce(
        &mut NbClient,
        Box<dyn FnOnce(&mut NbClient, NbResult)>,
    ) -> crate::Result<crate::proto::session::CallId>,
) -> Result<mgr_status, Fail> {
    let b = arg_box(client)?;
    if flags(b).0.get() {
        return Err(Fail::new(
            mgr_status::MGR_ERR_CLOSED,
            "the client is being freed",
        ));
    }
    let done = completion(b, cb, userdata);
    go(&mut *client_of(b), Box::new(done))?;
    Ok(mgr_status::MGR_OK)
}

/// Starts creating a shared object of `type_id` with `args` (list/tuple or
/// NULL) and `kwargs` (dict or NULL), both borrowed, like `type_id`; returns
/// at once. On `MGR_OK`, `cb` runs once, later, from
/// [`mgr_nb_client_process`] (or [`mgr_nb_client_free`]), with an owned
/// proxy for the new object (the callback frees it) or the constructor's
/// error; with a NULL `cb` the library frees the result itself. `userdata` is
/// handed to `cb` untouched (never freed by the library). Refused at once (and `cb` never runs):
/// `MGR_ERR_CLOSED` once closed, `MGR_ERR_WOULD_BLOCK` while the pending-call
/// table or the output buffer is full (process, then retry).
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_create(
    client: *mut mgr_nb_client,
    type_id: *const c_char,
    args: *const mgr_value,
    kwargs: *const mgr_value,
    cb: mgr_nb_callback,
    userdata: *mut c_void,
) -> mgr_status {
    ffi_boundary! {
        let typeid = arg_str(type_id, "type_id")?;
        let (args, kwargs) = (arg_args(args)?, arg_kwargs(kwargs)?);
        start(client, cb, userdata, |c, done| c.create(typeid, args, kwargs, done))
    }
}

/// Starts a call of `method` on `proxy`'s object (a proxy of this client:
/// another client's is `MGR_ERR_PROTOCOL`) with `args` and `kwargs`
/// (NULL allowed); `proxy`, `method`, `args` and `kwargs` are borrowed (the
/// proxy may be freed as soon as this returns, even from the callback);
/// returns at once. `cb` gets an owned value, or an owned proxy when the
/// method is in the type's method_to_typeid (the callback frees it; with a
/// NULL `cb` the library does). Calls
/// on one client are answered in the order they were started. Refusals as
/// for [`mgr_nb_create`].
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_call(
    client: *mut mgr_nb_client,
    proxy: *const mgr_nb_proxy,
    method: *const c_char,
    args: *const mgr_value,
    kwargs: *const mgr_value,
    cb: mgr_nb_callback,
    userdata: *mut c_void,
) -> mgr_status {
    ffi_boundary! {
        let p = &arg_nb_proxy(proxy)?.proxy;
        let method = arg_str(method, "method")?;
        let (args, kwargs) = (arg_args(args)?, arg_kwargs(kwargs)?);
        start(client, cb, userdata, |c, done| c.call(p, method, args, kwargs, done))
    }
}

/// Starts a call of one of the server's public methods (`number_of_objects`,
/// `debug_info`, `dummy` …) with `method` and `args` (borrowed, NULL allowed
/// for `args`); as [`mgr_nb_call`] otherwise.
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_public(
    client: *mut mgr_nb_client,
    method: *const c_char,
    args: *const mgr_value,
    cb: mgr_nb_callback,
    userdata: *mut c_void,
) -> mgr_status {
    ffi_boundary! {
        let method = arg_str(method, "method")?;
        let args = arg_args(args)?;
        start(client, cb, userdata, |c, done| c.public(method, args, done))
    }
}

/// The proxied object's id on its server (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_proxy_id(proxy: *const mgr_nb_proxy) -> u64 {
    ffi_boundary! { Ok(arg_nb_proxy(proxy)?.proxy.id().0) }
}

/// The proxied object's typeid. Owned by the proxy: valid until
/// [`mgr_nb_proxy_free`]. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_proxy_typeid(proxy: *const mgr_nb_proxy) -> *const c_char {
    ffi_boundary! { Ok(arg_nb_proxy(proxy)?.typeid.as_ptr()) }
}

/// A new reference value naming the proxied object, to pass it as an argument.
/// Owned: free with `mgr_value_free`. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_proxy_to_value(proxy: *const mgr_nb_proxy) -> *mut mgr_value {
    ffi_boundary! { Ok(into_raw(Value::Ref(arg_nb_proxy(proxy)?.proxy.token().clone()))) }
}

/// Frees a proxy and queues the release of its reference (sent by the
/// client's next call or [`mgr_nb_client_process`]; never blocks). Allowed
/// after its client was freed. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn mgr_nb_proxy_free(proxy: *mut mgr_nb_proxy) {
    ffi_boundary! {
        if !proxy.is_null() {
            drop(Box::from_raw(proxy.cast::<NbProxyBox>()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Server, ServerConfig};
    use std::cell::RefCell;
    use std::ptr;

    const KEY: &[u8] = b"nb-ffi";

    /// What each callback saw: its status, whether it got a client, and a
    /// request to act from inside the callback.
    #[derive(Default)]
    struct Log {
        calls: RefCell<Vec<(mgr_status, bool)>>,
        /// Free the client from inside the first callback.
        free_in_callback: bool,
        /// What `mgr_nb_client_process` answered from inside a callback.
        nested: RefCell<Option<mgr_status>>,
    }

    unsafe extern "C" fn record(
        userdata: *mut c_void,
        client: *mut mgr_nb_client,
        status: mgr_status,
        value: *mut mgr_value,
        proxy: *mut mgr_nb_proxy,
    ) {
        let log = &*(userdata as *const Log);
        log.calls.borrow_mut().push((status, !client.is_null()));
        super::super::value::mgr_value_free(value);
        mgr_nb_proxy_free(proxy);
        if !client.is_null() && log.nested.borrow().is_none() {
            *log.nested.borrow_mut() = Some(mgr_nb_client_process(client, ptr::null_mut()));
            if log.free_in_callback {
                mgr_nb_client_free(client);
            }
        }
    }

    fn server() -> (Server, CString) {
        let mut s = Server::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY)).unwrap();
        s.register_builtins();
        let a = CString::new(s.address().to_string()).unwrap();
        (s, a)
    }

    unsafe fn connect(address: &CString, max_pending: u32) -> *mut mgr_nb_client {
        let mut o = std::mem::zeroed::<mgr_nb_options>();
        assert_eq!(mgr_nb_options_init(&mut o), mgr_status::MGR_OK);
        o.max_pending = max_pending;
        let mut c = ptr::null_mut();
        let st = mgr_nb_client_connect(address.as_ptr(), KEY.as_ptr(), KEY.len(), &o, &mut c);
        assert_eq!(st, mgr_status::MGR_OK);
        c
    }

    /// Turns the server and the client until `done` (a guard bounds it).
    unsafe fn drive(
        s: &mut Server,
        c: *mut mgr_nb_client,
        mut done: impl FnMut() -> bool,
    ) -> mgr_status {
        for _ in 0..100_000 {
            s.turn(Some(Duration::from_millis(1))).unwrap();
            let st = mgr_nb_client_process(c, ptr::null_mut());
            if st != mgr_status::MGR_OK || done() {
                return st;
            }
        }
        panic!("not done");
    }

    #[test]
    fn a_full_table_refuses_at_once_and_nested_process_is_busy() {
        let (mut s, a) = server();
        let log = Log::default();
        let ud = &log as *const Log as *mut c_void;
        unsafe {
            let c = connect(&a, 1);
            let dummy = c"dummy".as_ptr();
            assert_eq!(
                mgr_nb_public(c, dummy, ptr::null(), Some(record), ud),
                mgr_status::MGR_OK
            );
            assert_eq!(
                mgr_nb_public(c, dummy, ptr::null(), Some(record), ud),
                mgr_status::MGR_ERR_WOULD_BLOCK
            );
            assert_eq!(mgr_nb_client_pending(c), 1);
            assert_eq!(
                drive(&mut s, c, || !log.calls.borrow().is_empty()),
                mgr_status::MGR_OK
            );
            assert_eq!(*log.calls.borrow(), [(mgr_status::MGR_OK, true)]);
            assert_eq!(*log.nested.borrow(), Some(mgr_status::MGR_ERR_BUSY));
            assert_eq!(mgr_nb_client_phase(c), mgr_nb_phase::MGR_NB_READY);
            assert_eq!(mgr_nb_client_events(c) & MGR_NB_READ, MGR_NB_READ);
            // The slot is free again.
            assert_eq!(
                mgr_nb_public(c, dummy, ptr::null(), None, ptr::null_mut()),
                mgr_status::MGR_OK
            );
            mgr_nb_client_free(c);
        }
    }

    #[test]
    fn freeing_from_a_callback_completes_the_rest_once_with_no_client() {
        let (mut s, a) = server();
        let log = Log {
            free_in_callback: true,
            ..Log::default()
        };
        let ud = &log as *const Log as *mut c_void;
        unsafe {
            let c = connect(&a, 0);
            for _ in 0..3 {
                let st = mgr_nb_public(c, c"dummy".as_ptr(), ptr::null(), Some(record), ud);
                assert_eq!(st, mgr_status::MGR_OK);
            }
            // The first callback frees the client; process says so.
            let st = drive(&mut s, c, || false);
            assert_eq!(st, mgr_status::MGR_ERR_CLOSED);
            let calls = log.calls.borrow().clone();
            assert_eq!(calls.len(), 3, "every call completed once");
            assert_eq!(calls[0], (mgr_status::MGR_OK, true));
            // Replies already read when the client was freed still count as
            // answered; the rest failed. None of them got the client.
            assert!(calls[1..].iter().all(|&(_, has_client)| !has_client));
            assert!(calls[1..]
                .iter()
                .all(|&(st, _)| matches!(st, mgr_status::MGR_OK | mgr_status::MGR_ERR_CLOSED)));
        }
    }

    /// Chains calls from inside callbacks: each callback reads its client's
    /// counters and starts the next call on it (the re-entry `NbBox`'s
    /// aliasing rules are about).
    unsafe extern "C" fn chain(
        userdata: *mut c_void,
        client: *mut mgr_nb_client,
        status: mgr_status,
        value: *mut mgr_value,
        _proxy: *mut mgr_nb_proxy,
    ) {
        let left = &*(userdata as *const RefCell<Vec<(mgr_status, usize)>>);
        super::super::value::mgr_value_free(value);
        left.borrow_mut()
            .push((status, mgr_nb_client_pending(client)));
        if left.borrow().len() < 5 {
            let st = mgr_nb_public(
                client,
                c"dummy".as_ptr(),
                ptr::null(),
                Some(chain),
                userdata,
            );
            assert_eq!(st, mgr_status::MGR_OK);
            assert_eq!(mgr_nb_client_pending(client), 1, "the new call is pending");
            assert_ne!(mgr_nb_client_events(client), 0);
        }
    }

    #[test]
    fn callbacks_start_calls_on_their_own_client() {
        let (mut s, a) = server();
        let seen = RefCell::new(Vec::<(mgr_status, usize)>::new());
        let ud = &seen as *const _ as *mut c_void;
        unsafe {
            let c = connect(&a, 0);
            let st = mgr_nb_public(c, c"dummy".as_ptr(), ptr::null(), Some(chain), ud);
            assert_eq!(st, mgr_status::MGR_OK);
            let st = drive(&mut s, c, || seen.borrow().len() == 5);
            assert_eq!(st, mgr_status::MGR_OK);
            // Each ran with its own call already off the table.
            assert_eq!(*seen.borrow(), vec![(mgr_status::MGR_OK, 0); 5]);
            assert_eq!(mgr_nb_client_pending(c), 0);
            mgr_nb_client_free(c);
        }
    }

    #[test]
    fn null_and_bad_arguments_are_refused() {
        let mut c = ptr::null_mut();
        unsafe {
            assert_eq!(
                mgr_nb_client_connect(
                    c"not an address".as_ptr(),
                    ptr::null(),
                    0,
                    ptr::null(),
                    &mut c
                ),
                mgr_status::MGR_ERR_INVALID_ARGUMENT
            );
            let mut o = std::mem::zeroed::<mgr_nb_options>();
            o.version = 99;
            assert_eq!(
                mgr_nb_client_connect(c"127.0.0.1:1".as_ptr(), ptr::null(), 0, &o, &mut c),
                mgr_status::MGR_ERR_INVALID_ARGUMENT
            );
            assert!(c.is_null());
            assert_eq!(mgr_nb_client_fd(ptr::null()), -1);
            assert_eq!(mgr_nb_client_events(ptr::null()), 0);
            assert_eq!(mgr_nb_client_timeout_ms(ptr::null()), -1);
            assert_eq!(
                mgr_nb_client_phase(ptr::null()),
                mgr_nb_phase::MGR_NB_CLOSED
            );
            assert_eq!(
                mgr_nb_client_process(ptr::null_mut(), ptr::null_mut()),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            assert_eq!(
                mgr_nb_call(
                    ptr::null_mut(),
                    ptr::null(),
                    c"m".as_ptr(),
                    ptr::null(),
                    ptr::null(),
                    None,
                    ptr::null_mut()
                ),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            assert_eq!(mgr_nb_proxy_id(ptr::null()), 0);
            assert!(mgr_nb_proxy_typeid(ptr::null()).is_null());
            mgr_nb_proxy_free(ptr::null_mut());
            mgr_nb_client_free(ptr::null_mut());
        }
    }
}
