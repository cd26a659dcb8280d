//! Bounded turns, fairness, pre-authentication caps and half-closed peers.
//!
//! The turn tests drive an embedded [`Server`] from the test's own thread and
//! count what each `process()` call served (`requests_served`) and which
//! replies reached which client: bounds by counting, never by timing.

mod common;
#[path = "common/harness.rs"]
mod harness;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::{eventually, TestServer, KEY};
use harness::raw_client;
use mgr::proto::codec::{native, pickle};
use mgr::proto::frame;
use mgr::proto::{Reply, Request};
use mgr::{Manager, Server, ServerConfig, Value};

/// An embedded server on the test's thread with `tweak`ed limits. The time
/// budget is lifted (an hour), so only the request count bounds a turn.
fn embedded(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY);
    config.turn_max_time = Duration::from_secs(3600);
    tweak(&mut config);
    let mut server = Server::bind(config).unwrap();
    server.register_builtins();
    common::register_test_types(&mut server);
    server
}

fn tcp(server: &Server) -> std::net::SocketAddr {
    match server.address() {
        mgr::Address::Tcp(a) => *a,
        _ => unreachable!(),
    }
}

/// `n` raw clients, authenticated while the server turns on this thread; each
/// has sent a first request and read its reply, so the server has taken the
/// connection's whole handshake.
fn clients(server: &mut Server, n: usize) -> Vec<TcpStream> {
    let addr = tcp(server);
    let (tx, rx) = mpsc::channel();
    for _ in 0..n {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut s = raw_client(addr, KEY);
            s.write_all(&frames(&Request::public("dummy", vec![]), 1))
                .unwrap();
            assert_eq!(read_frames(&mut s, 1).len(), 1);
            tx.send(s).unwrap();
        });
    }
    let mut out = Vec::new();
    while out.len() < n {
        server.turn(Some(Duration::from_millis(5))).unwrap();
        out.extend(rx.try_iter());
    }
    while server.has_pending_work() {
        server.process().unwrap();
    }
    out
}

/// `n` copies of a native request, framed.
fn frames(req: &Request, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        let at = frame::begin_frame(&mut out);
        native::encode_request(req, &mut out);
        frame::finish_frame(&mut out, at);
    }
    out
}

/// Reads exactly `n` frames (blocking).
fn read_frames(s: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut header = [0u8; 4];
            s.read_exact(&mut header).unwrap();
            let mut msg = vec![0u8; i32::from_be_bytes(header) as usize];
            s.read_exact(&mut msg).unwrap();
            msg
        })
        .collect()
}

/// Counts the complete reply frames that have arrived, without waiting.
/// `partial` carries an incomplete frame's bytes between calls.
fn count_arrived(s: &mut TcpStream, partial: &mut Vec<u8>) -> usize {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => partial.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    let mut count = 0;
    let mut at = 0;
    while partial.len() - at >= 4 {
        let len = i32::from_be_bytes(partial[at..at + 4].try_into().unwrap()) as usize;
        if partial.len() - at - 4 < len {
            break;
        }
        at += 4 + len;
        count += 1;
    }
    partial.drain(..at);
    count
}

#[test]
fn one_process_serves_at_most_turn_max_requests_and_says_more_is_pending() {
    const BUDGET: usize = 10;
    let mut server = embedded(|c| c.turn_max_requests = BUDGET);
    let mut s = clients(&mut server, 1).pop().unwrap();
    assert!(!server.has_pending_work());
    s.write_all(&frames(&Request::public("dummy", vec![]), 100))
        .unwrap();
    let mut partial = Vec::new();
    let mut received = 0;
    let mut calls = 0;
    while received < 100 {
        let before = server.requests_served();
        server.process().unwrap();
        calls += 1;
        let served = (server.requests_served() - before) as usize;
        let arrived = count_arrived(&mut s, &mut partial);
        assert!(served <= BUDGET, "one process() served {served}");
        assert_eq!(arrived, served, "every request served was answered");
        received += arrived;
        if received < 100 {
            assert!(server.has_pending_work(), "{received} of 100 answered");
            assert_eq!(server.timeout(), Some(Duration::ZERO));
        }
        assert!(calls <= 100, "no progress");
    }
    assert!(calls >= 100 / BUDGET, "{calls} calls served 100 requests");
    assert!(!server.has_pending_work());
    assert_ne!(server.timeout(), Some(Duration::ZERO));
}

