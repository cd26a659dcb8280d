//! The pickle path over real sockets: CPython 3.11's own `multiprocessing.managers`
//! (the scripts in tests/python/pickle/) and raw pickles from Rust, against a
//! libmgr test server.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestServer, KEY};
use mgr::client::Connection;
use mgr::proto::codec::pickle;
use mgr::{Address, ObjectId, Reply, Request, ServerConfig, Value};

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/pickle")
}

/// Runs one interop script against `address`; fails the test with its output
/// unless it exits with status 0.
fn run_script(name: &str, address: &Address, env: &[(&str, &str)]) -> String {
    let out = Command::new("python3")
        .arg(script_dir().join(name))
        .env("MGR_ADDRESS", address.to_string())
        .env("MGR_AUTHKEY", std::str::from_utf8(KEY).unwrap())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mgr-pickle-{tag}-{}", std::process::id()))
}

#[test]
fn cpython_manager_creates_calls_and_releases_over_tcp() {
    let s = TestServer::start();
    let out = run_script("basic.py", &s.address, &[]);
    assert!(out.contains("basic: ok"), "{out}");
    // The Python proxies released everything they held.
    assert_eq!(s.connect().number_of_objects().unwrap(), 0);
}

#[test]
fn cpython_manager_over_a_unix_socket() {
    let path = temp_path("sock");
    let _ = std::fs::remove_file(&path);
    let s = TestServer::start_config(ServerConfig::new(Address::Unix(path.clone()), KEY));
    let out = run_script("basic.py", &s.address, &[]);
    assert!(out.contains("basic: ok"), "{out}");
}

#[test]
fn cpython_dict_update_with_colliding_int_keys_reads_back() {
    // 20,000 keys that all share CPython's numeric hash, in one 280 kB update:
    // the server hashes them with the dict's seed, so they cost what any keys
    // cost (the count is shown by pykey's `colliding_int_floods_cost_what_ordinary_keys_cost`).
    let s = TestServer::start();
    let out = run_script("hash_flood.py", &s.address, &[]);
    assert!(out.contains("hash_flood: ok"), "{out}");
    assert_eq!(s.connect().number_of_objects().unwrap(), 0);
}

#[test]
fn cpython_blocking_call_completed_by_another_process() {
    let s = TestServer::start();
    let out = run_script("blocking.py", &s.address, &[]);
    assert!(out.contains("blocking: ok"), "{out}");
}

#[test]
fn cpython_hostile_pickles_run_nothing_and_others_keep_working() {
    let s = TestServer::start();
    let canary = temp_path("canary");
    let _ = std::fs::remove_file(&canary);
    let out = run_script(
        "hostile.py",
        &s.address,
        &[("MGR_CANARY", canary.to_str().unwrap())],
    );
    assert!(out.contains("hostile: ok"), "{out}");
    assert!(!canary.exists(), "a hostile pickle created {canary:?}");
    // The native path is unaffected too.
    let m = s.connect();
    let c = m.create("Counter", vec![Value::Int(1)]).unwrap();
    assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(2));
}

#[test]
fn cpython_shutdown_request_stops_the_server() {
    let s = TestServer::start();
    let out = run_script("shutdown.py", &s.address, &[]);
    assert!(out.contains("shutdown: ok"), "{out}");
    assert!(mgr::Manager::connect_to(&s.address, KEY).is_err());
}

// ---- raw pickles from Rust ------------------------------------------------------

/// Sends one pickled request and decodes the pickled reply.
fn pickle_call(conn: &mut Connection, address: &Address, req: &Request) -> Reply {
    let mut payload = Vec::new();
    let address = address.to_python();
    pickle::encode_request(req, &pickle::Origin::new(&address), &mut payload);
    conn.queue_raw(&payload);
    conn.write_out().unwrap();
    let reply = conn.read_frame(1 << 20).unwrap();
    pickle::decode_reply(&reply).unwrap()
}

