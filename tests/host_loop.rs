//! What a host sees from inside its loop: who is calling (peer identity in
//! callbacks), the counters (`Server::stats` and the public method `stats`),
//! the log hook, and answers given just before a shutdown still delivered.
//!
//! The server runs on the test's thread (or a `TestServer` thread); clients
//! run on others. Every check counts; none times anything.

mod common;
#[path = "common/harness.rs"]
mod harness;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use common::{TempDir, TestServer, KEY};
use mgr::proto::frame;
use mgr::server::{CallArgs, CallResult, Context, LogEvent, Outcome, SharedObject, TypeSpec};
use mgr::server::{ReplyHandle, ServerStats};
use mgr::{Manager, RemoteError, Server, ServerConfig, Value};

/// `who()` answers with what the context says of the caller:
/// `(conn_id, pid, uid, gid, address)`, -1 for what is unknown.
struct WhoAmI;

impl SharedObject for WhoAmI {
    fn call(&mut self, cx: &mut Context<'_>, _: &str, _: CallArgs) -> CallResult {
        let conn = cx.conn().expect("a request has a connection");
        let peer = cx.peer().expect("a request has a peer");
        assert_eq!(peer.conn, conn);
        let n = |x: Option<u32>| Value::Int(x.map_or(-1, i64::from));
        Ok(Value::Tuple(vec![
            Value::Int(conn.to_raw() as i64),
            n(peer.pid),
            n(peer.uid),
            n(peer.gid),
            Value::Str(peer.addr.to_string()),
        ])
        .into())
    }
}

fn register_whoami(server: &mut Server) {
    server.register(TypeSpec::new("WhoAmI", &["who"], |cx, _| {
        assert!(cx.peer().is_some(), "a create request has a peer too");
        Ok(Box::new(WhoAmI))
    }));
}

fn ids() -> (i64, i64) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (i64::from(libc::getuid()), i64::from(libc::getgid())) }
}

#[test]
fn a_unix_peer_is_named_by_its_pid_uid_and_gid() {
    let dir = TempDir::new("peer-unix");
    let path = dir.join("s");
    let server = TestServer::start_registering(
        move |c| c.address = format!("unix:{}", path.display()).parse().unwrap(),
        register_whoami,
    );
    let m = server.connect();
    let p = m.create("WhoAmI", vec![]).unwrap();
    let who = p
        .call("who", vec![])
        .unwrap()
        .into_items()
        .expect("a tuple");
    let (uid, gid) = ids();
    assert_eq!(who[1], Value::Int(i64::from(std::process::id())));
    assert_eq!((&who[2], &who[3]), (&Value::Int(uid), &Value::Int(gid)));
    assert_eq!(who[4], Value::from("unix:"));
    // The id is the connection's for its whole life.
    let again = p.call("who", vec![]).unwrap();
    assert_eq!(again, Value::Tuple(who.clone()));
    let other = server.connect();
    let q = other.proxy(p.token().clone()).unwrap();
    let theirs = q
        .call("who", vec![])
        .unwrap()
        .into_items()
        .expect("a tuple");
    assert_ne!(theirs[0], who[0], "another connection, another id");
    assert_eq!(theirs[1], who[1], "the same process");
}

#[test]
fn a_tcp_peer_is_named_by_its_address_and_has_no_credentials() {
    let server = TestServer::start_registering(|_| {}, register_whoami);
    let m = server.connect();
    let p = m.create("WhoAmI", vec![]).unwrap();
    let who = p
        .call("who", vec![])
        .unwrap()
        .into_items()
        .expect("a tuple");
    assert_eq!(
        &who[1..4],
        &[Value::Int(-1), Value::Int(-1), Value::Int(-1)]
    );
    let addr = who[4].as_str().unwrap();
    let parsed: std::net::SocketAddr = addr.parse().expect(addr);
    assert!(parsed.ip().is_loopback() && parsed.port() != 0, "{addr}");
    assert_ne!(
        parsed.port(),
        server.tcp().port(),
        "the peer's port, not ours"
    );
}

