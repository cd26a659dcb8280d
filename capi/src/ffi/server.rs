//! `mgr_server`: the embedded server from C — create, register host types, and
//! drive it from the host's loop (fd / timeout / process) or give it the thread.
//!
//! One `mgr_server_process` call is a bounded turn: it serves at most a set
//! number of requests or microseconds of them ([`mgr_server_set_turn_budget`]),
//! round-robin over the connections, and leaves the rest for the next call;
//! `mgr_server_pending` then says so and `mgr_server_timeout_ms` returns 0.
//!
//! The server lives in a `RefCell`: functions that need all of it (process, run,
//! register, free, counting objects) take it for their duration, so one called
//! from inside a host callback (while the server is busy running that callback)
//! is refused with `MGR_ERR_BUSY` instead of aliasing it. Shutdown from a
//! callback is queued instead.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CString};
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::host_type::{mgr_type, read_vtable, HostType, Types};
use super::request::{fill_sized, mgr_peer};
use super::status::{mgr_status, Fail};
use super::value::{arg_args, arg_kwargs, mgr_value};
use super::{arg_bytes, arg_str, out_ptr};
use crate::address::Address;
use crate::server::{CallArgs, LogEvent, Server, ServerConfig, ServerHandle};

/// The options layout version this library understands.
pub const MGR_SERVER_OPTIONS_VERSION: u32 = 1;

/// Server limits for [`mgr_server_new`]. Fill with [`mgr_server_options_init`]
/// (or zero it and set `version`): a zero field keeps its default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgr_server_options {
    /// Must be [`MGR_SERVER_OPTIONS_VERSION`].
    pub version: u32,
    /// Authenticated connections allowed at once (default 10000); those still
    /// authenticating count against [`mgr_server_set_max_preauth_connections`]
    /// instead.
    pub max_connections: u32,
    /// Largest frame accepted after the handshake, in bytes (default 64 MiB).
    pub max_frame: u64,
    /// Output buffered per connection before it stops being served until it
    /// reads its replies, in bytes (default 4 MiB).
    pub max_output: u64,
    /// A peer that has not authenticated within this many milliseconds is
    /// dropped (default 10000).
    pub handshake_timeout_ms: u32,
}

/// An embedded manager server (opaque). Owned by the host; free it with
/// [`mgr_server_free`]. Belongs to the thread that created it, except for
/// [`mgr_server_shutdown`]'s queued path and `mgr_reply_*`.
#[derive(Debug)]
pub struct mgr_server {
    _private: [u8; 0],
}

/// The Rust side of `mgr_server`.
pub(crate) struct ServerBox {
    inner: RefCell<Option<Server>>,
    handle: ServerHandle,
    address: CString,
    fd: RawFd,
    alive: Arc<AtomicBool>,
    types: Rc<RefCell<Types>>,
}

unsafe fn arg_server<'a>(p: *const mgr_server) -> Result<&'a ServerBox, Fail> {
    p.cast::<ServerBox>()
        .as_ref()
        .ok_or_else(|| Fail::null("server"))
}

fn busy() -> Fail {
    Fail::new(
        mgr_status::MGR_ERR_BUSY,
        "the server is running a callback: this call is not allowed from inside one",
    )
}

impl ServerBox {
    fn with<R>(&self, f: impl FnOnce(&mut Server) -> Result<R, Fail>) -> Result<R, Fail> {
        let mut g = self.inner.try_borrow_mut().map_err(|_| busy())?;
        let s = g
            .as_mut()
            .ok_or_else(|| Fail::new(mgr_status::MGR_ERR_CLOSED, "the server is being freed"))?;
        f(s)
    }
}

/// Runs a setter on the server: `MGR_OK`, or the error of a NULL, busy (inside
/// a callback) or freed server.
unsafe fn set(server: *mut mgr_server, f: impl FnOnce(&mut Server)) -> Result<mgr_status, Fail> {
    arg_server(server)?.with(|s| {
        f(s);
        Ok(())
    })?;
    Ok(mgr_status::MGR_OK)
}

/// Fills `*out` with the current version and every default.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_options_init(out: *mut mgr_server_options) -> mgr_status {
    ffi_boundary! {
        let out = out_ptr(out, "out")?;
        let d = ServerConfig::new("127.0.0.1:0".parse().expect("valid"), b"");
        *out = mgr_server_options {
            version: MGR_SERVER_OPTIONS_VERSION,
            max_connections: d.max_connections.min(u32::MAX as usize) as u32,
            max_frame: d.max_frame,
            max_output: d.max_output as u64,
            handshake_timeout_ms: d.handshake_timeout.as_millis().min(u32::MAX as u128) as u32,
        };
        Ok(mgr_status::MGR_OK)
    }
}

