//! The data built-in types (dict, list, Namespace, Value, Array, Iterator) over
//! real sockets: a real server with `register_builtins`, driven by the Rust client.

mod common;

use std::time::Duration;

use mgr::client::Returned;
use mgr::proto::Slice;
use mgr::{Error, Manager, Proxy, RemoteError, Value};

/// The shared fixture: a server with the built-in types.
type Builtins = common::TestServer;

fn remote(r: mgr::Result<impl std::fmt::Debug>) -> RemoteError {
    match r {
        Err(Error::Remote(e)) => e,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn kind_msg(r: mgr::Result<impl std::fmt::Debug>) -> (String, String) {
    let e = remote(r);
    (e.kind, e.message)
}

fn s(x: &str) -> Value {
    Value::Str(x.to_owned())
}

fn i(x: i64) -> Value {
    Value::Int(x)
}

fn list(v: Vec<Value>) -> Value {
    Value::List(v)
}

fn slice(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Value {
    Value::Slice(Slice { start, stop, step })
}

fn kw(name: &str, v: Value) -> Vec<(String, Value)> {
    vec![(name.to_owned(), v)]
}

fn new_dict(m: &Manager) -> Proxy {
    m.create(
        "dict",
        vec![Value::Dict(vec![(i(1), s("a")), (s("x"), i(2))])],
    )
    .unwrap()
}

#[test]
fn exposed_methods_are_cpythons() {
    let srv = Builtins::start();
    let m = srv.connect();
    let d = m.create("dict", vec![]).unwrap();
    assert_eq!(
        d.exposed(),
        [
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__iter__",
            "__len__",
            "__setitem__",
            "clear",
            "copy",
            "get",
            "items",
            "keys",
            "pop",
            "popitem",
            "setdefault",
            "update",
            "values"
        ]
    );
    let l = m.create("list", vec![]).unwrap();
    assert_eq!(l.exposed().len(), 19);
    assert_eq!(l.exposed().last().map(String::as_str), Some("__imul__"));
    let ns = m.create("Namespace", vec![]).unwrap();
    assert_eq!(
        ns.exposed(),
        ["__getattribute__", "__setattr__", "__delattr__"]
    );
    let v = m.create("Value", vec![s("i"), i(0)]).unwrap();
    assert_eq!(v.exposed(), ["get", "set"]);
    let a = m.create("Array", vec![s("i"), list(vec![])]).unwrap();
    assert_eq!(a.exposed(), ["__len__", "__getitem__", "__setitem__"]);
}

#[test]
fn dict_item_access_and_python_key_equality() {
    let srv = Builtins::start();
    let m = srv.connect();
    let d = new_dict(&m);
    assert_eq!(d.call("__getitem__", vec![i(1)]).unwrap(), s("a"));
    // 1 == 1.0 == True: one key.
    assert_eq!(
        d.call("__getitem__", vec![Value::Float(1.0)]).unwrap(),
        s("a")
    );
    assert_eq!(
        d.call("__getitem__", vec![Value::Bool(true)]).unwrap(),
        s("a")
    );
    d.call("__setitem__", vec![Value::Float(1.0), s("b")])
        .unwrap();
    assert_eq!(d.call("__len__", vec![]).unwrap(), i(2));
    // The first key object is kept, as Python keeps it.
    assert_eq!(
        d.call("items", vec![]).unwrap(),
        list(vec![
            Value::Tuple(vec![i(1), s("b")]),
            Value::Tuple(vec![s("x"), i(2)])
        ])
    );
    // -0.0 == 0.0, tuples and frozensets by content.
    d.call("__setitem__", vec![Value::Float(-0.0), s("zero")])
        .unwrap();
    assert_eq!(d.call("__getitem__", vec![i(0)]).unwrap(), s("zero"));
    let fs = |v: Vec<Value>| Value::FrozenSet(v);
    d.call("__setitem__", vec![fs(vec![i(1), i(2)]), s("fs")])
        .unwrap();
    assert_eq!(
        d.call("__getitem__", vec![fs(vec![i(2), Value::Float(1.0)])])
            .unwrap(),
        s("fs")
    );
    d.call(
        "__setitem__",
        vec![Value::Tuple(vec![i(1), s("t")]), s("tup")],
    )
    .unwrap();
    assert_eq!(
        d.call(
            "__contains__",
            vec![Value::Tuple(vec![Value::Bool(true), s("t")])]
        )
        .unwrap(),
        Value::Bool(true)
    );
    d.call("__delitem__", vec![Value::Tuple(vec![i(1), s("t")])])
        .unwrap();
    assert_eq!(
        d.call("__contains__", vec![Value::Tuple(vec![i(1), s("t")])])
            .unwrap(),
        Value::Bool(false)
    );
}

#[test]
fn dict_methods() {
    let srv = Builtins::start();
    let m = srv.connect();
    let d = new_dict(&m);
    assert_eq!(d.call("keys", vec![]).unwrap(), list(vec![i(1), s("x")]));
    assert_eq!(d.call("values", vec![]).unwrap(), list(vec![s("a"), i(2)]));
    assert_eq!(d.call("get", vec![s("x")]).unwrap(), i(2));
    assert_eq!(d.call("get", vec![s("nope")]).unwrap(), Value::None);
    assert_eq!(d.call("get", vec![s("nope"), i(7)]).unwrap(), i(7));
    assert_eq!(d.call("setdefault", vec![s("y"), i(3)]).unwrap(), i(3));
    assert_eq!(d.call("setdefault", vec![s("y"), i(4)]).unwrap(), i(3));
    assert_eq!(d.call("setdefault", vec![s("n")]).unwrap(), Value::None);
    assert_eq!(d.call("pop", vec![s("n")]).unwrap(), Value::None);
    assert_eq!(d.call("pop", vec![s("n"), s("dflt")]).unwrap(), s("dflt"));
    d.invoke(
        "update",
        vec![list(vec![Value::Tuple(vec![i(3), i(4)])])],
        kw("z", i(5)),
    )
    .unwrap();
    d.call("update", vec![Value::Dict(vec![(s("w"), i(6))])])
        .unwrap();
    let copy = d.call("copy", vec![]).unwrap();
    assert_eq!(
        copy,
        Value::Dict(vec![
            (i(1), s("a")),
            (s("x"), i(2)),
            (s("y"), i(3)),
            (i(3), i(4)),
            (s("z"), i(5)),
            (s("w"), i(6)),
        ])
    );
    assert_eq!(d.call("#GETVALUE", vec![]).unwrap(), copy);
    assert_eq!(
        d.call("popitem", vec![]).unwrap(),
        Value::Tuple(vec![s("w"), i(6)])
    );
    assert_eq!(
        d.call("__str__", vec![]).unwrap(),
        s("{1: 'a', 'x': 2, 'y': 3, 3: 4, 'z': 5}")
    );
    assert_eq!(
        d.call("__repr__", vec![]).unwrap(),
        d.call("__str__", vec![]).unwrap()
    );
    d.call("clear", vec![]).unwrap();
    assert_eq!(d.call("__len__", vec![]).unwrap(), i(0));
    let created = m
        .create_with("dict", vec![], kw("k", i(1)))
        .unwrap()
        .call("copy", vec![])
        .unwrap();
    assert_eq!(created, Value::Dict(vec![(s("k"), i(1))]));
}

#[test]
fn dict_errors_have_pythons_kinds_and_messages() {
    let srv = Builtins::start();
    let m = srv.connect();
    let d = new_dict(&m);
    let e = remote(d.call("__getitem__", vec![i(5)]));
    assert_eq!(e.kind, "KeyError");
    assert_eq!(e.args, vec![i(5)], "the key is the exception's argument");
    let e = remote(d.call("pop", vec![s("missing")]));
    assert_eq!(
        (e.kind.as_str(), e.args.clone()),
        ("KeyError", vec![s("missing")])
    );
    let e = remote(d.call("__delitem__", vec![Value::Float(2.5)]));
    assert_eq!(e.args, vec![Value::Float(2.5)]);
    assert_eq!(
        kind_msg(d.call("__setitem__", vec![list(vec![i(1)]), i(2)])),
        ("TypeError".into(), "unhashable type: 'list'".into())
    );
    assert_eq!(
        kind_msg(d.call("__contains__", vec![Value::Dict(vec![])])),
        ("TypeError".into(), "unhashable type: 'dict'".into())
    );
    let empty = m.create("dict", vec![]).unwrap();
    assert_eq!(
        kind_msg(empty.call("popitem", vec![])),
        ("KeyError".into(), "popitem(): dictionary is empty".into())
    );
    // As CPython's dict.pop: an empty dict answers before hashing the key.
    let unhashable = list(vec![i(1)]);
    assert_eq!(
        empty.call("pop", vec![unhashable.clone(), i(0)]).unwrap(),
        i(0)
    );
    let e = remote(empty.call("pop", vec![unhashable.clone()]));
    assert_eq!(
        (e.kind.as_str(), e.args.clone()),
        ("KeyError", vec![unhashable.clone()])
    );
    empty.call("__setitem__", vec![i(1), i(1)]).unwrap();
    assert_eq!(
        kind_msg(empty.call("pop", vec![unhashable, i(0)])),
        ("TypeError".into(), "unhashable type: 'list'".into())
    );
    assert_eq!(
        kind_msg(d.invoke("get", vec![i(9)], kw("default", i(3)))),
        (
            "TypeError".into(),
            "dict.get() takes no keyword arguments".into()
        )
    );
    assert_eq!(
        kind_msg(d.call("update", vec![i(5)])),
        ("TypeError".into(), "'int' object is not iterable".into())
    );
    let e = m.create("dict", vec![i(1), i(2)]).unwrap_err();
    assert!(
        e.traceback().is_some(),
        "a failed create is a traceback, as in CPython: {e:?}"
    );
    assert_eq!(e.remote_kind(), Some("TypeError"), "its kind is parsed out");
}

#[test]
fn dict_iteration_goes_through_an_iterator_proxy() {
    let srv = Builtins::start();
    let m = srv.connect();
    let d = new_dict(&m);
    assert_eq!(m.number_of_objects().unwrap(), 1);
    let it = match d.invoke("__iter__", vec![], vec![]).unwrap() {
        Returned::Proxy(p) => p,
        Returned::Value(v) => panic!("expected a proxy, got {v}"),
    };
    assert_eq!(it.token().typeid, "Iterator");
    assert_eq!(it.exposed(), ["__next__", "send", "throw", "close"]);
    assert_eq!(m.number_of_objects().unwrap(), 2);
    // Values may change while iterating; the keys are yielded in order.
    d.call("__setitem__", vec![i(1), s("new value")]).unwrap();
    assert_eq!(it.call("__next__", vec![]).unwrap(), i(1));
    assert_eq!(it.call("__next__", vec![]).unwrap(), s("x"));
    assert_eq!(
        kind_msg(it.call("__next__", vec![])),
        ("StopIteration".into(), String::new())
    );
    drop(it);
    assert_eq!(m.number_of_objects().unwrap(), 1);
}

#[test]
fn dict_iterators_are_invalidated_like_cpythons() {
    let srv = Builtins::start();
    let m = srv.connect();
    let iter = |d: &mgr::Proxy| {
        d.invoke("__iter__", vec![], vec![])
            .unwrap()
            .into_proxy()
            .unwrap()
    };
    let size = || {
        (
            "RuntimeError".to_owned(),
            "dictionary changed size during iteration".to_owned(),
        )
    };
    // `it = iter(d); d.clear(); next(it)`, as CPython's test_dict checks.
    let d = new_dict(&m);
    let it = iter(&d);
    d.call("clear", vec![]).unwrap();
    assert_eq!(kind_msg(it.call("__next__", vec![])), size());
    assert_eq!(kind_msg(it.call("__next__", vec![])), size(), "sticky");
    // An item added while iterating (test_mutating_iteration).
    let d = new_dict(&m);
    let it = iter(&d);
    assert_eq!(it.call("__next__", vec![]).unwrap(), i(1));
    d.call("__setitem__", vec![s("late"), i(0)]).unwrap();
    assert_eq!(kind_msg(it.call("__next__", vec![])), size());
    // A key deleted and put back (test_mutating_iteration_delete).
    let d = m
        .create("dict", vec![Value::Dict(vec![(i(0), i(0))])])
        .unwrap();
    let it = iter(&d);
    assert_eq!(it.call("__next__", vec![]).unwrap(), i(0));
    d.call("__delitem__", vec![i(0)]).unwrap();
    d.call("__setitem__", vec![i(0), i(0)]).unwrap();
    assert_eq!(
        kind_msg(it.call("__next__", vec![])),
        (
            "RuntimeError".into(),
            "dictionary keys changed during iteration".into()
        )
    );
    assert_eq!(kind_msg(it.call("__next__", vec![])).0, "StopIteration");
    // Iterators of one dict, made before and after a change, each judge by
    // their own start; a failed call changes nothing.
    let d = new_dict(&m);
    let old = iter(&d);
    assert_eq!(remote(d.call("pop", vec![s("nope")])).kind, "KeyError");
    d.call("pop", vec![s("x")]).unwrap();
    let new = iter(&d);
    assert_eq!(kind_msg(old.call("__next__", vec![])), size());
    assert_eq!(new.call("__next__", vec![]).unwrap(), i(1));
    assert_eq!(kind_msg(new.call("__next__", vec![])).0, "StopIteration");
    // The iterator outlives its dict and keeps its snapshot.
    let d = new_dict(&m);
    let it = iter(&d);
    drop(d);
    assert_eq!(it.call("__next__", vec![]).unwrap(), i(1));
}

#[test]
fn iterator_send_throw_close() {
    let srv = Builtins::start();
    let m = srv.connect();
    let d = m
        .create(
            "dict",
            vec![Value::Dict(vec![(i(1), i(1)), (i(2), i(2)), (i(3), i(3))])],
        )
        .unwrap();
    let it = d
        .invoke("__iter__", vec![], vec![])
        .unwrap()
        .into_proxy()
        .unwrap();
    assert_eq!(it.call("send", vec![Value::None]).unwrap(), i(1));
    assert_eq!(
        kind_msg(it.call("throw", vec![s("ValueError"), s("boom")])),
        ("ValueError".into(), "boom".into())
    );
    assert_eq!(kind_msg(it.call("__next__", vec![])).0, "StopIteration");
    let it2 = d
        .invoke("__iter__", vec![], vec![])
        .unwrap()
        .into_proxy()
        .unwrap();
    assert_eq!(it2.call("close", vec![]).unwrap(), Value::None);
    assert_eq!(kind_msg(it2.call("__next__", vec![])).0, "StopIteration");
    // Built directly from any iterable, as CPython's create would.
    let it3 = m.create("Iterator", vec![s("ab")]).unwrap();
    assert_eq!(it3.call("__next__", vec![]).unwrap(), s("a"));
}

#[test]
fn list_methods() {
    let srv = Builtins::start();
    let m = srv.connect();
    let l = m
        .create("list", vec![list(vec![i(3), i(1), i(2)])])
        .unwrap();
    l.call("append", vec![i(1)]).unwrap();
    l.call("extend", vec![Value::Tuple(vec![i(7), i(8)])])
        .unwrap();
    l.call("insert", vec![i(-100), i(0)]).unwrap();
    l.call("insert", vec![i(100), i(9)]).unwrap();
    let all = list(vec![i(0), i(3), i(1), i(2), i(1), i(7), i(8), i(9)]);
    assert_eq!(l.call("#GETVALUE", vec![]).unwrap(), all);
    assert_eq!(l.call("__len__", vec![]).unwrap(), i(8));
    assert_eq!(l.call("count", vec![Value::Float(1.0)]).unwrap(), i(2));
    assert_eq!(l.call("index", vec![i(1)]).unwrap(), i(2));
    assert_eq!(l.call("index", vec![i(1), i(3)]).unwrap(), i(4));
    assert_eq!(l.call("index", vec![i(1), i(-5), i(-3)]).unwrap(), i(4));
    assert_eq!(
        l.call("__contains__", vec![i(7)]).unwrap(),
        Value::Bool(true)
    );
    assert_eq!(
        l.call("__contains__", vec![s("7")]).unwrap(),
        Value::Bool(false)
    );
    l.call("remove", vec![i(1)]).unwrap();
    assert_eq!(l.call("pop", vec![]).unwrap(), i(9));
    assert_eq!(l.call("pop", vec![i(0)]).unwrap(), i(0));
    assert_eq!(
        l.call("#GETVALUE", vec![]).unwrap(),
        list(vec![i(3), i(2), i(1), i(7), i(8)])
    );
    l.call("reverse", vec![]).unwrap();
    assert_eq!(l.call("__getitem__", vec![i(0)]).unwrap(), i(8));
    assert_eq!(l.call("__getitem__", vec![i(-1)]).unwrap(), i(3));
    l.call("sort", vec![]).unwrap();
    assert_eq!(
        l.call("#GETVALUE", vec![]).unwrap(),
        list(vec![i(1), i(2), i(3), i(7), i(8)])
    );
    l.invoke("sort", vec![], kw("reverse", Value::Bool(true)))
        .unwrap();
    assert_eq!(l.call("__getitem__", vec![i(0)]).unwrap(), i(8));
    assert_eq!(
        l.call("__reversed__", vec![]).unwrap(),
        list(vec![i(1), i(2), i(3), i(7), i(8)])
    );
    assert_eq!(
        l.call("__add__", vec![list(vec![s("z")])]).unwrap(),
        list(vec![i(8), i(7), i(3), i(2), i(1), s("z")])
    );
    let small = m.create("list", vec![list(vec![i(1), s("a")])]).unwrap();
    let twice = list(vec![i(1), s("a"), i(1), s("a")]);
    assert_eq!(small.call("__mul__", vec![i(2)]).unwrap(), twice);
    assert_eq!(small.call("__rmul__", vec![i(2)]).unwrap(), twice);
    assert_eq!(small.call("__mul__", vec![i(-3)]).unwrap(), list(vec![]));
    small.call("__imul__", vec![i(2)]).unwrap();
    assert_eq!(small.call("#GETVALUE", vec![]).unwrap(), twice);
    assert_eq!(
        small.call("__str__", vec![]).unwrap(),
        s("[1, 'a', 1, 'a']")
    );
}

#[test]
fn list_sort_uses_python_ordering() {
    let srv = Builtins::start();
    let m = srv.connect();
    let mixed = list(vec![
        Value::Float(2.5),
        Value::Bool(true),
        i(-3),
        Value::Float(0.5),
        i(2),
    ]);
    let l = m.create("list", vec![mixed]).unwrap();
    l.call("sort", vec![]).unwrap();
    assert_eq!(
        l.call("#GETVALUE", vec![]).unwrap(),
        list(vec![
            i(-3),
            Value::Float(0.5),
            Value::Bool(true),
            i(2),
            Value::Float(2.5)
        ])
    );
    let t = |a: i64, b: &str| Value::Tuple(vec![i(a), s(b)]);
    let tuples = m
        .create("list", vec![list(vec![t(2, "a"), t(1, "b"), t(1, "a")])])
        .unwrap();
    tuples.call("sort", vec![]).unwrap();
    assert_eq!(
        tuples.call("#GETVALUE", vec![]).unwrap(),
        list(vec![t(1, "a"), t(1, "b"), t(2, "a")])
    );
    let bad = m.create("list", vec![list(vec![i(1), s("a")])]).unwrap();
    let (kind, msg) = kind_msg(bad.call("sort", vec![]));
    assert_eq!(kind, "TypeError");
    assert!(
        msg.starts_with("'<' not supported between instances of")
            && msg.contains("'int'")
            && msg.contains("'str'"),
        "{msg}"
    );
    assert_eq!(
        bad.call("#GETVALUE", vec![]).unwrap(),
        list(vec![i(1), s("a")]),
        "a failed sort leaves the list as it was"
    );
    let (kind, msg) = kind_msg(bad.invoke("sort", vec![], kw("key", s("len"))));
    assert_eq!(kind, "TypeError");
    assert!(msg.contains("key"), "{msg}");
    assert_eq!(
        kind_msg(bad.call("sort", vec![Value::Bool(true)])),
        (
            "TypeError".into(),
            "sort() takes no positional arguments".into()
        )
    );
}

#[test]
fn list_errors_have_pythons_kinds_and_messages() {
    let srv = Builtins::start();
    let m = srv.connect();
    let l = m
        .create("list", vec![list(vec![i(3), i(1), i(2)])])
        .unwrap();
    let idx = |r| kind_msg(r);
    assert_eq!(
        idx(l.call("__getitem__", vec![i(10)])),
        ("IndexError".into(), "list index out of range".into())
    );
    assert_eq!(
        idx(l.call("__getitem__", vec![i(-4)])),
        ("IndexError".into(), "list index out of range".into())
    );
    assert_eq!(
        idx(l.call("__setitem__", vec![i(3), i(0)])),
        (
            "IndexError".into(),
            "list assignment index out of range".into()
        )
    );
    assert_eq!(
        idx(l.call("__delitem__", vec![i(3)])),
        (
            "IndexError".into(),
            "list assignment index out of range".into()
        )
    );
    assert_eq!(
        idx(l.call("__getitem__", vec![s("a")])),
        (
            "TypeError".into(),
            "list indices must be integers or slices, not str".into()
        )
    );
    assert_eq!(
        idx(l.call("index", vec![i(9)])),
        ("ValueError".into(), "9 is not in list".into())
    );
    assert_eq!(
        idx(l.call("index", vec![s("x")])),
        ("ValueError".into(), "'x' is not in list".into())
    );
    assert_eq!(
        idx(l.call("remove", vec![i(9)])),
        ("ValueError".into(), "list.remove(x): x not in list".into())
    );
    assert_eq!(
        idx(l.call("pop", vec![i(10)])),
        ("IndexError".into(), "pop index out of range".into())
    );
    let empty = m.create("list", vec![]).unwrap();
    assert_eq!(
        idx(empty.call("pop", vec![])),
        ("IndexError".into(), "pop from empty list".into())
    );
    assert_eq!(
        idx(l.call("__add__", vec![Value::Tuple(vec![])])),
        (
            "TypeError".into(),
            "can only concatenate list (not \"tuple\") to list".into()
        )
    );
    assert_eq!(
        idx(l.call("__mul__", vec![s("x")])),
        (
            "TypeError".into(),
            "'str' object cannot be interpreted as an integer".into()
        )
    );
    assert_eq!(
        idx(l.call("append", vec![])),
        (
            "TypeError".into(),
            "list.append() takes exactly one argument (0 given)".into()
        )
    );
    assert_eq!(idx(l.call("__mul__", vec![i(1 << 40)])).0, "MemoryError");
    // 2**70, as CPython's messages for the two integer converters word it.
    let big = Value::BigInt([vec![0u8; 8], vec![0x40]].concat());
    assert_eq!(
        idx(l.call("insert", vec![big.clone(), i(0)])),
        (
            "OverflowError".into(),
            "Python int too large to convert to C ssize_t".into()
        )
    );
    assert_eq!(
        idx(l.call("__mul__", vec![big.clone()])),
        (
            "OverflowError".into(),
            "cannot fit 'int' into an index-sized integer".into()
        )
    );
    assert_eq!(
        idx(l.call("__getitem__", vec![big])),
        (
            "IndexError".into(),
            "cannot fit 'int' into an index-sized integer".into()
        )
    );
}

#[test]
fn list_slices_follow_python_rules() {
    let srv = Builtins::start();
    let m = srv.connect();
    let l = m
        .create("list", vec![list((0..6).map(i).collect())])
        .unwrap();
    assert_eq!(
        l.call("__getitem__", vec![slice(Some(1), Some(3), None)])
            .unwrap(),
        list(vec![i(1), i(2)])
    );
    assert_eq!(
        l.call("__getitem__", vec![slice(None, None, Some(-2))])
            .unwrap(),
        list(vec![i(5), i(3), i(1)])
    );
    assert_eq!(
        l.call("__getitem__", vec![slice(Some(-2), Some(100), None)])
            .unwrap(),
        list(vec![i(4), i(5)])
    );
    // Step-1 assignment may change the length.
    l.call(
        "__setitem__",
        vec![
            slice(Some(1), Some(3), None),
            list(vec![s("a"), s("b"), s("c")]),
        ],
    )
    .unwrap();
    assert_eq!(
        l.call("#GETVALUE", vec![]).unwrap(),
        list(vec![i(0), s("a"), s("b"), s("c"), i(3), i(4), i(5)])
    );
    // Extended assignment must match in length.
    assert_eq!(
        kind_msg(l.call(
            "__setitem__",
            vec![slice(None, None, Some(2)), list(vec![i(1)])]
        )),
        (
            "ValueError".into(),
            "attempt to assign sequence of size 1 to extended slice of size 4".into()
        )
    );
    l.call(
        "__setitem__",
        vec![slice(None, None, Some(-3)), list(vec![i(50), i(30), i(0)])],
    )
    .unwrap();
    assert_eq!(
        l.call("#GETVALUE", vec![]).unwrap(),
        list(vec![i(0), s("a"), s("b"), i(30), i(3), i(4), i(50)])
    );
    l.call("__delitem__", vec![slice(None, None, Some(2))])
        .unwrap();
    assert_eq!(
        l.call("#GETVALUE", vec![]).unwrap(),
        list(vec![s("a"), i(30), i(4)])
    );
    assert_eq!(
        kind_msg(l.call("__getitem__", vec![slice(None, None, Some(0))])),
        ("ValueError".into(), "slice step cannot be zero".into())
    );
    assert_eq!(
        kind_msg(l.call("__setitem__", vec![slice(Some(0), Some(1), None), i(5)])),
        ("TypeError".into(), "can only assign an iterable".into())
    );
}

#[test]
fn a_list_of_dicts_keeps_them_alive_and_frees_them_when_removed() {
    let srv = Builtins::start();
    let m = srv.connect();
    let l = m.create("list", vec![]).unwrap();
    let d1 = new_dict(&m);
    let d2 = m.create("dict", vec![]).unwrap();
    l.call("append", vec![Value::Ref(d1.token().clone())])
        .unwrap();
    l.call("append", vec![list(vec![Value::Ref(d2.token().clone())])])
        .unwrap();
    drop(d1);
    drop(d2);
    assert_eq!(
        m.number_of_objects().unwrap(),
        3,
        "the list keeps both dicts alive"
    );
    // The stored reference still reaches the dict.
    let inner = match l.call("__getitem__", vec![i(0)]).unwrap() {
        Value::Ref(ref t) => m.proxy(t.clone()).unwrap(),
        other => panic!("expected a reference, got {other}"),
    };
    assert_eq!(inner.call("__getitem__", vec![s("x")]).unwrap(), i(2));
    drop(inner);
    l.call("__delitem__", vec![i(0)]).unwrap();
    // d1 was named in a reply (l[0]), so it lives out the reply's grace period.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while m.number_of_objects().unwrap() != 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.number_of_objects().unwrap(), 2, "removing it freed d1");
    l.call("__delitem__", vec![slice(None, None, None)])
        .unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 1, "d2 went with the slice");
    // Dropping a holder releases what it holds.
    let d3 = m.create("dict", vec![]).unwrap();
    let holder = m.create("dict", vec![]).unwrap();
    holder
        .call("__setitem__", vec![s("d"), Value::Ref(d3.token().clone())])
        .unwrap();
    drop(d3);
    assert_eq!(m.number_of_objects().unwrap(), 3);
    drop(holder);
    assert_eq!(m.number_of_objects().unwrap(), 1);
}

#[test]
fn appended_and_inserted_references_are_counted_without_a_recount() {
    // append/insert are declared adds-only: the server counts the references in
    // their arguments instead of recounting the list. The counts must come out
    // exactly as a recount would have them, including on failure.
    let srv = Builtins::start();
    let m = srv.connect();
    let l = m.create("list", vec![]).unwrap();
    let d = m.create("dict", vec![]).unwrap();
    let r = || Value::Ref(d.token().clone());
    l.call("append", vec![r()]).unwrap();
    l.call("append", vec![list(vec![r(), r()])]).unwrap();
    l.call("insert", vec![i(0), r()]).unwrap();
    // The server's own count (debug_info): four held by the list, one by `d`.
    let refcount = || {
        let info = m.debug_info().unwrap();
        let key = format!("{}:", d.id());
        let line = info.lines().find(|l| l.trim_start().starts_with(&key));
        let n = line.and_then(|l| l.split("refcount=").nth(1));
        n.expect("d in debug_info").trim().parse::<u64>().unwrap()
    };
    assert_eq!(refcount(), 5);
    // Fails before storing anything (the index is not an int): nothing counted.
    assert_eq!(kind_msg(l.call("insert", vec![r(), r()])).0, "TypeError");
    assert_eq!(refcount(), 5);
    l.call("append", vec![i(7)]).unwrap();
    assert_eq!(refcount(), 5);
    drop(d);
    assert_eq!(
        m.number_of_objects().unwrap(),
        2,
        "the list keeps the dict alive"
    );
    assert_eq!(l.call("__len__", vec![]).unwrap(), i(4));
    // Four references are held (one, two nested, one inserted): removing three
    // of them keeps the dict, removing the last frees it.
    l.call("pop", vec![i(0)]).unwrap();
    l.call("pop", vec![i(0)]).unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 2);
    l.call("__delitem__", vec![i(0)]).unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 1, "its last holder let go");
}