#[test]
fn pickle_connections_use_hex_ids_and_are_one_shot_unless_accepted() {
    let s = TestServer::start();
    let mut conn = Connection::connect(&s.address, KEY).unwrap();
    let create = Request::public("create", vec![Value::Str("Holder".into()), Value::Int(7)]);
    let (id, exposed) = match pickle_call(&mut conn, &s.address, &create) {
        Reply::Return(Value::Tuple(ref v)) => match &v[..] {
            [Value::Str(id), Value::Tuple(exposed)] => (id.clone(), exposed.clone()),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(
        exposed,
        vec![Value::Str("set".into()), Value::Str("get".into())]
    );
    let id = ObjectId::from_hex(&id).expect("a hex id");
    // One public request, then the server closes the connection.
    assert!(
        conn.read_frame(1 << 20).is_err(),
        "one-shot connection stayed open"
    );

    // accept_connection makes it persistent; method calls use the hex id.
    let mut conn = Connection::connect(&s.address, KEY).unwrap();
    let accept = Request::public("accept_connection", vec![Value::Str("t".into())]);
    assert_eq!(
        pickle_call(&mut conn, &s.address, &accept),
        Reply::Return(Value::None)
    );
    let get = Request::call(id, "get", vec![]);
    assert_eq!(
        pickle_call(&mut conn, &s.address, &get),
        Reply::Return(Value::Int(7))
    );
    // A counter from Maker.counter comes back as #PROXY with a hex token.
    let mut one_shot = Connection::connect(&s.address, KEY).unwrap();
    let maker = match pickle_call(
        &mut one_shot,
        &s.address,
        &Request::public("create", vec![Value::Str("Maker".into())]),
    ) {
        Reply::Return(Value::Tuple(ref v)) => ObjectId::from_hex(v[0].as_str().unwrap()).unwrap(),
        other => panic!("{other:?}"),
    };
    let counter = match pickle_call(
        &mut conn,
        &s.address,
        &Request::call(maker, "counter", vec![Value::Int(3)]),
    ) {
        Reply::Proxy { exposed, token } => {
            assert_eq!(token.typeid, "Counter");
            assert!(exposed.contains(&"incr".to_owned()), "{exposed:?}");
            token
        }
        other => panic!("{other:?}"),
    };
    // Stored in the Holder and read back, it is a reference (a rebuilt proxy).
    let set = Request::call(id, "set", vec![Value::Ref(counter.clone())]);
    assert_eq!(
        pickle_call(&mut conn, &s.address, &set),
        Reply::Return(Value::None)
    );
    assert_eq!(
        pickle_call(&mut conn, &s.address, &get),
        Reply::Return(Value::Ref(counter))
    );
    // Errors carry their kind.
    match pickle_call(&mut conn, &s.address, &Request::call(maker, "nope", vec![])) {
        Reply::Traceback(t) => assert!(t.contains("AttributeError"), "{t}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_pickle_gets_a_clear_error_and_the_connection_stays_usable() {
    let s = TestServer::start();
    let native = s.connect();
    let before = native.number_of_objects().unwrap();
    let hostile = b"\x80\x04cos\nsystem\n\x8c\x04true\x85R.";
    let refused = |conn: &mut Connection| {
        conn.queue_raw(hostile);
        conn.write_out().unwrap();
        let reply = pickle::decode_reply(&conn.read_frame(1 << 20).unwrap()).unwrap();
        match reply {
            Reply::Traceback(t) => {
                assert!(t.contains("'os.system' is not allowed"), "{t}");
                assert!(t.starts_with("Traceback (most recent call last):"), "{t}");
                assert!(t.ends_with('\n'), "{t:?}");
            }
            other => panic!("{other:?}"),
        }
    };
    // A one-shot connection (no accept_connection) is closed after its one
    // answer, as CPython's server does.
    let mut conn = Connection::connect(&s.address, KEY).unwrap();
    refused(&mut conn);
    assert!(
        conn.read_frame(1 << 20).is_err(),
        "one-shot connection left open"
    );
    // A persistent one answers the refusal and keeps serving.
    let mut conn = Connection::connect(&s.address, KEY).unwrap();
    let accept = Request::public("accept_connection", vec![Value::Str("t".into())]);
    assert_eq!(
        pickle_call(&mut conn, &s.address, &accept),
        Reply::Return(Value::None)
    );
    refused(&mut conn);
    refused(&mut conn);
    let count = Request::public("number_of_objects", vec![]);
    assert_eq!(
        pickle_call(&mut conn, &s.address, &count),
        Reply::Return(Value::Int(before as i64))
    );
    // Nothing ran and other connections are unaffected.
    assert_eq!(native.number_of_objects().unwrap(), before);
    let c = native.create("Counter", vec![]).unwrap();
    assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(1));
}

#[test]
fn rust_pickle_codec_talks_to_a_cpython_manager_server() {
    let server = common::CpythonServer::start(KEY);
    let address: Address = server.address.parse().expect("serve.py prints its address");

    // create('dict') over a one-shot connection: CPython answers (ident, exposed).
    let mut conn = Connection::connect(&address, KEY).unwrap();
    let create = Request::public("create", vec![Value::Str("dict".into())]);
    let id = match pickle_call(&mut conn, &address, &create) {
        Reply::Return(Value::Tuple(ref v)) => {
            assert!(
                matches!(&v[1], Value::Tuple(m) if m.contains(&Value::Str("__getitem__".into()))),
                "{v:?}"
            );
            ObjectId::from_hex(v[0].as_str().unwrap()).expect("a hex ident")
        }
        other => panic!("{other:?}"),
    };

    // Method calls over a persistent connection.
    let mut conn = Connection::connect(&address, KEY).unwrap();
    let accept = Request::public("accept_connection", vec![Value::Str("rust".into())]);
    assert_eq!(
        pickle_call(&mut conn, &address, &accept),
        Reply::Return(Value::None)
    );
    let value = Value::List(vec![
        Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]),
        Value::Set(vec![Value::Int(1)]),
        Value::Bytes(b"\x00b".to_vec()),
        Value::Float(0.5),
    ]);
    let set = Request::call(
        id,
        "__setitem__",
        vec![Value::Str("k".into()), value.clone()],
    );
    assert_eq!(
        pickle_call(&mut conn, &address, &set),
        Reply::Return(Value::None)
    );
    let get = |key: &str| Request::call(id, "__getitem__", vec![Value::Str(key.into())]);
    assert_eq!(
        pickle_call(&mut conn, &address, &get("k")),
        Reply::Return(value)
    );
    match pickle_call(&mut conn, &address, &get("missing")) {
        Reply::Error(e) => {
            assert_eq!(e.kind, "KeyError");
            assert_eq!(e.args, vec![Value::Str("missing".into())]);
        }
        other => panic!("{other:?}"),
    }
    // dict.keys() comes back as a list (managers reduce views to lists).
    match pickle_call(&mut conn, &address, &Request::call(id, "keys", vec![])) {
        Reply::Return(Value::List(ref keys)) => assert_eq!(*keys, vec![Value::Str("k".into())]),
        other => panic!("{other:?}"),
    }
    // __iter__ is in method_to_typeid: a #PROXY with a CPython token.
    match pickle_call(&mut conn, &address, &Request::call(id, "__iter__", vec![])) {
        Reply::Proxy { exposed, token } => {
            assert_eq!(token.typeid, "Iterator");
            assert!(exposed.contains(&"__next__".to_owned()), "{exposed:?}");
        }
        other => panic!("{other:?}"),
    }
    drop(conn);

    for req in [
        Request::public("decref", vec![Value::Str(id.to_string())]),
        Request::public("shutdown", vec![]),
    ] {
        let mut conn = Connection::connect(&address, KEY).unwrap();
        assert_eq!(
            pickle_call(&mut conn, &address, &req),
            Reply::Return(Value::None),
            "{req:?}"
        );
    }
    let status = server.wait();
    assert!(status.success(), "CPython server exited with {status}");
}

#[test]
fn oversized_pickle_frames_are_answered_in_pickle() {
    let s = TestServer::start_with(|c| c.max_frame = 1024);
    let mut conn = Connection::connect(&s.address, KEY).unwrap();
    let big = Request::public("dummy", vec![Value::Bytes(vec![0; 4096])]);
    let mut payload = Vec::new();
    pickle::encode_request(&big, &pickle::Origin::new(&Value::None), &mut payload);
    conn.queue_raw(&payload);
    conn.write_out().unwrap();
    // Read whole and dropped; the answer names the limit and how to raise it.
    match pickle::decode_reply(&conn.read_frame(1 << 20).unwrap()).unwrap() {
        Reply::Traceback(t) => {
            assert!(t.contains("limit of 1024 bytes"), "{t}");
            assert!(t.contains("--max-frame"), "{t}");
        }
        other => panic!("{other:?}"),
    }
    // The connection keeps serving.
    let mut payload = Vec::new();
    let dummy = Request::public("dummy", vec![]);
    pickle::encode_request(&dummy, &pickle::Origin::new(&Value::None), &mut payload);
    conn.queue_raw(&payload);
    conn.write_out().unwrap();
    let reply = pickle::decode_reply(&conn.read_frame(1 << 20).unwrap()).unwrap();
    assert_eq!(reply, Reply::Return(Value::None));
    // Sixteen times the limit and more: answered at once and closed.
    let mut conn = Connection::connect(&s.address, KEY).unwrap();
    conn.queue_bytes(&(16 * 1024 + 1i32).to_be_bytes());
    conn.queue_bytes(&[0x80]);
    conn.write_out().unwrap();
    match pickle::decode_reply(&conn.read_frame(1 << 20).unwrap()).unwrap() {
        Reply::Traceback(t) => assert!(t.contains("bad frame"), "{t}"),
        other => panic!("{other:?}"),
    }
    assert!(conn.read_frame(1 << 20).is_err(), "connection left open");
}

#[test]
fn a_native_client_round_trips_opaque_values_for_cpython() {
    let s = TestServer::start();
    let m = s.connect();
    let d = m.create("dict", vec![]).unwrap();
    let id = d.id().to_string();
    let env = [("MGR_DICT", id.as_str()), ("MGR_PHASE", "put")];
    let out = run_script("opaque.py", &s.address, &env);
    assert!(out.contains("opaque put: ok"), "{out}");
    // Read over the native codec: every value is opaque, named by its class.
    let got = d.call("__getitem__", vec!["in".into()]).unwrap();
    let Value::Dict(entries) = &got else {
        panic!("{got:?}")
    };
    let names: Vec<_> = entries
        .iter()
        .map(|(_, v)| v.as_opaque().and_then(|o| o.global_name()).unwrap().1)
        .collect();
    assert_eq!(
        names,
        [
            "datetime",
            "Decimal",
            "Fraction",
            "complex",
            "UUID",
            "PurePosixPath",
            "Counter",
            "OrderedDict",
            "defaultdict",
            "deque",
            "decode"
        ]
    );
    assert_eq!(entries[1].1.to_string(), "Decimal('-1.50')");
    // Stored back as the native client holds them, a copy and an original.
    d.call("__setitem__", vec!["out".into(), got.clone()])
        .unwrap();
    let exc = d.call("__getitem__", vec!["exc".into()]).unwrap();
    assert_eq!(
        exc.as_opaque().unwrap().global_name(),
        Some(("builtins", "KeyError"))
    );
    d.call("__setitem__", vec!["exc_out".into(), exc]).unwrap();
    let made = Value::opaque_call("decimal", "Decimal", vec!["2.5".into()]);
    d.call("__setitem__", vec!["made".into(), made]).unwrap();
    // A native client cannot slip in what the policy refuses.
    let evil = Value::opaque_call("os", "system", vec!["true".into()]);
    let e = d
        .call("__setitem__", vec!["evil".into(), evil])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'os.system' is not allowed"), "{e}");
    let env = [("MGR_DICT", id.as_str()), ("MGR_PHASE", "check")];
    let out = run_script("opaque.py", &s.address, &env);
    assert!(out.contains("opaque check: ok"), "{out}");
}