/// Binds a server to `address` (`host:port`, port 0 picks one; or `unix:/path`)
/// with the `authkey_len`-byte secret `authkey` (may be empty only on loopback or
/// a Unix socket; NULL allowed when `authkey_len` is 0). `options` may be NULL
/// for defaults. On success writes an owned server to `*out` (free with
/// [`mgr_server_free`]). Registers no types.
///
/// A Unix socket file left at `address` by a crashed server (nothing accepts on
/// it) is replaced; a live socket, or a path that is not a socket, is refused
/// (and never removed). Errors name the address (`mgr_last_error`), e.g.
/// "127.0.0.1:50000 is already in use (another server?)".
#[no_mangle]
pub unsafe extern "C" fn mgr_server_new(
    address: *const c_char,
    authkey: *const u8,
    authkey_len: usize,
    options: *const mgr_server_options,
    out: *mut *mut mgr_server,
) -> mgr_status {
    ffi_boundary! {
        let address: Address = arg_str(address, "address")?.parse().map_err(crate::Error::from)?;
        let key = arg_bytes(authkey, authkey_len, "authkey")?;
        let out = out_ptr(out, "out")?;
        let config = configure(ServerConfig::new(address, key), options)?;
        *out = boxed(Server::bind(config)?);
        Ok(mgr_status::MGR_OK)
    }
}

/// Serves on `fd`, a socket already bound and listening (from systemd's socket
/// activation, or a parent): a TCP (IPv4 or IPv6) or Unix path stream socket.
/// The library owns `fd` from this call on, whatever it returns (it is closed
/// on failure). It is made non-blocking and close-on-exec; its backlog is kept;
/// a Unix socket's file is not removed when the server is freed. `authkey`,
/// `options` and `out` as for [`mgr_server_new`] (an empty key only if the
/// socket is on loopback or a Unix socket). `MGR_ERR_IO` names the descriptor
/// when it is not a listening stream socket.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_from_fd(
    fd: RawFd,
    authkey: *const u8,
    authkey_len: usize,
    options: *const mgr_server_options,
    out: *mut *mut mgr_server,
) -> mgr_status {
    ffi_boundary! {
        if fd < 0 {
            return Err(Fail::new(mgr_status::MGR_ERR_INVALID_ARGUMENT, format!("fd {fd} is not a descriptor")));
        }
        // SAFETY: the caller hands `fd` over, open or not (adoption checks it).
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let key = arg_bytes(authkey, authkey_len, "authkey")?;
        let out = out_ptr(out, "out")?;
        let placeholder = Address::Tcp(([127, 0, 0, 1], 0).into());
        let config = configure(ServerConfig::new(placeholder, key), options)?;
        *out = boxed(Server::from_listener(owned, config)?);
        Ok(mgr_status::MGR_OK)
    }
}

/// Applies the caller's `options` (NULL: defaults) to `config`.
unsafe fn configure(
    mut config: ServerConfig,
    options: *const mgr_server_options,
) -> Result<ServerConfig, Fail> {
    if let Some(o) = options.as_ref() {
        if o.version != MGR_SERVER_OPTIONS_VERSION {
            return Err(Fail::new(
                mgr_status::MGR_ERR_INVALID_ARGUMENT,
                format!("mgr_server_options.version is {}, this library supports {MGR_SERVER_OPTIONS_VERSION}", o.version),
            ));
        }
        if o.max_connections != 0 {
            config.max_connections = o.max_connections as usize;
        }
        if o.max_frame != 0 {
            config.max_frame = o.max_frame;
        }
        if o.max_output != 0 {
            config.max_output = usize::try_from(o.max_output).unwrap_or(usize::MAX);
        }
        if o.handshake_timeout_ms != 0 {
            config.handshake_timeout = Duration::from_millis(o.handshake_timeout_ms.into());
        }
    }
    Ok(config)
}

/// The server as the C caller holds it.
fn boxed(server: Server) -> *mut mgr_server {
    let b = ServerBox {
        handle: server.handle(),
        address: CString::new(server.address().to_string()).unwrap_or_default(),
        fd: server.fd(),
        alive: Arc::new(AtomicBool::new(true)),
        types: Rc::new(RefCell::new(HashMap::new())),
        inner: RefCell::new(Some(server)),
    };
    Box::into_raw(Box::new(b)).cast()
}

/// Registers (or replaces) the host type `type_id`. `vtable` is copied, with the
/// strings it points to; `userdata` is passed first to every callback and must
/// stay valid until [`mgr_server_free`] returns. Objects of a replaced type keep
/// the old callbacks. `MGR_ERR_BUSY` from inside a callback.
/// `MGR_ERR_INVALID_ARGUMENT` for an empty `type_id`, or a `method_to_typeid`
/// entry naming a typeid that is neither `type_id` itself nor registered already
/// (register the target types first).
#[no_mangle]
pub unsafe extern "C" fn mgr_server_register(
    server: *mut mgr_server,
    type_id: *const c_char,
    vtable: *const mgr_type,
    userdata: *mut c_void,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        let typeid = arg_str(type_id, "type_id")?;
        if typeid.is_empty() {
            return Err(Fail::new(mgr_status::MGR_ERR_INVALID_ARGUMENT, "type_id must not be empty"));
        }
        let vt = read_vtable(vtable)?;
        b.with(|s| {
            let (ty, spec) = HostType::new(typeid, &vt, userdata, &b.types, b.alive.clone())?;
            let known = s.typeids();
            if let Some((method, target)) = ty.unknown_target(|t| t == typeid || known.contains(&t)) {
                return Err(Fail::new(
                    mgr_status::MGR_ERR_INVALID_ARGUMENT,
                    format!(
                        "{typeid}.{method} is mapped to typeid '{target}', which is not registered \
                         (register it first)"
                    ),
                ));
            }
            s.register(spec);
            b.types.borrow_mut().insert(typeid.to_owned(), ty);
            Ok(mgr_status::MGR_OK)
        })
    }
}

