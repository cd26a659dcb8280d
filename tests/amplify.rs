//! Bounded cost of operations that amplify, over real sockets: a small request
//! cannot make the server build a result bigger than `max_frame` (sized in
//! bytes, not items), nor take the bytes all objects hold past
//! `max_held_bytes`, nor one connection's live objects past
//! `max_objects_per_conn`. Each refusal is an error for that call; the object
//! is unchanged, the connection stays usable and the server serves everyone.
//!
//! The server runs in this process, so a counting global allocator sees its
//! allocations: a refused call is shown to allocate little by the peak it
//! reaches, not by how long it took.

mod common;
mod counting;

use std::sync::Mutex;

use common::TestServer;
use counting::measure;
use mgr::{Error, Manager, Proxy, RemoteError, Value};

/// One test at a time, so a peak belongs to the test that measures it.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1 << 20;

fn remote(r: mgr::Result<impl std::fmt::Debug>) -> RemoteError {
    match r {
        Err(Error::Remote(e)) => e,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

/// The Python kind of a remote error: its own, or for a `create` (answered as
/// CPython answers it, with a traceback) the kind the traceback names.
fn kind(e: &RemoteError) -> &str {
    if e.kind == "RemoteError" {
        if let Some(last) = e.message.lines().last() {
            return last.split(':').next().unwrap_or("");
        }
    }
    &e.kind
}

fn i(n: i64) -> Value {
    Value::Int(n)
}

fn len(l: &Proxy) -> Value {
    l.call("__len__", vec![]).unwrap()
}

/// A server whose results may take at most 16 MiB.
fn small_frames() -> TestServer {
    TestServer::start_with(|c| c.max_frame = 16 * MIB as u64)
}

#[test]
fn a_repeat_is_bounded_by_bytes_not_items() {
    let _serial = serial();
    let h = small_frames();
    let m = h.connect();
    let item = Value::Bytes(vec![7; MIB]);
    let l = m
        .create("list", vec![Value::List(vec![item.clone()])])
        .unwrap();
    // A few bytes of request asking for 100 GB: refused before allocating.
    let (e, peak) = measure(|| remote(l.call("__imul__", vec![i(100_000)])));
    assert_eq!(kind(&e), "MemoryError");
    assert!(e.message.contains("max_frame"), "{}", e.message);
    assert!(peak < MIB, "a refused repeat allocated {peak} bytes");
    assert_eq!(len(&l), i(1), "the list is unchanged");
    for method in ["__mul__", "__rmul__"] {
        let (e, peak) = measure(|| remote(l.call(method, vec![i(100_000)])));
        assert_eq!(kind(&e), "MemoryError", "{method}");
        assert!(peak < MIB, "{method} allocated {peak} bytes");
    }
    // One item too many for the limit is refused too: the bound is the bytes.
    assert_eq!(kind(&remote(l.call("__mul__", vec![i(16)]))), "MemoryError");
    // Within it, repeats work and the connection is fine.
    let eight = l.call("__mul__", vec![i(8)]).unwrap();
    assert!(matches!(&eight, Value::List(v) if v.len() == 8 && v[7] == item));
    l.call("__imul__", vec![i(4)]).unwrap();
    assert_eq!(len(&l), i(4));
    // Small items: many of them are fine, the same bytes in items are not.
    let ints = m.create("list", vec![Value::List(vec![i(1)])]).unwrap();
    let n = ints.call("__mul__", vec![i(100_000)]).unwrap();
    assert!(matches!(n, Value::List(ref v) if v.len() == 100_000));
    assert_eq!(
        kind(&remote(ints.call("__mul__", vec![i(1 << 40)]))),
        "MemoryError"
    );
    assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
}

#[test]
fn extending_a_list_with_itself_doubles_until_the_limit() {
    let _serial = serial();
    let h = small_frames();
    let m = h.connect();
    let l = m
        .create("list", vec![Value::List(vec![Value::Bytes(vec![1; MIB])])])
        .unwrap();
    let me = Value::Ref(l.token().clone());
    // `l + l` and `l.extend(l)` see the list itself, as CPython's server does.
    let twice = l.call("__add__", vec![me.clone()]).unwrap();
    assert!(matches!(twice, Value::List(ref v) if v.len() == 2));
    let mut doublings = 0;
    let e = loop {
        match l.call("extend", vec![me.clone()]) {
            Ok(_) => doublings += 1,
            Err(e) => break e,
        }
        assert!(doublings < 64, "extend-from-self was never refused");
    };
    let Error::Remote(e) = e else { panic!("{e:?}") };
    assert_eq!(kind(&e), "MemoryError");
    // 1, 2, 4, 8 MiB held; 16 MiB and its items exceed the 16 MiB limit.
    assert_eq!(doublings, 3);
    assert_eq!(len(&l), i(8), "the refused extend changed nothing");
    assert_eq!(
        kind(&remote(l.call("__add__", vec![me.clone()]))),
        "MemoryError"
    );
    // The connection and the list keep working.
    l.call("pop", vec![]).unwrap();
    assert_eq!(len(&l), i(7));
    assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
}

#[test]
fn expanding_bytes_or_str_into_items_is_bounded() {
    let _serial = serial();
    let h = small_frames();
    let m = h.connect();
    let before = m.number_of_objects().unwrap();
    // 1 MiB of bytes is a million items, each a value many times its byte.
    let big = Value::Bytes(vec![0; MIB]);
    for (typeid, args) in [
        ("Array", vec![Value::from("b"), big.clone()]),
        ("Array", vec![Value::from("u"), Value::Str("x".repeat(MIB))]),
        ("list", vec![big.clone()]),
        ("list", vec![Value::Str("x".repeat(MIB))]),
    ] {
        let (e, peak) = measure(|| remote(m.create(typeid, args)));
        assert_eq!(kind(&e), "MemoryError", "{typeid}");
        assert!(e.message.contains("max_frame"), "{}", e.message);
        // The request itself (1 MiB, decoded) and little else.
        // Expanded, it would be over 50 MiB.
        assert!(peak < 8 * MIB, "{typeid} allocated {peak} bytes");
    }
    let l = m.create("list", vec![]).unwrap();
    assert_eq!(
        kind(&remote(l.call("extend", vec![big.clone()]))),
        "MemoryError"
    );
    assert_eq!(len(&l), i(0));
    let d = m.create("dict", vec![]).unwrap();
    assert_eq!(
        kind(&remote(d.call("update", vec![Value::Str("x".repeat(MIB))]))),
        "MemoryError"
    );
    // Small ones work.
    let a = m
        .create("Array", vec![Value::from("b"), Value::Bytes(vec![1; 1000])])
        .unwrap();
    assert_eq!(a.call("__len__", vec![]).unwrap(), i(1000));
    assert_eq!(m.number_of_objects().unwrap(), before + 3);
}

#[test]
fn copies_of_a_container_are_bounded_like_any_result() {
    let _serial = serial();
    let h = small_frames();
    let m = h.connect();
    let d = m.create("dict", vec![]).unwrap();
    // Grown past one result's limit by many small requests.
    for k in 0..20 {
        d.call("__setitem__", vec![i(k), Value::Bytes(vec![0; MIB])])
            .unwrap();
    }
    for method in ["copy", "items", "values"] {
        let (e, peak) = measure(|| remote(d.call(method, vec![])));
        assert_eq!(kind(&e), "MemoryError", "{method}");
        assert!(peak < MIB, "{method} allocated {peak} bytes");
    }
    for method in ["#GETVALUE", "__repr__", "__str__"] {
        let (e, peak) = measure(|| remote(d.call(method, vec![])));
        assert_eq!(kind(&e), "MemoryError", "{method}");
        assert!(peak < MIB, "{method} allocated {peak} bytes");
    }
    // debug_info shows 75 characters of each object: it does not build the
    // repr of one this big (over 80 MB of text).
    let (info, peak) = measure(|| m.public("debug_info", vec![]).unwrap());
    assert!(
        matches!(&info, Value::Str(t) if t.contains("<dict object>")),
        "{info:?}"
    );
    assert!(peak < MIB, "debug_info allocated {peak} bytes");
    // Reads of one item, and keys, are fine.
    let keys = d.call("keys", vec![]).unwrap();
    assert!(matches!(keys, Value::List(ref k) if k.len() == 20));
    assert_eq!(
        d.call("__getitem__", vec![i(3)]).unwrap(),
        Value::Bytes(vec![0; MIB])
    );
    assert_eq!(d.call("__len__", vec![]).unwrap(), i(20));
}

#[test]
fn the_cap_on_held_bytes_refuses_growth_and_others_are_served() {
    let _serial = serial();
    let h = TestServer::start_with(|c| c.max_held_bytes = Some(4 * MIB));
    let m = h.connect();
    let other = h.connect();
    let chunk = || Value::Bytes(vec![3; MIB]);
    let l = m.create("list", vec![]).unwrap();
    for _ in 0..3 {
        l.call("append", vec![chunk()]).unwrap();
    }
    let e = remote(l.call("append", vec![chunk()]));
    assert_eq!(kind(&e), "MemoryError");
    assert!(e.message.contains("max_held_bytes"), "{}", e.message);
    assert_eq!(len(&l), i(3), "the refused append changed nothing");
    // Every container counts towards the same total.
    let objects = m.number_of_objects().unwrap();
    assert_eq!(
        kind(&remote(
            other.create("list", vec![Value::List(vec![chunk(), chunk()])])
        )),
        "MemoryError"
    );
    assert_eq!(
        m.number_of_objects().unwrap(),
        objects,
        "nothing was created"
    );
    let q = other.create("Queue", vec![]).unwrap();
    assert_eq!(kind(&remote(q.call("put", vec![chunk()]))), "MemoryError");
    assert_eq!(q.call("qsize", vec![]).unwrap(), i(0));
    let v = other.create("Value", vec![Value::from("i"), i(0)]).unwrap();
    assert_eq!(kind(&remote(v.call("set", vec![chunk()]))), "MemoryError");
    let d = other.create("dict", vec![]).unwrap();
    assert_eq!(
        kind(&remote(d.call("__setitem__", vec![i(1), chunk()]))),
        "MemoryError"
    );
    assert_eq!(kind(&remote(l.call("__imul__", vec![i(2)]))), "MemoryError");
    // Small growth still fits; reads are served.
    d.call("__setitem__", vec![i(1), i(2)]).unwrap();
    q.call("put", vec![i(5)]).unwrap();
    assert_eq!(q.call("get", vec![]).unwrap(), i(5));
    assert_eq!(len(&l), i(3));
    // What is let go of is no longer counted: a pop and a destroyed object.
    l.call("pop", vec![]).unwrap();
    l.call("append", vec![chunk()]).unwrap();
    drop(l);
    let again = m.create("list", vec![]).unwrap();
    for _ in 0..3 {
        again.call("append", vec![chunk()]).unwrap();
    }
    assert_eq!(other.public("dummy", vec![]).unwrap(), Value::None);
}

#[test]
fn the_cap_on_objects_per_connection_refuses_the_excess() {
    let _serial = serial();
    let h = TestServer::start_with(|c| c.max_objects_per_conn = Some(5));
    let m = h.connect();
    let mut held: Vec<Proxy> = (0..4).map(|_| m.create("list", vec![]).unwrap()).collect();
    let d = m
        .create("dict", vec![Value::Dict(vec![(i(1), i(2))])])
        .unwrap();
    let e = remote(m.create("list", vec![]));
    assert_eq!(kind(&e), "MemoryError");
    assert!(e.message.contains("max_objects_per_conn"), "{}", e.message);
    // Objects its calls create count too (dict.__iter__ makes an Iterator).
    assert_eq!(
        kind(&remote(d.invoke("__iter__", vec![], vec![]))),
        "MemoryError"
    );
    assert_eq!(m.number_of_objects().unwrap(), 5);
    // Another connection has its own allowance.
    let other = h.connect();
    let theirs: Vec<Proxy> = (0..5)
        .map(|_| other.create("Event", vec![]).unwrap())
        .collect();
    assert_eq!(kind(&remote(other.create("Event", vec![]))), "MemoryError");
    // Letting one go makes room again; the connection was never broken.
    held.pop();
    let it = d.invoke("__iter__", vec![], vec![]).unwrap();
    assert!(matches!(it, mgr::client::Returned::Proxy(_)));
    assert_eq!(kind(&remote(m.create("list", vec![]))), "MemoryError");
    assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
    // Objects outlive the cap's bookkeeping of a closed connection: a new
    // connection starts afresh.
    drop((theirs, it, held, d));
    let fresh = Manager::connect_to(&h.address, common::KEY).unwrap();
    let mine: Vec<Proxy> = (0..5)
        .map(|_| fresh.create("list", vec![]).unwrap())
        .collect();
    assert_eq!(mine.len(), 5);
}
