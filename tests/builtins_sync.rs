//! The blocking built-in types (Queue, JoinableQueue, Event, Lock, RLock, Semaphore,
//! BoundedSemaphore, Condition, Barrier) over real sockets, with several client
//! connections in threads blocking on one another.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::eventually;
use mgr::{Error, Manager, Token, Value};

/// The shared fixture: a server with the built-in types.
type SyncServer = common::TestServer;

fn kind(r: mgr::Result<Value>) -> String {
    match r {
        Err(Error::Remote(e)) => e.kind,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn kw(
    p: &mgr::Proxy,
    method: &str,
    args: Vec<Value>,
    kwargs: &[(&str, Value)],
) -> mgr::Result<Value> {
    let kwargs = kwargs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    p.invoke(method, args, kwargs)?.into_value()
}

fn int(i: i64) -> Value {
    Value::Int(i)
}

fn t() -> Value {
    Value::Bool(true)
}

fn f() -> Value {
    Value::Bool(false)
}

fn attr(p: &mgr::Proxy, name: &str) -> Value {
    p.call("__getattribute__", vec![Value::Str(name.into())])
        .unwrap()
}

#[test]
fn types_are_registered_with_cpythons_exposed_methods() {
    let s = SyncServer::start();
    let m = s.connect();
    let q = m.create("Queue", vec![]).unwrap();
    let queue_methods = [
        "empty",
        "full",
        "get",
        "get_nowait",
        "join",
        "put",
        "put_nowait",
        "qsize",
        "task_done",
    ];
    assert_eq!(q.exposed(), queue_methods);
    let jq = m.create("JoinableQueue", vec![]).unwrap();
    assert_eq!(jq.exposed(), queue_methods);
    for (typeid, exposed) in [
        ("Event", &["is_set", "set", "clear", "wait"][..]),
        ("Lock", &["acquire", "release"]),
        ("RLock", &["acquire", "release"]),
        ("Semaphore", &["acquire", "release"]),
        ("BoundedSemaphore", &["acquire", "release"]),
        (
            "Condition",
            &["acquire", "release", "wait", "notify", "notify_all"],
        ),
    ] {
        assert_eq!(m.create(typeid, vec![]).unwrap().exposed(), exposed);
    }
    let b = m.create("Barrier", vec![int(2)]).unwrap();
    assert_eq!(b.exposed(), ["__getattribute__", "wait", "abort", "reset"]);
    let lock = m.create("Lock", vec![]).unwrap();
    let (k, msg) = match m.create("Condition", vec![Value::Ref(lock.token().clone())]) {
        Err(Error::Remote(e)) => (e.kind, e.message),
        other => panic!("Condition(lock) should be refused: {other:?}"),
    };
    assert_eq!(k, "TypeError", "the kind is parsed out of the traceback");
    assert!(!msg.is_empty(), "{msg}");
}

#[test]
fn queue_put_wakes_a_blocked_get_across_connections() {
    let s = SyncServer::start();
    let m = s.connect();
    let q = m.create("Queue", vec![]).unwrap();
    let consumer = s.spawn(q.token(), |q| {
        (0..3)
            .map(|_| q.call("get", vec![]).unwrap())
            .collect::<Vec<_>>()
    });
    s.await_blocked(1);
    for i in 0..3 {
        q.call("put", vec![int(i)]).unwrap();
    }
    assert_eq!(consumer.join().unwrap(), vec![int(0), int(1), int(2)]);
    assert_eq!(q.call("empty", vec![]).unwrap(), t());
}

#[test]
fn queue_producer_consumer_with_a_bounded_queue() {
    let s = SyncServer::start();
    let m = s.connect();
    let q = m.create("Queue", vec![int(2)]).unwrap();
    let producer = s.spawn(q.token(), |q| {
        for i in 0..50 {
            q.call("put", vec![int(i)]).unwrap();
        }
    });
    let got: Vec<Value> = (0..50).map(|_| q.call("get", vec![]).unwrap()).collect();
    producer.join().unwrap();
    assert_eq!(got, (0..50).map(int).collect::<Vec<_>>());
}

#[test]
fn queue_timeouts_raise_empty_and_full() {
    let s = SyncServer::start();
    let m = s.connect();
    let q = m.create("Queue", vec![int(1)]).unwrap();
    let r = kw(&q, "get", vec![], &[("timeout", Value::Float(0.05))]);
    assert_eq!(kind(r), "queue.Empty");
    assert_eq!(kind(q.call("get_nowait", vec![])), "queue.Empty");
    q.call("put", vec![Value::Str("a".into())]).unwrap();
    assert_eq!(q.call("full", vec![]).unwrap(), t());
    assert_eq!(kind(q.call("put", vec![int(2), f()])), "queue.Full");
    assert_eq!(kind(q.call("put_nowait", vec![int(2)])), "queue.Full");
    let r = kw(&q, "put", vec![int(2)], &[("timeout", Value::Float(0.05))]);
    assert_eq!(kind(r), "queue.Full");
    let r = kw(&q, "get", vec![], &[("timeout", int(-1))]);
    assert_eq!(kind(r), "ValueError");
    assert_eq!(q.call("qsize", vec![]).unwrap(), int(1));
    assert_eq!(
        q.call("get", vec![t(), Value::Float(5.0)]).unwrap(),
        Value::Str("a".into())
    );
}

#[test]
fn joinable_queue_join_waits_for_every_task_done() {
    let s = SyncServer::start();
    let m = s.connect();
    let q = m.create("JoinableQueue", vec![]).unwrap();
    for i in 0..3 {
        q.call("put", vec![int(i)]).unwrap();
    }
    let joined = Arc::new(AtomicUsize::new(0));
    let seen = joined.clone();
    let joiner = s.spawn(q.token(), move |q| {
        q.call("join", vec![]).unwrap();
        seen.store(1, Ordering::SeqCst);
    });
    s.await_blocked(1);
    for _ in 0..3 {
        q.call("get", vec![]).unwrap();
    }
    q.call("task_done", vec![]).unwrap();
    q.call("task_done", vec![]).unwrap();
    // Still two of three: the join is still blocked.
    s.await_blocked(1);
    assert_eq!(joined.load(Ordering::SeqCst), 0);
    q.call("task_done", vec![]).unwrap();
    joiner.join().unwrap();
    assert_eq!(joined.load(Ordering::SeqCst), 1);
    assert_eq!(kind(q.call("task_done", vec![])), "ValueError");
    assert_eq!(q.call("join", vec![]).unwrap(), Value::None);
}

#[test]
fn lock_waiters_get_it_in_the_order_they_asked() {
    let s = SyncServer::start();
    let m = s.connect();
    let lock = m.create("Lock", vec![]).unwrap();
    assert_eq!(lock.call("acquire", vec![]).unwrap(), t());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for name in ["first", "second", "third"] {
        let order = order.clone();
        threads.push(s.spawn(lock.token(), move |l| {
            assert_eq!(l.call("acquire", vec![]).unwrap(), t());
            order.lock().unwrap().push(name);
            l.call("release", vec![]).unwrap();
        }));
        s.await_blocked(threads.len());
    }
    lock.call("release", vec![]).unwrap();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["first", "second", "third"]);
    assert_eq!(kind(lock.call("release", vec![])), "RuntimeError");
}

#[test]
fn acquire_with_timeout_returns_false() {
    let s = SyncServer::start();
    let m = s.connect();
    for typeid in ["Lock", "RLock", "Semaphore", "BoundedSemaphore"] {
        let lock = m.create(typeid, vec![]).unwrap();
        assert_eq!(lock.call("acquire", vec![]).unwrap(), t());
        let other = s.spawn(lock.token(), |l| {
            (
                l.call("acquire", vec![t(), Value::Float(0.05)]).unwrap(),
                l.call("acquire", vec![f()]).unwrap(),
            )
        });
        assert_eq!(other.join().unwrap(), (f(), f()), "{typeid}");
        lock.call("release", vec![]).unwrap();
    }
}

#[test]
fn rlock_is_reentrant_and_only_its_owner_releases_it() {
    let s = SyncServer::start();
    let m = s.connect();
    let r = m.create("RLock", vec![]).unwrap();
    assert_eq!(r.call("acquire", vec![]).unwrap(), t());
    assert_eq!(r.call("acquire", vec![t()]).unwrap(), t());
    let other = s.connect();
    let theirs = other.proxy(r.token().clone()).unwrap();
    assert_eq!(kind(theirs.call("release", vec![])), "RuntimeError");
    assert_eq!(theirs.call("acquire", vec![f()]).unwrap(), f());
    r.call("release", vec![]).unwrap();
    assert_eq!(theirs.call("acquire", vec![f()]).unwrap(), f());
    r.call("release", vec![]).unwrap();
    assert_eq!(theirs.call("acquire", vec![f()]).unwrap(), t());
    assert_eq!(kind(r.call("release", vec![])), "RuntimeError");
    let repr = r.call("__repr__", vec![]).unwrap();
    let repr = repr.as_str().unwrap();
    assert!(
        repr.starts_with("<locked _thread.RLock object owner=") && repr.contains(" count=1 at 0x"),
        "{repr}"
    );
}

#[test]
fn semaphore_release_wakes_waiters_and_bounded_refuses_extra() {
    let s = SyncServer::start();
    let m = s.connect();
    let sem = m.create("Semaphore", vec![int(0)]).unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| s.spawn(sem.token(), |p| p.call("acquire", vec![]).unwrap()))
        .collect();
    s.await_blocked(2);
    kw(&sem, "release", vec![], &[("n", int(2))]).unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), t());
    }
    let b = m.create("BoundedSemaphore", vec![int(1)]).unwrap();
    assert_eq!(kind(b.call("release", vec![])), "ValueError");
    assert_eq!(
        kind(m.create("Semaphore", vec![int(-1)]).map(|_| Value::None)),
        "ValueError"
    );
}