/// The bound address (`127.0.0.1:41234`, `unix:/path`), with the real port when
/// port 0 was asked for. Owned by the server: valid until [`mgr_server_free`].
/// NULL if `server` is NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_address(server: *const mgr_server) -> *const c_char {
    ffi_boundary! { Ok(arg_server(server)?.address.as_ptr()) }
}

/// The one descriptor to poll for reading: when it is readable (or
/// [`mgr_server_timeout_ms`] has passed), call [`mgr_server_process`]. Owned by
/// the server: never close it. -1 if `server` is NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_fd(server: *const mgr_server) -> i32 {
    ffi_boundary! {
        match server.cast::<ServerBox>().as_ref() {
            Some(b) => Ok(b.fd),
            None => Ok(-1),
        }
    }
}

/// The longest the host may wait on [`mgr_server_fd`], in milliseconds: 0 while
/// work is pending (see [`mgr_server_pending`]), else the time until the
/// server's next timer (rounded up), -1 if it has none. 0 from inside a
/// callback or for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_timeout_ms(server: *mut mgr_server) -> i32 {
    ffi_boundary! {
        let Some(b) = server.cast::<ServerBox>().as_ref() else { return Ok(0) };
        Ok(b.with(|s| Ok(match s.timeout() {
            None => -1,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        })).unwrap_or(0))
    }
}

/// Does one bounded turn of ready work without blocking: accepts, reads, runs
/// callbacks, fires timers, delivers deferred answers, writes — serving at most
/// the turn budget's requests or microseconds of them
/// ([`mgr_server_set_turn_budget`]; by default 1024 requests or 1 ms),
/// round-robin over the connections. Work left over waits for the next call:
/// [`mgr_server_pending`] is then true and [`mgr_server_timeout_ms`] 0, and the
/// fd need not be readable, so poll with timeout 0 (or call again) while
/// pending. Call it when the fd is readable, the timeout passed or work is
/// pending (spurious calls are harmless). `MGR_ERR_BUSY` from inside a
/// callback; `MGR_OK` (doing nothing) once shut down.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_process(server: *mut mgr_server) -> mgr_status {
    ffi_boundary! {
        arg_server(server)?.with(|s| {
            s.process()?;
            Ok(mgr_status::MGR_OK)
        })
    }
}

/// Whether the last [`mgr_server_process`] left work for the next (requests
/// already received, connections to accept, answers to deliver): call it again
/// without waiting on the fd. False for NULL, once shut down, and inside
/// callbacks.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_pending(server: *const mgr_server) -> bool {
    ffi_boundary! {
        let Some(b) = server.cast::<ServerBox>().as_ref() else { return Ok(false) };
        Ok(b.with(|s| Ok(s.has_pending_work())).unwrap_or(false))
    }
}

/// Serves on the calling thread until shutdown (a client's `shutdown` request,
/// or [`mgr_server_shutdown`] called from a callback), in bounded turns. `MGR_ERR_BUSY` from
/// inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_run(server: *mut mgr_server) -> mgr_status {
    ffi_boundary! {
        arg_server(server)?.with(|s| {
            s.run()?;
            Ok(mgr_status::MGR_OK)
        })
    }
}

/// Whether the server has shut down (a client asked, or [`mgr_server_shutdown`]).
/// A host loop stops when this turns true. False for NULL and inside callbacks.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_is_shut_down(server: *const mgr_server) -> bool {
    ffi_boundary! {
        let Some(b) = server.cast::<ServerBox>().as_ref() else { return Ok(false) };
        Ok(b.with(|s| Ok(s.is_shut_down())).unwrap_or(false))
    }
}

/// Shuts the server down: stops listening, delivers the answers already given,
/// flushes what it can (for about half a second at most), closes every
/// connection (their deferred calls still waiting are cancelled). Immediate when called from
/// the host's loop; from inside a callback it is queued (the fd is woken) and
/// happens in the next [`mgr_server_process`]. Deferred replies answered
/// afterwards report `MGR_ERR_STALE`. The server still has to be freed.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_shutdown(server: *mut mgr_server) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        match b.inner.try_borrow_mut() {
            Ok(mut g) => {
                if let Some(s) = g.as_mut() {
                    s.shutdown();
                }
                b.alive.store(false, Ordering::SeqCst);
            }
            Err(_) => b.handle.shutdown(),
        }
        Ok(mgr_status::MGR_OK)
    }
}

/// Registers the SyncManager set of built-in types on `server`: Queue,
/// JoinableQueue, Event, Lock, RLock, Semaphore, BoundedSemaphore, Condition,
/// Barrier, Namespace, Value, Array, dict, list and Iterator, with CPython's
/// method names and semantics (what `mgrd` serves). A host type registered under
/// one of these typeids is replaced. `MGR_ERR_BUSY` from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_register_builtins(server: *mut mgr_server) -> mgr_status {
    ffi_boundary! {
        set(server, |s| s.register_builtins())
    }
}

