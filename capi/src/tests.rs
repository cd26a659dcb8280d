//! The server half of the C ABI, driven from Rust over real sockets: a host type
//! with `extern "C"` callbacks, served by `mgr_server_run` in its own thread and
//! called by the Rust client. Covers host errors, re-entrancy refusals, deferred
//! replies answered from another thread, freed unanswered, or gone stale, and a
//! shutdown queued from inside a callback.

// The root package's test fixtures (a stock CPython manager server …).
#[path = "../../tests/common/mod.rs"]
mod common;

use std::ffi::{c_char, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use crate::ffi::host_type::mgr_type;
use crate::ffi::request::*;
use crate::ffi::server::*;
use crate::ffi::status::mgr_status;
use crate::ffi::value::*;
use crate::ffi::{mgr_method_typeid, MGR_TYPE_VERSION};
use mgr::proto::{Request, Value};
use mgr::{Error, Manager};

const KEY: &[u8] = b"ffi-test-key";

/// A reply pointer shipped to the test thread.
struct SendReply(*mut mgr_reply);
// SAFETY: mgr_reply is documented as usable from any thread.
unsafe impl Send for SendReply {}

struct Shared {
    server: AtomicPtr<mgr_server>,
    replies: Mutex<mpsc::Sender<SendReply>>,
    created: AtomicUsize,
    destroyed: AtomicUsize,
    /// Replies the `cancel` callback was told about.
    cancelled: Mutex<Vec<usize>>,
}

impl Shared {
    /// Fresh counters; deferred replies the Echo type hands out go to `replies`.
    fn new(replies: mpsc::Sender<SendReply>) -> Arc<Shared> {
        Arc::new(Shared {
            server: AtomicPtr::new(ptr::null_mut()),
            replies: Mutex::new(replies),
            created: AtomicUsize::new(0),
            destroyed: AtomicUsize::new(0),
            cancelled: Mutex::new(Vec::new()),
        })
    }
}

/// A server with the Echo type registered (its userdata `shared`), to be driven
/// by the calling thread: the server and its address.
unsafe fn echo_server_here(shared: &Arc<Shared>) -> (*mut mgr_server, String) {
    let s = new_server();
    shared.server.store(s, Ordering::SeqCst);
    let ud = Arc::as_ptr(shared) as *mut c_void;
    assert_eq!(
        mgr_server_register(s, c"Echo".as_ptr(), &*VTABLE, ud),
        mgr_status::MGR_OK
    );
    let address = CStr::from_ptr(mgr_server_address(s))
        .to_str()
        .unwrap()
        .to_owned();
    (s, address)
}

unsafe fn shared<'a>(userdata: *mut c_void) -> &'a Shared {
    &*(userdata as *const Shared)
}

unsafe extern "C" fn create(
    userdata: *mut c_void,
    _args: *const mgr_value,
    _kwargs: *const mgr_value,
    _req: *mut mgr_request,
    out: *mut *mut c_void,
) -> mgr_status {
    shared(userdata).created.fetch_add(1, Ordering::SeqCst);
    *out = Box::into_raw(Box::new(0u64)).cast();
    mgr_status::MGR_OK
}

unsafe extern "C" fn destroy(userdata: *mut c_void, object: *mut c_void) {
    shared(userdata).destroyed.fetch_add(1, Ordering::SeqCst);
    drop(Box::from_raw(object.cast::<u64>()));
}

unsafe extern "C" fn call(
    userdata: *mut c_void,
    object: *mut c_void,
    method: *const c_char,
    args: *const mgr_value,
    _kwargs: *const mgr_value,
    req: *mut mgr_request,
) -> mgr_status {
    let sh = shared(userdata);
    let server = sh.server.load(Ordering::SeqCst);
    match CStr::from_ptr(method).to_str().unwrap() {
        "echo" => {
            let mut item = ptr::null();
            assert_eq!(mgr_value_get_item(args, 0, &mut item), mgr_status::MGR_OK);
            *object.cast::<u64>() += 1;
            mgr_request_return(req, mgr_value_clone(item))
        }
        "fail" => mgr_status::MGR_ERR_IO,
        "raise" => {
            mgr_request_raise(req, c"KeyError".as_ptr(), c"'k'".as_ptr());
            mgr_status::MGR_ERR_REMOTE
        }
        "twice" => {
            assert_eq!(
                mgr_request_return(req, mgr_value_int(1)),
                mgr_status::MGR_OK
            );
            let second = mgr_request_return(req, mgr_value_int(2));
            let raise = mgr_request_raise(req, c"KeyError".as_ptr(), ptr::null());
            assert_eq!(
                (second, raise),
                (mgr_status::MGR_ERR_STATE, mgr_status::MGR_ERR_STATE)
            );
            mgr_status::MGR_OK
        }
        "reenter" => {
            // Everything that needs the whole server is refused while it runs us.
            let mut n = 0;
            let statuses = [
                mgr_server_process(server),
                mgr_server_run(server),
                mgr_server_number_of_objects(server, &mut n),
                mgr_server_register(server, c"X".as_ptr(), &*VTABLE, userdata),
            ];
            mgr_server_free(server); // refused: a no-op
            let t = mgr_value_tuple();
            for s in statuses {
                mgr_value_append(t, mgr_value_int(s as i64));
            }
            mgr_request_return(req, t)
        }
        "defer" => {
            let mut reply = ptr::null_mut();
            assert_eq!(mgr_request_defer(req, &mut reply), mgr_status::MGR_OK);
            sh.replies.lock().unwrap().send(SendReply(reply)).unwrap();
            mgr_status::MGR_OK
        }
        "defer_now" => {
            // Deferred and answered within the same callback.
            let mut reply = ptr::null_mut();
            assert_eq!(mgr_request_defer(req, &mut reply), mgr_status::MGR_OK);
            assert_eq!(
                mgr_reply_return(reply, mgr_value_str(c"soon".as_ptr())),
                mgr_status::MGR_OK
            );
            assert_eq!(
                mgr_reply_return(reply, mgr_value_none()),
                mgr_status::MGR_ERR_STATE
            );
            mgr_reply_free(reply);
            mgr_status::MGR_OK
        }
        "deep" => {
            // A list nested `levels` deep, built here through the C API.
            let mut item = ptr::null();
            assert_eq!(mgr_value_get_item(args, 0, &mut item), mgr_status::MGR_OK);
            let mut levels = 0;
            assert_eq!(mgr_value_get_int(item, &mut levels), mgr_status::MGR_OK);
            mgr_request_return(req, c_chain(0, levels as usize, 7))
        }
        "stop" => mgr_server_shutdown(server),
        "peer" => {
            // Who is calling: (conn_id, pid, uid, gid, family, address).
            let mut p: crate::ffi::mgr_peer = std::mem::zeroed();
            p.size = std::mem::size_of::<crate::ffi::mgr_peer>() as u32;
            assert_eq!(mgr_request_peer(req, &mut p), mgr_status::MGR_OK);
            let t = mgr_value_tuple();
            for n in [p.conn_id as i64, p.pid, p.uid, p.gid, i64::from(p.family)] {
                mgr_value_append(t, mgr_value_int(n));
            }
            mgr_value_append(t, mgr_value_str(p.address.as_ptr()));
            // A size below the fixed header is refused, and nothing is written.
            let mut small: crate::ffi::mgr_peer = std::mem::zeroed();
            small.size = 8;
            assert_eq!(
                mgr_request_peer(req, &mut small),
                mgr_status::MGR_ERR_INVALID_ARGUMENT
            );
            assert_eq!(small.conn_id, 0);
            mgr_request_return(req, t)
        }
        "nothing" => mgr_status::MGR_OK,
        "no_target" => {
            // Not a method_to_typeid method: handing over an object is refused.
            let st = mgr_request_return_object(req, ptr::null_mut());
            mgr_request_return(req, mgr_value_int(st as i64))
        }
        "keep" => {
            KEPT.store(req, Ordering::SeqCst);
            mgr_status::MGR_OK
        }
        "use_kept" => {
            // A handle from an earlier callback: refused, never written through.
            let kept = KEPT.load(Ordering::SeqCst);
            let statuses = [
                mgr_request_return(kept, mgr_value_int(1)),
                mgr_request_raise(kept, c"KeyError".as_ptr(), ptr::null()),
            ];
            let t = mgr_value_tuple();
            for s in statuses {
                mgr_value_append(t, mgr_value_int(s as i64));
            }
            mgr_request_return(req, t)
        }
        other => panic!("unexpected method {other}"),
    }
}

unsafe extern "C" fn cancel(userdata: *mut c_void, object: *mut c_void, reply: *mut mgr_reply) {
    assert!(!object.is_null(), "cancel gets the object's state");
    // The test still answers (harmlessly) and frees it: record it only.
    shared(userdata)
        .cancelled
        .lock()
        .unwrap()
        .push(reply as usize);
}

unsafe extern "C" fn repr(_userdata: *mut c_void, object: *mut c_void) -> *mut mgr_value {
    let n = *object.cast::<u64>();
    let s = std::ffi::CString::new(format!("<Echo after {n} echoes>")).unwrap();
    mgr_value_str(s.as_ptr())
}

/// A request handle kept past its callback by "keep" (the misuse "use_kept" tries).
static KEPT: AtomicPtr<mgr_request> = AtomicPtr::new(ptr::null_mut());

struct Methods([*const c_char; 14]);
// SAFETY: pointers to static C string literals.
unsafe impl Sync for Methods {}
static METHODS: Methods = Methods([
    c"echo".as_ptr(),
    c"fail".as_ptr(),
    c"raise".as_ptr(),
    c"twice".as_ptr(),
    c"reenter".as_ptr(),
    c"defer".as_ptr(),
    c"defer_now".as_ptr(),
    c"stop".as_ptr(),
    c"nothing".as_ptr(),
    c"no_target".as_ptr(),
    c"keep".as_ptr(),
    c"use_kept".as_ptr(),
    c"deep".as_ptr(),
    c"peer".as_ptr(),
]);

struct VTable(mgr_type);
// SAFETY: read-only, pointing at statics.
unsafe impl Sync for VTable {}
impl std::ops::Deref for VTable {
    type Target = mgr_type;
    fn deref(&self) -> &mgr_type {
        &self.0
    }
}
static VTABLE: VTable = VTable(mgr_type {
    version: MGR_TYPE_VERSION,
    exposed: METHODS.0.as_ptr(),
    exposed_len: 14,
    method_to_typeid: ptr::null::<mgr_method_typeid>(),
    method_to_typeid_len: 0,
    create: Some(create),
    call: Some(call),
    destroy: Some(destroy),
    repr: Some(repr),
    cancel: Some(cancel),
});

struct Running {
    address: String,
    shared: Arc<Shared>,
    replies: mpsc::Receiver<SendReply>,
    thread: Option<JoinHandle<(mgr_status, usize)>>,
}

fn start() -> Running {
    let (tx, replies) = mpsc::channel();
    let shared = Shared::new(tx);
    let (addr_tx, addr_rx) = mpsc::channel();
    let sh = shared.clone();
    let thread = std::thread::spawn(move || unsafe {
        let (s, address) = echo_server_here(&sh);
        addr_tx.send(address).unwrap();
        let st = mgr_server_run(s);
        let mut n = usize::MAX;
        assert_eq!(mgr_server_number_of_objects(s, &mut n), mgr_status::MGR_OK);
        assert!(mgr_server_is_shut_down(s));
        mgr_server_free(s);
        (st, n)
    });
    let address = addr_rx.recv().expect("server started");
    Running {
        address,
        shared,
        replies,
        thread: Some(thread),
    }
}

impl Running {
    fn connect(&self) -> Manager {
        Manager::connect(&self.address, KEY).expect("connect")
    }

    /// Stops the server from inside a callback and checks it ended cleanly.
    fn stop(mut self) {
        let m = self.connect();
        let p = m.create("Echo", vec![]).unwrap();
        assert_eq!(p.call("stop", vec![]).unwrap(), Value::None);
        let (st, objects) = self.thread.take().unwrap().join().expect("server thread");
        assert_eq!(st, mgr_status::MGR_OK);
        assert_eq!(objects, 0, "closing connections released their objects");
        assert_eq!(
            self.shared.created.load(Ordering::SeqCst),
            self.shared.destroyed.load(Ordering::SeqCst),
            "every object's destroy callback ran"
        );
    }
}

fn remote_kind(e: Error) -> (String, String) {
    match e {
        Error::Remote(r) => (r.kind, r.message),
        other => panic!("expected a remote error, got {other}"),
    }
}

#[test]
fn host_type_calls_errors_and_reentrancy() {
    let server = start();
    let m = server.connect();
    let p = m.create("Echo", vec![]).unwrap();
    let v = Value::List(vec![Value::Str("x".into()), Value::Bytes(vec![0, 1])]);
    assert_eq!(p.call("echo", vec![v.clone()]).unwrap(), v);
    assert_eq!(p.call("nothing", vec![]).unwrap(), Value::None);
    assert_eq!(p.call("twice", vec![]).unwrap(), Value::Int(1));
    let state = Value::Int(mgr_status::MGR_ERR_STATE as i64);
    assert_eq!(p.call("no_target", vec![]).unwrap(), state);

    let (kind, msg) = remote_kind(p.call("fail", vec![]).unwrap_err());
    assert_eq!(kind, "RuntimeError");
    assert!(msg.contains("Echo.fail failed with status 6"), "{msg}");
    let (kind, msg) = remote_kind(p.call("raise", vec![]).unwrap_err());
    assert_eq!((kind.as_str(), msg.as_str()), ("KeyError", "'k'"));

    let busy = Value::Int(mgr_status::MGR_ERR_BUSY as i64);
    assert_eq!(
        p.call("reenter", vec![]).unwrap(),
        Value::Tuple(vec![busy; 4])
    );
    // The refused free left the server serving.
    assert_eq!(
        p.call("__repr__", vec![]).unwrap(),
        Value::Str("<Echo after 1 echoes>".into())
    );
    assert_eq!(
        p.call("defer_now", vec![]).unwrap(),
        Value::Str("soon".into())
    );
    // A request handle kept past its callback is refused (MGR_ERR_STATE) in a
    // later callback, even one whose own request is live at the same time.
    assert_eq!(p.call("keep", vec![]).unwrap(), Value::None);
    assert_eq!(
        p.call("use_kept", vec![]).unwrap(),
        Value::Tuple(vec![state.clone(), state.clone()])
    );
    drop(p);
    assert_eq!(m.number_of_objects().unwrap(), 0);
    server.stop();
}

#[test]
fn deferred_replies_from_another_thread_freed_and_stale() {
    let server = start();
    let address = server.address.clone();

    // Answered from this (non-server) thread while the caller blocks.
    let caller = std::thread::spawn({
        let address = address.clone();
        move || {
            let m = Manager::connect(&address, KEY).unwrap();
            let p = m.create("Echo", vec![]).unwrap();
            let first = p.call("defer", vec![]);
            let second = p.call("defer", vec![]);
            (first.map_err(remote_kind), second.map_err(remote_kind))
        }
    });
    let r = server.replies.recv().unwrap().0;
    unsafe {
        assert_eq!(mgr_reply_return(r, mgr_value_int(7)), mgr_status::MGR_OK);
        assert_eq!(
            mgr_reply_raise(r, c"KeyError".as_ptr(), ptr::null()),
            mgr_status::MGR_ERR_STATE
        );
        mgr_reply_free(r);
    }
    // Freed without an answer: the caller gets a RuntimeError, not silence.
    let r = server.replies.recv().unwrap().0;
    unsafe { mgr_reply_free(r) };
    let (first, second) = caller.join().unwrap();
    assert_eq!(first, Ok(Value::Int(7)));
    let (kind, msg) = second.unwrap_err();
    assert_eq!(kind, "RuntimeError");
    assert!(msg.contains("without answering"), "{msg}");

    // The caller vanishes: the host is told (cancel, with the very reply it
    // holds), and answering later is a harmless no-op that says so.
    let observer = server.connect();
    let gone = server.connect();
    let p = gone.create("Echo", vec![]).unwrap();
    gone.connection()
        .queue(&Request::call(p.id(), "defer", vec![]));
    gone.connection().write_out().unwrap();
    let r = server.replies.recv().unwrap().0;
    drop(p);
    drop(gone);
    // Its object belonged to its connection: once it is gone the close was handled.
    while observer.number_of_objects().unwrap() != 0 {
        std::thread::yield_now();
    }
    assert_eq!(*server.shared.cancelled.lock().unwrap(), vec![r as usize]);
    unsafe {
        assert_eq!(
            mgr_reply_return(r, mgr_value_int(1)),
            mgr_status::MGR_ERR_STALE
        );
        mgr_reply_free(r);
    }

    server.stop();
}

/// Waits until the server's fd is readable (some event is ready for it).
fn wait_readable(fd: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(
        unsafe { libc::poll(&mut p, 1, 10_000) },
        1,
        "server fd never became readable"
    );
}

#[test]
fn cancel_is_never_called_for_a_reply_the_host_answered() {
    // The server is driven from this thread, so the order is ours: the caller
    // hangs up, the host answers, and only then does the server see both.
    let (tx, replies) = mpsc::channel();
    let shared = Shared::new(tx);
    unsafe {
        let (s, address) = echo_server_here(&shared);
        let (hang_up, hung_up) = (mpsc::channel::<()>(), mpsc::channel::<()>());
        let caller = std::thread::spawn(move || {
            let m = Manager::connect(&address, KEY).unwrap();
            let p = m.create("Echo", vec![]).unwrap();
            m.connection()
                .queue(&Request::call(p.id(), "defer", vec![]));
            m.connection().write_out().unwrap();
            hang_up.1.recv().unwrap();
            drop(p);
            drop(m);
            hung_up.0.send(()).unwrap();
        });
        let r = loop {
            if let Ok(r) = replies.try_recv() {
                break r.0;
            }
            wait_readable(mgr_server_fd(s));
            assert_eq!(mgr_server_process(s), mgr_status::MGR_OK);
        };
        hang_up.0.send(()).unwrap();
        hung_up.1.recv().unwrap();
        wait_readable(mgr_server_fd(s));
        assert_eq!(mgr_reply_return(r, mgr_value_int(2)), mgr_status::MGR_OK);
        while mgr_server_process(s) == mgr_status::MGR_OK
            && shared.destroyed.load(Ordering::SeqCst) == 0
        {
            wait_readable(mgr_server_fd(s));
        }
        caller.join().unwrap();
        assert!(
            shared.cancelled.lock().unwrap().is_empty(),
            "cancel was called for a reply the host had answered (it would free it twice)"
        );
        mgr_reply_free(r);
        mgr_server_free(s);
    }
}

#[test]
fn c_client_against_host_type() {
    use crate::ffi::client::*;
    use crate::ffi::status::{mgr_last_error, mgr_last_error_kind};
    let server = start();
    let address = std::ffi::CString::new(server.address.clone()).unwrap();
    unsafe {
        let mut c = ptr::null_mut();
        let st = mgr_client_connect(address.as_ptr(), KEY.as_ptr(), KEY.len(), &mut c);
        assert_eq!(st, mgr_status::MGR_OK);
        let mut p = ptr::null_mut();
        let st = mgr_create(c, c"Echo".as_ptr(), ptr::null(), ptr::null(), &mut p);
        assert_eq!(st, mgr_status::MGR_OK);
        assert_eq!(
            CStr::from_ptr(mgr_proxy_typeid(p)).to_str().unwrap(),
            "Echo"
        );

        let args = mgr_value_list();
        mgr_value_append(args, mgr_value_float(2.5));
        let mut out = ptr::null_mut();
        let st = mgr_call(p, c"echo".as_ptr(), args, ptr::null(), &mut out);
        assert_eq!(st, mgr_status::MGR_OK);
        let mut f = 0.0;
        assert_eq!(mgr_value_get_float(out, &mut f), mgr_status::MGR_OK);
        assert_eq!(f, 2.5);
        mgr_value_free(out);
        mgr_value_free(args);

        let mut out = ptr::null_mut();
        let st = mgr_call(p, c"raise".as_ptr(), ptr::null(), ptr::null(), &mut out);
        assert_eq!(st, mgr_status::MGR_ERR_REMOTE);
        assert!(out.is_null());
        assert_eq!(
            CStr::from_ptr(mgr_last_error_kind()).to_str().unwrap(),
            "KeyError"
        );
        assert_eq!(CStr::from_ptr(mgr_last_error()).to_str().unwrap(), "'k'");

        // A bad args value is refused before anything is sent.
        let not_args = mgr_value_int(1);
        let st = mgr_call(p, c"echo".as_ptr(), not_args, ptr::null(), &mut out);
        assert_eq!(st, mgr_status::MGR_ERR_WRONG_TYPE);
        mgr_value_free(not_args);

        // The proxy outlives its client; freeing it releases the object.
        mgr_client_free(c);
        let st = mgr_call(p, c"nothing".as_ptr(), ptr::null(), ptr::null(), &mut out);
        assert_eq!(st, mgr_status::MGR_OK);
        assert_eq!(mgr_value_type(out), mgr_value_kind::MGR_VALUE_NONE);
        mgr_value_free(out);
        mgr_proxy_free(p);
    }
    let observer = server.connect();
    while observer.number_of_objects().unwrap() != 0 {
        std::thread::yield_now();
    }
    server.stop();
}

/// A server on a free loopback port with the test key and default options.
unsafe fn new_server() -> *mut mgr_server {
    let mut s = ptr::null_mut();
    let st = mgr_server_new(
        c"127.0.0.1:0".as_ptr(),
        KEY.as_ptr(),
        KEY.len(),
        ptr::null(),
        &mut s,
    );
    assert_eq!(st, mgr_status::MGR_OK);
    s
}

/// Calls `method` on `proxy` with `args` (handed over and freed here); returns the
/// status and the result (NULL on failure).
unsafe fn c_call(
    proxy: *mut crate::ffi::mgr_proxy,
    method: &CStr,
    args: Vec<*mut mgr_value>,
) -> (mgr_status, *mut mgr_value) {
    let list = mgr_value_list();
    for a in args {
        mgr_value_append(list, a);
    }
    let mut out = ptr::null_mut();
    let st = crate::ffi::client::mgr_call(proxy, method.as_ptr(), list, ptr::null(), &mut out);
    mgr_value_free(list);
    (st, out)
}

/// Creates an object of `typeid` with no arguments through a C client.
unsafe fn c_create(c: *mut crate::ffi::mgr_client, typeid: &CStr) -> *mut crate::ffi::mgr_proxy {
    let mut p = ptr::null_mut();
    let st = crate::ffi::client::mgr_create(c, typeid.as_ptr(), ptr::null(), ptr::null(), &mut p);
    assert_eq!(st, mgr_status::MGR_OK);
    p
}

fn last_error_kind() -> String {
    // SAFETY: the library keeps the string valid until the next failing call.
    unsafe { CStr::from_ptr(crate::ffi::status::mgr_last_error_kind()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn c_host_serves_the_builtins_to_the_c_client() {
    use crate::ffi::client::*;
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || unsafe {
        let s = new_server();
        assert_eq!(mgr_server_register_builtins(s), mgr_status::MGR_OK);
        let address = CStr::from_ptr(mgr_server_address(s)).to_owned();
        tx.send(address).unwrap();
        assert_eq!(mgr_server_run(s), mgr_status::MGR_OK);
        mgr_server_free(s);
    });
    let address = rx.recv().unwrap();
    unsafe {
        let mut c = ptr::null_mut();
        let st = mgr_client_connect(address.as_ptr(), KEY.as_ptr(), KEY.len(), &mut c);
        assert_eq!(st, mgr_status::MGR_OK);
        let q = c_create(c, c"Queue");
        let (st, out) = c_call(q, c"put", vec![mgr_value_str(c"job".as_ptr())]);
        assert_eq!(st, mgr_status::MGR_OK);
        mgr_value_free(out);
        let (st, got) = c_call(q, c"get", vec![]);
        assert_eq!(st, mgr_status::MGR_OK);
        let mut s = ptr::null();
        let mut len = 0;
        assert_eq!(mgr_value_get_str(got, &mut s, &mut len), mgr_status::MGR_OK);
        assert_eq!(std::slice::from_raw_parts(s.cast::<u8>(), len), b"job");
        mgr_value_free(got);
        let (st, out) = c_call(q, c"get_nowait", vec![]);
        assert_eq!(st, mgr_status::MGR_ERR_REMOTE);
        assert!(out.is_null());
        assert_eq!(last_error_kind(), "queue.Empty");
        mgr_proxy_free(q);
        let mut n = usize::MAX;
        assert_eq!(mgr_client_number_of_objects(c, &mut n), mgr_status::MGR_OK);
        assert_eq!(n, 0);
        assert_eq!(mgr_client_shutdown(c), mgr_status::MGR_OK);
        mgr_client_free(c);
    }
    thread.join().unwrap();
}

#[test]
fn c_client_spawns_mgrd_and_shares_a_tracked_segment() {
    use crate::ffi::client::*;
    use crate::ffi::segment::*;
    use crate::ffi::spawn::*;
    use std::os::unix::ffi::OsStringExt;
    let program = std::ffi::CString::new(common::mgrd().into_os_string().into_vec()).unwrap();
    unsafe {
        let mut sp = ptr::null_mut();
        let st = mgr_spawn(
            program.as_ptr(),
            ptr::null(),
            KEY.as_ptr(),
            KEY.len(),
            &mut sp,
        );
        assert_eq!(st, mgr_status::MGR_OK);
        let address = CStr::from_ptr(mgr_spawned_address(sp))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(address.starts_with("127.0.0.1:"), "{address}");
        assert!(mgr_spawned_pid(sp) > 0);
        let mut c = ptr::null_mut();
        assert_eq!(mgr_spawned_connect(sp, &mut c), mgr_status::MGR_OK);

        let mut seg = ptr::null_mut();
        assert_eq!(
            mgr_client_create_segment(c, 64, &mut seg),
            mgr_status::MGR_OK
        );
        assert_eq!(mgr_segment_len(seg), 64);
        let name = CStr::from_ptr(mgr_segment_name(seg))
            .to_str()
            .unwrap()
            .to_owned();
        std::slice::from_raw_parts_mut(mgr_segment_data(seg), 64)[..4].copy_from_slice(b"ping");
        let path = std::path::Path::new("/dev/shm").join(&name);
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"ping");
        mgr_segment_free(seg);
        assert!(path.exists(), "freeing the mapping does not unlink");

        let mut second = ptr::null_mut();
        assert_eq!(
            mgr_client_create_segment(c, 8, &mut second),
            mgr_status::MGR_OK
        );
        let second_name =
            std::ffi::CString::new(CStr::from_ptr(mgr_segment_name(second)).to_bytes()).unwrap();
        assert_eq!(
            mgr_client_release_segment(c, second_name.as_ptr()),
            mgr_status::MGR_OK
        );
        assert_eq!(
            mgr_client_release_segment(c, second_name.as_ptr()),
            mgr_status::MGR_ERR_REMOTE,
            "not tracked any more"
        );
        mgr_segment_free(second);
        assert_eq!(
            mgr_client_create_segment(c, 0, &mut seg),
            mgr_status::MGR_ERR_CONFIG
        );
        mgr_client_free(c);

        let mut code = -1;
        assert_eq!(mgr_spawned_stop(sp, 10_000, &mut code), mgr_status::MGR_OK);
        assert_eq!(code, 0);
        assert!(
            !path.exists(),
            "the server unlinked its segment at shutdown"
        );
        mgr_spawned_free(sp);
        mgr_spawned_free(ptr::null_mut());
        mgr_segment_free(ptr::null_mut());

        let mut none = ptr::null_mut();
        let st = mgr_spawn(
            c"/nonexistent/mgrd".as_ptr(),
            ptr::null(),
            ptr::null(),
            0,
            &mut none,
        );
        assert_eq!(st, mgr_status::MGR_ERR_IO);
        assert!(none.is_null());
    }
}

#[test]
fn c_client_talks_to_a_cpython_manager_server() {
    use crate::ffi::client::*;
    let server = common::CpythonServer::start(KEY);
    let address = std::ffi::CString::new(server.address.as_str()).unwrap();
    unsafe {
        let mut c = ptr::null_mut();
        let st = mgr_client_connect_cpython(address.as_ptr(), KEY.as_ptr(), KEY.len(), &mut c);
        assert_eq!(st, mgr_status::MGR_OK);
        let d = c_create(c, c"dict");
        let key = || mgr_value_str(c"answer".as_ptr());
        let (st, out) = c_call(d, c"__setitem__", vec![key(), mgr_value_int(42)]);
        assert_eq!(st, mgr_status::MGR_OK);
        mgr_value_free(out);
        let (st, out) = c_call(d, c"__getitem__", vec![key()]);
        assert_eq!(st, mgr_status::MGR_OK);
        let mut n = 0;
        assert_eq!(mgr_value_get_int(out, &mut n), mgr_status::MGR_OK);
        assert_eq!(n, 42);
        mgr_value_free(out);
        let (st, _) = c_call(d, c"__getitem__", vec![mgr_value_str(c"nope".as_ptr())]);
        assert_eq!(st, mgr_status::MGR_ERR_REMOTE);
        assert_eq!(last_error_kind(), "KeyError");
        mgr_proxy_free(d);
        let mut count = usize::MAX;
        assert_eq!(
            mgr_client_number_of_objects(c, &mut count),
            mgr_status::MGR_OK
        );
        assert_eq!(count, 0);
        assert_eq!(mgr_client_shutdown(c), mgr_status::MGR_OK);
        mgr_client_free(c);
    }
}

#[test]
fn registration_refuses_empty_typeids_and_unknown_targets() {
    unsafe {
        let s = new_server();
        let ud = ptr::null_mut();
        let invalid = mgr_status::MGR_ERR_INVALID_ARGUMENT;
        assert_eq!(mgr_server_register(s, c"".as_ptr(), &*VTABLE, ud), invalid);
        let with_target = |target: &CStr| {
            let pair = [mgr_method_typeid {
                method: c"spawn".as_ptr(),
                type_id: target.as_ptr(),
            }];
            let vt = mgr_type {
                method_to_typeid: pair.as_ptr(),
                method_to_typeid_len: 1,
                ..*VTABLE
            };
            mgr_server_register(s, c"Maker".as_ptr(), &vt, ud)
        };
        assert_eq!(with_target(c"Nope"), invalid);
        assert!(last_error().contains("'Nope', which is not registered"));
        assert_eq!(
            with_target(c"dict"),
            invalid,
            "builtins are not registered yet"
        );
        assert_eq!(with_target(c"Maker"), mgr_status::MGR_OK, "its own typeid");
        assert_eq!(mgr_server_register_builtins(s), mgr_status::MGR_OK);
        assert_eq!(with_target(c"dict"), mgr_status::MGR_OK);
        let mut n = 0;
        assert_eq!(mgr_server_number_of_objects(s, &mut n), mgr_status::MGR_OK);
        mgr_server_free(s);
    }
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(crate::ffi::status::mgr_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Runs a server made through the C ABI (`new_server`, with the builtins),
/// set up by `setup`, until a client shuts it down; returns the bytes held at
/// the end.
fn run_c_server(tx: std::sync::mpsc::Sender<String>, setup: impl FnOnce(*mut mgr_server)) -> usize {
    // SAFETY: valid C strings and out-pointers; the server is freed below.
    unsafe {
        let s = new_server();
        assert_eq!(mgr_server_register_builtins(s), mgr_status::MGR_OK);
        setup(s);
        let address = std::ffi::CStr::from_ptr(mgr_server_address(s));
        tx.send(address.to_str().unwrap().to_owned()).unwrap();
        assert_eq!(mgr_server_run(s), mgr_status::MGR_OK);
        let mut held = usize::MAX;
        assert_eq!(mgr_server_held_bytes(s, &mut held), mgr_status::MGR_OK);
        mgr_server_free(s);
        held
    }
}

/// Runs a server made through the C ABI, with both caps set by its setters,
/// until a client shuts it down; returns the bytes held at the end.
fn c_server_with_caps(tx: std::sync::mpsc::Sender<String>) -> usize {
    // SAFETY: `s` is the live server `run_c_server` made.
    run_c_server(tx, |s| unsafe {
        assert_eq!(
            mgr_server_set_max_held_bytes(s, 2 << 20),
            mgr_status::MGR_OK
        );
        assert_eq!(
            mgr_server_set_max_objects_per_conn(s, 2),
            mgr_status::MGR_OK
        );
        assert_eq!(
            mgr_server_set_release_locks_of_dead(s, true),
            mgr_status::MGR_OK
        );
        assert_eq!(mgr_server_set_gc_work_per_turn(s, 1000), mgr_status::MGR_OK);
        assert_eq!(
            mgr_server_set_release_locks_of_dead(std::ptr::null_mut(), true),
            mgr_status::MGR_ERR_NULL_ARGUMENT
        );
    })
}

#[test]
fn the_c_setters_set_both_caps() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || c_server_with_caps(tx));
    let address = rx.recv().unwrap();
    let m = Manager::connect(&address, KEY).unwrap();
    let l = m.create("list", vec![]).unwrap();
    let _d = m.create("dict", vec![]).unwrap();
    // A refused create is answered as CPython answers it: a traceback that names
    // the exception.
    let (kind, msg) = remote_kind(m.create("list", vec![]).unwrap_err());
    assert_eq!(kind, "MemoryError");
    assert!(msg.contains("max_objects_per_conn"), "{msg}");
    l.call("append", vec![Value::Bytes(vec![0; 1 << 20])])
        .unwrap();
    let (kind, msg) = remote_kind(
        l.call("append", vec![Value::Bytes(vec![0; 1 << 20])])
            .unwrap_err(),
    );
    assert_eq!(kind, "MemoryError");
    assert!(msg.contains("max_held_bytes"), "{msg}");
    assert_eq!(l.call("__len__", vec![]).unwrap(), Value::Int(1));
    m.shutdown().unwrap();
    // Every object was released at shutdown, and the total with them.
    assert_eq!(server.join().unwrap(), 0, "held bytes after shutdown");
}

/// A chain `levels` deep built through the C API around an int `leaf`: kind 0
/// nests lists, 1 tuples, 2 dict values, 3 dict keys.
unsafe fn c_chain(kind: u8, levels: usize, leaf: i64) -> *mut mgr_value {
    let mut v = mgr_value_int(leaf);
    for _ in 0..levels {
        let (outer, status) = match kind {
            0 => {
                let l = mgr_value_list();
                (l, mgr_value_append(l, v))
            }
            1 => {
                let t = mgr_value_tuple();
                (t, mgr_value_append(t, v))
            }
            2 => {
                let d = mgr_value_dict();
                (d, mgr_value_dict_set(d, mgr_value_str(c"k".as_ptr()), v))
            }
            _ => {
                let d = mgr_value_dict();
                (d, mgr_value_dict_set(d, v, mgr_value_none()))
            }
        };
        assert_eq!(status, mgr_status::MGR_OK);
        v = outer;
    }
    v
}

#[test]
fn million_deep_c_values_clone_compare_print_and_free_on_a_small_stack() {
    // 2 MiB, the default for a spawned thread: a recursion per level overflows it.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| unsafe {
            const DEEP: usize = 1_000_000;
            for kind in 0..4 {
                let v = c_chain(kind, DEEP, 7);
                let copy = mgr_value_clone(v);
                assert!(!copy.is_null());
                assert!(mgr_value_equal(v, copy), "kind {kind}: a clone is equal");
                let other = c_chain(kind, DEEP, 8);
                assert!(!mgr_value_equal(v, other), "kind {kind}: the leaves differ");
                let repr = mgr_value_repr(v);
                assert!(!repr.is_null());
                let text = CStr::from_ptr(repr).to_str().unwrap();
                assert!(text.len() > 2 * DEEP, "kind {kind}: {} bytes", text.len());
                assert!(text.contains('7') && !text.contains('8'));
                mgr_string_free(repr);
                mgr_value_free(other);
                mgr_value_free(copy);
                mgr_value_free(v);
            }
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow");
}

#[test]
fn a_million_deep_host_reply_is_refused_cleanly_and_the_server_keeps_serving() {
    // The server runs `mgr_server_run` on a spawned thread's 2 MiB stack: it
    // encodes (and frees) the host's value without recursion, and answers the
    // native client with a clear error, since its decoder stops at MAX_DEPTH.
    let server = start();
    let m = server.connect();
    let p = m.create("Echo", vec![]).unwrap();
    let (kind, msg) = remote_kind(p.call("deep", vec![Value::Int(1_000_000)]).unwrap_err());
    assert_eq!(kind, "RemoteError");
    assert!(msg.contains("nested deeper than 128 levels"), "{msg}");
    // The same connection still works, and a value within the limit arrives.
    let max = mgr::proto::codec::native::MAX_DEPTH as usize;
    let expected = (0..max).fold(Value::Int(7), |v, _| Value::List(vec![v]));
    assert_eq!(
        p.call("deep", vec![Value::Int(max as i64)]).unwrap(),
        expected
    );
    assert!(p.call("deep", vec![Value::Int(max as i64 + 1)]).is_err());
    let v = Value::Str("still here".into());
    assert_eq!(p.call("echo", vec![v.clone()]).unwrap(), v);
    drop(p);
    server.stop();
}

/// The Scoreboard host type's userdata: how many states were destroyed.
static BOARDS_DESTROYED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn board_call(
    _userdata: *mut c_void,
    object: *mut c_void,
    method: *const c_char,
    args: *const mgr_value,
    _kwargs: *const mgr_value,
    req: *mut mgr_request,
) -> mgr_status {
    let score = &mut *object.cast::<i64>();
    match CStr::from_ptr(method).to_str().unwrap() {
        "add" => {
            let (mut item, mut n) = (ptr::null(), 0);
            if mgr_value_get_item(args, 0, &mut item) != mgr_status::MGR_OK
                || mgr_value_get_int(item, &mut n) != mgr_status::MGR_OK
            {
                mgr_request_raise(req, c"TypeError".as_ptr(), c"add(n: int)".as_ptr());
                return mgr_status::MGR_ERR_REMOTE;
            }
            *score += n;
            mgr_request_return(req, mgr_value_int(*score))
        }
        "get" => mgr_request_return(req, mgr_value_int(*score)),
        other => panic!("unexpected method {other}"),
    }
}

unsafe extern "C" fn board_destroy(_userdata: *mut c_void, object: *mut c_void) {
    BOARDS_DESTROYED.fetch_add(1, Ordering::SeqCst);
    drop(Box::from_raw(object.cast::<i64>()));
}

struct BoardMethods([*const c_char; 2]);
// SAFETY: pointers to static C string literals.
unsafe impl Sync for BoardMethods {}
static BOARD_METHODS: BoardMethods = BoardMethods([c"add".as_ptr(), c"get".as_ptr()]);

#[test]
fn a_c_host_publishes_objects_that_stock_cpython_clients_reach_by_typeid() {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || unsafe {
        let s = new_server();
        assert_eq!(mgr_server_register_builtins(s), mgr_status::MGR_OK);
        let vt = mgr_type {
            version: MGR_TYPE_VERSION,
            exposed: BOARD_METHODS.0.as_ptr(),
            exposed_len: 2,
            method_to_typeid: ptr::null(),
            method_to_typeid_len: 0,
            create: None,
            call: Some(board_call),
            destroy: Some(board_destroy),
            repr: None,
            cancel: None,
        };
        assert_eq!(
            mgr_server_register(s, c"Scoreboard".as_ptr(), &vt, ptr::null_mut()),
            mgr_status::MGR_OK
        );
        // The host's own state, published as it is.
        let board = Box::into_raw(Box::new(100i64)).cast::<c_void>();
        let name = c"get_scoreboard".as_ptr();
        assert_eq!(
            mgr_server_expose_object(s, name, c"Scoreboard".as_ptr(), board),
            mgr_status::MGR_OK
        );
        // A name taken: the state passed over is released at once.
        let other = Box::into_raw(Box::new(0i64)).cast::<c_void>();
        assert_eq!(
            mgr_server_expose_object(s, name, c"Scoreboard".as_ptr(), other),
            mgr_status::MGR_ERR_CONFIG
        );
        assert_eq!(BOARDS_DESTROYED.load(Ordering::SeqCst), 1);
        // Not a host type: nothing is taken.
        assert_eq!(
            mgr_server_expose_object(s, c"q".as_ptr(), c"Queue".as_ptr(), ptr::null_mut()),
            mgr_status::MGR_ERR_NOT_FOUND
        );
        // A built-in built with arguments: Queue(1).
        let args = mgr_value_tuple();
        mgr_value_append(args, mgr_value_int(1));
        assert_eq!(
            mgr_server_expose(
                s,
                c"get_queue".as_ptr(),
                c"Queue".as_ptr(),
                args,
                ptr::null()
            ),
            mgr_status::MGR_OK
        );
        mgr_value_free(args);
        // Queue(1, 2): one argument too many (any maxsize is taken, as by
        // queue.Queue).
        let bad = mgr_value_tuple();
        mgr_value_append(bad, mgr_value_int(1));
        mgr_value_append(bad, mgr_value_int(2));
        assert_eq!(
            mgr_server_expose(s, c"bad".as_ptr(), c"Queue".as_ptr(), bad, ptr::null()),
            mgr_status::MGR_ERR_REMOTE
        );
        assert_eq!(last_error_kind(), "TypeError");
        mgr_value_free(bad);
        let address = CStr::from_ptr(mgr_server_address(s))
            .to_str()
            .unwrap()
            .to_owned();
        tx.send(address).unwrap();
        assert_eq!(mgr_server_run(s), mgr_status::MGR_OK);
        let mut n = usize::MAX;
        assert_eq!(mgr_server_number_of_objects(s, &mut n), mgr_status::MGR_OK);
        assert_eq!(n, 2, "the server holds its published objects");
        assert_eq!(
            mgr_server_unexpose(s, c"get_queue".as_ptr()),
            mgr_status::MGR_OK
        );
        assert_eq!(
            mgr_server_unexpose(s, c"get_queue".as_ptr()),
            mgr_status::MGR_ERR_NOT_FOUND
        );
        assert_eq!(mgr_server_number_of_objects(s, &mut n), mgr_status::MGR_OK);
        assert_eq!(n, 1, "unexposed and unheld: destroyed");
        assert_eq!(BOARDS_DESTROYED.load(Ordering::SeqCst), 1);
        mgr_server_free(s);
        assert_eq!(
            BOARDS_DESTROYED.load(Ordering::SeqCst),
            2,
            "freed with the server"
        );
    });
    let address = rx.recv().expect("server started");
    let out = std::process::Command::new("python3")
        .arg(common::repo_root().join("tests/python/c_expose_client.py"))
        .arg(&address)
        .env("MGR_AUTHKEY", std::str::from_utf8(KEY).unwrap())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("python: all checks passed"),
        "python client failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The Rust client sees the same object, with the Python client's changes.
    let m = Manager::connect(&address, KEY).unwrap();
    let board = m.create("get_scoreboard", vec![]).unwrap();
    assert_eq!(board.call("get", vec![]).unwrap(), Value::Int(105));
    drop(board);
    m.public("shutdown", vec![]).unwrap();
    thread.join().expect("server thread");
}

#[test]
fn a_server_adopts_a_listening_descriptor_and_refuses_others() {
    use crate::ffi::client::*;
    use std::os::fd::IntoRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let expected = listener.local_addr().unwrap().to_string();
    let fd = listener.into_raw_fd();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || unsafe {
        let mut s = ptr::null_mut();
        let st = mgr_server_from_fd(fd, KEY.as_ptr(), KEY.len(), ptr::null(), &mut s);
        assert_eq!(st, mgr_status::MGR_OK, "{}", last_error());
        assert_eq!(mgr_server_register_builtins(s), mgr_status::MGR_OK);
        tx.send(CStr::from_ptr(mgr_server_address(s)).to_owned())
            .unwrap();
        assert_eq!(mgr_server_run(s), mgr_status::MGR_OK);
        mgr_server_free(s);
    });
    let address = rx.recv().unwrap();
    assert_eq!(address.to_str().unwrap(), expected);
    unsafe {
        let mut c = ptr::null_mut();
        let st = mgr_client_connect(address.as_ptr(), KEY.as_ptr(), KEY.len(), &mut c);
        assert_eq!(st, mgr_status::MGR_OK);
        mgr_proxy_free(c_create(c, c"dict"));
        assert_eq!(mgr_client_shutdown(c), mgr_status::MGR_OK);
        mgr_client_free(c);
    }
    thread.join().unwrap();

    unsafe {
        let mut s = ptr::null_mut();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .into_raw_fd();
        let st = mgr_server_from_fd(udp, KEY.as_ptr(), KEY.len(), ptr::null(), &mut s);
        assert_eq!(st, mgr_status::MGR_ERR_IO);
        assert!(
            last_error().ends_with(&format!("fd {udp} is not a stream socket")),
            "{}",
            last_error()
        );
        assert!(s.is_null());
        let st = mgr_server_from_fd(-1, KEY.as_ptr(), KEY.len(), ptr::null(), &mut s);
        assert_eq!(st, mgr_status::MGR_ERR_INVALID_ARGUMENT);
        // An empty key on a public address is refused after adoption, too.
        let public = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .into_raw_fd();
        let st = mgr_server_from_fd(public, ptr::null(), 0, ptr::null(), &mut s);
        assert_eq!(st, mgr_status::MGR_ERR_CONFIG);
        assert!(
            last_error().contains("without an authkey"),
            "{}",
            last_error()
        );
    }
}

