//! Every decoder under random input, in the ordinary test suite: no panic, no
//! unbounded allocation, and what the encoders write decodes to the same thing.

use mgr::proto::auth::{ChallengeKind, Digest, Handshake, Role, State};
use mgr::proto::codec::{native, pickle};
use mgr::proto::frame;
use mgr::proto::{Form, ObjectId, PyObject, RemoteError, Reply, Request, Slice, Token, Value};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        proptest::collection::vec(any::<u8>(), 9..20).prop_map(Value::BigInt),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::Float),
        ".{0,20}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
        ("[a-z]{1,8}", any::<u64>()).prop_map(|(typeid, id)| Value::Ref(Token {
            typeid,
            id: ObjectId(id)
        })),
        (
            any::<Option<i64>>(),
            any::<Option<i64>>(),
            any::<Option<i64>>()
        )
            .prop_map(|(start, stop, step)| Value::Slice(Slice { start, stop, step })),
    ]
}

/// Whether little-endian two's-complement `b` is in the minimal form pickle's
/// LONG opcodes (and `Value::BigInt`) use, and too big for an `i64`.
fn minimal_big(b: &[u8]) -> bool {
    let (top, next) = (b[b.len() - 1], b[b.len() - 2]);
    b.len() > 8 && !(top == 0 && next < 0x80) && !(top == 0xff && next >= 0x80)
}

/// Values as pickle carries them: big ints in minimal form.
fn pickle_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        leaf().prop_filter("pickle keeps big ints minimal", |v| match v {
            Value::BigInt(b) => minimal_big(b),
            _ => true,
        }),
        proptest::collection::vec(any::<u8>(), 9..40)
            .prop_filter("minimal", |b| minimal_big(b))
            .prop_map(Value::BigInt),
    ];
    nested(leaf)
}

/// Lists, tuples, sets, frozensets and dicts of `leaf`, nested up to 4 deep.
fn nested(leaf: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Value> {
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Tuple),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Set),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::FrozenSet),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..8).prop_map(Value::Dict),
            opaque(inner),
        ]
    })
}

/// Opaque objects of globals the default policy passes: a bare class, or one
/// made by REDUCE / NEWOBJ / NEWOBJ_EX with args, keyword args, appended
/// items, set entries and a state drawn from `inner`.
fn opaque(inner: impl Strategy<Value = Value> + Clone + 'static) -> impl Strategy<Value = Value> {
    let global = prop_oneof![
        Just(("decimal", "Decimal")),
        Just(("collections", "deque")),
        Just(("builtins", "ValueError")),
        Just(("uuid", "UUID")),
    ];
    let parts = proptest::collection::vec(inner.clone(), 0..3);
    let entries = proptest::collection::vec((inner.clone(), inner.clone()), 0..3);
    let kwargs = proptest::collection::vec(("[a-z]{1,4}", inner.clone()), 0..2);
    (
        global,
        0u8..4,
        parts.clone(),
        kwargs,
        parts,
        entries,
        proptest::option::of(inner),
    )
        .prop_map(
            |((module, name), form, args, kwargs, items, entries, state)| {
                let callable = Value::opaque_global(module, name);
                let form = match form {
                    0 => return callable,
                    1 => Form::Reduce,
                    2 => Form::NewObj,
                    _ => Form::NewObjEx,
                };
                let kwargs = match form {
                    Form::NewObjEx => kwargs
                        .into_iter()
                        .map(|(k, v)| (Value::Str(k), v))
                        .collect(),
                    _ => Vec::new(),
                };
                let parts = vec![
                    callable,
                    Value::Tuple(args),
                    Value::Dict(kwargs),
                    Value::List(items),
                    Value::Dict(entries),
                    state.unwrap_or(Value::None),
                ];
                Value::Opaque(Box::new(
                    PyObject::from_parts(form, parts).expect("valid parts"),
                ))
            },
        )
}

/// A pickle protocol 2-5 header (PROTO n) followed by arbitrary bytes, so random
/// input gets past the first check.
fn pickle_bytes() -> impl Strategy<Value = Vec<u8>> {
    (2u8..=5, proptest::collection::vec(any::<u8>(), 0..256)).prop_map(|(proto, rest)| {
        let mut b = vec![0x80, proto];
        b.extend(rest);
        b
    })
}

fn value() -> impl Strategy<Value = Value> {
    nested(leaf())
}