/// Publishes a new object of the registered `type_id` (a host type or a
/// built-in), built from `args` (a list or tuple, NULL for none) and `kwargs`
/// (a dict with str keys, NULL for none) as a client's create would build it,
/// under `name`: from then on every create of typeid `name` returns this one
/// object, as CPython's `register(name, callable=lambda: obj)` does, so a
/// Python client reaches it with `Manager.register(name)` and `m.name()`.
/// The server holds a reference to it until [`mgr_server_unexpose`] or
/// [`mgr_server_free`]. `args` and `kwargs` are borrowed. `MGR_ERR_CONFIG`
/// when `name` is empty, a registered typeid or published already;
/// `MGR_ERR_REMOTE` when building fails (unknown typeid, or the constructor
/// raised: kind and message in the last error); `MGR_ERR_BUSY` from inside a
/// callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_expose(
    server: *mut mgr_server,
    name: *const c_char,
    type_id: *const c_char,
    args: *const mgr_value,
    kwargs: *const mgr_value,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        let name = arg_str(name, "name")?;
        let typeid = arg_str(type_id, "type_id")?;
        let args = CallArgs { args: arg_args(args)?, kwargs: arg_kwargs(kwargs)? };
        b.with(|s| {
            s.expose(name, typeid, args)?;
            Ok(mgr_status::MGR_OK)
        })
    }
}

/// Publishes the host's own state `object` (what a create callback of the
/// registered host type `type_id` would make; NULL is a valid state) under
/// `name`, as [`mgr_server_expose`] does, without calling the create
/// callback: a game host publishes the scoreboard it keeps updating, and
/// clients call the type's methods on it. When `type_id` is not a registered
/// host type (`MGR_ERR_NOT_FOUND`) or an argument is NULL, nothing is taken;
/// otherwise `object` passes to the library, and is released with the type's
/// destroy callback when the object goes (after [`mgr_server_unexpose`] and
/// the last client reference, or at [`mgr_server_free`]) — at once if
/// publishing fails (`MGR_ERR_CONFIG`: `name` empty, a registered typeid or
/// published already; `MGR_ERR_REMOTE`: no room under the held-bytes cap).
/// `MGR_ERR_BUSY` from inside a callback (nothing is taken then either).
#[no_mangle]
pub unsafe extern "C" fn mgr_server_expose_object(
    server: *mut mgr_server,
    name: *const c_char,
    type_id: *const c_char,
    object: *mut c_void,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        let name = arg_str(name, "name")?;
        let typeid = arg_str(type_id, "type_id")?;
        let ty = b.types.borrow().get(typeid).cloned().ok_or_else(|| {
            Fail::new(
                mgr_status::MGR_ERR_NOT_FOUND,
                format!("'{typeid}' is not a registered host type"),
            )
        })?;
        b.with(|s| {
            s.expose_object(name, typeid, ty.wrap(object))?;
            Ok(mgr_status::MGR_OK)
        })
    }
}

/// Withdraws `name` ([`mgr_server_expose`]) and drops the server's reference:
/// the object lives on while clients hold it (its destroy callback runs once
/// the last goes, now if none holds it). `MGR_ERR_NOT_FOUND` when nothing is
/// published as `name`; `MGR_ERR_BUSY` from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_unexpose(
    server: *mut mgr_server,
    name: *const c_char,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        let name = arg_str(name, "name")?;
        b.with(|s| {
            if s.unexpose(name) {
                Ok(mgr_status::MGR_OK)
            } else {
                Err(Fail::new(
                    mgr_status::MGR_ERR_NOT_FOUND,
                    format!("nothing is published as '{name}'"),
                ))
            }
        })
    }
}

/// Writes the number of live shared objects to `*out`. `MGR_ERR_BUSY` from inside
/// a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_number_of_objects(
    server: *const mgr_server,
    out: *mut usize,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        let out = out_ptr(out, "out")?;
        let n = b.with(|s| Ok(s.number_of_objects()))?;
        *out = n;
        Ok(mgr_status::MGR_OK)
    }
}

/// Caps the bytes all shared objects hold together (the built-in containers'
/// estimate of what they store): a call or create that would pass it fails with
/// a `MemoryError` for that call and changes nothing. 0 removes the cap (the
/// default). Takes effect at once. `MGR_ERR_BUSY` from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_set_max_held_bytes(
    server: *mut mgr_server,
    max_bytes: u64,
) -> mgr_status {
    ffi_boundary! {
        set(server, |s| s.set_max_held_bytes(optional_cap(max_bytes)))
    }
}

/// Sets the turn budget: one [`mgr_server_process`] serves at most
/// `max_requests` requests (frames, handshake messages included) or
/// `max_time_us` microseconds of them (checked after each request), a few from
/// each ready connection in turn; the rest waits for the next call. 0 lifts
/// that limit. Defaults: 1024 requests, 1000 microseconds (sized for a host running a
/// 60 Hz frame). Takes effect from the next turn. `MGR_ERR_BUSY` from inside a
/// callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_set_turn_budget(
    server: *mut mgr_server,
    max_requests: u64,
    max_time_us: u64,
) -> mgr_status {
    ffi_boundary! {
        let requests = optional_cap(max_requests).unwrap_or(usize::MAX);
        let time = match max_time_us {
            0 => Duration::MAX,
            n => Duration::from_micros(n),
        };
        set(server, |s| s.set_turn_budget(requests, time))
    }
}

