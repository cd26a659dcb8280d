//! Decoding in bounded memory, measured: a counting global allocator records the
//! peak of live heap bytes while each decoder runs, and every input — large
//! ordinary pickles as CPython writes them, native payloads, and crafted ones
//! (memo reuse of every constructor, self-reference, deep nesting, huge declared
//! lengths) — must stay within `decode_limit(len, C)`: C bytes per input byte
//! plus a fixed floor, with C = `PICKLE_BYTES_PER_INPUT_BYTE` or
//! `NATIVE_BYTES_PER_INPUT_BYTE`.
//!
//! The binary has a single test function so nothing else allocates while a
//! case is measured.

use std::path::PathBuf;
use std::process::Command;

use mgr::proto::codec::{
    decode_limit, native, pickle, CodecError, NATIVE_BYTES_PER_INPUT_BYTE,
    PICKLE_BYTES_PER_INPUT_BYTE,
};
use mgr::proto::frame::{self, FrameError, DEFAULT_MAX_FRAME};
use mgr::proto::{ObjectId, Reply, Request, Token, Value};

mod counting;

use counting::measure;

/// What a case must do besides staying within the bound.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    Ok,
    Err,
    Either,
}

struct Report {
    worst: f64,
}

impl Report {
    fn check<T: std::fmt::Debug>(
        &mut self,
        name: &str,
        input: &[u8],
        per_byte: usize,
        expect: Expect,
        decode: impl FnOnce(&[u8]) -> Result<T, CodecError>,
    ) -> Option<T> {
        let (res, peak) = measure(|| decode(input));
        let limit = decode_limit(input.len(), per_byte);
        let ratio = peak as f64 / input.len().max(1) as f64;
        let outcome = match &res {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("error: {}", truncate(&e.to_string())),
        };
        let row = format!(
            "{name:<48} {:>9} B in, peak {:>11} B ({ratio:>6.1}x), limit {limit:>11}: {outcome}",
            input.len(),
            peak
        );
        eprintln!("{row}");
        if input.len() > 1 << 20 {
            self.worst = self.worst.max(ratio);
        }
        assert!(
            peak <= limit,
            "{name}: peak {peak} B exceeds the limit {limit} B for {} input bytes",
            input.len()
        );
        match (expect, &res) {
            (Expect::Ok, Err(e)) => panic!("{name}: should decode, got {e}"),
            (Expect::Err, Ok(_)) => panic!("{name}: should be refused"),
            _ => {}
        }
        res.ok()
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(90).collect()
}

fn pickle_request(b: &[u8]) -> Result<Request, CodecError> {
    pickle::decode_request(b)
}

fn pickle_request_for(b: &[u8]) -> Result<Request, CodecError> {
    let home = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(5000)]);
    pickle::decode_request_for(b, &home)
}

fn pickle_reply(b: &[u8]) -> Result<Reply, CodecError> {
    pickle::decode_reply(b)
}

