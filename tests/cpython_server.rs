//! The Rust client against CPython's own manager server (a stock `SyncManager`
//! started by `tests/python/pickle/serve.py`): pickle, one-shot public requests,
//! method calls over an accepted connection, `#PROXY` results, errors.

mod common;

use mgr::client::Returned;
use mgr::{Error, Manager, Value};

const KEY: &[u8] = b"cpython-server-key";

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

#[test]
fn rust_client_uses_a_cpython_sync_manager() {
    let server = common::CpythonServer::start(KEY);
    let m = Manager::connect_cpython(&server.address, KEY).unwrap();
    let base = m.number_of_objects().unwrap();

    // dict: values of every kind round-trip through CPython's pickle.
    let d = m.create("dict", vec![]).unwrap();
    assert!(d.exposed().iter().any(|x| x == "__getitem__"));
    let value = Value::List(vec![
        Value::None,
        Value::Bool(true),
        Value::Int(-7),
        Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]),
        Value::Float(2.5),
        s("héllo"),
        Value::Bytes(vec![0, 255]),
        Value::Tuple(vec![Value::Int(1)]),
        Value::Dict(vec![(s("k"), Value::Set(vec![Value::Int(3)]))]),
    ]);
    d.call("__setitem__", vec![s("v"), value.clone()]).unwrap();
    assert_eq!(d.call("__getitem__", vec![s("v")]).unwrap(), value);
    assert_eq!(d.call("__len__", vec![]).unwrap(), Value::Int(1));
    match d.call("__getitem__", vec![s("missing")]) {
        Err(Error::Remote(e)) => {
            assert_eq!(e.kind, "KeyError");
            assert_eq!(e.args, vec![s("missing")]);
        }
        other => panic!("expected KeyError, got {other:?}"),
    }
    // method_to_typeid: iterating a dict returns an Iterator proxy.
    let it = match d.invoke("__iter__", vec![], vec![]).unwrap() {
        Returned::Proxy(p) => p,
        other => panic!("expected a proxy, got {other:?}"),
    };
    assert_eq!(it.call("__next__", vec![]).unwrap(), s("v"));
    match it.call("__next__", vec![]) {
        Err(Error::Remote(e)) => assert_eq!(e.kind, "StopIteration"),
        other => panic!("expected StopIteration, got {other:?}"),
    }

    // Queue with kwargs, and queue.Empty.
    let q = m.create("Queue", vec![Value::Int(2)]).unwrap();
    q.invoke(
        "put",
        vec![s("job")],
        vec![("block".into(), Value::Bool(false))],
    )
    .unwrap();
    assert_eq!(q.call("get", vec![]).unwrap(), s("job"));
    match q.invoke("get", vec![], vec![("timeout".into(), Value::Float(0.01))]) {
        Err(Error::Remote(e)) => assert_eq!(e.kind, "queue.Empty"),
        other => panic!("expected queue.Empty, got {other:?}"),
    }

    // A proxy stored inside a list comes back as a token we can adopt.
    let inner = m.create("dict", vec![]).unwrap();
    inner
        .call("__setitem__", vec![s("a"), Value::Int(1)])
        .unwrap();
    let l = m.create("list", vec![]).unwrap();
    l.call("append", vec![Value::Ref(inner.token().clone())])
        .unwrap();
    let token = match l.call("__getitem__", vec![Value::Int(0)]).unwrap() {
        Value::Ref(ref t) => t.clone(),
        other => panic!("expected a proxy, got {other}"),
    };
    assert_eq!(token, *inner.token());
    let again = m.proxy(token).unwrap();
    assert_eq!(
        again.call("__getitem__", vec![s("a")]).unwrap(),
        Value::Int(1)
    );

    drop((d, it, q, inner, l, again));
    assert_eq!(
        m.number_of_objects().unwrap(),
        base,
        "every reference released"
    );
    m.shutdown().unwrap();
}

#[test]
fn wrong_key_and_unknown_typeid_against_cpython() {
    let server = common::CpythonServer::start(KEY);
    assert!(matches!(
        Manager::connect_cpython(&server.address, b"wrong"),
        Err(Error::Auth(_))
    ));
    let m = Manager::connect_cpython(&server.address, KEY).unwrap();
    let err = m.create("NoSuchType", vec![]).unwrap_err();
    assert!(err.to_string().contains("NoSuchType"), "{err}");
}