/// Caps the connections still authenticating (default 256): a new connection
/// beyond the cap closes the oldest one still authenticating, so idle sockets
/// never lock clients out (they count apart from `max_connections`). 0 removes
/// the cap. Takes effect at once. `MGR_ERR_BUSY` from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_set_max_preauth_connections(
    server: *mut mgr_server,
    max_connections: u64,
) -> mgr_status {
    ffi_boundary! {
        let cap = optional_cap(max_connections).unwrap_or(usize::MAX);
        set(server, |s| s.set_max_preauth_connections(cap))
    }
}

/// Sets the listen backlog of the server's listening socket (default, and 0:
/// the system maximum, `net.core.somaxconn`; the kernel caps larger values
/// there). `MGR_ERR_BUSY` from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_set_listen_backlog(
    server: *mut mgr_server,
    backlog: u32,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        b.with(|s| Ok(s.set_listen_backlog((backlog > 0).then_some(backlog))?))?;
        Ok(mgr_status::MGR_OK)
    }
}

/// Caps the live objects one connection may have created (by `create` or as
/// the result of its calls): beyond it a creation fails with a `MemoryError`
/// naming the limit. 0 removes the cap (the default). Takes effect at once.
/// `MGR_ERR_BUSY` from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_set_max_objects_per_conn(
    server: *mut mgr_server,
    max_objects: u64,
) -> mgr_status {
    ffi_boundary! {
        set(server, |s| s.set_max_objects_per_conn(optional_cap(max_objects)))
    }
}

/// Which globals (classes, functions) values stored in a server may name, as
/// [`mgr_server_set_globals`] takes it. Stable numbers.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgr_globals {
    /// The standard library's value types (datetime, Decimal, UUID …) and the
    /// built-in exception classes: the default.
    MGR_GLOBALS_DEFAULT = 0,
    /// Any global, as CPython's own manager (clients trust each other).
    MGR_GLOBALS_ANY = 1,
    /// None: values are plain data only.
    MGR_GLOBALS_NONE = 2,
}

/// Sets which globals values in requests may name (`mgrd --globals`): the
/// server never calls one either way; the policy bounds what one client can
/// hand another. `globals` is one of the [`mgr_globals`] numbers (taken as an
/// integer so an out-of-range one is an error, `MGR_ERR_INVALID_ARGUMENT`).
/// Takes effect for requests decoded from then on. `MGR_ERR_BUSY` from inside
/// a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_set_globals(
    server: *mut mgr_server,
    globals: u32,
) -> mgr_status {
    ffi_boundary! {
        let g = match globals {
            x if x == mgr_globals::MGR_GLOBALS_DEFAULT as u32 => mgr::Globals::Default,
            x if x == mgr_globals::MGR_GLOBALS_ANY as u32 => mgr::Globals::Any,
            x if x == mgr_globals::MGR_GLOBALS_NONE as u32 => mgr::Globals::None,
            x => {
                return Err(Fail::new(
                    mgr_status::MGR_ERR_INVALID_ARGUMENT,
                    format!("unknown globals policy {x} (MGR_GLOBALS_DEFAULT, _ANY or _NONE)"),
                ))
            }
        };
        set(server, |s| s.set_globals(g))
    }
}

/// When `on`, a plain Lock, Semaphore or BoundedSemaphore that a client
/// process acquired is released when that process exits (only processes whose
/// pid the server knows: Unix-socket peers). Off by default: they stay held, as
/// on CPython's server. Applies to acquisitions from then on. `MGR_ERR_BUSY`
/// from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_set_release_locks_of_dead(
    server: *mut mgr_server,
    on: bool,
) -> mgr_status {
    ffi_boundary! {
        set(server, |s| s.set_release_locks_of_dead(on))
    }
}

/// Sets the work the cycle collector does per turn at most (slots looked at,
/// references followed, objects freed: default 1024); 0 turns it off.
/// `MGR_ERR_BUSY` from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_set_gc_work_per_turn(
    server: *mut mgr_server,
    work: u64,
) -> mgr_status {
    ffi_boundary! {
        set(server, |s| s.set_gc_work_per_turn(usize::try_from(work).unwrap_or(usize::MAX)))
    }
}

/// Writes the bytes the shared objects hold, as the cap of
/// [`mgr_server_set_max_held_bytes`] counts them, to `*out`. `MGR_ERR_BUSY` from
/// inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_held_bytes(
    server: *const mgr_server,
    out: *mut usize,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        let out = out_ptr(out, "out")?;
        let n = b.with(|s| Ok(s.held_bytes()))?;
        *out = n;
        Ok(mgr_status::MGR_OK)
    }
}

