//! The client across threads and with timeouts: handles are `Send` and `Sync`,
//! a proxy moves to another thread and works there, a drop that finds the
//! connection busy defers its decref (and a dropped ticket its abandon) instead
//! of waiting, a call that outlives its timeout fails with a timeout error and
//! breaks the connection, and a connect to a peer that never answers the
//! handshake times out.

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use common::{TestServer, KEY};
use mgr::client::{Connection, PendingCall, Pipeline, Returned};
use mgr::{ConnectOptions, Error, Manager, Proxy, Value};

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

#[test]
fn client_handles_are_send_and_sync() {
    assert_send::<Manager>();
    assert_send::<Proxy>();
    assert_send::<PendingCall>();
    assert_send::<Returned>();
    assert_send::<Connection>();
    assert_send::<Pipeline<'static>>();
    assert_send::<Error>();
    assert_sync::<Manager>();
    assert_sync::<Proxy>();
    assert_sync::<PendingCall>();
}

#[test]
fn a_proxy_moved_to_another_thread_works_there_and_releases_on_drop() {
    let server = TestServer::start();
    let m = server.connect();
    let c = m.create("Counter", vec![Value::Int(1)]).unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 1);
    let got = std::thread::spawn(move || {
        let v = c.call("incr", vec![Value::Int(2)]).unwrap();
        drop(c); // released from this thread
        v
    })
    .join()
    .unwrap();
    assert_eq!(got, Value::Int(3));
    assert_eq!(m.number_of_objects().unwrap(), 0);
    // Clones of the manager in several threads share the connection in turn.
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let m = m.clone();
            std::thread::spawn(move || {
                let c = m.create("Counter", vec![Value::Int(i)]).unwrap();
                (0..20).for_each(|_| drop(c.call("incr", vec![]).unwrap()));
                c.call("get", vec![]).unwrap()
            })
        })
        .collect();
    let got: Vec<Value> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(got, (0..4).map(|i| Value::Int(i + 20)).collect::<Vec<_>>());
    assert_eq!(m.number_of_objects().unwrap(), 0);
    let c = m.connection();
    assert_eq!((c.in_flight(), c.kept()), (0, 0));
}

#[test]
fn a_drop_while_another_thread_is_in_a_call_defers_its_decref() {
    let server = TestServer::start();
    let m = server.connect();
    let mailbox = m.create("Mailbox", vec![]).unwrap();
    let counter = m.create("Counter", vec![]).unwrap();
    let other_counter = m.create("Counter", vec![]).unwrap();
    // Answered at once; the waiter below reads past it and keeps it.
    let ticket = other_counter.start_call("incr", vec![]).unwrap();
    let token = mailbox.token().clone();
    let waiter = std::thread::spawn(move || mailbox.call("wait", vec![]));
    // The waiter holds the connection until its reply comes.
    server.await_blocked(1);
    drop(counter);
    drop(ticket);
    let other = server.connect();
    let post = other
        .proxy(token)
        .unwrap()
        .call("post", vec![Value::Int(9)]);
    assert_eq!(post.unwrap(), Value::Int(1), "one waiter woken");
    assert_eq!(waiter.join().unwrap().unwrap(), Value::Int(9));
    // The mailbox proxy went with the waiter. The deferred decref goes out
    // ahead of this call (skipped, the counter would count); the deferred abandon
    // dropped the kept `incr` reply.
    assert_eq!(m.number_of_objects().unwrap(), 1, "the other counter alone");
    let c = m.connection();
    assert_eq!((c.in_flight(), c.kept()), (0, 0));
    drop(c);
    assert_eq!(other_counter.call("get", vec![]).unwrap(), Value::Int(1));
}

#[test]
fn a_call_that_times_out_breaks_the_connection() {
    let server = TestServer::start();
    let options = ConnectOptions {
        connect_timeout: Some(Duration::from_secs(10)),
        call_timeout: Some(Duration::from_secs(10)),
    };
    let m = Manager::connect_with(&server.address, KEY, options).unwrap();
    let mailbox = m.create("Mailbox", vec![]).unwrap();
    let counter = m.create("Counter", vec![]).unwrap();
    assert_eq!(counter.call("incr", vec![]).unwrap(), Value::Int(1));
    m.set_call_timeout(Some(Duration::from_millis(50)));
    let e = mailbox.call("wait", vec![]).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(matches!(&e, Error::Io(io) if io.kind() == ErrorKind::TimedOut));
    assert!(m.is_broken());
    // The wait is still pending in the server; answer it, so its reply is on
    // the wire: a later call must fail, not read it.
    server.await_blocked(1);
    let other = server.connect();
    other
        .proxy(mailbox.token().clone())
        .unwrap()
        .call("post", vec![Value::Int(1)])
        .unwrap();
    m.set_call_timeout(None);
    let e = counter.call("incr", vec![]).unwrap_err();
    assert!(!e.is_timeout());
    assert!(
        matches!(&e, Error::Io(io) if io.kind() == ErrorKind::NotConnected),
        "{e}"
    );
    // A started call's wait is timed too.
    let m2 = server.connect();
    m2.set_call_timeout(Some(Duration::from_millis(50)));
    let q = m2.create("Queue", vec![]).unwrap();
    let get = q.start_call("get", vec![]).unwrap();
    assert!(get.finish().unwrap_err().is_timeout());
    assert!(m2.is_broken());
}

#[test]
fn a_connect_to_a_peer_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    // Accepts and stays silent until the test ends.
    let silent = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let options = ConnectOptions {
        connect_timeout: Some(Duration::from_millis(100)),
        call_timeout: None,
    };
    let e = Manager::connect_with(&mgr::Address::Tcp(address), KEY, options).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(matches!(&e, Error::Io(io) if io.kind() == ErrorKind::TimedOut));
    let peer = silent.join().unwrap().unwrap();
    drop(peer);
    // Without a timeout option nothing changes for a server that answers.
    let server = TestServer::start();
    let m = Manager::connect_with(&server.address, KEY, ConnectOptions::default()).unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 0);
}