#[test]
fn pipelining_clients_take_turns() {
    // Two clients pipeline 100 requests each; a turn of 64 serves both of them
    // (a batch each per pass), not 64 of the first one's.
    let mut server = embedded(|c| c.turn_max_requests = 64);
    let mut cs = clients(&mut server, 2);
    for s in &mut cs {
        s.write_all(&frames(&Request::public("dummy", vec![]), 100))
            .unwrap();
    }
    server.process().unwrap();
    let got: Vec<usize> = cs
        .iter_mut()
        .map(|s| count_arrived(s, &mut Vec::new()))
        .collect();
    assert!(got.iter().all(|&n| n > 0), "replies per client: {got:?}");
    assert!(
        got.iter().sum::<usize>() <= 64,
        "replies per client: {got:?}"
    );
    assert!(server.has_pending_work());
}

#[test]
fn a_light_client_is_served_in_the_first_turn_behind_floods() {
    // Four clients pipeline 1000 large-reply requests each and never read; a
    // fifth sends one request after them. Every turn stays in its budget and the
    // light client's answer comes in the first one.
    let mut server = embedded(|c| {
        c.turn_max_requests = 256;
        c.max_output = 256 * 1024;
    });
    let mut cs = clients(&mut server, 5);
    let mut light = cs.pop().unwrap();
    let mut m = cs.remove(0);
    m.write_all(&frames(
        &Request::public(
            "create",
            vec![Value::Str("Holder".into()), Value::Bytes(vec![1; 4096])],
        ),
        1,
    ))
    .unwrap();
    let reply = native::decode_reply(&read_frames_after(&mut server, &mut m, 1)[0]).unwrap();
    let Reply::Return(Value::Tuple(ref t)) = reply else {
        panic!("create: {reply:?}")
    };
    let id = mgr::ObjectId(t[0].as_int().unwrap() as u64);
    let flood = frames(&Request::call(id, "get", vec![]), 1000);
    cs.push(m);
    for s in &mut cs {
        s.write_all(&flood).unwrap();
    }
    light
        .write_all(&frames(&Request::public("dummy", vec![]), 1))
        .unwrap();
    let before = server.requests_served();
    server.process().unwrap();
    assert!(server.requests_served() - before <= 256);
    assert_eq!(count_arrived(&mut light, &mut Vec::new()), 1);
    for _ in 0..100 {
        let before = server.requests_served();
        server.process().unwrap();
        assert!(server.requests_served() - before <= 256);
    }
    // The floods are paused (their output backed up), not spinning.
    assert!(!server.has_pending_work());
}

/// Turns the server until `n` frames have arrived on `s`, and returns them.
fn read_frames_after(server: &mut Server, s: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    for _ in 0..1000 {
        server.turn(Some(Duration::from_millis(5))).unwrap();
        s.set_nonblocking(true).unwrap();
        let arrived = s.peek(&mut [0u8; 4]).is_ok_and(|k| k == 4);
        s.set_nonblocking(false).unwrap();
        if arrived {
            break;
        }
    }
    read_frames(s, n)
}

#[test]
fn idle_sockets_beyond_the_preauth_cap_cannot_lock_out_a_client() {
    const CAP: usize = 8;
    let h = TestServer::start_with(|c| {
        c.max_preauth_connections = CAP;
        c.max_connections = 4;
    });
    // Ten times the cap of sockets that never authenticate.
    let idle: Vec<TcpStream> = (0..10 * CAP)
        .map(|_| TcpStream::connect(h.tcp()).unwrap())
        .collect();
    assert!(eventually(10, || h.preauth() == CAP && h.connections() == CAP));
    // Clients still connect and are served, up to max_connections.
    let ms: Vec<Manager> = (0..4).map(|_| h.connect()).collect();
    for m in &ms {
        assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
    }
    assert!(h.preauth() <= CAP);
    // The oldest idle sockets were closed to make room.
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue, // the challenge
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    closed += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    assert!(closed >= 9 * CAP, "{closed} idle sockets closed");
    // Authenticated clients are capped apart: a fifth is refused.
    assert!(Manager::connect_to(&h.address, KEY).is_err());
    assert_eq!(ms[0].public("dummy", vec![]).unwrap(), Value::None);
}

#[test]
fn a_half_closed_native_client_gets_its_replies_then_is_closed() {
    let h = TestServer::start();
    let m = h.connect();
    let baseline = m.number_of_objects().unwrap();
    let mut s = raw_client(h.tcp(), KEY);
    let mut out = frames(
        &Request::public("create", vec![Value::Str("Counter".into()), Value::Int(41)]),
        1,
    );
    out.extend(frames(&Request::public("dummy", vec![]), 1));
    s.write_all(&out).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let replies = read_frames(&mut s, 2);
    let created = native::decode_reply(&replies[0]).unwrap();
    let Reply::Return(Value::Tuple(ref t)) = created else {
        panic!("create: {created:?}")
    };
    assert!(t[0].as_int().is_some());
    assert_eq!(
        native::decode_reply(&replies[1]).unwrap(),
        Reply::Return(Value::None)
    );
    // Then the server closes it, releasing what the connection held.
    assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0);
    assert!(eventually(10, || m.number_of_objects().unwrap() == baseline));
}

