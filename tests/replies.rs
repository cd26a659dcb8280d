//! Replies go to the requests they answer, whatever the caller does: pipelines
//! dropped unrun, ordinary calls made while a started call is outstanding,
//! tickets dropped or finished on the wrong connection, host types that try to
//! answer a call twice. Each case is checked on the same connection afterwards:
//! it stays in step.

mod common;

use common::TestServer;
use mgr::server::{CallArgs, CallResult, Context, ReplyHandle, SharedObject, TypeSpec};
use mgr::{Address, Error, Manager, Value};

fn kind(e: Error) -> (String, String) {
    match e {
        Error::Remote(r) => (r.kind, r.message),
        other => panic!("expected a remote error, got {other}"),
    }
}

/// The connection is in step: a call gets its own reply.
fn in_step(m: &Manager) {
    let c = m.create("Counter", vec![Value::Int(100)]).unwrap();
    assert_eq!(
        c.call("incr", vec![Value::Int(7)]).unwrap(),
        Value::Int(107)
    );
    assert_eq!(c.call("get", vec![]).unwrap(), Value::Int(107));
    assert_eq!(m.connection().in_flight(), 0);
    assert_eq!(m.connection().kept(), 0);
}

#[test]
fn a_pipeline_dropped_unrun_sends_nothing() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![]).unwrap();
    {
        let mut p = m.pipeline();
        p.call(&c, "incr", vec![Value::Int(10)])
            .call(&c, "incr", vec![Value::Int(20)]);
        assert_eq!(p.len(), 2);
    }
    assert_eq!(c.call("get", vec![]).unwrap(), Value::Int(0), "never sent");
    assert_eq!(c.call("incr", vec![]).unwrap(), Value::Int(1));
    // A pipeline that runs still gets its replies in order.
    let mut p = m.pipeline();
    p.call(&c, "incr", vec![Value::Int(1)])
        .call(&c, "get", vec![]);
    let r: Vec<Value> = p
        .run()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().into_value().unwrap())
        .collect();
    assert_eq!(r, vec![Value::Int(2), Value::Int(2)]);
    in_step(&m);
}

#[test]
fn an_ordinary_call_made_while_a_started_call_is_outstanding_gets_its_own_reply() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![]).unwrap();
    let started = c.start_call("incr", vec![Value::Int(5)]).unwrap();
    assert_eq!(c.call("incr", vec![Value::Int(1)]).unwrap(), Value::Int(6));
    assert_eq!(m.connection().kept(), 1, "the started call's reply is kept");
    assert_eq!(
        started.finish().unwrap().into_value().unwrap(),
        Value::Int(5)
    );
    // Two outstanding, finished in the other order, with calls between.
    let a = c.start_call("incr", vec![Value::Int(10)]).unwrap();
    let b = c.start_call("incr", vec![Value::Int(100)]).unwrap();
    assert_eq!(c.call("get", vec![]).unwrap(), Value::Int(116));
    assert_eq!(
        m.finish_call(b).unwrap().into_value().unwrap(),
        Value::Int(116)
    );
    assert_eq!(a.finish().unwrap().into_value().unwrap(), Value::Int(16));
    in_step(&m);
}

#[test]
fn a_dropped_ticket_gives_its_reply_up() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![]).unwrap();
    drop(c.start_call("incr", vec![]).unwrap());
    assert_eq!(
        c.call("get", vec![]).unwrap(),
        Value::Int(1),
        "the call ran"
    );
    // Dropped after an ordinary call read past it (and kept its reply).
    let t = c.start_call("incr", vec![]).unwrap();
    assert_eq!(c.call("get", vec![]).unwrap(), Value::Int(2));
    assert_eq!(m.connection().kept(), 1);
    drop(t);
    assert_eq!(
        m.connection().kept(),
        0,
        "the kept reply went with the ticket"
    );
    in_step(&m);
}

#[test]
fn nothing_outstanding_is_an_error_not_a_wait() {
    let s = TestServer::start();
    let m = s.connect();
    let c = m.create("Counter", vec![]).unwrap();
    let e = m.connection().recv().unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ref msg) if msg.contains("no reply is expected")),
        "{e}"
    );
    // A ticket finished on another connection is refused (and its reply kept).
    let other = s.connect();
    let t = c.start_call("incr", vec![]).unwrap();
    let e = other.finish_call(t).unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ref msg) if msg.contains("another connection")),
        "{e}"
    );
    in_step(&other);
    in_step(&m);
}

#[test]
fn a_host_type_cannot_answer_a_call_twice() {
    let s = TestServer::start();
    let m = s.connect();
    let a = m.create("Answers", vec![]).unwrap();
    // Answered through its handle, then by returning: the return is the answer.
    assert_eq!(a.call("reply_then_return", vec![]).unwrap(), Value::Int(2));
    in_step(&m);
    // Answered through its handle, then deferred: that answer is the answer.
    assert_eq!(a.call("reply_then_defer", vec![]).unwrap(), Value::Int(3));
    in_step(&m);
    // Deferred and kept: answered later, from another connection's call.
    let waiting = a.start_call("keep", vec![]).unwrap();
    s.await_blocked(1);
    let other = s.connect();
    let a2 = other.proxy(a.token().clone()).unwrap();
    assert_eq!(
        a2.call("answer_all", vec![Value::Int(40)]).unwrap(),
        Value::Int(1),
        "the kept handle's answer is accepted"
    );
    assert_eq!(
        waiting.finish().unwrap().into_value().unwrap(),
        Value::Int(40)
    );
    s.await_blocked(0);
    in_step(&m);
    in_step(&other);
}

