//! The server over real sockets, driven by the Rust client.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, TempDir, TestServer, KEY};
use mgr::client::{Connection, Returned};
use mgr::proto::codec::native;
use mgr::{Error, Manager, Reply, Request, ServerConfig, Value};

fn remote_kind(e: Error) -> (String, String) {
    match e {
        Error::Remote(r) => (r.kind, r.message),
        other => panic!("expected a remote error, got {other}"),
    }
}

#[test]
fn create_call_and_release() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![Value::Int(10)]).unwrap();
    assert_eq!(c.exposed(), ["incr", "get", "fail"]);
    assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(11));
    assert_eq!(c.call("incr", vec![Value::Int(5)]).unwrap(), Value::Int(16));
    let kw = c
        .invoke("incr", vec![], vec![("n".into(), Value::Int(4))])
        .unwrap();
    assert_eq!(kw.into_value().unwrap(), Value::Int(20));
    assert_eq!(m.number_of_objects().unwrap(), 1);
    drop(c);
    assert_eq!(m.number_of_objects().unwrap(), 0);
}

#[test]
fn method_errors_carry_their_kind_and_the_connection_survives() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![]).unwrap();
    let (kind, msg) = remote_kind(c.call("fail", vec![]).unwrap_err());
    assert_eq!(
        (kind.as_str(), msg.as_str()),
        ("ValueError", "asked to fail")
    );
    let e = c.call("nope", vec![]).unwrap_err();
    assert!(e.traceback().is_some_and(|t| t.contains("'nope'")), "{e:?}");
    let (kind, msg) = remote_kind(e);
    assert_eq!(kind, "AttributeError");
    assert!(msg.contains("'nope'"), "{msg}");
    assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(1));
}

#[test]
fn unknown_typeid_object_and_public_method_are_clear_errors() {
    let s = TestServer::start();
    let m = s.connect();
    // CPython's server looks the typeid up in a dict: a KeyError naming it.
    let (kind, msg) = remote_kind(m.create("NoSuchType", vec![]).unwrap_err());
    assert_eq!((kind.as_str(), msg.as_str()), ("KeyError", "'NoSuchType'"));
    let reply = m
        .connection()
        .call(&Request::call(mgr::ObjectId(0xdead), "get", vec![]))
        .unwrap();
    match reply {
        Reply::Traceback(t) => assert!(t.contains("KeyError") && t.contains("dead"), "{t}"),
        other => panic!("{other:?}"),
    }
    let (_, msg) = remote_kind(m.public("frobnicate", vec![]).unwrap_err());
    assert!(msg.contains("'frobnicate' unrecognized"), "{msg}");
    assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
}

#[test]
fn fallbacks_repr_str_and_getvalue() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![Value::Int(3)]).unwrap();
    assert_eq!(
        c.call("__repr__", vec![]).unwrap(),
        Value::Str("Counter(3)".into())
    );
    assert_eq!(
        c.call("__str__", vec![]).unwrap(),
        Value::Str("Counter(3)".into())
    );
    assert_eq!(c.call("#GETVALUE", vec![]).unwrap(), Value::Int(3));
    let mb = m.create("Mailbox", vec![]).unwrap();
    let repr = mb.call("__repr__", vec![]).unwrap();
    assert_eq!(
        repr,
        Value::Str(format!("<Mailbox object, id={}>", mb.id()))
    );
    let (kind, _) = remote_kind(mb.call("#GETVALUE", vec![]).unwrap_err());
    assert_eq!(kind, "TypeError");
}

#[test]
fn stale_id_is_unknown_not_another_object() {
    let s = TestServer::start();
    let m = s.connect();
    let a = m.create("Counter", vec![]).unwrap();
    let old = a.id();
    drop(a);
    let b = m.create("Counter", vec![Value::Int(7)]).unwrap();
    assert_eq!(b.id().index(), old.index(), "the slot is reused");
    assert_ne!(b.id(), old);
    let reply = m
        .connection()
        .call(&Request::call(old, "get", vec![]))
        .unwrap();
    assert!(matches!(reply, Reply::Traceback(t) if t.contains("KeyError")));
    assert_eq!(b.call("get", vec![]).unwrap(), Value::Int(7));
}