/// Aliased values, as a stock client's `[x] * n` or `{'a': x, 'b': x}` pickle
/// them: each of a few `parts` is held (as one [`Value::Shared`]) at several of
/// the `slots` of a list, with shares nested in shares.
fn aliased(part: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(part, 1..4),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 1..12),
        any::<bool>(),
    )
        .prop_map(|(parts, slots, nest)| {
            let mut shares: Vec<Value> = Vec::new();
            for p in parts {
                // A later part may hold the shares made before it.
                let p = match (nest, shares.last()) {
                    (true, Some(prev)) => Value::Tuple(vec![p, prev.clone(), prev.clone()]),
                    _ => p,
                };
                shares.push(Value::Shared(std::sync::Arc::new(p)));
            }
            let items = slots
                .into_iter()
                .map(|(i, in_dict)| {
                    let s = i.get(&shares).clone();
                    if in_dict {
                        Value::Dict(vec![(Value::Int(1), s.clone()), (Value::Int(2), s)])
                    } else {
                        s
                    }
                })
                .collect();
            Value::List(items)
        })
}

/// Distinct shares in `v` and the places holding them.
fn shares(v: &Value) -> (usize, usize) {
    fn go(v: &Value, seen: &mut std::collections::HashSet<*const Value>, places: &mut usize) {
        if let Value::Shared(a) = v {
            *places += 1;
            if !seen.insert(std::sync::Arc::as_ptr(a)) {
                return;
            }
        }
        let v = v.resolved();
        if let Some(items) = v.as_list() {
            items.iter().for_each(|x| go(x, seen, places));
        }
        if let Some(entries) = v.as_dict() {
            for (k, x) in entries {
                go(k, seen, places);
                go(x, seen, places);
            }
        }
    }
    let (mut seen, mut places) = (std::collections::HashSet::new(), 0);
    go(v, &mut seen, &mut places);
    (seen.len(), places)
}