#[test]
fn event_set_wakes_all_waiters_and_wait_times_out() {
    let s = SyncServer::start();
    let m = s.connect();
    let e = m.create("Event", vec![]).unwrap();
    assert_eq!(e.call("wait", vec![Value::Float(0.05)]).unwrap(), f());
    let waiters: Vec<_> = (0..3)
        .map(|_| s.spawn(e.token(), |p| p.call("wait", vec![]).unwrap()))
        .collect();
    s.await_blocked(3);
    e.call("set", vec![]).unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), t());
    }
    assert_eq!(e.call("is_set", vec![]).unwrap(), t());
    e.call("clear", vec![]).unwrap();
    assert_eq!(e.call("is_set", vec![]).unwrap(), f());
}

#[test]
fn condition_wait_notify_and_notify_all() {
    let s = SyncServer::start();
    let m = s.connect();
    let c = m.create("Condition", vec![]).unwrap();
    let waiter = |c: &mgr::Proxy| {
        assert_eq!(c.call("acquire", vec![]).unwrap(), t());
        let woke = c.call("wait", vec![]).unwrap();
        c.call("release", vec![]).unwrap();
        woke
    };
    let one = s.spawn(c.token(), waiter);
    s.await_blocked(1);
    assert_eq!(kind(c.call("notify", vec![])), "RuntimeError");
    c.call("acquire", vec![]).unwrap();
    c.call("notify", vec![]).unwrap();
    c.call("release", vec![]).unwrap();
    assert_eq!(one.join().unwrap(), t());

    let many: Vec<_> = (0..3).map(|_| s.spawn(c.token(), waiter)).collect();
    s.await_blocked(3);
    c.call("acquire", vec![]).unwrap();
    c.call("notify_all", vec![]).unwrap();
    c.call("release", vec![]).unwrap();
    for w in many {
        assert_eq!(w.join().unwrap(), t());
    }
}