/// Turns the server until the client thread reports a step.
fn serve_until<T>(server: &mut Server, rx: &mpsc::Receiver<T>) -> T {
    loop {
        server.turn(Some(Duration::from_millis(5))).unwrap();
        match rx.try_recv() {
            Ok(step) => return step,
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => panic!("the client thread failed"),
        }
    }
}

/// Turns the server until `f` holds of its stats.
fn serve_while(server: &mut Server, f: impl Fn(&ServerStats) -> bool) -> ServerStats {
    for _ in 0..2000 {
        server.turn(Some(Duration::from_millis(5))).unwrap();
        let s = server.stats();
        if !f(&s) {
            return s;
        }
    }
    panic!("the server never got there: {:?}", server.stats());
}

/// Sends one frame whose payload no decoder accepts and reads the answer.
fn send_malformed(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut s = harness::raw_client(addr, KEY);
    let mut out = Vec::new();
    frame::write_frame(&[0x7f, 1, 2, 3], &mut out);
    s.write_all(&out).unwrap();
    let mut header = [0u8; 4];
    s.read_exact(&mut header).unwrap();
    let mut reply = vec![0u8; i32::from_be_bytes(header) as usize];
    s.read_exact(&mut reply).unwrap();
    reply
}

#[test]
fn stats_and_log_events_follow_a_scripted_workload() {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY);
    config.max_connections = 2;
    let mut server = Server::bind(config).unwrap();
    server.register_builtins();
    common::register_test_types(&mut server);
    let lines = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = lines.clone();
    server.set_log_hook(Some(Box::new(move |e: &LogEvent<'_>| {
        sink.borrow_mut().push(e.to_string())
    })));
    let fresh = server.stats();
    assert_eq!(
        (
            fresh.connections_open,
            fresh.connections_accepted,
            fresh.objects
        ),
        (0, 0, 0)
    );
    let addr = match server.address() {
        mgr::Address::Tcp(a) => *a,
        other => unreachable!("bound to TCP, not {other}"),
    };

    let (step, steps) = mpsc::channel::<u32>();
    let (go, went) = mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let m = Manager::connect(&addr.to_string(), KEY).unwrap();
        let c = m.create("Counter", vec![]).unwrap();
        step.send(1).unwrap();
        went.recv().unwrap();
        for _ in 0..5 {
            c.call("incr", vec![]).unwrap();
        }
        c.call("fail", vec![]).unwrap_err();
        let _mailbox = m.create("Mailbox", vec![]).unwrap();
        let _queue = m.create("Queue", vec![]).unwrap();
        let over_wire = ServerStats::from_value(&m.public("stats", vec![]).unwrap()).unwrap();
        step.send(2).unwrap();
        went.recv().unwrap();
        // A wrong key, a second and third client (the third is one too
        // many), a malformed request.
        assert!(Manager::connect(&addr.to_string(), b"not the key").is_err());
        let second = Manager::connect(&addr.to_string(), KEY).unwrap();
        // Answered: the server has counted its handshake complete.
        second.number_of_objects().unwrap();
        assert!(Manager::connect(&addr.to_string(), KEY).is_err());
        drop(second);
        // Wait until the server has closed `second` too, or the raw client
        // below would be one too many (max_connections = 2).
        let open = || {
            let s = ServerStats::from_value(&m.public("stats", vec![]).unwrap()).unwrap();
            s.connections_open
        };
        assert!(common::eventually(10, || open() == 1), "second closed");
        let reply = send_malformed(addr);
        drop((c, _mailbox, _queue, m));
        step.send(3).unwrap();
        (over_wire, reply)
    });

    assert_eq!(serve_until(&mut server, &steps), 1);
    let s1 = server.stats();
    assert_eq!((s1.connections_open, s1.connections_preauth), (1, 0));
    assert_eq!(s1.connections_accepted, 1);
    assert_eq!(s1.objects, 1);
    assert_eq!(s1.objects_by_type, vec![("Counter".to_owned(), 1)]);
    assert_eq!((s1.errors, s1.protocol_errors, s1.auth_failures), (0, 0, 0));
    assert!(s1.bytes_in > 0 && s1.bytes_out > 0, "{s1:?}");
    assert!(s1.turns > 0);

    go.send(()).unwrap();
    assert_eq!(serve_until(&mut server, &steps), 2);
    let s2 = server.stats();
    // 5 incr, 1 fail, 2 creates, 1 stats.
    assert_eq!(s2.requests_served - s1.requests_served, 9);
    assert_eq!(s2.errors, 1);
    assert_eq!(s2.objects, 3);
    assert_eq!(
        s2.objects_by_type,
        vec![
            ("Counter".to_owned(), 1),
            ("Mailbox".to_owned(), 1),
            ("Queue".to_owned(), 1)
        ]
    );
    assert!(s2.bytes_in > s1.bytes_in && s2.bytes_out > s1.bytes_out);
    assert_eq!(s2.connections_accepted, 1);

    go.send(()).unwrap();
    assert_eq!(serve_until(&mut server, &steps), 3);
    let s3 = serve_while(&mut server, |s| s.connections_open > 0);
    let (over_wire, reply) = client.join().unwrap();
    assert!(
        String::from_utf8_lossy(&reply).contains("malformed request"),
        "{reply:?}"
    );
    // The snapshot a client got over the wire was taken while serving it.
    assert_eq!(over_wire.connections_open, 1);
    assert_eq!(over_wire.objects, 3);
    assert_eq!(over_wire.objects_by_type, s2.objects_by_type);
    assert_eq!(over_wire.errors, 1);

    // 1 first client, 1 wrong key, 1 second, 1 refused, 1 malformed.
    // (The second's one request and the malformed one are served too.)
    assert_eq!(s3.connections_accepted, 5);
    assert_eq!(s3.connections_refused, 1);
    assert_eq!(s3.auth_failures, 1);
    assert_eq!(s3.protocol_errors, 1);
    assert_eq!(s3.errors, 1, "a protocol error is counted apart");
    assert_eq!((s3.connections_open, s3.connections_preauth), (0, 0));
    assert_eq!(s3.objects, 0, "the connection's objects went with it");
    assert_eq!(s3.deferred_pending, 0);

    server.shutdown();
    server.shutdown();
    drop(server);
    let lines = lines.borrow();
    let count = |what: &str| lines.iter().filter(|l| l.starts_with(what)).count();
    assert_eq!(count("accepted conn "), 5, "{lines:#?}");
    // The one refused at accept was never a connection to close.
    assert_eq!(count("closed conn "), 4, "{lines:#?}");
    assert_eq!(count("authentication failed for conn "), 1, "{lines:#?}");
    assert_eq!(count("protocol error from conn "), 1, "{lines:#?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("refused ") && l.ends_with(": max_connections"))
            .count(),
        1,
        "{lines:#?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("shutting down"));
    assert_eq!(
        count("shutting down"),
        1,
        "logged once, however often asked"
    );
    let key = String::from_utf8_lossy(KEY);
    assert!(
        lines
            .iter()
            .all(|l| !l.contains(&*key) && !l.contains("not the key")),
        "no key in the log: {lines:#?}"
    );
    assert!(lines
        .iter()
        .all(|l| l.contains("127.0.0.1:") || l == "shutting down"));
}