/// The log lines a C log callback received: (kind, conn id, pid, message).
type Logged = Mutex<Vec<(mgr_log_kind, u64, i64, String)>>;

unsafe extern "C" fn log_line(
    userdata: *mut c_void,
    kind: mgr_log_kind,
    peer: *const crate::ffi::mgr_peer,
    message: *const c_char,
) {
    let logged = &*(userdata as *const Logged);
    let (conn, pid) = peer.as_ref().map_or((0, 0), |p| (p.conn_id, p.pid));
    let text = CStr::from_ptr(message).to_string_lossy().into_owned();
    logged.lock().unwrap().push((kind, conn, pid, text));
}

fn peer_of(p: &mgr::Proxy) -> Vec<Value> {
    p.call("peer", vec![]).unwrap().into_items().unwrap()
}

/// Reads the server's stats with the full struct size.
unsafe fn stats_of(s: *mut mgr_server) -> mgr_stats {
    let mut st = mgr_stats {
        size: std::mem::size_of::<mgr_stats>() as u32,
        ..Default::default()
    };
    assert_eq!(mgr_server_stats(s, &mut st), mgr_status::MGR_OK);
    st
}

#[test]
fn a_unix_peer_its_stats_and_its_log_through_the_c_abi() {
    let dir = std::env::temp_dir().join(format!("mgr-capi-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let address = format!("unix:{}", path.display());
    let (tx, replies) = mpsc::channel();
    let shared = Shared::new(tx);
    drop(replies);
    let logged: Arc<Logged> = Arc::default();
    unsafe {
        let mut s = ptr::null_mut();
        let c_address = std::ffi::CString::new(address.clone()).unwrap();
        assert_eq!(
            mgr_server_new(
                c_address.as_ptr(),
                KEY.as_ptr(),
                KEY.len(),
                ptr::null(),
                &mut s
            ),
            mgr_status::MGR_OK
        );
        shared.server.store(s, Ordering::SeqCst);
        let ud = Arc::as_ptr(&shared) as *mut c_void;
        assert_eq!(
            mgr_server_register(s, c"Echo".as_ptr(), &*VTABLE, ud),
            mgr_status::MGR_OK
        );
        let log_ud = Arc::as_ptr(&logged) as *mut c_void;
        assert_eq!(
            mgr_server_set_log(s, Some(log_line), log_ud),
            mgr_status::MGR_OK
        );
        let before = stats_of(s);
        assert_eq!((before.connections_accepted, before.objects), (0, 0));

        let (step, steps) = mpsc::channel::<Vec<Value>>();
        let (go, went) = mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let m = Manager::connect(&address, KEY).unwrap();
            let p = m.create("Echo", vec![]).unwrap();
            let who = peer_of(&p);
            p.call("raise", vec![]).unwrap_err();
            step.send(who).unwrap();
            went.recv().unwrap();
            assert!(Manager::connect(&address, b"wrong").is_err());
            drop((p, m));
            step.send(vec![]).unwrap();
        });
        let serve_until = |steps: &mpsc::Receiver<Vec<Value>>| loop {
            match steps.try_recv() {
                Ok(v) => break v,
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => panic!("the client failed"),
            }
            let mut p = libc::pollfd {
                fd: mgr_server_fd(s),
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut p, 1, 5);
            assert_eq!(mgr_server_process(s), mgr_status::MGR_OK);
        };
        let who = serve_until(&steps);
        let (uid, gid) = (i64::from(libc::getuid()), i64::from(libc::getgid()));
        assert_eq!(who[1], Value::Int(i64::from(std::process::id())), "{who:?}");
        assert_eq!((&who[2], &who[3]), (&Value::Int(uid), &Value::Int(gid)));
        assert_eq!(who[4], Value::Int(i64::from(crate::ffi::MGR_PEER_UNIX)));
        assert_eq!(who[5], Value::from("unix:"));

        let mid = stats_of(s);
        assert_eq!((mid.connections_open, mid.connections_accepted), (1, 1));
        assert_eq!((mid.objects, mid.errors, mid.auth_failures), (1, 1, 0));
        let mut n = 9;
        assert_eq!(
            mgr_server_objects_of_type(s, c"Echo".as_ptr(), &mut n),
            mgr_status::MGR_OK
        );
        assert_eq!(n, 1);
        assert_eq!(
            mgr_server_objects_of_type(s, c"Nope".as_ptr(), &mut n),
            mgr_status::MGR_OK
        );
        assert_eq!(n, 0);
        // A smaller (older) struct gets what fits and nothing past it.
        let mut old = mgr_stats {
            size: 16,
            connections_preauth: 77,
            ..Default::default()
        };
        assert_eq!(mgr_server_stats(s, &mut old), mgr_status::MGR_OK);
        assert_eq!(
            (old.size, old.connections_open, old.connections_preauth),
            (16, 1, 77)
        );
        old.size = 4;
        assert_eq!(
            mgr_server_stats(s, &mut old),
            mgr_status::MGR_ERR_INVALID_ARGUMENT
        );

        go.send(()).unwrap();
        serve_until(&steps);
        client.join().unwrap();
        while stats_of(s).connections_open > 0 {
            let mut p = libc::pollfd {
                fd: mgr_server_fd(s),
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut p, 1, 5);
            assert_eq!(mgr_server_process(s), mgr_status::MGR_OK);
        }
        let end = stats_of(s);
        assert_eq!(
            (end.connections_accepted, end.auth_failures, end.objects),
            (2, 1, 0)
        );
        assert!(end.bytes_in > 0 && end.bytes_out > 0 && end.turns > 0);
        mgr_server_free(s);
    }
    let logged = logged.lock().unwrap();
    let me = i64::from(std::process::id());
    let kinds: Vec<mgr_log_kind> = logged.iter().map(|l| l.0).collect();
    use mgr_log_kind::*;
    assert_eq!(
        kinds,
        [
            MGR_LOG_ACCEPTED,
            MGR_LOG_ACCEPTED,
            MGR_LOG_AUTH_FAILED,
            MGR_LOG_CLOSED,
            MGR_LOG_CLOSED,
            MGR_LOG_SHUTDOWN
        ],
        "{logged:#?}"
    );
    assert!(
        logged[..5].iter().all(|l| l.2 == me && l.1 != 0),
        "{logged:#?}"
    );
    assert_eq!(logged[0].1, logged[4].1, "the first connection closes last");
    assert_eq!(logged[1].1, logged[2].1);
    assert!(
        logged[2].3.starts_with("authentication failed for conn "),
        "{logged:#?}"
    );
    assert!(logged
        .iter()
        .all(|l| !l.3.contains("ffi-test-key") && !l.3.contains("wrong")));
    assert_eq!(logged[5].3, "shutting down");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_tcp_peer_through_the_c_abi_has_an_address_and_no_credentials() {
    let server = start();
    let m = server.connect();
    let p = m.create("Echo", vec![]).unwrap();
    let who = peer_of(&p);
    assert_eq!(
        &who[1..4],
        &[Value::Int(-1), Value::Int(-1), Value::Int(-1)]
    );
    assert_eq!(who[4], Value::Int(i64::from(crate::ffi::MGR_PEER_TCP)));
    let addr: std::net::SocketAddr = who[5].as_str().unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let again = peer_of(&p);
    assert_eq!(again[0], who[0], "one connection, one id");
    let other = server.connect();
    let q = other.proxy(p.token().clone()).unwrap();
    assert_ne!(peer_of(&q)[0], who[0], "another connection, another id");
    drop((p, q, m, other));
    server.stop();
}

#[test]
fn an_answer_given_just_before_free_reaches_its_caller() {
    let (tx, replies) = mpsc::channel();
    let shared = Shared::new(tx);
    unsafe {
        let (s, address) = echo_server_here(&shared);
        let caller = std::thread::spawn(move || {
            let m = Manager::connect(&address, KEY).unwrap();
            let p = m.create("Echo", vec![]).unwrap();
            p.call("defer", vec![])
        });
        let r = loop {
            if let Ok(r) = replies.try_recv() {
                break r.0;
            }
            wait_readable(mgr_server_fd(s));
            assert_eq!(mgr_server_process(s), mgr_status::MGR_OK);
        };
        // Answered, then the server is freed before another turn.
        assert_eq!(mgr_reply_return(r, mgr_value_int(42)), mgr_status::MGR_OK);
        mgr_reply_free(r);
        mgr_server_free(s);
        assert_eq!(caller.join().unwrap().unwrap(), Value::Int(42));
    }
}

/// A server made through the C ABI with `globals` set by its setter, run
/// until a client shuts it down.
fn c_server_with_globals(tx: std::sync::mpsc::Sender<String>, globals: u32) {
    // SAFETY: `s` is the live server `run_c_server` made.
    run_c_server(tx, |s| unsafe {
        assert_eq!(
            mgr_server_set_globals(s, 7),
            mgr_status::MGR_ERR_INVALID_ARGUMENT
        );
        assert_eq!(mgr_server_set_globals(s, globals), mgr_status::MGR_OK);
    });
}

#[test]
fn opaque_values_are_kept_copied_and_named_through_the_c_abi_under_each_policy() {
    let point = || {
        let mut o = mgr::proto::PyObject::built(
            mgr::proto::Form::NewObj,
            Value::opaque_global("__main__", "Point"),
            vec![],
        );
        o.set_state(Value::Dict(vec![(Value::Str("x".into()), Value::Int(1))]));
        Value::Opaque(Box::new(o))
    };
    for (globals, passes) in [
        (mgr_globals::MGR_GLOBALS_ANY, true),
        (mgr_globals::MGR_GLOBALS_DEFAULT, false),
        (mgr_globals::MGR_GLOBALS_NONE, false),
    ] {
        let (tx, rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || c_server_with_globals(tx, globals as u32));
        let m = Manager::connect(&rx.recv().unwrap(), KEY).unwrap();
        let l = m.create("list", vec![]).unwrap();
        let stored = l.call("append", vec![point()]);
        assert_eq!(stored.is_ok(), passes, "{globals:?}: {stored:?}");
        // A Decimal passes unless the policy is none.
        let dec = Value::opaque_call("decimal", "Decimal", vec!["1.5".into()]);
        let stored = l.call("append", vec![dec]);
        assert_eq!(
            stored.is_ok(),
            globals != mgr_globals::MGR_GLOBALS_NONE,
            "{globals:?}: {stored:?}"
        );
        let got = l.call("__getitem__", vec![Value::Int(0)]);
        if let Ok(v) = got {
            let p = into_raw(v);
            // SAFETY: `p` is an owned value, freed below; out-pointers are valid.
            unsafe {
                assert_eq!(mgr_value_type(p), mgr_value_kind::MGR_VALUE_OPAQUE);
                let (mut mp, mut ml, mut np, mut nl) = (ptr::null(), 0, ptr::null(), 0);
                let st = mgr_value_opaque_global(p, &mut mp, &mut ml, &mut np, &mut nl);
                assert_eq!(st, mgr_status::MGR_OK);
                let text = |p: *const c_char, n| {
                    std::str::from_utf8(std::slice::from_raw_parts(p.cast::<u8>(), n)).unwrap()
                };
                let name = (text(mp, ml), text(np, nl));
                assert!(
                    matches!(name, ("__main__", "Point") | ("decimal", "Decimal")),
                    "{name:?}"
                );
                let copy = mgr_value_clone(p);
                assert!(mgr_value_equal(p, copy));
                // A copy goes back in and comes out equal.
                let back = from_raw(copy).unwrap();
                l.call("append", vec![back.clone()]).unwrap();
                assert_eq!(l.call("__getitem__", vec![Value::Int(-1)]).unwrap(), back);
                let int = mgr_value_int(1);
                assert_eq!(
                    mgr_value_opaque_global(int, &mut mp, &mut ml, &mut np, &mut nl),
                    mgr_status::MGR_ERR_WRONG_TYPE
                );
                mgr_value_free(int);
                mgr_value_free(p);
            }
        }
        m.shutdown().unwrap();
        server.join().unwrap();
    }
}

/// A value a decoder shared between places (`[[0, 1]] * 3` from a stock
/// client) reads through the C API as the value it shares, and changing one
/// place leaves the others as they were.
#[test]
fn c_readers_see_through_shared_values_and_writers_unshare() {
    unsafe {
        // As a reply decodes: the native codec rebuilds the sharing.
        let inner = Value::Shared(Arc::new(Value::List(vec![Value::Int(0), Value::Int(1)])));
        let sent = Value::List(vec![inner.clone(), inner.clone(), inner]);
        let mut wire = Vec::new();
        mgr::proto::codec::native::encode_reply(
            &mgr::proto::Reply::Return(sent.clone()),
            &mut wire,
        );
        let mgr::proto::Reply::Return(got) =
            mgr::proto::codec::native::decode_reply(&wire).unwrap()
        else {
            panic!("a return")
        };
        assert!(got.as_list().unwrap().iter().all(Value::is_shared));
        let v = into_raw(got);
        let mut n = 0usize;
        assert_eq!(mgr_value_len(v, &mut n), mgr_status::MGR_OK);
        assert_eq!(n, 3);
        let mut item: *const mgr_value = ptr::null();
        assert_eq!(mgr_value_get_item(v, 2, &mut item), mgr_status::MGR_OK);
        assert_eq!(mgr_value_type(item), mgr_value_kind::MGR_VALUE_LIST);
        assert_eq!(mgr_value_len(item, &mut n), mgr_status::MGR_OK);
        assert_eq!(n, 2);
        let mut leaf: *const mgr_value = ptr::null();
        assert_eq!(mgr_value_get_item(item, 1, &mut leaf), mgr_status::MGR_OK);
        let mut i = 0i64;
        assert_eq!(mgr_value_get_int(leaf, &mut i), mgr_status::MGR_OK);
        assert_eq!(i, 1);
        let repr = mgr_value_repr(v);
        assert_eq!(
            CStr::from_ptr(repr).to_str().unwrap(),
            "[[0, 1], [0, 1], [0, 1]]"
        );
        mgr_string_free(repr);
        let copy = mgr_value_clone(v);
        assert!(mgr_value_equal(v, copy));
        // A shared value handed to C as its own: appending unshares it, and
        // the value it shared with the list is unchanged.
        let shared_item = (*v.cast::<Value>()).as_list().unwrap()[0].clone();
        assert!(shared_item.is_shared());
        let own = into_raw(shared_item);
        assert_eq!(mgr_value_append(own, mgr_value_int(2)), mgr_status::MGR_OK);
        assert_eq!(mgr_value_len(own, &mut n), mgr_status::MGR_OK);
        assert_eq!(n, 3);
        assert_eq!(mgr_value_len(item, &mut n), mgr_status::MGR_OK);
        assert_eq!(n, 2, "the list's items keep their value");
        assert!(mgr_value_equal(v, copy));
        let back = from_raw(v).unwrap();
        assert_eq!(back, sent);
        mgr_value_free(own);
        mgr_value_free(copy);
    }
}
