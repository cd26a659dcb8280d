//! Unit tests of the pickle codec against pickles real CPython made, and of the
//! encoder against CPython's `pickle.loads` (both run `python3`).

use super::*;
use crate::proto::value::{Slice, Token};
use std::process::Command;

/// Runs a Python script and returns its stdout (panics with stderr on failure).
fn python(script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Python prelude shared by the scripts: a stand-in for a proxy's reduction.
const PRELUDE: &str = r#"
import pickle, array, sys
from multiprocessing.managers import Token, RebuildProxy, AutoProxy, DictProxy
from multiprocessing.reduction import ForkingPickler
class FakeProxy:
    def __init__(self, func, token): self.func, self.token = func, token
    def __reduce__(self):
        return (RebuildProxy, (self.func, self.token, 'pickle', {'exposed': ('get',)}))
"#;

fn sample_args_expected() -> Vec<Value> {
    let shared = Value::List(vec![Value::Int(1)]);
    vec![
        Value::None,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(0),
        Value::Int(-1),
        Value::Int(255),
        Value::Int(65536),
        Value::Int(-(1 << 31)),
        Value::Int(i64::MAX),
        Value::Int(i64::MIN),
        Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]),
        Value::BigInt({
            // -2**100 in minimal little-endian two's complement: 12 zero bytes, then 0xf0.
            let mut b = vec![0; 12];
            b.push(0xf0);
            b
        }),
        Value::Float(1.5),
        Value::Str("héllo".into()),
        Value::Bytes(vec![0, 0xff]),
        Value::opaque_call("builtins", "bytearray", vec![Value::Bytes(b"ab".to_vec())]),
        Value::Bytes(Vec::new()),
        Value::Tuple(vec![Value::Int(1)]),
        Value::Dict(vec![(
            Value::Str("k".into()),
            Value::List(vec![Value::Int(1)]),
        )]),
        Value::Set(vec![Value::Int(1), Value::Int(2)]),
        Value::FrozenSet(vec![Value::Int(3)]),
        Value::Slice(Slice {
            start: Some(1),
            stop: None,
            step: Some(2),
        }),
        Value::List(vec![Value::Int(1), Value::Int(-2)]),
        Value::List(vec![Value::Float(0.5)]),
        Value::Tuple(vec![
            Value::List(vec![Value::Int(-1)]),
            Value::List(vec![Value::BigInt(vec![
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            ])]),
        ]),
        Value::List(vec![Value::Str("a".into()), Value::Str("é".into())]),
        Value::Ref(Token {
            typeid: "Counter".into(),
            id: ObjectId(0x1f),
        }),
        Value::Ref(Token {
            typeid: "Holder".into(),
            id: ObjectId(0xabc),
        }),
        Value::Ref(Token {
            typeid: "dict".into(),
            id: ObjectId(0x2),
        }),
        Value::List(vec![shared.clone(), shared]),
    ]
}

const SAMPLE_ARGS_PY: &str = r#"
shared = [1]
args = (None, True, False, 0, -1, 255, 65536, -2**31, 2**63-1, -2**63, 2**64, -2**100,
        1.5, 'héllo', b'\x00\xff', bytearray(b'ab'), b'', (1,), {'k': [1]}, {1, 2},
        frozenset({3}), slice(1, None, 2), array.array('i', [1, -2]), array.array('d', [0.5]),
        (array.array('q', [-1]), array.array('Q', [2**64 - 1])), array.array('u', 'aé'),
        Token('Counter', ('127.0.0.1', 5000), '1f'),
        FakeProxy(AutoProxy, Token('Holder', ('127.0.0.1', 5000), 'abc')),
        FakeProxy(DictProxy, Token('dict', '/tmp/sock', '2')),
        [shared, shared])
"#;

#[test]
fn decodes_requests_cpython_pickled_with_protocols_2_to_5() {
    let script = format!(
        "{PRELUDE}{SAMPLE_ARGS_PY}
req = ('1f', 'incr', args, {{'n': 2, 'timeout': None}})
for p in (2, 3, 4, 5):
    print(pickle.dumps(req, protocol=p).hex())
print(bytes(ForkingPickler.dumps(req)).hex())
import multiprocessing.managers  # registers the dict-view reducers
print(bytes(ForkingPickler.dumps((None, 'create', ('Counter', 5, {{'a': 1}}.keys()), {{}}))).hex())
"
    );
    let out = python(&script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6);
    let expected_args = sample_args_expected();
    let expected = Request {
        target: Some(ObjectId(0x1f)),
        method: "incr".into(),
        args: expected_args,
        kwargs: vec![("n".into(), Value::Int(2)), ("timeout".into(), Value::None)],
    };
    // Arrays stay arrays (opaque, in the form each protocol writes them:
    // `array(code, list)` for 2, `_array_reconstructor` after); the server reads
    // their items (`tests/python/test_opaque_values.py`).
    let is_array = |v: &Value| {
        matches!(
            v.as_opaque().and_then(|o| o.array_data()),
            Some((tc, _)) if "idqQu".contains(tc)
        )
    };
    for (i, line) in lines[..5].iter().enumerate() {
        let got = decode_request(&unhex(line)).unwrap_or_else(|e| panic!("line {i}: {e}"));
        assert_eq!(got.args.len(), expected.args.len());
        for (n, (g, e)) in got.args.iter().zip(&expected.args).enumerate() {
            match (n, g) {
                (22 | 23 | 25, g) => assert!(is_array(g), "line {i}, arg {n}: {g:?}"),
                (24, Value::Tuple(t)) => assert!(t.len() == 2 && t.iter().all(is_array)),
                _ => assert_eq!(g, e, "line {i} (protocol {}), arg {n}", i + 2),
            }
        }
        assert_eq!(
            (&got.target, &got.method, &got.kwargs),
            (&expected.target, &expected.method, &expected.kwargs),
            "line {i}"
        );
    }
    let create = decode_request(&unhex(lines[5])).unwrap();
    assert_eq!(
        create,
        Request::public(
            "create",
            vec![
                Value::Str("Counter".into()),
                Value::Int(5),
                Value::List(vec![Value::Str("a".into())])
            ]
        )
    );
}