/// `park()` defers its answer and leaves the handle where the test finds it.
struct Park(Rc<RefCell<Option<ReplyHandle>>>);

impl SharedObject for Park {
    fn call(&mut self, cx: &mut Context<'_>, _: &str, _: CallArgs) -> CallResult {
        *self.0.borrow_mut() = Some(cx.defer());
        Ok(Outcome::Deferred)
    }
}

#[test]
fn an_answer_queued_just_before_shutdown_reaches_its_caller() {
    for how in ["shutdown", "drop"] {
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY);
        let mut server = Server::bind(config).unwrap();
        let parked = Rc::new(RefCell::new(None));
        let slot = parked.clone();
        server.register(TypeSpec::new("Park", &["park"], move |_, _| {
            Ok(Box::new(Park(slot.clone())))
        }));
        let address = server.address().to_string();
        let (step, steps) = mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let m = Manager::connect(&address, KEY).unwrap();
            let p = m.create("Park", vec![]).unwrap();
            step.send(()).unwrap();
            p.call("park", vec![])
        });
        serve_until(&mut server, &steps);
        serve_while(&mut server, |s| s.deferred_pending == 0);
        let h = parked.borrow_mut().take().unwrap();
        // Queued as another thread would (through the handle), then the
        // server goes away before another turn.
        server
            .handle()
            .complete(h, Ok(Value::from(format!("answered before {how}"))));
        match how {
            "shutdown" => server.shutdown(),
            _ => drop(server),
        }
        let got: Result<Value, mgr::Error> = client.join().unwrap();
        assert_eq!(
            got.unwrap(),
            Value::from(format!("answered before {how}")),
            "{how}"
        );
    }
}