#[test]
fn a_dropped_reply_handle_answers_runtime_error() {
    let s = TestServer::start();
    let m = s.connect();
    let a = m.create("Answers", vec![]).unwrap();
    let (k, msg) = kind(a.call("drop_unanswered", vec![]).unwrap_err());
    assert_eq!(k, "RuntimeError");
    assert!(msg.contains("dropped unanswered"), "{msg}");
    in_step(&m);
    // Dropped on another thread: the same.
    let (k, msg) = kind(a.call("from_thread", vec![]).unwrap_err());
    assert_eq!(k, "RuntimeError");
    assert!(msg.contains("dropped unanswered"), "{msg}");
    in_step(&m);
    s.await_blocked(0);
}

#[test]
fn a_reply_handle_is_answered_from_another_thread() {
    let s = TestServer::start();
    let m = s.connect();
    let a = m.create("Answers", vec![]).unwrap();
    for i in 0..20 {
        assert_eq!(
            a.call("from_thread", vec![Value::Int(i)]).unwrap(),
            Value::Int(i)
        );
    }
    in_step(&m);
}

#[test]
fn deferring_twice_in_one_call_is_refused_and_breaks_the_object() {
    let s = TestServer::start();
    let m = s.connect();
    let a = m.create("Answers", vec![]).unwrap();
    let (k, msg) = kind(a.call("defer_twice", vec![]).unwrap_err());
    assert_eq!(k, "RuntimeError");
    assert!(msg.contains("defer called twice"), "{msg}");
    // The object is broken now (a panic); the connection is fine.
    let (k, msg) = kind(a.call("keep", vec![]).unwrap_err());
    assert_eq!(k, "RuntimeError");
    assert!(msg.contains("broken"), "{msg}");
    in_step(&m);
    s.await_blocked(0);
}

#[test]
fn traceback_errors_carry_their_python_kind() {
    let s = TestServer::start();
    let m = s.connect();
    let e = m.create("NoSuchType", vec![]).unwrap_err();
    assert_eq!(e.remote_kind(), Some("KeyError"), "{e}");
    assert!(e.traceback().unwrap().contains("NoSuchType"), "{e:?}");
    let c = m.create("Counter", vec![]).unwrap();
    let e = c.call("no_such_method", vec![]).unwrap_err();
    let (k, msg) = kind(e);
    assert_eq!(k, "AttributeError");
    assert!(msg.contains("no_such_method"), "{msg}");
    let e = m.public("no_such_public", vec![]).unwrap_err();
    assert!(e.remote_kind().is_some_and(|k| k != "RemoteError"), "{e:?}");
    in_step(&m);
}

#[test]
fn a_host_name_is_resolved_at_connect_time_and_named_when_it_fails() {
    let address: Address = "no-such-host.invalid:7"
        .parse()
        .expect("no lookup in parse");
    let e = Manager::connect_to(&address, b"k").unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("connecting to no-such-host.invalid:7: "),
        "{text}"
    );
    let path = std::env::temp_dir().join(format!("mgr-no-such-{}.sock", std::process::id()));
    let e = Manager::connect(&format!("unix:{}", path.display()), b"k").unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("connecting to unix:{}: ", path.display())),
        "{e}"
    );
    // A name that resolves works as an address.
    let s = TestServer::start();
    let m = Manager::connect(&format!("localhost:{}", s.tcp().port()), common::KEY).unwrap();
    in_step(&m);
}

/// Built by a constructor that took a reply handle (dropping it, or keeping
/// it): `answer()` answers through the kept handle and says whether that
/// reached anyone.
struct Hoarder(Option<ReplyHandle>);

impl SharedObject for Hoarder {
    fn call(&mut self, cx: &mut Context<'_>, _: &str, _: CallArgs) -> CallResult {
        let reached = match self.0.take() {
            Some(h) => cx.reply(h, Ok(Value::from("unasked"))),
            None => false,
        };
        Ok(Value::Bool(reached).into())
    }
}

#[test]
fn a_handle_taken_by_a_constructor_answers_no_one() {
    let s = TestServer::start_registering(
        |_| {},
        |server| {
            server.register(TypeSpec::new("Hoarder", &["answer"], |cx, args| {
                let (keep,): (bool,) = args.extract()?;
                let h = cx.defer();
                Ok(Box::new(Hoarder(keep.then_some(h))))
            }))
        },
    );
    let m = s.connect();
    // Dropped in the constructor: the create is answered by the new object,
    // and nothing else reaches the client.
    let dropped = m.create("Hoarder", vec![Value::Bool(false)]).unwrap();
    in_step(&m);
    assert_eq!(dropped.call("answer", vec![]).unwrap(), Value::Bool(false));
    // Kept and answered later: that answer reaches no one either.
    let kept = m.create("Hoarder", vec![Value::Bool(true)]).unwrap();
    assert_eq!(kept.call("answer", vec![]).unwrap(), Value::Bool(false));
    in_step(&m);
    s.await_blocked(0);
}