#[test]
fn namespace_attributes() {
    let srv = Builtins::start();
    let m = srv.connect();
    let ns = m
        .create_with(
            "Namespace",
            vec![],
            vec![("b".into(), i(2)), ("a".into(), i(1)), ("_c".into(), i(3))],
        )
        .unwrap();
    assert_eq!(ns.call("__getattribute__", vec![s("a")]).unwrap(), i(1));
    ns.call("__setattr__", vec![s("z"), list(vec![])]).unwrap();
    assert_eq!(
        ns.call("__repr__", vec![]).unwrap(),
        s("Namespace(a=1, b=2, z=[])")
    );
    ns.call("__delattr__", vec![s("z")]).unwrap();
    assert_eq!(
        kind_msg(ns.call("__getattribute__", vec![s("z")])),
        (
            "AttributeError".into(),
            "'Namespace' object has no attribute 'z'".into()
        )
    );
    assert_eq!(
        kind_msg(ns.call("__delattr__", vec![s("zz")])).0,
        "AttributeError"
    );
    assert_eq!(
        ns.call("__getattribute__", vec![s("__dict__")]).unwrap(),
        Value::Dict(vec![(s("b"), i(2)), (s("a"), i(1)), (s("_c"), i(3))])
    );
    assert_eq!(
        kind_msg(ns.call("__setattr__", vec![i(1), i(2)])),
        (
            "TypeError".into(),
            "attribute name must be string, not 'int'".into()
        )
    );
}