#[test]
fn incref_decref_get_methods_debug_info() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![Value::Int(42)]).unwrap();
    let other = s.connect();
    let p = other.proxy(c.token().clone()).unwrap();
    assert_eq!(p.exposed(), ["incr", "get", "fail"]);
    drop(c);
    assert_eq!(
        m.number_of_objects().unwrap(),
        1,
        "the second reference keeps it"
    );
    assert_eq!(p.call("get", vec![]).unwrap(), Value::Int(42));
    assert_eq!(m.get_methods(p.id()).unwrap(), ["incr", "get", "fail"]);
    let info = m.debug_info().unwrap();
    assert!(
        info.contains("refcount=1") && info.contains("Counter(42)"),
        "{info}"
    );
    drop(p);
    assert_eq!(m.number_of_objects().unwrap(), 0);
    let (kind, _) = remote_kind(m.public("decref", vec![Value::Int(12345)]).unwrap_err());
    assert_eq!(kind, "KeyError");
}

#[test]
fn many_concurrent_connections() {
    let s = TestServer::start();
    let m = s.connect();
    let counter = m.create("Counter", vec![]).unwrap();
    let token = counter.token().clone();
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let addr = s.address.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                let m = Manager::connect_to(&addr, KEY).unwrap();
                let p = m.proxy(token).unwrap();
                for _ in 0..200 {
                    p.call("incr", vec![]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter.call("get", vec![]).unwrap(), Value::Int(32 * 200));
    assert_eq!(m.number_of_objects().unwrap(), 1);
}

#[test]
fn deferred_reply_completed_by_another_connections_call() {
    let s = TestServer::start();
    let m = s.connect();
    let mb = m.create("Mailbox", vec![]).unwrap();
    let token = mb.token().clone();
    let addr = s.address.clone();
    let waiter = std::thread::spawn(move || {
        let m = Manager::connect_to(&addr, KEY).unwrap();
        let p = m.proxy(token).unwrap();
        p.call("wait", vec![]).unwrap()
    });
    assert!(eventually(10, || mb.call("waiters", vec![]).unwrap() == Value::Int(1)));
    assert_eq!(
        mb.call("post", vec![Value::Str("hello".into())]).unwrap(),
        Value::Int(1)
    );
    assert_eq!(waiter.join().unwrap(), Value::Str("hello".into()));
}

#[test]
fn deferred_reply_completed_by_a_timer() {
    let s = TestServer::start();
    let m = s.connect();
    let mb = m.create("Mailbox", vec![]).unwrap();
    let started = Instant::now();
    let (kind, _) = remote_kind(mb.call("wait", vec![Value::Float(0.2)]).unwrap_err());
    assert_eq!(kind, "TimeoutError");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(mb.call("waiters", vec![]).unwrap(), Value::Int(0));
}

#[test]
fn requests_behind_a_deferred_call_wait_in_order() {
    let s = TestServer::start();
    let m = s.connect();
    let mb = m.create("Mailbox", vec![]).unwrap();
    let c = m.create("Counter", vec![]).unwrap();
    // Pipeline: wait (blocks), then incr. The incr must not run before the wait ends.
    let wait = mb.start_call("wait", vec![]).unwrap();
    let incr = c.start_call("incr", vec![]).unwrap();
    let other = s.connect();
    let c2 = other.proxy(c.token().clone()).unwrap();
    let mb2 = other.proxy(mb.token().clone()).unwrap();
    assert!(eventually(10, || mb2.call("waiters", vec![]).unwrap() == Value::Int(1)));
    assert_eq!(
        c2.call("get", vec![]).unwrap(),
        Value::Int(0),
        "incr is still queued"
    );
    mb2.call("post", vec![Value::Int(9)]).unwrap();
    assert_eq!(wait.finish().unwrap().into_value().unwrap(), Value::Int(9));
    assert_eq!(
        m.finish_call(incr).unwrap().into_value().unwrap(),
        Value::Int(1)
    );
}

#[test]
fn pipelining_many_calls() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![]).unwrap();
    let mut p = m.pipeline();
    for _ in 0..1000 {
        p.call(&c, "incr", vec![]);
    }
    let results = p.run().unwrap();
    assert_eq!(results.len(), 1000);
    for (i, r) in results.into_iter().enumerate() {
        match r.unwrap() {
            Returned::Value(Value::Int(n)) => assert_eq!(n, i as i64 + 1),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn method_to_typeid_returns_a_proxy() {
    let s = TestServer::start();
    let m = s.connect();
    let maker = m.create("Maker", vec![]).unwrap();
    let c = maker
        .invoke("counter", vec![Value::Int(100)], vec![])
        .unwrap()
        .into_proxy()
        .unwrap();
    assert_eq!(c.token().typeid, "Counter");
    assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(101));
    let h = maker
        .invoke("wrap", vec![Value::Str("x".into())], vec![])
        .unwrap()
        .into_proxy()
        .unwrap();
    assert_eq!(h.call("get", vec![]).unwrap(), Value::Str("x".into()));
    assert_eq!(m.number_of_objects().unwrap(), 3);
    let err = maker.call("counter", vec![]).unwrap_err();
    assert!(
        matches!(err, Error::Protocol(_)),
        "call() refuses a proxy result: {err}"
    );
    drop((c, h));
    assert_eq!(
        m.number_of_objects().unwrap(),
        1,
        "the refused proxy was released too"
    );
}

#[test]
fn values_holding_references_keep_objects_alive() {
    let s = TestServer::start();
    let m = s.connect();
    let inner = m.create("Counter", vec![Value::Int(5)]).unwrap();
    let holder = m
        .create(
            "Holder",
            vec![Value::List(vec![Value::Ref(inner.token().clone())])],
        )
        .unwrap();
    drop(inner);
    assert_eq!(
        m.number_of_objects().unwrap(),
        2,
        "the holder keeps the counter"
    );
    let got = holder.call("get", vec![]).unwrap();
    let Value::List(items) = &got else { panic!() };
    let Value::Ref(token) = &items[0] else {
        panic!()
    };
    let again = m.proxy(token.clone()).unwrap();
    assert_eq!(again.call("get", vec![]).unwrap(), Value::Int(5));
    drop(again);
    holder.call("set", vec![Value::None]).unwrap();
    // The counter was named in a reply (get), so it lives out the grace period.
    assert!(
        eventually(10, || m.number_of_objects().unwrap() == 1),
        "letting go of the ref frees the counter"
    );
    let inner2 = m.create("Counter", vec![]).unwrap();
    holder
        .call("set", vec![Value::Ref(inner2.token().clone())])
        .unwrap();
    drop(inner2);
    drop(holder);
    assert_eq!(
        m.number_of_objects().unwrap(),
        0,
        "a dead holder releases what it held"
    );
    // A reference to nothing is refused before the call.
    let holder = m.create("Holder", vec![]).unwrap();
    let bogus = mgr::Token {
        typeid: "Counter".into(),
        id: mgr::ObjectId(0xbad),
    };
    let (_, msg) = remote_kind(holder.call("set", vec![Value::Ref(bogus)]).unwrap_err());
    assert!(msg.contains("refers to no shared object"), "{msg}");
}

#[test]
fn closing_a_connection_releases_its_references() {
    let s = TestServer::start();
    let observer = s.connect();
    {
        let m = s.connect();
        let _a = m.create("Counter", vec![]).unwrap();
        let b = m.create("Counter", vec![]).unwrap();
        let _ = b.into_token(); // never decref'd by the client
        assert_eq!(observer.number_of_objects().unwrap(), 2);
    }
    assert!(eventually(10, || observer.number_of_objects().unwrap() == 0));
}

#[test]
fn a_waiting_client_that_disconnects_is_removed_from_the_wait() {
    let s = TestServer::start();
    let m = s.connect();
    let mb = m.create("Mailbox", vec![]).unwrap();
    {
        let w = s.connect();
        let p = w.proxy(mb.token().clone()).unwrap();
        let _pending = p.start_call("wait", vec![]).unwrap();
        assert!(eventually(10, || mb.call("waiters", vec![]).unwrap() == Value::Int(1)));
        let _ = p.into_token();
    }
    assert!(eventually(10, || mb.call("waiters", vec![]).unwrap() == Value::Int(0)));
    assert_eq!(mb.call("post", vec![Value::None]).unwrap(), Value::Int(0));
    assert_eq!(m.number_of_objects().unwrap(), 1);
}

#[test]
fn wrong_key_is_refused_and_others_keep_working() {
    let s = TestServer::start();
    let good = s.connect();
    let c = good.create("Counter", vec![]).unwrap();
    match Manager::connect_to(&s.address, b"wrong") {
        Err(Error::Auth(e)) => assert!(e.to_string().contains("rejected"), "{e}"),
        other => panic!("expected an auth error, got {other:?}"),
    }
    assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(1));
}