#[test]
fn decodes_cpython_replies() {
    let script = format!(
        "{PRELUDE}
import queue, threading
for r in [('#RETURN', {{'a': (1, 2.5)}}), ('#ERROR', KeyError('k')), ('#ERROR', queue.Empty()),
          ('#ERROR', threading.BrokenBarrierError()), ('#ERROR', ValueError('bad', 2)),
          ('#PROXY', (('get', 'set'), Token('Holder', ('127.0.0.1', 1), '7f00aa'))),
          ('#TRACEBACK', 'Traceback...'), ('#UNSERIALIZABLE', 'nope')]:
    for p in (2, 4, 5):
        print(pickle.dumps(r, protocol=p).hex())
"
    );
    let out = python(&script);
    let expected = [
        Reply::Return(Value::Dict(vec![(
            Value::Str("a".into()),
            Value::Tuple(vec![Value::Int(1), Value::Float(2.5)]),
        )])),
        Reply::Error(RemoteError::key_error(Value::Str("k".into()))),
        Reply::Error(RemoteError::new("queue.Empty", "")),
        Reply::Error(RemoteError::new("threading.BrokenBarrierError", "")),
        Reply::Error(RemoteError {
            kind: "ValueError".into(),
            message: "('bad', 2)".into(),
            args: vec![Value::Str("bad".into()), Value::Int(2)],
        }),
        Reply::Proxy {
            exposed: vec!["get".into(), "set".into()],
            token: Token {
                typeid: "Holder".into(),
                id: ObjectId(0x7f00aa),
            },
        },
        Reply::Traceback("Traceback...".into()),
        Reply::Unserializable("nope".into()),
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), expected.len() * 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            decode_reply(&unhex(line)).unwrap(),
            expected[i / 3],
            "reply {i}"
        );
    }
}

#[test]
fn forbidden_globals_and_opcodes_are_refused() {
    let script = r#"
import pickle, os, subprocess, builtins
class Evil:
    def __init__(self, f, a): self.f, self.a = f, a
    def __reduce__(self): return (self.f, self.a)
for f, a in [(os.system, ('true',)), (eval, ('1',)), (subprocess.Popen, (['true'],)),
             (getattr, (1, 'real'))]:
    print(pickle.dumps((None, 'dummy', (Evil(f, a),), {}), protocol=4).hex())
"#;
    let out = python(script);
    let names = ["system", "eval", "Popen", "getattr"];
    for (line, name) in out.lines().zip(names) {
        let e = decode_request(&unhex(line)).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("not allowed"), "{e}");
    }
    // A raw GLOBAL naming os.system, as an attacker would write it.
    let raw = b"\x80\x04cos\nsystem\n\x8c\x04true\x85R.";
    let e = decode_request(raw).unwrap_err().to_string();
    assert!(e.contains("'os.system' is not allowed"), "{e}");
    // Opcodes outside the data subset.
    let cases: [(&[u8], &str); 6] = [
        (b"\x80\x02(cbuiltins\nslice\nK\x01o.", "OBJ"),
        (b"\x80\x02(S'true'\nios\nsystem\n.", "string"),
        (b"\x80\x02(X\x04\x00\x00\x00trueios\nsystem\n.", "INST"),
        (b"\x80\x02Pfoo\n.", "PERSID"),
        (b"\x80\x02\x82\x01.", "EXT"),
        (b"\x80\x05\x97.", "out-of-band"),
    ];
    for (bytes, what) in cases {
        let e = decode_request(bytes).unwrap_err().to_string();
        assert!(e.contains(what), "{what}: {e}");
    }
    // Protocols outside 2..5, and non-callables being called.
    assert!(decode_request(b"\x80\x06N.").is_err());
    assert!(decode_request(b"\x80\x04K\x01)R.").is_err());
    let e = decode_request(b"\x80\x04cmultiprocessing.managers\nAutoProxy\n)R.")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not callable"), "{e}");
}