/// Ordinary pickles, as CPython writes them (one file per case), about 4 MiB each.
fn cpython_pickles() -> Vec<(String, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("mgr-decode-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = r#"
import pickle, sys, os, array
d = sys.argv[1]
M = 4 << 20
cases = {
    'list of small ints (K)': [i % 256 for i in range(M // 2)],
    'list of ints (J)': list(range(1 << 20, (1 << 20) + M // 5)),
    'list of None': [None] * M,
    'list of empty tuples': [()] * M,
    'list of 1-tuples': [(i % 200,) for i in range(M // 4)],
    'list of short strings': [str(i) for i in range(M // 10)],
    'list of one shared list': [[1, 2, 3]] * (M // 2),
    'dict str -> int': {str(i): i for i in range(M // 14)},
    'set of ints': set(range(M // 5)),
    'nested lists': [[i, [i, [i]]] for i in range(M // 16)],
    'big bytes': b'x' * M,
    'big str': 'y' * M,
    'array of doubles': array.array('d', range(M // 8)),
    'iter of a str': iter('y' * (M // 8)),
    'iter of bytes': iter(b'x' * (M // 8)),
    # Aliased: one inner list at every place (memo references), shared.
    'aliased [[0]*300]*300': [[0] * 300] * 300,
    'aliased [[[0]*100]*100]*100': [[[0] * 100] * 100] * 100,
    'aliased 2**13 refs to a 1000-list': [list(range(1000))] * (1 << 13),
    'aliased dict of one shared str': {i: 'z' * 100 for i in range(M // 16)},
}
for name, obj in cases.items():
    for proto in (2, 4):
        req = (None, 'create', ('list', obj), {'k': 1})
        data = pickle.dumps(req, protocol=proto)
        with open(os.path.join(d, f'{name} p{proto}'), 'wb') as f:
            f.write(data)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&dir)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let cases = files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    cases
}

/// A protocol-4 request `(None, 'create', (<body>,), {})` around raw opcodes
/// that leave one object on the stack.
fn wrap(body: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x04(N\x8c\x06create(".to_vec();
    p.extend_from_slice(body);
    p.extend_from_slice(b"t}t.");
    p
}

fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

/// `count` times: push memo[func], memo[args], REDUCE, append to the list
/// under them. The list is memo 0, the global memo 1, the argument tuple memo 2.
fn reduce_again_and_again(func: &[u8], args: &[u8], count: usize) -> Vec<u8> {
    let mut b = b"]\x94".to_vec(); // the list, memo 0
    b.extend_from_slice(func);
    b.extend_from_slice(b"\x940"); // memo 1, popped
    b.extend_from_slice(args);
    b.extend_from_slice(b"\x940"); // memo 2, popped
    for _ in 0..count {
        b.extend_from_slice(b"h\x01h\x02Ra");
    }
    wrap(&b)
}

/// A tuple of one memoized object, from raw opcodes.
/// A list of `leaves` Nones, memoized, then paired with itself `times` times
/// through the memo (`l(n+1) = (l(n), l(n))`): 2**times × `leaves` values when
/// expanded, from a few bytes per doubling.
fn memo_doubling(leaves: usize, times: u8) -> Vec<u8> {
    let mut list = b"](".to_vec();
    list.extend(std::iter::repeat_n(b'N', leaves));
    list.push(b'e');
    doubled(&list, times)
}

/// The object `base`'s opcodes leave on the stack, memoized, then paired with
/// itself `times` times through the memo.
fn doubled(base: &[u8], times: u8) -> Vec<u8> {
    let mut dbl = base.to_vec();
    dbl.extend_from_slice(b"\x940");
    for i in 0..times {
        dbl.extend_from_slice(&[b'h', i, b'h', i, 0x86, 0x94, b'0']);
    }
    dbl.extend_from_slice(&[b'h', times]);
    wrap(&dbl)
}

fn one_tuple(obj: &[u8]) -> Vec<u8> {
    let mut b = obj.to_vec();
    b.push(0x85);
    b
}

fn crafted_pickles() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let mut cases = Vec::new();
    // range(60000) again and again: each one is kept compact (its items are
    // built by a constructor, under its own bound), so this decodes.
    cases.push((
        "range() reused 3000x",
        reduce_again_and_again(
            &global("builtins", "range"),
            &one_tuple(b"J\x60\xea\x00\x00"),
            3000,
        ),
        Expect::Ok,
    ));
    // list(x), set(x), tuple(x) of a memoized 20000-item list.
    let big_list = {
        let mut b = b"(".to_vec();
        b.extend(std::iter::repeat_n(b'N', 20_000));
        b.push(b'l');
        b
    };
    for (name, g) in [
        (
            "list() of one list reused 3000x",
            global("builtins", "list"),
        ),
        ("set() of one list reused 3000x", global("builtins", "set")),
        (
            "tuple() of one list reused 3000x",
            global("builtins", "tuple"),
        ),
        (
            "frozenset() of one list reused 3000x",
            global("builtins", "frozenset"),
        ),
    ] {
        cases.push((
            name,
            reduce_again_and_again(&g, &one_tuple(&big_list), 3000),
            Expect::Err,
        ));
    }
    // Interpreted iterators over one memoized 20000-item list, again and again.
    for (name, g) in [
        ("zip() of one list reused 3000x", global("builtins", "zip")),
        (
            "enumerate() of one list reused 3000x",
            global("builtins", "enumerate"),
        ),
        (
            "iter() of one list reused 3000x",
            global("builtins", "iter"),
        ),
        (
            "reversed() of one list reused 3000x",
            global("builtins", "reversed"),
        ),
    ] {
        cases.push((
            name,
            reduce_again_and_again(&g, &one_tuple(&big_list), 3000),
            Expect::Err,
        ));
    }
    // bytes(b) / bytearray(b) of a memoized 64 KiB bytes.
    let big_bytes = {
        let mut b = b"B\x00\x00\x01\x00".to_vec();
        b.extend(std::iter::repeat_n(b'z', 65536));
        b
    };
    // bytes() builds a copy each time (refused); a bytearray is kept as the
    // call that makes it, so 3000 of them share one argument tuple.
    for (name, g, expect) in [
        (
            "bytes() reused 3000x",
            global("builtins", "bytes"),
            Expect::Err,
        ),
        (
            "bytearray() reused 3000x (one shared argument)",
            global("builtins", "bytearray"),
            Expect::Ok,
        ),
    ] {
        cases.push((
            name,
            reduce_again_and_again(&g, &one_tuple(&big_bytes), 3000),
            expect,
        ));
    }
    // array('b', bytes) and _array_reconstructor over one memoized bytes: kept
    // as calls, 3000 arrays share one argument tuple.
    let mut arr_args = b"\x8c\x01b".to_vec();
    arr_args.extend_from_slice(&big_bytes);
    arr_args.push(0x86);
    cases.push((
        "array('b', bytes) reused 3000x",
        reduce_again_and_again(&global("array", "array"), &arr_args, 3000),
        Expect::Ok,
    ));
    let mut rec_args = b"(".to_vec();
    rec_args.extend_from_slice(&global("array", "array"));
    rec_args.extend_from_slice(b"\x8c\x01bK\x01");
    rec_args.extend_from_slice(&big_bytes);
    rec_args.push(b't');
    cases.push((
        "_array_reconstructor reused 3000x",
        reduce_again_and_again(&global("array", "_array_reconstructor"), &rec_args, 3000),
        Expect::Ok,
    ));
    let mut str_args = b"\x8c\x01u".to_vec();
    str_args.extend_from_slice(b"\x8d\x00\x00\x01\x00\x00\x00\x00\x00");
    str_args.extend(std::iter::repeat_n(b'w', 65536));
    str_args.push(0x86);
    cases.push((
        "array('u', str) reused 3000x",
        reduce_again_and_again(&global("array", "array"), &str_args, 3000),
        Expect::Ok,
    ));
    // Exception constructors over one memoized 20000-item argument tuple.
    let mut exc_args = b"(".to_vec();
    exc_args.extend(std::iter::repeat_n(b'N', 20_000));
    exc_args.push(b't');
    cases.push((
        "ValueError(*args) reused 3000x",
        reduce_again_and_again(&global("builtins", "ValueError"), &exc_args, 3000),
        Expect::Err,
    ));
    let mut newobj = b"]\x94".to_vec();
    newobj.extend_from_slice(&global("builtins", "KeyError"));
    newobj.extend_from_slice(b"\x940");
    newobj.extend_from_slice(&exc_args);
    newobj.extend_from_slice(b"\x940");
    for _ in 0..3000 {
        newobj.extend_from_slice(b"h\x01h\x02\x81a");
    }
    cases.push(("NEWOBJ KeyError reused 3000x", wrap(&newobj), Expect::Err));
    let mut copyreg = b"]\x94".to_vec();
    copyreg.extend_from_slice(&global("copyreg", "__newobj__"));
    copyreg.extend_from_slice(b"\x940(");
    copyreg.extend_from_slice(&global("builtins", "OSError"));
    copyreg.extend(std::iter::repeat_n(b'N', 20_000));
    copyreg.extend_from_slice(b"t\x940");
    for _ in 0..3000 {
        copyreg.extend_from_slice(b"h\x01h\x02Ra");
    }
    cases.push((
        "copyreg.__newobj__(OSError, ...) reused 3000x",
        wrap(&copyreg),
        Expect::Err,
    ));
    // Opaque values: a value type the default policy passes, made over one
    // memoized 20000-item argument tuple again and again.
    cases.push((
        "Decimal(*args) opaque reused 3000x",
        reduce_again_and_again(&global("decimal", "Decimal"), &exc_args, 3000),
        Expect::Err,
    ));
    // One opaque object (NEWOBJ + a 20000-entry BUILD state), memoized and
    // referenced 3000 times.
    let mut shared_obj = b"]\x94".to_vec();
    shared_obj.extend_from_slice(&global("uuid", "UUID"));
    shared_obj.extend_from_slice(b")\x81}(");
    for i in 0..20_000u32 {
        shared_obj.push(b'J');
        shared_obj.extend_from_slice(&i.to_le_bytes());
        shared_obj.push(b'N');
    }
    shared_obj.extend_from_slice(b"ub\x940");
    for _ in 0..3000 {
        shared_obj.extend_from_slice(b"h\x01a");
    }
    cases.push((
        "one opaque object referenced 3000x",
        wrap(&shared_obj),
        Expect::Err,
    ));
    // 200000 opaque objects nested in one another: Decimal(Decimal(...(None))).
    let mut nested = global("decimal", "Decimal");
    nested.extend_from_slice(b"\x940");
    nested.extend(std::iter::repeat_n([b'h', 0], 200_000).flatten());
    nested.push(b'N');
    nested.extend(std::iter::repeat_n([0x85, b'R'], 200_000).flatten());
    cases.push(("200000 nested opaque objects", wrap(&nested), Expect::Err));
    // A wide BUILD state, wide APPENDS and SETITEMS onto opaque objects.
    let mut wide_state = global("uuid", "UUID");
    wide_state.extend_from_slice(b")\x81}(");
    wide_state.extend(std::iter::repeat_n(b'N', 1 << 21));
    wide_state.extend_from_slice(b"ub");
    cases.push((
        "opaque with a 2**20-pair state dict",
        wrap(&wide_state),
        Expect::Ok,
    ));
    let mut wide_items = global("collections", "deque");
    wide_items.extend_from_slice(b")R(");
    wide_items.extend(std::iter::repeat_n(b'N', 1 << 21));
    wide_items.push(b'e');
    cases.push((
        "opaque with 2**21 appended items",
        wrap(&wide_items),
        Expect::Ok,
    ));
    let mut wide_entries = global("collections", "OrderedDict");
    wide_entries.extend_from_slice(b")R(");
    wide_entries.extend(std::iter::repeat_n(b'N', 1 << 21));
    wide_entries.push(b'u');
    cases.push((
        "opaque with 2**20 set entries",
        wrap(&wide_entries),
        Expect::Ok,
    ));
    // A list appended to itself: wide (10000 times) and through a chain.
    let mut wide = b"]\x94(".to_vec();
    for _ in 0..10_000 {
        wide.extend_from_slice(b"h\x00");
    }
    wide.push(b'e');
    cases.push(("list containing itself 10000x", wrap(&wide), Expect::Err));
    let mut chain = b"]\x94".to_vec(); // memo 0: the outer list
    for _ in 0..100 {
        chain.extend_from_slice(b"]\x94("); // a new list, memoized
        for _ in 0..100 {
            chain.extend_from_slice(b"h\x00"); // full of the outer list
        }
        chain.extend_from_slice(b"ea"); // appended to the list below it
    }
    cases.push(("lists containing their ancestor", wrap(&chain), Expect::Err));
    // Memo doubling: l(n+1) = [l(n), l(n)], 2**40 leaves from a few hundred bytes.
    cases.push((
        "memo doubling to 2**40 items",
        memo_doubling(1000, 40),
        Expect::Err,
    ));
    // The same doubling, stopped just within MAX_EXPANDED_VALUES (2**24):
    // 2**13 leaves doubled 10 times is 2**23 leaves (and 2**11 lists).
    cases.push((
        "memo doubling to 2**23 items",
        memo_doubling(1 << 13, 10),
        Expect::Ok,
    ));
    // A 1 MiB str doubled 20 times: 2**21 values, but 2**20 MiB (a TiB) of
    // text for a walk to read; its payload counts toward the cap too.
    let mut big_str = b"X\x00\x00\x10\x00".to_vec();
    big_str.extend(std::iter::repeat_n(b's', 1 << 20));
    cases.push((
        "a 1 MiB str memo-doubled to 2**20 places",
        doubled(&big_str, 20),
        Expect::Err,
    ));
    // DUP of one list into a wide tuple, then that tuple doubled by DUP again.
    let mut dup = b"(]".to_vec();
    dup.extend(std::iter::repeat_n(b'2', 200_000));
    dup.push(b't');
    cases.push(("DUP of one list 200000x", wrap(&dup), Expect::Either));
    // Deep nesting.
    let mut deep = Vec::new();
    deep.extend(std::iter::repeat_n(b']', 200_000));
    deep.extend(std::iter::repeat_n(b'a', 199_999));
    cases.push(("200000 nested lists", wrap(&deep), Expect::Err));
    // Huge declared lengths and memo keys.
    cases.push((
        "str declaring 4 GiB",
        b"\x80\x04X\xff\xff\xff\xff.".to_vec(),
        Expect::Err,
    ));
    cases.push((
        "bytes declaring 2**63",
        b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f.".to_vec(),
        Expect::Err,
    ));
    // Kept compact: three ints, whatever the length.
    cases.push((
        "range(10**18)",
        wrap(b"cbuiltins\nrange\n\x8a\x08\x00\x00d\xa7\xb3\xb6\xe0\x0d\x85R"),
        Expect::Ok,
    ));
    let mut far_memo = b"N".to_vec();
    far_memo.extend_from_slice(b"r\xff\xff\xff\x7f");
    cases.push(("memo key 2**31", wrap(&far_memo), Expect::Err));
    let mut near_memo = vec![b'N'; 1 << 16];
    near_memo.extend_from_slice(b"r\x00\x00\x01\x00");
    near_memo.extend(std::iter::repeat_n(b'0', (1 << 16) - 1));
    cases.push((
        "memo key at the input's size",
        wrap(&near_memo),
        Expect::Either,
    ));
    // Dense 1-byte objects in the shapes that cost most per byte.
    let mut tuples = b"(".to_vec();
    for _ in 0..(1 << 20) {
        tuples.extend_from_slice(b"N\x85");
    }
    tuples.push(b'l');
    cases.push((
        "2**20 1-tuples of None (2 B each)",
        wrap(&tuples),
        Expect::Ok,
    ));
    let mut marks = b"(".to_vec();
    marks.extend(std::iter::repeat_n(b'(', 1 << 20));
    marks.extend(std::iter::repeat_n(b'l', 1 << 20));
    marks.push(b'l');
    cases.push(("2**20 MARKs", wrap(&marks), Expect::Err));
    let mut pairs = b"}(".to_vec();
    pairs.extend(std::iter::repeat_n(b'N', 1 << 21));
    pairs.push(b'u');
    cases.push(("dict of 2**20 None: None pairs", wrap(&pairs), Expect::Ok));
    // The fast path for the common request (src/proto/codec/pickle/fast.rs)
    // at its widest: as many values as it builds (1024), as empty dicts and
    // as a dict filled one SETITEM at a time.
    let mut wide = b"\x80\x04(N\x8c\x01m(".to_vec();
    wide.extend(std::iter::repeat_n(b'}', 1019));
    wide.extend(b"t}t.");
    cases.push(("fast path: 1019 empty dicts", wide, Expect::Ok));
    let mut pairs = b"\x80\x04(N\x8c\x01m}".to_vec();
    pairs.extend(std::iter::repeat_n(*b"NNs", 509).flatten());
    pairs.extend(b"\x85}t.");
    cases.push(("fast path: 509 SETITEMs", pairs, Expect::Ok));
    cases
}

/// A reply `('#ERROR', ValueError(*big))` and a reply returning shared data.
fn crafted_replies() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let mut err = b"\x80\x04\x8c\x06#ERROR".to_vec();
    err.extend_from_slice(&global("builtins", "ValueError"));
    err.push(b'(');
    for _ in 0..(1 << 18) {
        err.extend_from_slice(b"\x8c\x01\x07"); // '\x07' reprs as 4 chars
    }
    err.extend_from_slice(b"tR\x86.");
    let mut shared = b"\x80\x04\x8c\x07#RETURN(".to_vec();
    shared.extend_from_slice(b"]\x94(");
    shared.extend(std::iter::repeat_n(b'N', 10_000));
    shared.push(b'e');
    for _ in 0..(1 << 16) {
        shared.extend_from_slice(b"h\x00");
    }
    shared.extend_from_slice(b"l\x86.");
    vec![
        ("#ERROR with 2**18 str args", err, Expect::Ok),
        ("#RETURN of one list 2**16 times", shared, Expect::Err),
    ]
}

fn native_values() -> Vec<(&'static str, Value)> {
    let m = 4 << 20;
    vec![
        ("list of None", Value::List(vec![Value::None; m])),
        (
            "list of small ints",
            Value::List((0..m as i64 / 2).map(|i| Value::Int(i % 100)).collect()),
        ),
        (
            "list of short strings",
            Value::List(
                (0..m / 8)
                    .map(|i| Value::Str(format!("{}", i % 1000)))
                    .collect(),
            ),
        ),
        (
            "list of 1-tuples",
            Value::List(vec![Value::Tuple(vec![Value::None]); m / 3]),
        ),
        (
            "dict of None pairs",
            Value::Dict(vec![(Value::None, Value::None); m / 2]),
        ),
        (
            "list of refs",
            Value::List(vec![
                Value::Ref(Token {
                    typeid: "Q".into(),
                    id: ObjectId(1)
                });
                m / 4
            ]),
        ),
        ("big bytes", Value::Bytes(vec![7; m])),
        // Shared: one 1024-int list at 2**12 places (2**22 values), sent once.
        (
            "list of one shared list 2**12x",
            Value::List(vec![
                Value::Shared(std::sync::Arc::new(Value::List(
                    (0..1024).map(Value::Int).collect()
                )));
                1 << 12
            ]),
        ),
    ]
}

fn native_crafted() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let mut cases = Vec::new();
    // A reply: version, MSG_RETURN (0), then a value.
    let varint = |n: u64, out: &mut Vec<u8>| {
        out.push(253);
        out.extend_from_slice(&n.to_le_bytes());
    };
    // A list declaring 10**6 items with 10**6 bytes of None after it.
    let mut full = vec![native::NATIVE_VERSION, 0, 7];
    varint(1_000_000, &mut full);
    full.extend(std::iter::repeat_n(0u8, 1_000_000));
    cases.push(("list of 10**6 None, as declared", full, Expect::Ok));
    // Lists each declaring every byte left, nested: the claims outrun the input
    // (each could be filled, but not all of them).
    let total = 1_000_000u64;
    let mut chain = vec![native::NATIVE_VERSION, 0];
    for _ in 0..100 {
        chain.push(7);
        let after = chain.len() as u64 + 9;
        varint(total - after, &mut chain);
    }
    chain.resize(total as usize, 0);
    cases.push(("nested lists each claiming the rest", chain, Expect::Err));
    let mut over = vec![native::NATIVE_VERSION, 0, 7];
    varint(u64::MAX / 2, &mut over);
    cases.push(("list declaring 2**63 items", over, Expect::Err));
    let mut deep = vec![native::NATIVE_VERSION, 0];
    deep.extend(std::iter::repeat_n([7u8, 1], 100_000).flatten());
    deep.push(0);
    cases.push(("100000 nested lists", deep, Expect::Err));
    // Sharing: a list of 2**12 None defined once (tag 15), then a list of
    // 2**12 back-references (tag 16) to it, doubled by back-references again:
    // 2**24 + 2**12 values in a few KiB, refused by MAX_EXPANDED_VALUES.
    let mut dbl = vec![native::NATIVE_VERSION, 0, 7, 3, 15, 7];
    varint(1 << 12, &mut dbl);
    dbl.extend(std::iter::repeat_n(0u8, 1 << 12));
    dbl.extend_from_slice(&[15, 7]);
    varint(1 << 12, &mut dbl);
    dbl.extend(std::iter::repeat_n([16u8, 0], 1 << 12).flatten());
    dbl.extend_from_slice(&[16, 1]);
    cases.push(("shared lists expanding to 2**25", dbl, Expect::Err));
    // A back-reference to nothing, and a share of a share.
    cases.push((
        "back-reference to an undefined share",
        vec![native::NATIVE_VERSION, 0, 16, 0],
        Expect::Err,
    ));
    let mut chain = vec![native::NATIVE_VERSION, 0];
    chain.extend(std::iter::repeat_n(15u8, 100_000));
    chain.push(0);
    cases.push(("100000 shares of a share", chain, Expect::Err));
    cases
}

#[test]
fn every_decoder_stays_within_its_stated_memory_bound() {
    let mut report = Report { worst: 0.0 };
    let p = PICKLE_BYTES_PER_INPUT_BYTE;
    let n = NATIVE_BYTES_PER_INPUT_BYTE;

    for (name, bytes) in cpython_pickles() {
        let req = report.check(&name, &bytes, p, Expect::Ok, pickle_request_for);
        let req = req.expect("decoded");
        assert_eq!(req.method, "create", "{name}");
        assert_eq!(req.args.len(), 2, "{name}");
    }
    for (name, bytes, expect) in crafted_pickles() {
        report.check(name, &bytes, p, expect, pickle_request);
        report.check(name, &bytes, p, Expect::Either, pickle_reply);
    }
    for (name, bytes, expect) in crafted_replies() {
        report.check(name, &bytes, p, expect, pickle_reply);
    }
    let pickle_worst = report.worst;

    report.worst = 0.0;
    for (name, value) in native_values() {
        let mut req = Vec::new();
        native::encode_request(
            &Request::public("create", vec![Value::Str("list".into()), value.clone()]),
            &mut req,
        );
        report.check(name, &req, n, Expect::Ok, native::decode_request);
        drop(req);
        let mut reply = Vec::new();
        native::encode_reply(&Reply::Return(value), &mut reply);
        report.check(name, &reply, n, Expect::Ok, native::decode_reply);
    }
    for (name, bytes, expect) in native_crafted() {
        report.check(name, &bytes, n, expect, native::decode_reply);
    }
    let native_worst = report.worst;

    // Frames: the header codec checks the announced length against the limit
    // and allocates nothing, whatever it announces.
    let mut long = vec![0xff; 4];
    long.extend_from_slice(&(1u64 << 62).to_be_bytes());
    let cases: [(&str, &[u8], u64, bool); 4] = [
        (
            "frame announcing 2 GiB - 1",
            &[0x7f, 0xff, 0xff, 0xff],
            DEFAULT_MAX_FRAME,
            false,
        ),
        ("frame announcing 2**62", &long, DEFAULT_MAX_FRAME, false),
        (
            "frame announcing 2**62 with no limit",
            &long,
            u64::MAX,
            true,
        ),
        ("frame within the limit", &[0, 0, 1, 0], 1024, true),
    ];
    for (name, header, max, fits) in cases {
        let (res, peak) = measure(|| frame::decode_header(header, max));
        eprintln!("{name:<48} peak {peak} B: {res:?}");
        assert_eq!(peak, 0, "{name}: the header codec allocated");
        match res {
            Ok(Some(h)) => assert!(fits && h.payload_len as u64 <= max, "{name}"),
            Err(FrameError::TooLarge { .. }) => assert!(!fits, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }

    eprintln!(
        "worst over inputs > 1 MiB: pickle {pickle_worst:.1}x (C = {p}), native {native_worst:.1}x (C = {n})"
    );
}
