//! Published (named) objects over real sockets: `Server::expose` and its
//! variants, `create` of a name returning the one object every time, refcounts
//! that never take it below the server's own reference, and the refusals.

mod common;

use common::{Counter, TestServer, KEY};
use mgr::server::{CallArgs, ObjectSpec};
use mgr::{Error, ObjectId, Server, ServerConfig, Value};

fn int(i: i64) -> Value {
    Value::Int(i)
}

fn config_error(r: mgr::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::Config(m)) => m,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn every_create_of_a_name_returns_the_same_object_held_by_the_server() {
    let s = TestServer::start_registering(
        |_| {},
        |server| {
            let id = server
                .expose("score", "Counter", CallArgs::positional(vec![int(5)]))
                .unwrap();
            server
                .expose_object("host_made", "Counter", Box::new(Counter(7)))
                .unwrap();
            server.expose_id("score_too", id).unwrap();
            let q: ObjectSpec = "jobs=Queue:1".parse().unwrap();
            q.expose(server).unwrap();
            assert_eq!(server.exposed("score"), Some(id));
        },
    );
    let m = s.connect();
    assert_eq!(m.number_of_objects().unwrap(), 3);
    let a = m.create("score", vec![]).unwrap();
    let b = s.connect().create("score", vec![]).unwrap();
    let c = m.create("score_too", vec![]).unwrap();
    assert_eq!(a.token().id, b.token().id);
    assert_eq!(a.token().id, c.token().id);
    assert_eq!(a.token().typeid, "score");
    assert_eq!(a.exposed(), ["incr", "get", "fail"], "its type's methods");
    assert_eq!(a.call("incr", vec![]).unwrap(), int(6));
    assert_eq!(b.call("get", vec![]).unwrap(), int(6));
    let h = m.create("host_made", vec![]).unwrap();
    assert_eq!(h.call("get", vec![]).unwrap(), int(7));
    let jobs = m.create("jobs", vec![]).unwrap();
    jobs.call("put", vec![int(1)]).unwrap();
    assert_eq!(jobs.call("full", vec![]).unwrap(), Value::Bool(true));
    // Every client reference goes; the server's own keeps the objects.
    drop((a, b, c, h, jobs));
    let m2 = s.connect();
    assert_eq!(m2.number_of_objects().unwrap(), 3);
    assert_eq!(
        m2.create("score", vec![])
            .unwrap()
            .call("get", vec![])
            .unwrap(),
        int(6)
    );
    // A client cannot drop the server's own reference: an extra decref is
    // refused and the object stays.
    let id = Value::Int(m2.create("score", vec![]).unwrap().token().id.0 as i64);
    let e = m2.public("decref", vec![id.clone()]).unwrap_err();
    assert!(e.to_string().contains("published object"), "{e}");
    assert!(m2.public("decref", vec![id]).is_err(), "and again");
    assert_eq!(m2.number_of_objects().unwrap(), 3);
    // Arguments are refused (the object is already built); the connection and
    // the object are fine.
    let e = m2.create("score", vec![int(1)]).unwrap_err();
    assert!(e.to_string().contains("takes no arguments"), "{e}");
    assert_eq!(
        m2.create("score", vec![])
            .unwrap()
            .call("get", vec![])
            .unwrap(),
        int(6)
    );
}

#[test]
fn names_are_refused_when_taken_and_unexpose_releases_the_servers_reference() {
    let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY)).unwrap();
    server.register_builtins();
    let id = server.expose("state", "dict", CallArgs::default()).unwrap();
    assert_eq!(server.number_of_objects(), 1);
    assert!(config_error(server.expose("state", "list", CallArgs::default())).contains("already"));
    assert!(
        config_error(server.expose("dict", "dict", CallArgs::default()))
            .contains("registered typeid")
    );
    assert!(config_error(server.expose("", "dict", CallArgs::default())).contains("empty"));
    // (Queue takes any maxsize, as queue.Queue; Barrier's parties is an int.)
    match server.expose("b", "Barrier", CallArgs::positional(vec![Value::from("x")])) {
        Err(Error::Remote(e)) => assert_eq!(e.kind, "TypeError"),
        other => panic!("expected the constructor's error, got {other:?}"),
    }
    match server.expose("nope", "NoSuchType", CallArgs::default()) {
        Err(Error::Remote(e)) => assert!(e.message.contains("unknown typeid")),
        other => panic!("expected an unknown typeid, got {other:?}"),
    }
    assert!(config_error(server.expose_id("ghost", ObjectId(12345))).contains("no shared object"));
    assert!(
        config_error(server.expose_object("o", "NoSuchType", Box::new(Counter(0))))
            .contains("unknown typeid")
    );
    assert_eq!(server.number_of_objects(), 1, "refusals created nothing");
    // Two names for one object: each holds a reference.
    server.expose_id("alias", id).unwrap();
    assert!(server.unexpose("state"));
    assert!(!server.unexpose("state"));
    assert_eq!(server.exposed("state"), None);
    assert_eq!(server.number_of_objects(), 1, "the alias still holds it");
    assert!(server.unexpose("alias"));
    assert_eq!(
        server.number_of_objects(),
        0,
        "no reference left: destroyed"
    );
}