#[test]
fn malformed_requests_are_clear_errors() {
    let enc = |v: &Value| {
        let mut w = Vec::new();
        let none = Value::None;
        let origin = Origin::new(&none);
        let mut wr = Writer {
            out: &mut w,
            origin: &origin,
        };
        wr.begin();
        wr.value(v);
        wr.end();
        w
    };
    let s = |x: &str| Value::Str(x.into());
    let e = decode_request(&enc(&Value::Int(1)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be a tuple"), "{e}");
    let bad_ident = Value::Tuple(vec![
        s("zz"),
        s("m"),
        Value::Tuple(vec![]),
        Value::Dict(vec![]),
    ]);
    let e = decode_request(&enc(&bad_ident)).unwrap_err().to_string();
    assert!(e.contains("'zz'"), "{e}");
    let bad_kw = Value::Tuple(vec![
        Value::None,
        s("m"),
        Value::Tuple(vec![]),
        Value::Dict(vec![(Value::Int(1), Value::None)]),
    ]);
    assert!(decode_request(&enc(&bad_kw)).is_err());
    // Truncated, trailing bytes, stack underflow, unknown memo key.
    assert!(decode_request(b"\x80\x04").is_err());
    assert!(decode_request(b"\x80\x04N.N")
        .unwrap_err()
        .to_string()
        .contains("trailing"));
    assert!(decode_request(b"\x80\x04.").is_err());
    assert!(decode_request(b"\x80\x04h\x05.")
        .unwrap_err()
        .to_string()
        .contains("memo"));
    assert!(decode_request(b"\x80\x04(N0.").is_err());
}

#[test]
fn allocation_is_bounded_by_the_input() {
    // A string claiming 4 GiB in a few bytes: refused before allocating.
    let e = decode_request(b"\x80\x04X\xff\xff\xff\xff.")
        .unwrap_err()
        .to_string();
    assert!(e.contains("exceeds"), "{e}");
    let e = decode_request(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f.")
        .unwrap_err()
        .to_string();
    assert!(e.contains("exceeds"), "{e}");
    // Memo doubling: l0 = [x*1000]; l(n+1) = [ln, ln] — 2**40 elements from ~200 bytes.
    let mut p = b"\x80\x04]\x94(".to_vec();
    p.extend(std::iter::repeat_n(b'N', 1000));
    p.extend_from_slice(b"e0");
    for i in 0..40u8 {
        p.extend_from_slice(&[b'h', i, b'h', i, 0x86, 0x94, b'0']);
    }
    p.extend_from_slice(&[b'h', 40, b'.']);
    let e = decode_reply(&p).unwrap_err().to_string();
    assert!(
        e.contains("MAX_EXPANDED_VALUES") || e.contains("reply"),
        "{e}"
    );
    let e = decode_request(&p).unwrap_err().to_string();
    assert!(
        e.contains("MAX_EXPANDED_VALUES") || e.contains("tuple"),
        "{e}"
    );
    let mut d = decode::run(&p, crate::proto::codec::Globals::Default).unwrap();
    let root = d.root;
    // Shared, the doubling costs memory linear in the input, and the logical
    // size (what a walk visits) is refused past its own cap.
    let e = d.value(root).unwrap_err().to_string();
    assert!(e.contains("MAX_EXPANDED_VALUES"), "{e}");
}

#[test]
fn nesting_is_capped_and_cycles_refused() {
    let mut deep = b"\x80\x04".to_vec();
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.extend(std::iter::repeat_n(b'a', 99_999));
    deep.push(b'.');
    let mut d = decode::run(&deep, crate::proto::codec::Globals::Default).unwrap();
    let root = d.root;
    assert!(d.value(root).unwrap_err().to_string().contains("nested"));
    // l = []; l.append(l)
    let cyclic = b"\x80\x04]\x94h\x00a.";
    let mut d = decode::run(cyclic, crate::proto::codec::Globals::Default).unwrap();
    let root = d.root;
    assert!(d.value(root).unwrap_err().to_string().contains("recursive"));
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut seed = Vec::new();
    let req = Request {
        target: Some(ObjectId(0x1f)),
        method: "m".into(),
        args: sample_args_expected(),
        kwargs: vec![("k".into(), Value::Int(1))],
    };
    encode_request(&req, &Origin::new(&Value::Str("/s".into())), &mut seed);
    for round in 0..20_000 {
        let buf: Vec<u8> = if round % 2 == 0 {
            // Pure noise after a PROTO header.
            let len = (next() % 64) as usize;
            let mut b = vec![0x80, 4];
            b.extend((0..len).map(|_| (next() & 0xff) as u8));
            b
        } else {
            // A valid pickle with a few bytes flipped or cut.
            let mut b = seed.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % b.len();
                b[i] = (next() & 0xff) as u8;
            }
            b.truncate(1 + (next() as usize) % b.len());
            b
        };
        let _ = decode_request(&buf);
        let _ = decode_reply(&buf);
    }
}

#[test]
fn requests_and_replies_round_trip() {
    let address = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(5000)]);
    let addr = Origin::new(&address);
    let mut args = sample_args_expected();
    args.push(Value::Float(f64::INFINITY));
    args.push(Value::Str("x".repeat(300)));
    args.push(Value::Bytes(vec![7; 300]));
    args.push(Value::BigInt(vec![1; 300]));
    args.push(Value::Tuple((0..5).map(Value::Int).collect()));
    let req = Request {
        target: Some(ObjectId::new(3, 9)),
        method: "put".into(),
        args,
        kwargs: vec![("block".into(), Value::Bool(false))],
    };
    let mut out = Vec::new();
    encode_request(&req, &addr, &mut out);
    assert_eq!(decode_request(&out).unwrap(), req);
    let public = Request::public("number_of_objects", vec![]);
    out.clear();
    encode_request(&public, &addr, &mut out);
    assert_eq!(decode_request(&out).unwrap(), public);

    let replies = [
        Reply::Return(Value::List(sample_args_expected())),
        Reply::Proxy {
            exposed: vec!["__next__".into()],
            token: Token {
                typeid: "Iterator".into(),
                id: ObjectId(77),
            },
        },
        Reply::Error(RemoteError::key_error(Value::Str("k".into()))),
        Reply::Error(RemoteError::new("queue.Empty", "")),
        Reply::Error(RemoteError::value_error("bad value")),
        Reply::Traceback("KeyError: unknown\n".into()),
        Reply::Unserializable("nope".into()),
    ];
    for r in replies {
        out.clear();
        encode_reply(&r, &addr, &mut out);
        assert_eq!(decode_reply(&out).unwrap(), r);
    }
    // A kind off the whitelist travels as traceback text.
    out.clear();
    let odd = RemoteError::new("mymod.Weird", "strange");
    encode_reply(&Reply::Error(odd), &addr, &mut out);
    match decode_reply(&out).unwrap() {
        Reply::Traceback(t) => assert!(t.contains("mymod.Weird: strange"), "{t}"),
        other => panic!("{other:?}"),
    }
}