#[test]
fn value_get_set() {
    let srv = Builtins::start();
    let m = srv.connect();
    let v = m.create("Value", vec![s("i"), i(5)]).unwrap();
    assert_eq!(v.call("get", vec![]).unwrap(), i(5));
    v.call("set", vec![s("x")]).unwrap();
    assert_eq!(v.call("get", vec![]).unwrap(), s("x"));
    v.invoke("set", vec![], kw("value", i(7))).unwrap();
    assert_eq!(v.call("__repr__", vec![]).unwrap(), s("Value('i', 7)"));
    // A managers.Value instance, as CPython's server returns it.
    let got = v.call("#GETVALUE", vec![]).unwrap();
    let o = got.as_opaque().expect("an opaque instance");
    assert_eq!(o.global_name(), Some(("multiprocessing.managers", "Value")));
    assert_eq!(
        o.state(),
        Some(&Value::Dict(vec![
            (s("_typecode"), s("i")),
            (s("_value"), i(7))
        ]))
    );
    let locked = m
        .create_with(
            "Value",
            vec![s("d"), Value::Float(1.5)],
            kw("lock", Value::Bool(false)),
        )
        .unwrap();
    assert_eq!(locked.call("get", vec![]).unwrap(), Value::Float(1.5));
    assert!(m.create("Value", vec![s("i")]).is_err());
}

