//! The non-blocking client inside a host's loop: one `mio::Poll` on the test's
//! thread drives an embedded server (serving the test types) *and* two
//! [`NbClient`]s — one calling a second server (a `TestServer` thread), one
//! calling the embedded server itself — with a frame tick from the poll
//! timeout. Every reply is checked; completions are counted, never timed.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{register_test_types, TestServer, KEY};
use mgr::client::{NbClient, NbConfig, NbProxy, NbResult};
use mgr::proto::session::Phase;
use mgr::{Server, ServerConfig, Value};
use mio::{Events, Interest, Poll, Token};

const SERVER: Token = Token(0);
const REMOTE: Token = Token(1);
const LOCAL: Token = Token(2);

/// What the callbacks saw, shared with them.
#[derive(Default)]
struct Seen {
    log: Vec<String>,
    proxies: Vec<NbProxy>,
    done: usize,
}

type Shared = Rc<RefCell<Seen>>;

/// A client of `address`, registered in `poll` as `token` for both readiness
/// kinds (it keeps only the ones it needs).
fn registered(poll: &Poll, address: &mgr::Address, key: &[u8], token: Token) -> NbClient {
    let mut c = NbClient::connect(address, key, NbConfig::default()).unwrap();
    poll.registry()
        .register(&mut c, token, Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    c
}

fn int(r: NbResult) -> i64 {
    match r.and_then(|r| r.into_value()) {
        Ok(Value::Int(i)) => i,
        other => panic!("expected an int, got {other:?}"),
    }
}

/// Runs the loop until `until` holds (or a generous number of turns passes:
/// a guard, not a timing assertion); returns the number of frame ticks.
fn run_loop(
    poll: &mut Poll,
    server: &mut Server,
    clients: &mut [&mut NbClient],
    mut until: impl FnMut(&Server, &[&mut NbClient]) -> bool,
) -> u64 {
    let mut events = Events::with_capacity(64);
    let tick = Duration::from_millis(5);
    let mut next_tick = Instant::now() + tick;
    let mut ticks = 0;
    for _ in 0..20_000 {
        if until(server, clients) {
            return ticks;
        }
        let mut wait = next_tick.saturating_duration_since(Instant::now());
        for d in clients
            .iter()
            .filter_map(|c| c.timeout())
            .chain(server.timeout())
        {
            wait = wait.min(d);
        }
        poll.poll(&mut events, Some(wait)).expect("poll");
        if Instant::now() >= next_tick {
            ticks += 1;
            next_tick = Instant::now() + tick;
        }
        server.process().expect("server turn");
        for c in clients.iter_mut() {
            c.process();
        }
    }
    panic!("the loop did not finish");
}

#[test]
fn one_loop_serves_its_own_types_and_calls_another_server() {
    let remote = TestServer::start();
    let mut poll = Poll::new().unwrap();
    let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY)).unwrap();
    server.register_builtins();
    register_test_types(&mut server);
    poll.registry()
        .register(&mut server, SERVER, Interest::READABLE)
        .unwrap();
    let mut a = registered(&poll, &remote.address, KEY, REMOTE);
    let mut b = registered(&poll, server.address(), KEY, LOCAL);
    let seen: Shared = Rc::default();

    // On the remote server: a Counter, 100 pipelined incrs started at once from
    // its create's callback, a failing call, a Queue whose get waits for a put
    // made on the other connection.
    let s = seen.clone();
    a.create("Counter", vec![Value::Int(10)], vec![], move |c, r| {
        let counter = r.and_then(|r| r.into_proxy()).expect("a Counter");
        for i in 0..100 {
            let s = s.clone();
            c.call(
                &counter,
                "incr",
                vec![Value::Int(1)],
                vec![],
                move |_, r| {
                    assert_eq!(int(r), 11 + i, "incr #{i}");
                    s.borrow_mut().done += 1;
                },
            )
            .expect("started");
        }
        let s2 = s.clone();
        c.call(&counter, "fail", vec![], vec![], move |_, r| {
            let e = r.expect_err("fail() raises");
            assert_eq!(e.remote_kind(), Some("ValueError"), "{e}");
            s2.borrow_mut().log.push("fail raised".into());
        })
        .expect("started");
        s.borrow_mut().proxies.push(counter);
    })
    .unwrap();
    // Calls started before the handshake finished wait for it.
    assert_eq!(a.phase(), Phase::Handshaking);

    // On the embedded server, through the same loop.
    let s = seen.clone();
    b.create("Maker", vec![], vec![], move |c, r| {
        let maker = r.and_then(|r| r.into_proxy()).expect("a Maker");
        let s2 = s.clone();
        // method_to_typeid: the reply is a #PROXY.
        c.call(&maker, "counter", vec![], vec![], move |c, r| {
            let counter = r.and_then(|r| r.into_proxy()).expect("a #PROXY Counter");
            assert_eq!(counter.token().typeid, "Counter");
            let s3 = s2.clone();
            c.call(
                &counter,
                "incr",
                vec![Value::Int(5)],
                vec![],
                move |_, r| {
                    assert_eq!(int(r), 5);
                    s3.borrow_mut().log.push("local incr".into());
                },
            )
            .expect("started");
            s2.borrow_mut().proxies.push(counter);
        })
        .expect("started");
        s.borrow_mut().proxies.push(maker);
    })
    .unwrap();

    run_loop(&mut poll, &mut server, &mut [&mut a, &mut b], |_, cs| {
        cs.iter().all(|c| c.pending() == 0) && seen.borrow().log.len() == 2
    });
    assert_eq!(seen.borrow().done, 100);
    let mut log = seen.borrow().log.clone();
    log.sort();
    assert_eq!(log, ["fail raised", "local incr"]);
    assert_eq!(server.number_of_objects(), 2, "Maker and its Counter");

    // A Queue.get deferred in the remote server, answered by a put the other
    // connection makes — both from this loop.
    let mut c2 = registered(&poll, &remote.address, KEY, Token(3));
    let got = Rc::new(RefCell::new(None));
    let queue = Rc::new(RefCell::new(None));
    let (g, qs) = (got.clone(), queue.clone());
    a.create("Queue", vec![], vec![], move |c, r| {
        let q = r.and_then(|r| r.into_proxy()).expect("a Queue");
        c.call(&q, "get", vec![], vec![], move |_, r| {
            *g.borrow_mut() = Some(r.and_then(|r| r.into_value()).expect("got"));
        })
        .expect("started");
        *qs.borrow_mut() = Some(q);
    })
    .unwrap();
    run_loop(&mut poll, &mut server, &mut [&mut a, &mut c2], |_, _| {
        queue.borrow().is_some() && remote.pending() == 1
    });
    let id = queue.borrow().as_ref().unwrap().id();
    c2.call_id(id, "put", vec![Value::from("hi")], vec![], |_, r| {
        assert_eq!(r.and_then(|r| r.into_value()).unwrap(), Value::None);
    })
    .unwrap();
    run_loop(&mut poll, &mut server, &mut [&mut a, &mut c2], |_, cs| {
        got.borrow().is_some() && cs.iter().all(|c| c.pending() == 0)
    });
    assert_eq!(got.borrow().clone(), Some(Value::from("hi")));

    // Dropped proxies queue their decrefs (no wait); the loop sends them and
    // the objects die: the embedded server's two, the remote Counter and Queue.
    seen.borrow_mut().proxies.clear();
    queue.borrow_mut().take();
    assert!(
        b.next_deadline().is_some_and(|d| d <= Instant::now()),
        "a decref waits"
    );
    let checker = mgr::Manager::connect_to(&remote.address, KEY).unwrap();
    let before = checker.number_of_objects().unwrap();
    run_loop(&mut poll, &mut server, &mut [&mut a, &mut b], |s, cs| {
        s.number_of_objects() == 0 && cs.iter().all(|c| c.session().unsent() == 0)
    });
    assert!(
        common::eventually(10, || checker.number_of_objects().unwrap() == before - 2),
        "the remote Counter and Queue were released"
    );
    assert_eq!((a.pending(), b.pending(), c2.pending()), (0, 0, 0));
}