/// Encodes replies in Rust and checks what CPython's `pickle.loads` makes of them.
#[test]
fn encoded_replies_load_in_cpython() {
    let tcp = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(5000)]);
    let counter_methods = ["incr".to_owned(), "get".to_owned()];
    let unix = Value::Str("/tmp/mgr.sock".into());
    let counter = Token {
        typeid: "Counter".into(),
        id: ObjectId::new(4, 2),
    };
    let dict = Token {
        typeid: "dict".into(),
        id: ObjectId(0x11),
    };
    let cases: Vec<(Reply, &Value, &str)> = vec![
        (
            Reply::Return(Value::List(sample_args_expected()[..24].to_vec())),
            &tcp,
            "('#RETURN', [None, True, False, 0, -1, 255, 65536, -2147483648, 9223372036854775807, \
             -9223372036854775808, 18446744073709551616, -1267650600228229401496703205376, 1.5, \
             'héllo', b'\\x00\\xff', bytearray(b'ab'), b'', (1,), {'k': [1]}, {1, 2}, frozenset({3}), \
             slice(1, None, 2), [1, -2], [0.5]])",
        ),
        (
            Reply::Proxy {
                exposed: vec!["incr".into(), "get".into()],
                token: counter.clone(),
            },
            &tcp,
            "('#PROXY', (('incr', 'get'), Token(typeid='Counter', address=('127.0.0.1', 5000), id='200000004')))",
        ),
        (
            Reply::Return(Value::Tuple(vec![Value::Ref(counter), Value::Ref(dict)])),
            &unix,
            "('#RETURN', (('RP', 'AutoProxy', Token(typeid='Counter', address='/tmp/mgr.sock', id='200000004'), 'pickle', {'exposed': ('incr', 'get')}), \
             ('RP', 'DictProxy', Token(typeid='dict', address='/tmp/mgr.sock', id='11'), 'pickle', {})))",
        ),
        (
            Reply::Error(RemoteError::key_error(Value::Str("k".into()))),
            &tcp,
            "('#ERROR', KeyError('k'))",
        ),
        (
            Reply::Error(RemoteError::new("queue.Empty", "")),
            &tcp,
            "('#ERROR', Empty())",
        ),
        (
            Reply::Error(RemoteError::new("threading.BrokenBarrierError", "")),
            &tcp,
            "('#ERROR', BrokenBarrierError())",
        ),
        (
            Reply::Error(RemoteError::new("StopIteration", "")),
            &tcp,
            "('#ERROR', StopIteration())",
        ),
        (
            Reply::Error(RemoteError::value_error("asked to fail")),
            &tcp,
            "('#ERROR', ValueError('asked to fail'))",
        ),
        (
            Reply::Error(RemoteError::new("NoSuch", "x")),
            &tcp,
            "('#TRACEBACK', 'Traceback (most recent call last):\\n  (libmgr server)\\nNoSuch: x\\n')",
        ),
        (
            Reply::Unserializable("u".into()),
            &tcp,
            "('#UNSERIALIZABLE', 'u')",
        ),
    ];
    let mut script = String::from(
        r#"
import pickle, sys, queue, threading
class U(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ('multiprocessing.managers', 'RebuildProxy'):
            return lambda func, token, ser, kw: ('RP', func.__name__, token, ser, kw)
        return super().find_class(module, name)
import io
for line in sys.stdin:
    r = U(io.BytesIO(bytes.fromhex(line.strip()))).load()
    if r[0] == '#ERROR':
        assert isinstance(r[1], (KeyError, queue.Empty, threading.BrokenBarrierError, StopIteration, ValueError)), r
    print(repr(r))
"#,
    );
    script.push('\n');
    let mut input = String::new();
    for (reply, addr, _) in &cases {
        let mut out = Vec::new();
        let exposed = |t: &str| (t == "Counter").then_some(&counter_methods[..]);
        let origin = Origin {
            address: addr,
            exposed: &exposed,
        };
        encode_reply(reply, &origin, &mut out);
        input.push_str(&hex(&out));
        input.push('\n');
    }
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{stdout}");
    for (line, (_, _, want)) in lines.iter().zip(&cases) {
        let want: String = want.split_whitespace().collect::<Vec<_>>().join(" ");
        let got: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(got, want);
    }
}