/// The typecode and items of an `array('i', ...)` value as the server sends
/// one (`_array_reconstructor` with this host's machine values).
fn int_array(v: &Value) -> (char, Vec<i32>) {
    let (tc, data) = v
        .as_opaque()
        .and_then(|o| o.array_data())
        .unwrap_or_else(|| panic!("not an array: {v:?}"));
    let mgr::proto::ArrayData::Machine(_, b) = data else {
        panic!("{data:?}")
    };
    let items = b
        .chunks(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (tc, items)
}

#[test]
fn array_items_are_checked_per_typecode() {
    let srv = Builtins::start();
    let m = srv.connect();
    let a = m
        .create("Array", vec![s("i"), list(vec![i(1), i(2), i(3)])])
        .unwrap();
    assert_eq!(a.call("__len__", vec![]).unwrap(), i(3));
    assert_eq!(a.call("__getitem__", vec![i(-1)]).unwrap(), i(3));
    // A slice is an array.array, as on CPython.
    assert_eq!(
        int_array(
            &a.call("__getitem__", vec![slice(Some(0), Some(2), None)])
                .unwrap()
        ),
        ('i', vec![1, 2])
    );
    a.call("__setitem__", vec![i(0), Value::Bool(true)])
        .unwrap();
    assert_eq!(
        kind_msg(a.call("__setitem__", vec![i(0), s("x")])),
        (
            "TypeError".into(),
            "'str' object cannot be interpreted as an integer".into()
        )
    );
    assert_eq!(
        kind_msg(a.call("__setitem__", vec![i(0), Value::Float(1.5)])),
        (
            "TypeError".into(),
            "'float' object cannot be interpreted as an integer".into()
        )
    );
    assert_eq!(
        kind_msg(a.call("__setitem__", vec![i(0), i(1 << 40)])),
        (
            "OverflowError".into(),
            "signed integer is greater than maximum".into()
        )
    );
    assert_eq!(
        kind_msg(a.call("__getitem__", vec![i(7)])),
        ("IndexError".into(), "array index out of range".into())
    );
    assert_eq!(
        kind_msg(a.call("__setitem__", vec![i(7), i(0)])),
        (
            "IndexError".into(),
            "array assignment index out of range".into()
        )
    );
    assert_eq!(
        kind_msg(a.call("__getitem__", vec![s("x")])),
        ("TypeError".into(), "array indices must be integers".into())
    );
    // Only an array goes into a slice: a list is CPython's TypeError.
    assert_eq!(
        kind_msg(a.call(
            "__setitem__",
            vec![slice(Some(0), Some(2), None), list(vec![i(7), i(8), i(9)])],
        )),
        (
            "TypeError".into(),
            "can only assign array (not \"list\") to array slice".into()
        )
    );
    let arr = |tc: &str, items: Vec<Value>| {
        Value::opaque_call("array", "array", vec![s(tc), list(items)])
    };
    assert_eq!(
        kind_msg(a.call(
            "__setitem__",
            vec![
                slice(Some(0), Some(2), None),
                arr("d", vec![Value::Float(1.0)])
            ],
        ))
        .0,
        "TypeError"
    );
    a.call(
        "__setitem__",
        vec![
            slice(Some(0), Some(2), None),
            arr("i", vec![i(7), i(8), i(9)]),
        ],
    )
    .unwrap();
    assert_eq!(
        a.call("__repr__", vec![]).unwrap(),
        s("array('i', [7, 8, 9, 3])")
    );
    assert_eq!(
        kind_msg(a.call(
            "__setitem__",
            vec![slice(None, None, Some(2)), arr("i", vec![i(1)])]
        )),
        (
            "ValueError".into(),
            "attempt to assign array of size 1 to extended slice of size 2".into()
        )
    );
    assert_eq!(
        int_array(&a.call("#GETVALUE", vec![]).unwrap()),
        ('i', vec![7, 8, 9, 3])
    );
    let b = m.create("Array", vec![s("B"), list(vec![i(255)])]).unwrap();
    assert_eq!(
        kind_msg(b.call("__setitem__", vec![i(0), i(-1)])),
        (
            "OverflowError".into(),
            "unsigned byte integer is less than minimum".into()
        )
    );
    let f = m
        .create("Array", vec![s("f"), list(vec![Value::Float(0.1)])])
        .unwrap();
    assert_eq!(
        f.call("__getitem__", vec![i(0)]).unwrap(),
        Value::Float(0.10000000149011612),
        "stored as a C float"
    );
    let u = m.create("Array", vec![s("u"), s("ab")]).unwrap();
    assert_eq!(u.call("__repr__", vec![]).unwrap(), s("array('u', 'ab')"));
    assert_eq!(
        kind_msg(u.call("__setitem__", vec![i(0), s("xy")])),
        (
            "TypeError".into(),
            "array item must be unicode character".into()
        )
    );
    let (_, msg) = kind_msg(m.create("Array", vec![s("z"), list(vec![])]));
    assert!(msg.contains("bad typecode"), "{msg}");
    let (kind, msg) = kind_msg(m.create("Array", vec![s("B"), list(vec![i(-1)])]));
    assert_eq!(kind, "OverflowError");
    assert!(
        msg.contains("unsigned byte integer is less than minimum"),
        "{msg}"
    );
}

#[test]
fn debug_info_shows_container_reprs() {
    let srv = Builtins::start();
    let m = srv.connect();
    let _d = new_dict(&m);
    let _l = m.create("list", vec![list(vec![i(1), s("two")])]).unwrap();
    let info = m.debug_info().unwrap();
    assert!(info.contains("{1: 'a', 'x': 2}"), "{info}");
    assert!(info.contains("[1, 'two']"), "{info}");
}

#[test]
fn a_large_dict_keeps_insertion_order_through_many_deletions() {
    let srv = Builtins::start();
    let m = srv.connect();
    let d = m.create("dict", vec![]).unwrap();
    let mut p = m.pipeline();
    for k in 0..3000 {
        p.call(&d, "__setitem__", vec![i(k), i(k * 10)]);
    }
    for k in (0..3000).filter(|k| k % 3 != 0) {
        p.call(&d, "__delitem__", vec![Value::Float(k as f64)]);
    }
    assert!(p.run().unwrap().iter().all(Result::is_ok));
    assert_eq!(d.call("__len__", vec![]).unwrap(), i(1000));
    let keys = d.call("keys", vec![]).unwrap();
    assert_eq!(keys, list((0..3000).step_by(3).map(i).collect()));
    assert_eq!(d.call("__getitem__", vec![i(2997)]).unwrap(), i(29970));
    d.call("__setitem__", vec![i(1), s("back")]).unwrap();
    assert_eq!(
        d.call("popitem", vec![]).unwrap(),
        Value::Tuple(vec![i(1), s("back")]),
        "a re-inserted key goes to the end"
    );
}

/// `k * (2**61 - 1)` as the minimal two's-complement bytes a big int carries:
/// every one of them hashes to 0 under CPython's numeric hash.
fn modulus_multiple(k: i128) -> Value {
    let n = k * ((1 << 61) - 1);
    match i64::try_from(n) {
        Ok(small) => i(small),
        Err(_) => {
            let b = n.to_le_bytes();
            let len = 16 - (n.leading_zeros() as usize - 1) / 8;
            Value::BigInt(b[..len].to_vec())
        }
    }
}

#[test]
fn a_dict_updated_with_colliding_int_keys_reads_back() {
    const N: i128 = 20_000;
    let srv = Builtins::start();
    let m = srv.connect();
    let d = m.create("dict", vec![]).unwrap();
    let items: Vec<(Value, Value)> = (1..=N)
        .map(|k| (modulus_multiple(k), i(-(k as i64))))
        .collect();
    d.call("update", vec![Value::Dict(items.clone())]).unwrap();
    assert_eq!(d.call("__len__", vec![]).unwrap(), i(N as i64));
    let keys = d.call("keys", vec![]).unwrap();
    assert_eq!(keys, list(items.iter().map(|(k, _)| k.clone()).collect()));
    for k in [1, N / 2, N] {
        assert_eq!(
            d.call("__getitem__", vec![modulus_multiple(k)]).unwrap(),
            i(-(k as i64))
        );
    }
    assert_eq!(
        d.call("__contains__", vec![modulus_multiple(N + 1)])
            .unwrap(),
        Value::Bool(false)
    );
    // Equal numbers of other types are still the same key.
    d.call("__setitem__", vec![Value::Bool(true), s("one")])
        .unwrap();
    assert_eq!(
        d.call("__getitem__", vec![Value::Float(1.0)]).unwrap(),
        s("one")
    );
    assert_eq!(d.call("__len__", vec![]).unwrap(), i(N as i64 + 1));
}

#[test]
fn a_proxy_argument_stands_for_its_objects_current_value() {
    let srv = Builtins::start();
    let m = srv.connect();
    let r = |p: &Proxy| Value::Ref(p.token().clone());
    let l = m.create("list", vec![list(vec![i(1)])]).unwrap();
    let l2 = m.create("list", vec![list(vec![i(2), i(3)])]).unwrap();
    l.call("extend", vec![r(&l2)]).unwrap();
    assert_eq!(
        l.call("__add__", vec![r(&l2)]).unwrap(),
        list(vec![i(1), i(2), i(3), i(2), i(3)])
    );
    l.call("__setitem__", vec![slice(Some(0), Some(1), None), r(&l2)])
        .unwrap();
    assert_eq!(
        l.call("__getitem__", vec![slice(None, None, None)])
            .unwrap(),
        list(vec![i(2), i(3), i(2), i(3)])
    );
    let d = new_dict(&m);
    let d2 = m
        .create("dict", vec![Value::Dict(vec![(s("x"), i(9))])])
        .unwrap();
    d.call("update", vec![r(&d2)]).unwrap();
    assert_eq!(d.call("__getitem__", vec![s("x")]).unwrap(), i(9));
    // Constructors, and a dict proxy iterated (its keys).
    let copy = m.create("dict", vec![r(&d2)]).unwrap();
    assert_eq!(
        copy.call("copy", vec![]).unwrap(),
        Value::Dict(vec![(s("x"), i(9))])
    );
    let keys = m.create("list", vec![r(&d2)]).unwrap();
    assert_eq!(keys.call("__len__", vec![]).unwrap(), i(1));
    let arr = m
        .create("Array", vec![s("i"), list(vec![i(7), i(8)])])
        .unwrap();
    let from_arr = m.create("list", vec![r(&arr)]).unwrap();
    assert_eq!(from_arr.call("__len__", vec![]).unwrap(), i(2));
    // A host type, a sync object, a Value: a TypeError naming the proxy type,
    // and nothing changes.
    let counter = m.create("Counter", vec![]).unwrap();
    let event = m.create("Event", vec![]).unwrap();
    let value = m.create("Value", vec![s("i"), i(1)]).unwrap();
    for (p, name) in [
        (&counter, "AutoProxy[Counter]"),
        (&event, "EventProxy"),
        (&value, "ValueProxy"),
    ] {
        let (kind, msg) = kind_msg(l.call("extend", vec![r(p)]));
        assert_eq!(kind, "TypeError");
        assert_eq!(msg, format!("'{name}' object is not iterable"));
        assert_eq!(kind_msg(d.call("update", vec![r(p)])).0, "TypeError");
        let (kind, msg) = kind_msg(l.call("__add__", vec![r(p)]));
        assert_eq!(kind, "TypeError");
        assert!(
            msg.contains(&format!("(not \"{}\")", name.split('[').next().unwrap())),
            "{msg}"
        );
    }
    assert_eq!(l.call("__len__", vec![]).unwrap(), i(4));
    assert_eq!(d.call("__len__", vec![]).unwrap(), i(2));
    // Its own proxy: a list doubles, a dict stays as it is.
    l.call("extend", vec![r(&l)]).unwrap();
    assert_eq!(l.call("__len__", vec![]).unwrap(), i(8));
    d.call("update", vec![r(&d)]).unwrap();
    assert_eq!(d.call("__len__", vec![]).unwrap(), i(2));
}