proptest! {
    #[test]
    fn frame_header_never_panics_and_respects_the_limit(
        bytes in proptest::collection::vec(any::<u8>(), 0..16),
        max in 0u64..1 << 40,
    ) {
        if let Ok(Some(h)) = frame::decode_header(&bytes, max) {
            prop_assert!(h.payload_len as u64 <= max);
            prop_assert!(h.header_len == 4 || h.header_len == 12);
        }
    }

    #[test]
    fn native_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = native::decode_request(&bytes);
        let _ = native::decode_reply(&bytes);
        let mut versioned = vec![native::NATIVE_VERSION];
        versioned.extend_from_slice(&bytes);
        let _ = native::decode_request(&versioned);
        let _ = native::decode_reply(&versioned);
    }

    #[test]
    fn native_requests_roundtrip(
        target in any::<Option<u64>>(),
        method in "[a-z_#]{0,16}",
        args in proptest::collection::vec(value(), 0..4),
        kwargs in proptest::collection::vec(("[a-z]{1,8}", value()), 0..3),
    ) {
        let req = Request { target: target.map(ObjectId), method, args, kwargs };
        let mut out = Vec::new();
        native::encode_request(&req, &mut out);
        prop_assert_eq!(native::decode_request(&out).unwrap(), req);
    }

    #[test]
    fn native_replies_roundtrip(v in value(), kind in "[A-Za-z.]{1,20}", msg in ".{0,30}") {
        for reply in [
            Reply::Return(v.clone()),
            Reply::Error(RemoteError { kind: kind.clone(), message: msg.clone(), args: vec![v.clone()] }),
            Reply::Traceback(msg.clone()),
        ] {
            let mut out = Vec::new();
            native::encode_reply(&reply, &mut out);
            prop_assert_eq!(native::decode_reply(&out).unwrap(), reply);
        }
    }

    #[test]
    fn pickle_decoders_never_panic(
        raw in proptest::collection::vec(any::<u8>(), 0..256),
        headed in pickle_bytes(),
    ) {
        let address = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(5000)]);
        for bytes in [&raw, &headed] {
            let _ = pickle::decode_request(bytes);
            let _ = pickle::decode_request_for(bytes, &address);
            let _ = pickle::decode_reply(bytes);
        }
    }

    #[test]
    fn pickle_requests_roundtrip(
        target in any::<Option<u64>>(),
        method in "[a-z_#]{0,16}",
        args in proptest::collection::vec(pickle_value(), 0..4),
        kwargs in proptest::collection::vec(("[a-z]{1,8}", pickle_value()), 0..3),
    ) {
        let address = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(5000)]);
        let req = Request { target: target.map(ObjectId), method, args, kwargs };
        let mut out = Vec::new();
        pickle::encode_request(&req, &pickle::Origin::new(&address), &mut out);
        prop_assert_eq!(pickle::decode_request(&out).unwrap(), req);
    }

    #[test]
    fn pickle_replies_roundtrip(v in pickle_value(), msg in ".{0,30}") {
        let address = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(5000)]);
        let origin = pickle::Origin::new(&address);
        let mut out = Vec::new();
        pickle::encode_reply(&Reply::Return(v.clone()), &origin, &mut out);
        match pickle::decode_reply(&out).unwrap() {
            // Python could not rebuild it (a list as a dict key): said so instead.
            Reply::Unserializable(_) => {}
            other => prop_assert_eq!(other, Reply::Return(v)),
        }
        let error = Reply::Error(RemoteError::value_error(msg.clone()));
        out.clear();
        pickle::encode_reply(&error, &origin, &mut out);
        prop_assert_eq!(pickle::decode_reply(&out).unwrap(), error);
        // Traceback text travels as CPython's format_exc() does: ending its line.
        out.clear();
        pickle::encode_reply(&Reply::Traceback(msg.clone()), &origin, &mut out);
        let sent = if msg.ends_with('\n') { msg } else { format!("{msg}\n") };
        prop_assert_eq!(pickle::decode_reply(&out).unwrap(), Reply::Traceback(sent));
    }

    #[test]
    fn aliased_values_roundtrip_shared_in_both_codecs(
        v in aliased(value()),
        p in aliased(pickle_value().prop_filter("hashable keys", |v| {
            let mut out = Vec::new();
            let none = Value::None;
            pickle::encode_reply(&Reply::Return(v.clone()), &pickle::Origin::new(&none), &mut out);
            !matches!(pickle::decode_reply(&out), Ok(Reply::Unserializable(_)))
        })),
    ) {
        // Native: every share comes back a share, written once.
        let mut out = Vec::new();
        native::encode_reply(&Reply::Return(v.clone()), &mut out);
        let Reply::Return(back) = native::decode_reply(&out).unwrap() else {
            panic!("a return")
        };
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(shares(&back), shares(&v));
        let mut req = Vec::new();
        native::encode_request(&Request::public("f", vec![v.clone(), v.clone()]), &mut req);
        prop_assert_eq!(native::decode_request(&req).unwrap().args, vec![v.clone(), v]);
        // Pickle: written with BINPUT / BINGET, decoded with each container
        // (and long string) shared again and small leaves copied.
        let none = Value::None;
        let origin = pickle::Origin::new(&none);
        out.clear();
        pickle::encode_reply(&Reply::Return(p.clone()), &origin, &mut out);
        match pickle::decode_reply(&out).unwrap() {
            Reply::Unserializable(_) => {}
            Reply::Return(back) => {
                prop_assert_eq!(&back, &p);
                prop_assert!(shares(&back).0 <= shares(&p).0);
            }
            other => panic!("{other:?}"),
        }
        let req = Request::public("f", vec![p.clone()]);
        out.clear();
        pickle::encode_request(&req, &origin, &mut out);
        prop_assert_eq!(pickle::decode_request(&out).unwrap(), req);
    }

    #[test]
    fn damaged_aliased_pickles_and_native_payloads_never_panic(
        v in aliased(value()),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let none = Value::None;
        let mut p = Vec::new();
        pickle::encode_reply(&Reply::Return(v.clone()), &pickle::Origin::new(&none), &mut p);
        let mut n = Vec::new();
        native::encode_reply(&Reply::Return(v), &mut n);
        for bytes in [p, n] {
            let mut damaged = bytes.clone();
            for (i, b) in &flips {
                let i = i.index(damaged.len());
                damaged[i] = *b;
            }
            let short = &bytes[..cut.index(bytes.len())];
            for data in [&damaged[..], short] {
                let _ = pickle::decode_reply(data);
                let _ = pickle::decode_request(data);
                let _ = native::decode_reply(data);
                let _ = native::decode_request(data);
            }
        }
    }

    #[test]
    fn random_handshake_messages_never_authenticate(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
        server in any::<bool>(),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut hs = Handshake::new(role, b"key", ChallengeKind::Modern(Digest::Sha256), [7; 40]);
        while hs.poll_transmit().is_some() {}
        for m in &msgs {
            let _ = hs.handle_message(m);
            while hs.poll_transmit().is_some() {}
        }
        prop_assert_ne!(hs.state(), State::Done);
    }
}