#[test]
fn proxy_types_and_exception_classes() {
    assert_eq!(proxy_type("dict"), "DictProxy");
    assert_eq!(proxy_type("Lock"), "AcquirerProxy");
    assert_eq!(proxy_type("Counter"), "AutoProxy");
    assert_eq!(exception_class("KeyError"), Some(("builtins", "KeyError")));
    assert_eq!(exception_class("queue.Empty"), Some(("queue", "Empty")));
    assert_eq!(exception_class("os.system"), None);
    assert_eq!(exception_class("RemoteError"), None);
}

#[test]
fn unhashable_values_become_unserializable() {
    let none = Value::None;
    let origin = Origin::new(&none);
    let bad = [
        Value::Set(vec![Value::List(vec![])]),
        Value::Dict(vec![(Value::Dict(vec![]), Value::None)]),
        Value::List(vec![Value::FrozenSet(vec![Value::Tuple(vec![
            Value::Set(vec![]),
        ])])]),
        // Past the shallow check for sequences of leaves.
        Value::Tuple(vec![
            Value::Int(1),
            Value::List(vec![Value::Set(vec![Value::List(vec![])])]),
        ]),
    ];
    for v in bad {
        let mut out = Vec::new();
        encode_reply(&Reply::Return(v.clone()), &origin, &mut out);
        match decode_reply(&out).unwrap() {
            Reply::Unserializable(why) => assert!(why.contains("unhashable"), "{why}"),
            other => panic!("{v}: {other:?}"),
        }
    }
    // Tuples of hashable values are fine as keys; lists are fine as values.
    let ok = Value::Dict(vec![(
        Value::Tuple(vec![Value::Int(1), Value::Str("a".into())]),
        Value::List(vec![Value::List(vec![])]),
    )]);
    let mut out = Vec::new();
    encode_reply(&Reply::Return(ok.clone()), &origin, &mut out);
    assert_eq!(decode_reply(&out).unwrap(), Reply::Return(ok));
}

/// Requests encoded in Rust load in CPython as its own client's requests.
#[test]
fn encoded_requests_load_in_cpython() {
    let address = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(9)]);
    let methods = ["get".to_owned()];
    let exposed = |_: &str| Some(&methods[..]);
    let origin = Origin {
        address: &address,
        exposed: &exposed,
    };
    let reqs = [
        Request {
            target: Some(ObjectId(0x1f)),
            method: "incr".into(),
            args: vec![Value::Int(1), Value::Str("x".into())],
            kwargs: vec![("n".into(), Value::Int(2))],
        },
        Request::public("create", vec![Value::Str("Counter".into())]),
        Request::call(
            ObjectId(0xa),
            "set",
            vec![Value::Ref(Token {
                typeid: "Counter".into(),
                id: ObjectId(0xb),
            })],
        ),
    ];
    let hexes: Vec<String> = reqs
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            encode_request(r, &origin, &mut out);
            hex(&out)
        })
        .collect();
    let script = format!(
        r#"
import pickle, io
class U(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ('multiprocessing.managers', 'RebuildProxy'):
            return lambda func, token, ser, kw: ('RP', func.__name__, token, ser, kw)
        return super().find_class(module, name)
for h in {hexes:?}:
    print(repr(U(io.BytesIO(bytes.fromhex(h))).load()))
"#
    );
    let out = python(&script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "('1f', 'incr', (1, 'x'), {'n': 2})",
            "(None, 'create', ('Counter',), {})",
            "('a', 'set', (('RP', 'AutoProxy', Token(typeid='Counter', address=('127.0.0.1', 9), id='b'), 'pickle', {'exposed': ('get',)}),), {})",
        ]
    );
}