/// A snapshot of a server's counters, from [`mgr_server_stats`]. Plain data
/// owned by the caller. Set `size` to `sizeof(mgr_stats)` before the
/// call: the library fills that many bytes at most (fields it does not know
/// of stay as they were), so the struct can grow without breaking older
/// hosts. Counts are since the server started; gauges are as of the call.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mgr_stats {
    /// Set by the caller to `sizeof(mgr_stats)`; left as it is.
    pub size: u32,
    /// Zero.
    pub reserved: u32,
    /// Connections open now, authenticated or not.
    pub connections_open: u64,
    /// Connections open now that are still authenticating.
    pub connections_preauth: u64,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections closed at once because `max_connections` clients were
    /// authenticated already.
    pub connections_refused: u64,
    /// Connections still authenticating that were dropped for a newer one or
    /// for their handshake deadline.
    pub preauth_dropped: u64,
    /// Failed handshakes (a wrong key, a malformed answer).
    pub auth_failures: u64,
    /// Frames served: requests and handshake messages.
    pub requests_served: u64,
    /// Requests answered with an error, deferred answers included.
    pub errors: u64,
    /// Frames the server could not get past or refused to decode.
    pub protocol_errors: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Deferred calls waiting for an answer now.
    pub deferred_pending: u64,
    /// Live shared objects now (by typeid: [`mgr_server_objects_of_type`]).
    pub objects: u64,
    /// Bytes the shared objects hold (the estimate `mgr_server_set_max_held_bytes` caps).
    pub held_bytes: u64,
    /// References lent to replies in flight now.
    pub loans: u64,
    /// Timers set now.
    pub timers: u64,
    /// Turns run (`mgr_server_process` calls, and the turns of `mgr_server_run`).
    pub turns: u64,
    /// The longest turn so far, in microseconds.
    pub longest_turn_us: u64,
}

/// Fills `*out` with the server's counters (see [`mgr_stats`]); set
/// `out->size = sizeof(mgr_stats)` first. Cheap: no pass over
/// connections or objects. `MGR_ERR_INVALID_ARGUMENT` for a `size` below 8;
/// `MGR_ERR_BUSY` from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_stats(
    server: *const mgr_server,
    out: *mut mgr_stats,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        if out.is_null() {
            return Err(Fail::null("out"));
        }
        let st = b.with(|s| Ok(s.stats()))?;
        let full = mgr_stats {
            size: std::mem::size_of::<mgr_stats>() as u32,
            reserved: 0,
            connections_open: st.connections_open,
            connections_preauth: st.connections_preauth,
            connections_accepted: st.connections_accepted,
            connections_refused: st.connections_refused,
            preauth_dropped: st.preauth_dropped,
            auth_failures: st.auth_failures,
            requests_served: st.requests_served,
            errors: st.errors,
            protocol_errors: st.protocol_errors,
            bytes_in: st.bytes_in,
            bytes_out: st.bytes_out,
            deferred_pending: st.deferred_pending,
            objects: st.objects,
            held_bytes: st.held_bytes,
            loans: st.loans,
            timers: st.timers,
            turns: st.turns,
            longest_turn_us: st.longest_turn.as_micros().min(u64::MAX as u128) as u64,
        };
        fill_sized(out, &full, 8)?;
        Ok(mgr_status::MGR_OK)
    }
}

/// Writes the number of live shared objects of `type_id` to `*out` (0 for a
/// typeid with none, registered or not). One pass over the objects: a C host
/// knows its typeids and asks for the ones it wants, so no list needs
/// allocating and freeing. `MGR_ERR_BUSY` from inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_objects_of_type(
    server: *const mgr_server,
    type_id: *const c_char,
    out: *mut usize,
) -> mgr_status {
    ffi_boundary! {
        let b = arg_server(server)?;
        let typeid = arg_str(type_id, "type_id")?;
        let out = out_ptr(out, "out")?;
        let n = b.with(|s| Ok(s.objects_of_type(typeid)))?;
        *out = n;
        Ok(mgr_status::MGR_OK)
    }
}

/// What a log line from [`mgr_server_set_log`] is about.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgr_log_kind {
    /// A connection was accepted (it starts authenticating).
    MGR_LOG_ACCEPTED = 1,
    /// A connection was refused or dropped for a limit (named in the message).
    MGR_LOG_REFUSED = 2,
    /// A peer failed the handshake (a wrong key, a malformed answer).
    MGR_LOG_AUTH_FAILED = 3,
    /// A frame the server could not get past, or a request it refused to decode.
    MGR_LOG_PROTOCOL_ERROR = 4,
    /// A connection closed.
    MGR_LOG_CLOSED = 5,
    /// The server is shutting down.
    MGR_LOG_SHUTDOWN = 6,
}

/// A log callback: `kind` says what happened, `peer` who it happened to (NULL
/// for [`mgr_log_kind::MGR_LOG_SHUTDOWN`]), `message` a one-line description
/// without timestamp (it names the peer, never a key). `peer` and `message`
/// are valid only during the call. Runs on the server's thread, inside
/// `mgr_server_process` / `_run` / `_shutdown` / `_free`; this server's
/// functions return `MGR_ERR_BUSY` there.
pub type mgr_log_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        kind: mgr_log_kind,
        peer: *const mgr_peer,
        message: *const c_char,
    ),
>;