/// Counts the callbacks of calls that fail with an I/O error.
fn count_failures(n: &Rc<RefCell<usize>>) -> impl FnOnce(&mut NbClient, NbResult) + 'static {
    let n = n.clone();
    move |_, r| {
        assert!(matches!(r, Err(mgr::Error::Io(_))), "{r:?}");
        *n.borrow_mut() += 1;
    }
}

#[test]
fn disconnects_and_drops_complete_every_call_exactly_once() {
    let remote = TestServer::start();
    let mut poll = Poll::new().unwrap();
    let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY)).unwrap();
    let mut a = registered(&poll, &remote.address, KEY, REMOTE);
    let failed = Rc::new(RefCell::new(0));
    let queue = Rc::new(RefCell::new(None));
    let (f, qs) = (failed.clone(), queue.clone());
    a.create("Queue", vec![], vec![], move |c, r| {
        let q = r.and_then(|r| r.into_proxy()).expect("a Queue");
        // A get that waits for ever, and three calls queued behind it.
        for _ in 0..4 {
            c.call(&q, "get", vec![], vec![], count_failures(&f))
                .unwrap();
        }
        *qs.borrow_mut() = Some(q);
    })
    .unwrap();
    run_loop(&mut poll, &mut server, &mut [&mut a], |_, _| {
        remote.pending() == 1
    });
    assert_eq!(a.pending(), 4);
    drop(remote); // shuts the server down: the connection closes
    run_loop(&mut poll, &mut server, &mut [&mut a], |_, cs| {
        cs[0].pending() == 0
    });
    assert_eq!(*failed.borrow(), 4);
    assert_eq!(a.phase(), Phase::Closed);
    // A closed client refuses new calls at once (no callback).
    let q = queue.borrow_mut().take().unwrap();
    assert!(a
        .call(&q, "get", vec![], vec![], count_failures(&failed))
        .is_err());
    drop(q);
    for _ in 0..3 {
        a.process();
    }
    assert_eq!(*failed.borrow(), 4);

    // Calls outstanding when the client is dropped complete in its drop.
    let mut b = NbClient::connect(server.address(), KEY, NbConfig::default()).unwrap();
    for _ in 0..3 {
        b.public("dummy", vec![], count_failures(&failed)).unwrap();
    }
    drop(b);
    assert_eq!(*failed.borrow(), 7);

    // Nothing listening: the calls complete with the connect error.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = registered(&poll, &mgr::Address::Tcp(dead), KEY, Token(9));
    c.public("dummy", vec![], count_failures(&failed)).unwrap();
    run_loop(&mut poll, &mut server, &mut [&mut c], |_, cs| {
        cs[0].pending() == 0
    });
    assert_eq!(*failed.borrow(), 8);
    assert_eq!(c.phase(), Phase::Closed);

    // A wrong key: the calls complete with the handshake's error.
    let mut d = registered(&poll, server.address(), b"wrong", Token(10));
    let auth = Rc::new(RefCell::new(0));
    let au = auth.clone();
    d.public("dummy", vec![], move |_, r| {
        assert!(matches!(r, Err(mgr::Error::Auth(_))), "{r:?}");
        *au.borrow_mut() += 1;
    })
    .unwrap();
    run_loop(&mut poll, &mut server, &mut [&mut d], |_, cs| {
        cs[0].pending() == 0
    });
    assert_eq!(*auth.borrow(), 1);
}