#[test]
fn tokens_of_other_servers_are_refused_by_decode_request_for() {
    let script = format!(
        "{PRELUDE}
for addr in [('127.0.0.1', 5000), ('localhost', 5000), ('127.0.0.1', 5001), '/tmp/s']:
    t = Token('Counter', addr, '1f')
    print(pickle.dumps(('a', 'set', (FakeProxy(AutoProxy, t),), {{}}), protocol=4).hex())
"
    );
    let out = python(&script);
    let lines: Vec<&str> = out.lines().collect();
    let tcp = Value::Tuple(vec![Value::Str("0.0.0.0".into()), Value::Int(5000)]);
    let unix = Value::Str("/tmp/s".into());
    let ok = |line: &str, home: &Value| decode_request_for(&unhex(line), home).is_ok();
    assert!(
        ok(lines[0], &tcp) && ok(lines[1], &tcp),
        "same port, any host name"
    );
    let e = decode_request_for(&unhex(lines[2]), &tcp)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another manager"), "{e}");
    assert!(!ok(lines[3], &tcp));
    assert!(ok(lines[3], &unix) && !ok(lines[0], &unix));
    // Without a home address every token is taken as it comes.
    assert!(decode_request(&unhex(lines[2])).is_ok());
}

#[test]
fn ranges_stay_compact() {
    let out = python(
        r#"
import pickle, sys
for proto in (2, 3, 4, 5):
    print(pickle.dumps((None, 'create', ('list', range(2, 12, 3), range(5, 0, -2), range(0)), {}), protocol=proto).hex())
print(pickle.dumps((None, 'create', ('list', range(-2**63, 2**63 - 1, 2**62)), {}), protocol=4).hex())
print(pickle.dumps((None, 'create', ('list', range(10**12)), {}), protocol=4).hex())
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    let bounds = |v: &Value| v.as_opaque().and_then(|o| o.range_bounds());
    for line in &lines[..4] {
        let req = decode_request(&unhex(line)).unwrap();
        assert_eq!(bounds(&req.args[1]), Some((2, 12, 3)));
        assert_eq!(bounds(&req.args[2]), Some((5, 0, -2)));
        assert_eq!(bounds(&req.args[3]), Some((0, 0, 1)));
    }
    let req = decode_request(&unhex(lines[4])).unwrap();
    assert_eq!(bounds(&req.args[1]), Some((i64::MIN, i64::MAX, 1 << 62)));
    // A trillion items cost a few bytes here; a constructor that builds them
    // is bounded by its own byte limit (`tests/python/test_opaque_values.py`).
    let req = decode_request(&unhex(lines[5])).unwrap();
    assert_eq!(bounds(&req.args[1]), Some((0, 1_000_000_000_000, 1)));
}

/// Requests `(None, 'm', (v,), {})` as CPython 3.11 pickles them, for a
/// stdlib value `v` of each kind the default policy passes (datetime with a
/// timezone, Decimal, Fraction, complex, UUID, PurePosixPath, Counter,
/// OrderedDict, defaultdict(list), deque with maxlen, ValueError, queue.Empty).
const STDLIB: &[&str] = &[
    "8004956300000000000000284e8c016d948c086461746574696d65948c086461746574696d65949394430a07e805010000000000009468018c0874696d657a6f6e6594939468018c0974696d6564656c74619493944b004b004b0087945294859452948694529485947d9474942e",
    "8004952d00000000000000284e8c016d948c07646563696d616c948c07446563696d616c9493948c03312e35948594529485947d9474942e",
    "8004952e00000000000000284e8c016d948c096672616374696f6e73948c084672616374696f6e9493944b014b028694529485947d9474942e",
    "8004953a00000000000000284e8c016d948c086275696c74696e73948c07636f6d706c6578949394473ff00000000000004740000000000000008694529485947d9474942e",
    "8004952c00000000000000284e8c016d948c0475756964948c04555549449493942981947d948c03696e74944b05736285947d9474942e",
    "8004953500000000000000284e8c016d948c07706174686c6962948c0d50757265506f736978506174689493948c0161948c0162948694529485947d9474942e",
    "8004953b00000000000000284e8c016d948c0b636f6c6c656374696f6e73948c07436f756e7465729493947d94288c0161944b028c0162944b01758594529485947d9474942e",
    "8004953500000000000000284e8c016d948c0b636f6c6c656374696f6e73948c0b4f726465726564446963749493942952948c0161944b017385947d9474942e",
    "8004954d00000000000000284e8c016d948c0b636f6c6c656374696f6e73948c0b64656661756c74646963749493948c086275696c74696e73948c046c697374949394859452948c0161945d944b01617385947d9474942e",
    "8004953200000000000000284e8c016d948c0b636f6c6c656374696f6e73948c056465717565949394294b0586945294284b014b026585947d9474942e",
    "8004952f00000000000000284e8c016d948c086275696c74696e73948c0a56616c75654572726f729493948c0178948594529485947d9474942e",
    "8004952300000000000000284e8c016d948c065f7175657565948c05456d70747994939429529485947d9474942e",
];

#[test]
fn stdlib_values_decode_as_opaque_and_encode_back_to_the_same_value() {
    use crate::proto::value::Form;
    let address = Value::None;
    let origin = Origin::new(&address);
    let mut names = Vec::new();
    for hex in STDLIB {
        let req = decode_request(&unhex(hex)).unwrap();
        let v = &req.args[0];
        let o = v.as_opaque().unwrap_or_else(|| panic!("{v:?}"));
        names.push(o.global_name().unwrap().1.to_owned());
        let mut out = Vec::new();
        encode_reply(&Reply::Return(v.clone()), &origin, &mut out);
        match decode_reply(&out).unwrap() {
            Reply::Return(back) => assert!(back == *v, "{v:?} came back as {back:?}"),
            other => panic!("{other:?}"),
        }
        // Refused outright when the server passes no globals.
        let mut d = decode::run(&unhex(hex), crate::proto::codec::Globals::None);
        if let Ok(d) = &mut d {
            let root = d.root;
            assert!(d.value(root).is_err());
        }
    }
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
            "ValueError",
            "Empty"
        ]
    );
    // UUID is NEWOBJ + BUILD; deque REDUCE + APPENDS; OrderedDict SETITEMS.
    let uuid = decode_request(&unhex(STDLIB[4])).unwrap();
    let o = uuid.args[0].as_opaque().unwrap();
    assert_eq!(*o.form(), Form::NewObj);
    assert!(matches!(o.state(), Some(Value::Dict(d)) if d.len() == 1));
    let deque = decode_request(&unhex(STDLIB[9])).unwrap();
    assert!(
        matches!(deque.args[0].as_opaque().unwrap().items(), Some(Value::List(v)) if v.len() == 2)
    );
    let od = decode_request(&unhex(STDLIB[7])).unwrap();
    assert!(
        matches!(od.args[0].as_opaque().unwrap().entries(), Some(Value::Dict(d)) if d.len() == 1)
    );
    assert_eq!(
        decode_request(&unhex(STDLIB[1])).unwrap().args[0].to_string(),
        "Decimal('1.5')"
    );
}