/// Sets the server's log callback (NULL removes it; off by default, and then
/// free): one call per connection accepted, refused or closed, failed
/// handshake, protocol error, and the shutdown. `userdata` is passed first and
/// must stay valid until the callback is replaced or [`mgr_server_free`]
/// returns (freeing logs the shutdown and the closes). `MGR_ERR_BUSY` from
/// inside a callback.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_set_log(
    server: *mut mgr_server,
    callback: mgr_log_fn,
    userdata: *mut c_void,
) -> mgr_status {
    ffi_boundary! {
        let hook: Option<crate::server::LogHook> = callback.map(|f| {
            Box::new(move |e: &LogEvent<'_>| {
                let (kind, peer) = match *e {
                    LogEvent::Accepted { peer } => (mgr_log_kind::MGR_LOG_ACCEPTED, Some(peer)),
                    LogEvent::Refused { peer, .. } => (mgr_log_kind::MGR_LOG_REFUSED, Some(peer)),
                    LogEvent::AuthFailed { peer } => (mgr_log_kind::MGR_LOG_AUTH_FAILED, Some(peer)),
                    LogEvent::ProtocolError { peer, .. } => {
                        (mgr_log_kind::MGR_LOG_PROTOCOL_ERROR, Some(peer))
                    }
                    LogEvent::Closed { peer } => (mgr_log_kind::MGR_LOG_CLOSED, Some(peer)),
                    _ => (mgr_log_kind::MGR_LOG_SHUTDOWN, None),
                };
                let peer = peer.map(mgr_peer::of);
                let message = CString::new(e.to_string().replace('\0', "")).unwrap_or_default();
                let p = peer.as_ref().map_or(std::ptr::null(), |p| p as *const mgr_peer);
                // SAFETY: the host gave this callback and vouches for userdata.
                unsafe { f(userdata, kind, p, message.as_ptr()) };
            }) as crate::server::LogHook
        });
        set(server, |s| s.set_log_hook(hook))
    }
}

/// Shuts down if needed and frees the server, destroying every remaining object
/// (their destroy callbacks run now). Answers given before the call
/// (`mgr_reply_return` / `_raise`, from any thread) are still delivered: they
/// are written to their connections and flushed for at most about half a
/// second before the connections close. NULL is a no-op. Must not be called from
/// inside one of this server's callbacks: it then does nothing (and sets the
/// last error). Outstanding `mgr_reply` handles stay valid; answering them
/// reports `MGR_ERR_STALE`.
#[no_mangle]
pub unsafe extern "C" fn mgr_server_free(server: *mut mgr_server) {
    ffi_boundary! {
        let Some(b) = server.cast::<ServerBox>().as_ref() else { return Ok(()) };
        let Ok(mut g) = b.inner.try_borrow_mut() else {
            return Err(busy());
        };
        b.alive.store(false, Ordering::SeqCst);
        // Drop the server while still holding the borrow, so destroy callbacks that
        // reach for the server are refused rather than aliasing it.
        drop(g.take());
        drop(g);
        b.types.borrow_mut().clear();
        drop(Box::from_raw(server.cast::<ServerBox>()));
        Ok(())
    }
}