#[test]
fn a_half_closed_pickle_client_gets_its_create_answered_as_cpython_does() {
    // A stock client's `create` arrives on a connection of its own; CPython
    // answers it and leaves the object with one reference (the client's
    // proxy takes its own and drops the creation's). A client that shut its
    // write half after sending still gets the answer.
    let h = TestServer::start();
    let m = h.connect();
    let baseline = m.number_of_objects().unwrap();
    let mut s = raw_client(h.tcp(), KEY);
    let address = h.address.to_python();
    let mut out = Vec::new();
    let at = frame::begin_frame(&mut out);
    pickle::encode_request(
        &Request::public("create", vec![Value::Str("Counter".into())]),
        &pickle::Origin::new(&address),
        &mut out,
    );
    frame::finish_frame(&mut out, at);
    s.write_all(&out).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let reply = pickle::decode_reply(&read_frames(&mut s, 1)[0]).unwrap();
    let Reply::Return(Value::Tuple(ref t)) = reply else {
        panic!("create: {reply:?}")
    };
    let Value::Str(id) = &t[0] else {
        panic!("a hex id: {:?}", t[0])
    };
    assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0);
    assert_eq!(m.number_of_objects().unwrap(), baseline + 1);
    // Its one reference is the creation's, as in CPython: a decref frees it.
    m.public("decref", vec![Value::Str(id.clone())]).unwrap();
    assert!(eventually(10, || m.number_of_objects().unwrap() == baseline));
}

#[test]
fn with_no_time_budget_each_turn_serves_one_request() {
    // turn_max_time = 0: the turn's time is up after its first request.
    let mut server = embedded(|c| c.turn_max_time = Duration::ZERO);
    let mut s = clients(&mut server, 1).pop().unwrap();
    s.write_all(&frames(&Request::public("dummy", vec![]), 20))
        .unwrap();
    let mut partial = Vec::new();
    for i in 0..20 {
        let before = server.requests_served();
        server.process().unwrap();
        assert_eq!(server.requests_served() - before, 1, "turn {i}");
        assert_eq!(count_arrived(&mut s, &mut partial), 1, "turn {i}");
    }
    assert!(!server.has_pending_work());
}

#[test]
fn unauthenticated_sockets_do_not_count_against_max_connections() {
    let h = TestServer::start_with(|c| {
        c.max_connections = 2;
        c.max_preauth_connections = 4;
    });
    let _idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(h.tcp()).unwrap())
        .collect();
    assert!(eventually(10, || h.preauth() == 3));
    let a = h.connect();
    let b = h.connect();
    assert_eq!(a.public("dummy", vec![]).unwrap(), Value::None);
    assert_eq!(b.public("dummy", vec![]).unwrap(), Value::None);
    assert!(Manager::connect_to(&h.address, KEY).is_err());
}

#[test]
fn a_client_reading_its_replies_does_not_wake_the_server() {
    // WRITABLE is registered only while output waits on a full socket: on a
    // Unix socket every read of the peer raises a writable edge, which would
    // otherwise wake the server for a turn with nothing to do after each
    // reply.
    let path = std::env::temp_dir().join(format!("mgr-turns-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut config = ServerConfig::new(format!("unix:{}", path.display()).parse().unwrap(), KEY);
    config.turn_max_time = Duration::from_secs(3600);
    let mut server = Server::bind(config).unwrap();
    server.register_builtins();
    let (tx, rx) = mpsc::channel();
    let at = path.clone();
    std::thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(at).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        harness::authenticate(&mut s, KEY);
        tx.send(s).unwrap();
    });
    let mut s = loop {
        server.turn(Some(Duration::from_millis(5))).unwrap();
        if let Ok(s) = rx.try_recv() {
            break s;
        }
    };
    while server.has_pending_work() {
        server.process().unwrap();
    }
    let request = frames(&Request::public("dummy", vec![]), 1);
    for i in 0..20 {
        s.write_all(&request).unwrap();
        let before = server.requests_served();
        while server.requests_served() == before {
            server.turn(Some(Duration::from_secs(10))).unwrap();
        }
        let mut header = [0u8; 4];
        s.read_exact(&mut header).unwrap();
        let mut reply = vec![0u8; i32::from_be_bytes(header) as usize];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(
            server.turn(Some(Duration::ZERO)).unwrap(),
            0,
            "call {i}: the reply's read woke the server"
        );
    }
    drop(s);
    let _ = std::fs::remove_file(&path);
}