#[test]
fn globals_outside_the_policy_are_refused_and_nothing_is_called() {
    // (None, 'm', (os.system('true'),), {}) and a user class instance.
    let mut q = vec![0x80, 4, b'(', b'N', 0x8c, 1, b'm'];
    q.extend_from_slice(b"cos\nsystem\n");
    q.extend_from_slice(&[0x8c, 4]);
    q.extend_from_slice(b"true");
    q.extend_from_slice(&[0x85, b'R', 0x85, b'}', b't', b'.']);
    let e = decode_request(&q).unwrap_err().to_string();
    assert!(e.contains("global 'os.system' is not allowed"), "{e}");
    assert!(e.contains("--globals any"), "{e}");
    let address = Value::None;
    let e = decode_request_with(&q, &address, crate::proto::codec::Globals::None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--globals none"), "{e}");
    // Under `any` it is data: an opaque value naming os.system, not a call.
    let r = decode_request_with(&q, &address, crate::proto::codec::Globals::Any).unwrap();
    let o = r.args[0].as_opaque().unwrap();
    assert_eq!(o.global_name(), Some(("os", "system")));
}

/// A `#RETURN` reply starts with its constant head and is otherwise what the
/// writer makes of the pair: `('#RETURN', None)` byte for byte.
#[test]
fn return_replies_start_with_the_constant_head() {
    let none = Value::None;
    let mut out = Vec::new();
    encode_reply(&Reply::Return(Value::None), &Origin::new(&none), &mut out);
    assert_eq!(out, b"\x80\x04\x8c\x07#RETURNN\x86.");
    let mut out = Vec::new();
    let v = Value::Bytes(vec![b'x'; 16]);
    encode_reply(&Reply::Return(v.clone()), &Origin::new(&none), &mut out);
    assert_eq!(decode_reply(&out).unwrap(), Reply::Return(v));
}

/// A `create` reply with the exposed tuple encoded once is byte for byte the
/// reply built from values.
#[test]
fn created_replies_match_the_value_form() {
    let none = Value::None;
    for exposed in [vec![], vec!["get".to_owned()], vec!["a".to_owned(); 30]] {
        let mut fast = Vec::new();
        encode_created("7f01", &str_tuple_opcodes(&exposed), &mut fast);
        let value = Value::Tuple(vec![
            Value::Str("7f01".into()),
            Value::Tuple(exposed.iter().cloned().map(Value::Str).collect()),
        ]);
        let mut slow = Vec::new();
        encode_reply(&Reply::Return(value), &Origin::new(&none), &mut slow);
        assert_eq!(fast, slow, "{exposed:?}");
    }
}

/// `n` places holding one shared `inner`.
fn aliased(inner: Value, n: usize) -> Value {
    let inner = Value::Shared(std::sync::Arc::new(inner));
    Value::List(vec![inner; n])
}

/// Whether items `0` and `i` of a list are one shared value.
fn same_item(v: &Value, i: usize) -> bool {
    match (&v.as_list().unwrap()[0], &v.as_list().unwrap()[i]) {
        (Value::Shared(a), Value::Shared(b)) => std::sync::Arc::ptr_eq(a, b),
        _ => false,
    }
}

#[test]
fn aliased_pickles_decode_shared_and_encode_back_as_small_as_they_came() {
    let out = python(
        r#"
import pickle
for v in ([[0] * 300] * 300, [[[0] * 100] * 100] * 100, ['s' * 100] * 3 + ['t'] * 3):
    print(pickle.dumps((None, 'create', ('list', v), {}), protocol=4).hex())
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    let two = aliased(Value::List(vec![Value::Int(0); 300]), 300);
    let three = aliased(aliased(Value::List(vec![Value::Int(0); 100]), 100), 100);
    for (line, want) in lines.iter().zip([&two, &three]) {
        let input = unhex(line);
        let req = decode_request(&input).unwrap();
        let got = &req.args[1];
        assert_eq!(got, want);
        assert!(
            same_item(got, 1) && same_item(got, 99),
            "shared, not copied"
        );
        // The reply writes the shared value once and refers back to it: as
        // small as the request, where a copy at each place would be 90000
        // or 1000000 values.
        let none = Value::None;
        let mut reply = Vec::new();
        encode_reply(&Reply::Return(got.clone()), &Origin::new(&none), &mut reply);
        assert!(reply.len() < input.len() + 64, "{} B", reply.len());
        match decode_reply(&reply).unwrap() {
            Reply::Return(back) => {
                assert_eq!(&back, want);
                assert!(same_item(&back, 1));
            }
            other => panic!("{other:?}"),
        }
    }
    // A str of SHARE_MIN_BYTES or more is shared; a short one is copied.
    let req = decode_request(&unhex(lines[2])).unwrap();
    let items = req.args[1].as_list().unwrap();
    assert!(same_item(&req.args[1], 1));
    assert!(!items[3].is_shared() && items[3] == Value::from("t"));
}

#[test]
fn aliased_replies_load_in_cpython_with_their_identity() {
    let none = Value::None;
    let two = aliased(Value::List(vec![Value::Int(0); 300]), 300);
    let three = aliased(aliased(Value::List(vec![Value::Int(0); 100]), 100), 100);
    // Shared keys, a shared tuple inside a shared list, and a long str.
    let t = Value::Shared(std::sync::Arc::new(Value::Tuple(vec![Value::Int(1)])));
    let s = Value::Shared(std::sync::Arc::new(Value::Str("x".repeat(300))));
    let mixed = Value::Dict(vec![
        (t.clone(), Value::List(vec![t.clone(), s.clone(), s])),
        (Value::Int(2), aliased(Value::List(vec![t]), 600)),
    ]);
    let mut hexes = Vec::new();
    for v in [&two, &three, &mixed] {
        let mut out = Vec::new();
        encode_reply(&Reply::Return(v.clone()), &Origin::new(&none), &mut out);
        hexes.push(hex(&out));
    }
    let script = format!(
        r#"
import pickle
two = pickle.loads(bytes.fromhex('{}'))[1]
three = pickle.loads(bytes.fromhex('{}'))[1]
mixed = pickle.loads(bytes.fromhex('{}'))[1]
print(two == [[0] * 300] * 300, all(x is two[0] for x in two))
print(three == [[[0] * 100] * 100] * 100, all(x is three[0] for x in three),
      all(x is three[0][0] for x in three[0]))
k = next(iter(mixed))
print(mixed[k][0] is k, mixed[k][1] is mixed[k][2], all(x[0] is k for x in mixed[2]),
      len(mixed[2]), mixed[k][1] == 'x' * 300)
"#,
        hexes[0], hexes[1], hexes[2]
    );
    assert_eq!(
        python(&script),
        "True True\nTrue True True\nTrue True True 600 True\n"
    );
    // Up to 256 shared values take BINGET's one-byte key, beyond it LONG_BINGET.
    let many = Value::List(
        (0..600)
            .map(|i| Value::Shared(std::sync::Arc::new(Value::List(vec![Value::Int(i)]))))
            .flat_map(|v| [v.clone(), v])
            .collect(),
    );
    let mut out = Vec::new();
    encode_reply(&Reply::Return(many.clone()), &Origin::new(&none), &mut out);
    assert_eq!(decode_reply(&out).unwrap(), Reply::Return(many));
    let script = format!(
        "import pickle\nv = pickle.loads(bytes.fromhex('{}'))[1]\n\
         print(len(v), all(v[2 * i] is v[2 * i + 1] and v[2 * i] == [i] for i in range(600)))",
        hex(&out)
    );
    assert_eq!(python(&script), "1200 True\n");
}