#[test]
fn another_clients_proxy_is_refused_and_a_panicking_callback_leaves_the_client_usable() {
    let remote = TestServer::start();
    let mut poll = Poll::new().unwrap();
    let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY)).unwrap();
    let mut a = registered(&poll, &remote.address, KEY, REMOTE);
    let mut b = registered(&poll, &remote.address, KEY, LOCAL);
    let made = Rc::new(RefCell::new(None));
    let m = made.clone();
    a.create("Counter", vec![], vec![], move |_, r| {
        *m.borrow_mut() = Some(r.and_then(|r| r.into_proxy()).unwrap());
    })
    .unwrap();
    run_loop(&mut poll, &mut server, &mut [&mut a], |_, _| {
        made.borrow().is_some()
    });
    let counter = made.borrow_mut().take().unwrap();
    let e = b
        .call(&counter, "incr", vec![], vec![], |_, _| {
            panic!("never runs")
        })
        .unwrap_err();
    assert!(matches!(e, mgr::Error::Protocol(_)), "{e}");
    assert_eq!(b.pending(), 0);

    // A callback that panics: the panic reaches the caller of process(), and
    // the client keeps working.
    a.call(&counter, "incr", vec![], vec![], |_, _| {
        panic!("a host bug")
    })
    .unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_loop(&mut poll, &mut server, &mut [&mut a], |_, _| false)
    }));
    assert!(caught.is_err());
    assert!(!a.is_processing());
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    a.call(&counter, "incr", vec![], vec![], move |_, r| {
        *g.borrow_mut() = Some(int(r))
    })
    .unwrap();
    run_loop(&mut poll, &mut server, &mut [&mut a], |_, _| {
        got.borrow().is_some()
    });
    assert_eq!(*got.borrow(), Some(2));
}

/// On a Unix socket every request the server reads raises a writable edge;
/// the client registers `WRITABLE` only while bytes wait unsent, so a loop of
/// calls that all go out at once is woken only by replies: counted, the
/// events are readable ones, never a writable-only wakeup.
#[test]
fn a_drained_client_is_not_woken_for_room_to_write() {
    let dir = common::TempDir::new("nb-writable");
    let address = mgr::Address::Unix(dir.join("s"));
    let remote = TestServer::start_config(ServerConfig::new(address, KEY));
    let mut poll = Poll::new().unwrap();
    // Asked for both: the client keeps WRITABLE only while it needs it.
    let mut c = registered(&poll, &remote.address, KEY, REMOTE);
    let done = Rc::new(RefCell::new(0u32));
    const CALLS: u32 = 200;
    fn next(c: &mut NbClient, done: &Rc<RefCell<u32>>) {
        let d = done.clone();
        c.public("dummy", vec![], move |c, r| {
            r.expect("dummy");
            *d.borrow_mut() += 1;
            if *d.borrow() < CALLS {
                next(c, &d);
            }
        })
        .unwrap();
    }
    next(&mut c, &done);
    let mut events = Events::with_capacity(16);
    let (mut wakeups, mut writable_only) = (0u32, 0u32);
    for _ in 0..100_000 {
        if *done.borrow() == CALLS {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .expect("poll");
        for ev in events.iter() {
            wakeups += 1;
            // The handshake's first bytes may wait on the connect.
            if c.phase() == Phase::Ready && ev.is_writable() && !ev.is_readable() {
                writable_only += 1;
            }
        }
        c.process();
    }
    assert_eq!(*done.borrow(), CALLS);
    assert_eq!(writable_only, 0, "no wakeup for room to write");
    // Each reply wakes the loop at most once (plus the handshake's turns).
    assert!(wakeups <= CALLS + 8, "{wakeups} wakeups for {CALLS} calls");
    assert!(!c.wants_write());
}