/// A C limit where 0 means "no limit": `None` for 0, else the value (saturated
/// to `usize`).
fn optional_cap(n: u64) -> Option<usize> {
    (n > 0).then(|| usize::try_from(n).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::host_type::{mgr_method_typeid, MGR_TYPE_VERSION};
    use crate::ffi::request::mgr_request;
    use crate::ffi::value::mgr_value;
    use std::ffi::CStr;
    use std::ptr;

    unsafe extern "C" fn nop_call(
        _: *mut c_void,
        _: *mut c_void,
        _: *const c_char,
        _: *const mgr_value,
        _: *const mgr_value,
        _: *mut mgr_request,
    ) -> mgr_status {
        mgr_status::MGR_OK
    }

    fn vtable() -> mgr_type {
        mgr_type {
            version: MGR_TYPE_VERSION,
            exposed: ptr::null(),
            exposed_len: 0,
            method_to_typeid: ptr::null::<mgr_method_typeid>(),
            method_to_typeid_len: 0,
            create: None,
            call: Some(nop_call),
            destroy: None,
            repr: None,
            cancel: None,
        }
    }

    fn new_server(
        address: &CStr,
        key: &[u8],
        options: *const mgr_server_options,
    ) -> Result<*mut mgr_server, mgr_status> {
        let mut s = ptr::null_mut();
        let st =
            unsafe { mgr_server_new(address.as_ptr(), key.as_ptr(), key.len(), options, &mut s) };
        if st == mgr_status::MGR_OK {
            assert!(!s.is_null());
            Ok(s)
        } else {
            assert!(s.is_null(), "out written on failure");
            Err(st)
        }
    }

    #[test]
    fn options_are_versioned_and_defaulted() {
        let mut o = mgr_server_options {
            version: 0,
            max_connections: 0,
            max_frame: 0,
            max_output: 0,
            handshake_timeout_ms: 0,
        };
        assert_eq!(
            unsafe { mgr_server_options_init(&mut o) },
            mgr_status::MGR_OK
        );
        assert_eq!(o.version, MGR_SERVER_OPTIONS_VERSION);
        assert_eq!(o.max_connections, 10_000);
        assert_eq!(o.handshake_timeout_ms, 10_000);
        let s = new_server(c"127.0.0.1:0", b"k", &o).unwrap();
        unsafe { mgr_server_free(s) };
        o.version = 99;
        assert_eq!(
            new_server(c"127.0.0.1:0", b"k", &o),
            Err(mgr_status::MGR_ERR_INVALID_ARGUMENT)
        );
    }

    #[test]
    fn bad_addresses_and_keys_are_refused() {
        assert_eq!(
            new_server(c"nonsense", b"k", ptr::null()),
            Err(mgr_status::MGR_ERR_INVALID_ARGUMENT)
        );
        assert_eq!(
            new_server(c"0.0.0.0:0", b"", ptr::null()),
            Err(mgr_status::MGR_ERR_CONFIG)
        );
        let mut s = ptr::null_mut();
        let st = unsafe { mgr_server_new(ptr::null(), ptr::null(), 0, ptr::null(), &mut s) };
        assert_eq!(st, mgr_status::MGR_ERR_NULL_ARGUMENT);
    }

    #[test]
    fn embedding_accessors() {
        let s = new_server(c"127.0.0.1:0", b"", ptr::null()).unwrap();
        unsafe {
            let addr = CStr::from_ptr(mgr_server_address(s)).to_str().unwrap();
            assert!(
                addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
                "{addr}"
            );
            assert!(mgr_server_fd(s) >= 0);
            assert_eq!(mgr_server_timeout_ms(s), -1, "no timers yet");
            assert!(!mgr_server_pending(s));
            assert_eq!(mgr_server_process(s), mgr_status::MGR_OK);
            assert!(!mgr_server_pending(s));
            assert_eq!(mgr_server_set_turn_budget(s, 10, 0), mgr_status::MGR_OK);
            assert_eq!(
                mgr_server_set_max_preauth_connections(s, 4),
                mgr_status::MGR_OK
            );
            assert_eq!(mgr_server_set_listen_backlog(s, 50), mgr_status::MGR_OK);
            assert_eq!(mgr_server_set_listen_backlog(s, 0), mgr_status::MGR_OK);
            let mut n = 9;
            assert_eq!(mgr_server_number_of_objects(s, &mut n), mgr_status::MGR_OK);
            assert_eq!(n, 0);
            assert!(!mgr_server_is_shut_down(s));
            assert_eq!(mgr_server_shutdown(s), mgr_status::MGR_OK);
            assert!(mgr_server_is_shut_down(s));
            assert_eq!(
                mgr_server_process(s),
                mgr_status::MGR_OK,
                "a no-op once shut down"
            );
            mgr_server_free(s);
            mgr_server_free(ptr::null_mut());
            assert_eq!(mgr_server_fd(ptr::null()), -1);
            assert!(!mgr_server_pending(ptr::null()));
            assert_eq!(
                mgr_server_set_turn_budget(ptr::null_mut(), 1, 1),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            assert!(mgr_server_address(ptr::null()).is_null());
            assert_eq!(
                mgr_server_process(ptr::null_mut()),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
        }
    }

    #[test]
    fn register_checks_the_vtable() {
        let s = new_server(c"127.0.0.1:0", b"", ptr::null()).unwrap();
        unsafe {
            let ud = ptr::null_mut();
            assert_eq!(
                mgr_server_register(s, c"T".as_ptr(), &vtable(), ud),
                mgr_status::MGR_OK
            );
            let mut v = vtable();
            v.version = MGR_TYPE_VERSION + 1;
            assert_eq!(
                mgr_server_register(s, c"T".as_ptr(), &v, ud),
                mgr_status::MGR_ERR_INVALID_ARGUMENT
            );
            // A version-1 vtable (no `cancel` field) is read without touching the
            // bytes past its end: here it is the last thing in its allocation.
            let v1 = vtable();
            let size = std::mem::offset_of!(mgr_type, cancel);
            let mut words = vec![0u64; size / 8].into_boxed_slice();
            let at = words.as_mut_ptr().cast::<u8>();
            ptr::copy_nonoverlapping((&v1 as *const mgr_type).cast::<u8>(), at, size);
            at.cast::<u32>().write(1);
            assert_eq!(
                mgr_server_register(s, c"V1".as_ptr(), words.as_ptr().cast(), ud),
                mgr_status::MGR_OK
            );
            let mut v = vtable();
            v.call = None;
            assert_eq!(
                mgr_server_register(s, c"T".as_ptr(), &v, ud),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            let mut v = vtable();
            v.exposed_len = 2;
            assert_eq!(
                mgr_server_register(s, c"T".as_ptr(), &v, ud),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            let names = [c"get".as_ptr(), c"put".as_ptr()];
            let pairs = [mgr_method_typeid {
                method: c"copy".as_ptr(),
                type_id: c"T".as_ptr(),
            }];
            let mut v = vtable();
            v.exposed = names.as_ptr();
            v.exposed_len = 2;
            v.method_to_typeid = pairs.as_ptr();
            v.method_to_typeid_len = 1;
            assert_eq!(
                mgr_server_register(s, c"U".as_ptr(), &v, ud),
                mgr_status::MGR_OK
            );
            assert_eq!(
                mgr_server_register(s, c"U".as_ptr(), ptr::null(), ud),
                mgr_status::MGR_ERR_NULL_ARGUMENT
            );
            mgr_server_free(s);
        }
    }
}