#[test]
fn an_error_answer_is_counted_when_delivered() {
    let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY)).unwrap();
    let parked = Rc::new(RefCell::new(None));
    let slot = parked.clone();
    server.register(TypeSpec::new("Park", &["park"], move |_, _| {
        Ok(Box::new(Park(slot.clone())))
    }));
    let address = server.address().to_string();
    let (step, steps) = mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let m = Manager::connect(&address, KEY).unwrap();
        let p = m.create("Park", vec![]).unwrap();
        let r = p.call("park", vec![]);
        step.send(()).unwrap();
        r
    });
    serve_while(&mut server, |s| s.deferred_pending == 0);
    assert_eq!(server.stats().errors, 0);
    let h = parked.borrow_mut().take().unwrap();
    assert!(server.complete(h, Err(RemoteError::new("KeyError", "'k'"))));
    serve_until(&mut server, &steps);
    assert!(client.join().unwrap().is_err());
    assert_eq!(server.stats().errors, 1);
    assert_eq!(server.stats().deferred_pending, 0);
}

/// Turns until one does some work (each waits up to 100 ms for it); the work.
fn until_work(server: &mut Server) -> usize {
    for _ in 0..100 {
        let n = server.turn(Some(Duration::from_millis(100))).unwrap();
        if n > 0 {
            return n;
        }
    }
    panic!("no work came");
}

/// Processes until a turn finds nothing to do; how many turns that took.
fn until_idle(server: &mut Server) -> usize {
    (1..=100)
        .find(|_| server.process().unwrap() == 0)
        .expect("the server goes idle")
}

#[test]
fn process_reports_the_work_it_did() {
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY);
    let mut server = Server::bind(config).unwrap();
    assert_eq!(server.process().unwrap(), 0, "nothing to do yet");
    let mgr::Address::Tcp(at) = server.address().clone() else {
        unreachable!("a TCP server")
    };
    // A connection arrives: accepting it is work.
    let mut peer = std::net::TcpStream::connect(at).unwrap();
    assert!(until_work(&mut server) > 0);
    until_idle(&mut server);
    assert_eq!(server.connection_count(), 1);
    assert_eq!(server.process().unwrap(), 0, "idle while the peer is quiet");
    // It sends something (not a handshake answer): reading it is work.
    peer.write_all(b"\0\0\0\x05hello").unwrap();
    assert!(until_work(&mut server) > 0);
    until_idle(&mut server);
    assert_eq!(server.connection_count(), 0, "a bad handshake closes it");
    assert_eq!(server.process().unwrap(), 0);
    drop(peer);
}