#[test]
fn condition_wait_timeout_returns_false_with_the_lock_held() {
    let s = SyncServer::start();
    let m = s.connect();
    let c = m.create("Condition", vec![]).unwrap();
    assert_eq!(kind(c.call("wait", vec![])), "RuntimeError");
    c.call("acquire", vec![]).unwrap();
    c.call("acquire", vec![]).unwrap();
    let r = kw(&c, "wait", vec![], &[("timeout", Value::Float(0.05))]);
    assert_eq!(r.unwrap(), f());
    // Held again, with its recursion count: notify is allowed, two releases are.
    c.call("notify", vec![]).unwrap();
    let other = s.connect();
    let theirs = other.proxy(c.token().clone()).unwrap();
    assert_eq!(theirs.call("acquire", vec![f()]).unwrap(), f());
    c.call("release", vec![]).unwrap();
    assert_eq!(theirs.call("acquire", vec![f()]).unwrap(), f());
    c.call("release", vec![]).unwrap();
    assert_eq!(theirs.call("acquire", vec![f()]).unwrap(), t());
}

#[test]
fn barrier_rounds_give_each_index_once() {
    let s = SyncServer::start();
    let m = s.connect();
    let b = m.create("Barrier", vec![int(3)]).unwrap();
    assert_eq!(attr(&b, "parties"), int(3));
    let parties: Vec<_> = (0..3)
        .map(|_| {
            s.spawn(b.token(), |b| {
                (0..4)
                    .map(|_| b.call("wait", vec![]).unwrap().as_int().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<i64>> = parties.into_iter().map(|p| p.join().unwrap()).collect();
    for round in 0..4 {
        let mut indices: Vec<i64> = results.iter().map(|r| r[round]).collect();
        indices.sort_unstable();
        assert_eq!(indices, [0, 1, 2], "round {round}");
    }
    assert_eq!(attr(&b, "n_waiting"), int(0));
    assert_eq!(attr(&b, "broken"), f());
}

#[test]
fn barrier_abort_breaks_waiters_and_reset_mends_it() {
    let s = SyncServer::start();
    let m = s.connect();
    let b = m.create("Barrier", vec![int(3)]).unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| s.spawn(b.token(), |b| kind(b.call("wait", vec![]))))
        .collect();
    s.await_blocked(2);
    assert_eq!(attr(&b, "n_waiting"), int(2));
    b.call("abort", vec![]).unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), "threading.BrokenBarrierError");
    }
    assert_eq!(attr(&b, "broken"), t());
    assert_eq!(kind(b.call("wait", vec![])), "threading.BrokenBarrierError");
    b.call("reset", vec![]).unwrap();
    assert_eq!(attr(&b, "broken"), f());
    // A wait that times out breaks the barrier for everyone.
    let r = kw(&b, "wait", vec![], &[("timeout", Value::Float(0.05))]);
    assert_eq!(kind(r), "threading.BrokenBarrierError");
    assert_eq!(attr(&b, "broken"), t());
    b.call("reset", vec![]).unwrap();
    let two = s.spawn(b.token(), |b| b.call("wait", vec![]).unwrap());
    let one = s.spawn(b.token(), |b| b.call("wait", vec![]).unwrap());
    s.await_blocked(2);
    assert_eq!(b.call("wait", vec![]).unwrap(), int(2));
    let mut got = [two.join().unwrap(), one.join().unwrap()];
    got.sort_by_key(|v| v.as_int());
    assert_eq!(got, [int(0), int(1)]);
}

/// Sends `method` on a fresh connection without reading the answer and waits
/// until `blocked` calls are blocked; dropping the returned manager closes that
/// connection mid-wait.
fn block_on_new_connection(s: &SyncServer, token: &Token, method: &str, blocked: usize) -> Manager {
    let w = s.connect();
    let p = w.proxy(token.clone()).unwrap();
    let _pending = p.start_call(method, vec![]).unwrap();
    s.await_blocked(blocked);
    let _ = p.into_token();
    w
}

#[test]
fn a_waiter_killed_mid_wait_is_removed_and_the_next_one_is_served() {
    let s = SyncServer::start();
    let m = s.connect();
    let q = m.create("Queue", vec![]).unwrap();
    let doomed = block_on_new_connection(&s, q.token(), "get", 1);
    let consumer = s.spawn(q.token(), |q| q.call("get", vec![]).unwrap());
    s.await_blocked(2);
    drop(doomed);
    s.await_blocked(1);
    q.call("put", vec![Value::Str("kept".into())]).unwrap();
    assert_eq!(consumer.join().unwrap(), Value::Str("kept".into()));
    assert_eq!(q.call("qsize", vec![]).unwrap(), int(0));

    let lock = m.create("Lock", vec![]).unwrap();
    lock.call("acquire", vec![]).unwrap();
    let doomed = block_on_new_connection(&s, lock.token(), "acquire", 1);
    let next = s.spawn(lock.token(), |l| l.call("acquire", vec![]).unwrap());
    s.await_blocked(2);
    drop(doomed);
    s.await_blocked(1);
    lock.call("release", vec![]).unwrap();
    assert_eq!(next.join().unwrap(), t());
    // `next` ended holding the plain Lock: it has no owner, so it stays held after
    // that connection closed (as on CPython's server) until someone releases it.
    assert_eq!(lock.call("acquire", vec![f()]).unwrap(), f());
    lock.call("release", vec![]).unwrap();
    assert_eq!(lock.call("acquire", vec![f()]).unwrap(), t());
}

#[test]
fn a_barrier_party_whose_connection_died_still_counts_for_its_round() {
    // As on CPython: a party that arrived counts even if its client went away,
    // so the survivors are released when the last party arrives.
    let s = SyncServer::start();
    let m = s.connect();
    let b = m.create("Barrier", vec![int(3)]).unwrap();
    let doomed = block_on_new_connection(&s, b.token(), "wait", 1);
    let survivor = s.spawn(b.token(), |b| b.call("wait", vec![]).unwrap());
    s.await_blocked(2);
    drop(doomed);
    s.await_blocked(1);
    assert_eq!(attr(&b, "n_waiting"), int(2), "the departed party counts");
    assert_eq!(b.call("wait", vec![]).unwrap(), int(2));
    assert_eq!(survivor.join().unwrap(), int(1));
    assert_eq!(attr(&b, "n_waiting"), int(0));
    assert_eq!(attr(&b, "broken"), f());
}

#[test]
fn an_rlock_owner_that_disconnects_hands_it_to_the_next_waiter() {
    let s = SyncServer::start();
    let m = s.connect();
    let r = m.create("RLock", vec![]).unwrap();
    let c = m.create("Condition", vec![]).unwrap();
    for lock in [&r, &c] {
        let owner = s.connect();
        let theirs = owner.proxy(lock.token().clone()).unwrap();
        assert_eq!(theirs.call("acquire", vec![]).unwrap(), t());
        assert_eq!(theirs.call("acquire", vec![]).unwrap(), t());
        let waiter = s.spawn(lock.token(), |l| {
            let got = l.call("acquire", vec![]).unwrap();
            l.call("release", vec![]).unwrap();
            got
        });
        s.await_blocked(1);
        drop(theirs);
        drop(owner);
        assert_eq!(waiter.join().unwrap(), t());
        assert_eq!(lock.call("acquire", vec![f()]).unwrap(), t());
        lock.call("release", vec![]).unwrap();
    }
}

#[test]
fn many_waiters_on_one_queue() {
    let s = SyncServer::start();
    let m = s.connect();
    let q = m.create("Queue", vec![]).unwrap();
    let consumers: Vec<_> = (0..20)
        .map(|_| {
            s.spawn(q.token(), |q| {
                q.call("get", vec![]).unwrap().as_int().unwrap()
            })
        })
        .collect();
    s.await_blocked(20);
    for i in 0..20 {
        q.call("put", vec![int(i)]).unwrap();
    }
    let mut got: Vec<i64> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

#[test]
fn a_queue_keeps_the_objects_its_items_refer_to_alive() {
    let s = SyncServer::start();
    let m = s.connect();
    let q = m.create("Queue", vec![]).unwrap();
    let e = m.create("Event", vec![]).unwrap();
    let token = e.token().clone();
    q.call("put", vec![Value::List(vec![Value::Ref(token.clone())])])
        .unwrap();
    drop(e);
    assert_eq!(
        m.number_of_objects().unwrap(),
        2,
        "the queue holds the Event"
    );
    let again = m.proxy(token.clone()).unwrap();
    again.call("set", vec![]).unwrap();
    drop(again);
    assert_eq!(
        q.call("get", vec![]).unwrap(),
        Value::List(vec![Value::Ref(token.clone())])
    );
    // The queue let go of the Event in the call that returned it; the reply's
    // grace keeps it alive for the receiver to take its own reference.
    let mine = m.proxy(token).unwrap();
    assert_eq!(mine.call("is_set", vec![]).unwrap(), Value::Bool(true));
    drop(mine);
    assert!(eventually(10, || m.number_of_objects().unwrap() == 1));
}