#[test]
fn malformed_payload_gets_an_error_and_the_connection_goes_on() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![]).unwrap();
    {
        let mut conn = m.connection();
        conn.queue_raw(&[native::NATIVE_VERSION, 0, 0xff, 0xff]);
        conn.write_out().unwrap();
        match conn.recv().unwrap() {
            Reply::Traceback(t) => assert!(t.contains("malformed request"), "{t}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(1));
}

#[test]
fn bad_frame_headers_close_only_that_connection() {
    let s = TestServer::start_with(|c| c.max_frame = 1 << 20);
    let m = s.connect();
    let c = m.create("Counter", vec![]).unwrap();
    // Over the limit (within 16 times it): the frame is read and dropped as
    // it arrives, then answered naming the limit; the connection keeps serving.
    let mut over = Connection::connect(&s.address, KEY).unwrap();
    over.queue_bytes(&(2_000_000i32).to_be_bytes());
    over.write_out().unwrap();
    over.queue_bytes(&vec![native::NATIVE_VERSION; 2_000_000]);
    over.write_out().unwrap();
    match native::decode_reply(&over.read_frame(1 << 20).unwrap()) {
        Ok(Reply::Traceback(t)) => {
            assert!(
                t.contains("limit of 1048576 bytes") && t.contains("--max-frame"),
                "{t}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut ok = Vec::new();
    native::encode_request(&Request::public("dummy", vec![]), &mut ok);
    over.queue_raw(&ok);
    over.write_out().unwrap();
    assert_eq!(
        native::decode_reply(&over.read_frame(1 << 20).unwrap()).unwrap(),
        Reply::Return(Value::None)
    );
    for header in [(-2i32).to_be_bytes(), (20_000_000i32).to_be_bytes()] {
        let mut bad = Connection::connect(&s.address, KEY).unwrap();
        bad.queue_bytes(&header);
        bad.write_out().unwrap();
        // Raw bytes are no request: the answer is read as a raw frame.
        match native::decode_reply(&bad.read_frame(1 << 20).unwrap()) {
            Ok(Reply::Traceback(t)) => assert!(t.contains("bad frame"), "{t}"),
            other => panic!("{other:?}"),
        }
        assert!(
            bad.read_frame(1 << 20).is_err(),
            "the server closed the connection"
        );
    }
    // An oversized long-form header, before any payload exists.
    let mut bad = Connection::connect(&s.address, KEY).unwrap();
    bad.queue_bytes(&[0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0]);
    bad.write_out().unwrap();
    let reply = native::decode_reply(&bad.read_frame(1 << 20).unwrap());
    assert!(matches!(reply, Ok(Reply::Traceback(_))));
    assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(1));
}

#[test]
fn garbage_before_the_handshake_is_dropped() {
    use std::io::{Read, Write};
    let s = TestServer::start_with(|c| c.handshake_timeout = Duration::from_millis(300));
    let m = s.connect();
    let mut raw = std::net::TcpStream::connect(match &s.address {
        mgr::Address::Tcp(a) => *a,
        _ => unreachable!(),
    })
    .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 1 KiB "frame" during the handshake: over the 256-byte cap.
    raw.write_all(&1024i32.to_be_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf); // challenge, then EOF
    assert!(buf.len() < 100, "only the challenge was sent");
    // A silent peer is dropped at the handshake deadline.
    let mut silent = std::net::TcpStream::connect(match &s.address {
        mgr::Address::Tcp(a) => *a,
        _ => unreachable!(),
    })
    .unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let started = Instant::now();
    silent.read_to_end(&mut buf).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
}

#[test]
fn max_connections_refuses_the_excess() {
    let s = TestServer::start_with(|c| c.max_connections = 2);
    let a = s.connect();
    let _b = s.connect();
    assert!(Manager::connect_to(&s.address, KEY).is_err());
    drop(_b);
    assert!(eventually(10, || Manager::connect_to(&s.address, KEY).is_ok()));
    assert_eq!(a.public("dummy", vec![]).unwrap(), Value::None);
}

#[test]
fn unix_socket_server() {
    let dir = TempDir::new("mgr-test");
    let path = dir.join("unix.sock");
    let _ = std::fs::remove_file(&path);
    let config = ServerConfig::new(mgr::Address::Unix(path.clone()), KEY);
    {
        let s = TestServer::start_config(config);
        assert_eq!(s.address.to_string(), format!("unix:{}", path.display()));
        let m = s.connect();
        let c = m.create("Counter", vec![]).unwrap();
        assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(1));
    }
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[test]
fn shutdown_by_a_client() {
    let s = TestServer::start();
    let m = s.connect();
    m.shutdown().unwrap();
    assert!(eventually(10, || Manager::connect_to(&s.address, KEY).is_err()));
}

#[test]
fn refuses_public_address_without_key() {
    let err = mgr::Server::bind(ServerConfig::new("0.0.0.0:0".parse().unwrap(), b"")).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(mgr::Server::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap(), b"")).is_ok());
}

/// Run only as a child process by `killed_client_leaks_nothing` (hence ignored).
#[test]
#[ignore = "a child process of killed_client_leaks_nothing, not a test of its own"]
fn child_client_for_kill_test() {
    let addr = std::env::var("MGR_TEST_CHILD_ADDR").expect("run by killed_client_leaks_nothing");
    let m = Manager::connect(&addr, KEY).unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(m.create("Counter", vec![]).unwrap());
    }
    let mb = m.create("Mailbox", vec![]).unwrap();
    let _pending = mb.start_call("wait", vec![]).unwrap();
    println!("ready");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn killed_client_leaks_nothing() {
    let s = TestServer::start();
    let observer = s.connect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "child_client_for_kill_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MGR_TEST_CHILD_ADDR", s.address.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.map(|l| l.contains("ready")).unwrap_or(false)));
    assert_eq!(observer.number_of_objects().unwrap(), 6);
    // SIGKILL: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(eventually(10, || observer.number_of_objects().unwrap() == 0));
    assert_eq!(
        observer
            .create("Counter", vec![])
            .unwrap()
            .call("incr", vec![])
            .unwrap(),
        Value::Int(1)
    );
}

#[test]
fn version_byte_mismatch_is_reported() {
    let s = TestServer::start();
    let m = s.connect();
    let mut conn = m.connection();
    conn.queue_raw(&[0x7f, 0]);
    conn.write_out().unwrap();
    match conn.recv().unwrap() {
        Reply::Traceback(t) => assert!(t.contains("version"), "{t}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn shared_memory_segments_are_tracked_and_unlinked_at_shutdown() {
    let s = TestServer::start();
    let m = s.connect();
    let mut seg = m.create_segment(4096).unwrap();
    assert_eq!(seg.len(), 4096);
    seg.as_mut_slice()[..5].copy_from_slice(b"hello");
    let path = std::path::Path::new("/dev/shm").join(seg.name());
    assert_eq!(
        &std::fs::read(&path).unwrap()[..5],
        b"hello",
        "other processes see it"
    );
    let other = m.create_segment(16).unwrap();
    assert_eq!(
        m.list_segments().unwrap(),
        vec![seg.name().to_owned(), other.name().to_owned()]
    );
    m.release_segment(other.name()).unwrap();
    assert!(!std::path::Path::new("/dev/shm").join(other.name()).exists());
    let (kind, _) = remote_kind(m.release_segment(other.name()).unwrap_err());
    assert_ne!(
        kind, "RemoteError",
        "releasing twice is an error of a Python kind"
    );
    drop(seg);
    assert!(path.exists(), "unmapping does not unlink");
    m.shutdown().unwrap();
    assert!(
        eventually(10, || !path.exists()),
        "shutdown unlinks tracked segments"
    );
}

#[test]
fn an_object_named_in_a_reply_outlives_its_last_holder_for_the_grace_period() {
    let s = TestServer::start_with(|c| c.reply_ref_grace = Duration::from_secs(30));
    let m = s.connect();
    let inner = m.create("Counter", vec![Value::Int(7)]).unwrap();
    let token = inner.token().clone();
    let holder = m.create("Holder", vec![Value::Ref(token.clone())]).unwrap();
    drop(inner);
    // set() returns nothing, get() returns the token: take it, then let the
    // holder drop its reference before we take ours.
    assert_eq!(
        holder.call("get", vec![]).unwrap(),
        Value::Ref(token.clone())
    );
    holder.call("set", vec![Value::None]).unwrap();
    drop(holder);
    assert_eq!(
        m.number_of_objects().unwrap(),
        0,
        "an object only a reply's grace holds is not counted, as in CPython"
    );
    let info = m.debug_info().unwrap();
    assert!(
        !info.contains("Counter"),
        "debug_info agrees with number_of_objects: {info}"
    );
    let mine = m
        .proxy(token)
        .expect("the reply's grace keeps the counter alive");
    assert_eq!(mine.call("get", vec![]).unwrap(), Value::Int(7));
    assert_eq!(m.number_of_objects().unwrap(), 1);
    // Listed again, with the references something other than the loan holds.
    let info = m.debug_info().unwrap();
    assert_eq!(info.matches("refcount=").count(), 1, "{info}");
    assert!(info.contains("refcount=1\n"), "{info}");
}

#[test]
fn pipelined_replies_beyond_max_output_are_all_served() {
    // The server pauses a connection whose unread output passes max_output; once
    // the client reads, it must resume the requests it already has buffered.
    let s = TestServer::start_with(|c| c.max_output = 256 * 1024);
    let m = s.connect();
    let big = Value::Bytes(vec![7; 100_000]);
    let h = m.create("Holder", vec![big.clone()]).unwrap();
    let mut p = m.pipeline();
    for _ in 0..40 {
        p.call(&h, "get", vec![]);
    }
    let results = p.run().unwrap();
    assert_eq!(results.len(), 40);
    for r in results {
        assert_eq!(r.unwrap().into_value().unwrap(), big);
    }
}
