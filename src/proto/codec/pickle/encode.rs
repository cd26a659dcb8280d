//! The pickle writer: emits protocol 4 opcodes for [`Value`]s, tokens, proxies and
//! exceptions, exactly as CPython's `pickle.loads` expects them. No frames are
//! written (they are optional for a reader), and a memo only for a
//! [`Value::Shared`]: it is written once, stored with BINPUT, and every further
//! place it appears in the same value is a BINGET of it (as CPython's pickler
//! writes an object it has seen), so an aliased value's pickle stays linear in
//! its distinct parts and the client gets the aliasing back (`x[0] is x[1]`).

use std::sync::Arc;

use super::Origin;
use crate::proto::value::{
    Form, Slot, Step, Token, Value, Walk, Written, ENTRIES, ITEMS, KWARGS, STATE,
};

pub(super) const PROTO: u8 = 0x80;
const STOP: u8 = b'.';
const MARK: u8 = b'(';
const NONE: u8 = b'N';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const LONG1: u8 = 0x8a;
const LONG4: u8 = 0x8b;
const BINFLOAT: u8 = b'G';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';
const BINUNICODE8: u8 = 0x8d;
const SHORT_BINBYTES: u8 = b'C';
const BINBYTES: u8 = b'B';
const BINBYTES8: u8 = 0x8e;
const EMPTY_LIST: u8 = b']';
const APPENDS: u8 = b'e';
const EMPTY_TUPLE: u8 = b')';
const TUPLE: u8 = b't';
const TUPLE1: u8 = 0x85;
const EMPTY_DICT: u8 = b'}';
const SETITEMS: u8 = b'u';
const SETITEM: u8 = b's';
const EMPTY_SET: u8 = 0x8f;
const ADDITEMS: u8 = 0x90;
const FROZENSET: u8 = 0x91;
const GLOBAL: u8 = b'c';
const REDUCE: u8 = b'R';
const NEWOBJ: u8 = 0x81;
const NEWOBJ_EX: u8 = 0x92;
const BUILD: u8 = b'b';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';

/// How a container is written, by its place in its parent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role<'v> {
    /// As itself.
    Plain,
    /// An opaque object made by this form: its parts follow.
    Object(&'v Form),
    /// An opaque object's items: appended onto it.
    Items,
    /// An opaque object's entries: set onto it.
    Entries,
    /// Not written (no keyword arguments, no state).
    Silent,
    /// A shared container written before: a memo reference replaced it.
    Memoized,
}

/// Appends one pickle to a buffer; `origin` describes the server whose tokens
/// it writes.
pub(super) struct Writer<'w, 'o> {
    pub(super) out: &'w mut Vec<u8>,
    pub(super) origin: &'w Origin<'o>,
}

/// Minimal little-endian two's-complement bytes of `i` (LONG1's payload).
fn long_bytes(i: i64) -> Vec<u8> {
    super::decode::minimal(i.to_le_bytes().to_vec())
}

impl Writer<'_, '_> {
    /// Starts a pickle (PROTO 4).
    pub(super) fn begin(&mut self) {
        self.out.extend_from_slice(&[PROTO, 4]);
    }

    /// Ends a pickle (STOP).
    pub(super) fn end(&mut self) {
        self.out.push(STOP);
    }

    pub(super) fn op(&mut self, op: u8) {
        self.out.push(op);
    }

    /// A module-level global by name (the GLOBAL opcode, valid in every protocol).
    pub(super) fn global(&mut self, module: &str, name: &str) {
        self.out.push(GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    /// Closes a tuple of `n` items pushed after a MARK (or pushes `()`).
    pub(super) fn tuple_of(&mut self, n: usize, f: impl FnOnce(&mut Self)) {
        match n {
            0 => self.out.push(EMPTY_TUPLE),
            1..=3 => {
                f(self);
                self.out.push(TUPLE1 + (n as u8 - 1));
            }
            _ => {
                self.out.push(MARK);
                f(self);
                self.out.push(TUPLE);
            }
        }
    }

    /// `f(*args)` via REDUCE: the callable, then the args tuple.
    pub(super) fn reduce(&mut self, module: &str, name: &str, args: &[Value]) {
        self.global(module, name);
        self.tuple_of(args.len(), |w| args.iter().for_each(|a| w.value(a)));
        self.out.push(REDUCE);
    }

    pub(super) fn str(&mut self, s: &str) {
        let b = s.as_bytes();
        match b.len() {
            n if n < 256 => self.out.extend_from_slice(&[SHORT_BINUNICODE, n as u8]),
            n if n <= u32::MAX as usize => {
                self.out.push(BINUNICODE);
                self.out.extend_from_slice(&(n as u32).to_le_bytes());
            }
            n => {
                self.out.push(BINUNICODE8);
                self.out.extend_from_slice(&(n as u64).to_le_bytes());
            }
        }
        self.out.extend_from_slice(b);
    }

    fn bytes(&mut self, b: &[u8]) {
        match b.len() {
            n if n < 256 => self.out.extend_from_slice(&[SHORT_BINBYTES, n as u8]),
            n if n <= u32::MAX as usize => {
                self.out.push(BINBYTES);
                self.out.extend_from_slice(&(n as u32).to_le_bytes());
            }
            n => {
                self.out.push(BINBYTES8);
                self.out.extend_from_slice(&(n as u64).to_le_bytes());
            }
        }
        self.out.extend_from_slice(b);
    }

    fn int(&mut self, i: i64) {
        match i {
            0..=0xff => self.out.extend_from_slice(&[BININT1, i as u8]),
            0x100..=0xffff => {
                self.out.push(BININT2);
                self.out.extend_from_slice(&(i as u16).to_le_bytes());
            }
            _ if i32::try_from(i).is_ok() => {
                self.out.push(BININT);
                self.out.extend_from_slice(&(i as i32).to_le_bytes());
            }
            _ => {
                let b = long_bytes(i);
                self.out.extend_from_slice(&[LONG1, b.len() as u8]);
                self.out.extend_from_slice(&b);
            }
        }
    }

    /// One value. References become rebuilt proxies. The tree is walked with an
    /// explicit stack: a host may build values of any depth.
    pub(super) fn value(&mut self, v: &Value) {
        if !v.is_container() && !v.is_shared() {
            return self.leaf(v);
        }
        // Per open container: whether it is an opaque object, and how it is
        // written (its role in its parent); and the shared value it stores in
        // the memo when it ends.
        let mut open: Vec<(Role<'_>, Option<*const Value>)> = Vec::new();
        // Shared values written so far, their numbers the memo keys. Keys count
        // from 0 in each call: a later call in the same pickle may overwrite
        // them, never before their last use.
        let mut memo = Written::default();
        let mut walk = Walk::new(v);
        while let Some(step) = walk.next() {
            let (x, slot) = match step {
                Step::Leaf(x, slot) | Step::Enter(x, slot) => (x, slot),
                Step::Exit(x) => {
                    let (role, shared) = open.pop().expect("entered before");
                    match role {
                        Role::Items => self.close_onto(x, APPENDS),
                        Role::Entries => self.close_onto(x, SETITEMS),
                        Role::Silent | Role::Memoized => {}
                        _ => self.close(x),
                    }
                    if let Some(p) = shared {
                        self.put(memo.add(p));
                    }
                    continue;
                }
            };
            let role = match (open.last(), slot, step) {
                (Some((Role::Object(o), _)), Slot::Item(i), _) => self.part(o, i, x),
                _ => Role::Plain,
            };
            // A shared value in a place of its own: written once, then fetched.
            let shared = match walk.shared() {
                Some(a) if role == Role::Plain => Some(Arc::as_ptr(a)),
                _ => None,
            };
            if let Some(p) = shared {
                if let Some(key) = memo.get(p) {
                    self.get(key);
                    if matches!(step, Step::Enter(..)) {
                        walk.skip_children();
                        open.push((Role::Memoized, None));
                    }
                    continue;
                }
            }
            match step {
                Step::Leaf(..) if role == Role::Silent => {}
                Step::Leaf(x, _) => {
                    self.leaf(x);
                    if let Some(p) = shared {
                        self.put(memo.add(p));
                    }
                }
                Step::Enter(x, _) => {
                    match role {
                        Role::Items | Role::Entries => self.open_onto(x),
                        Role::Silent => {}
                        _ => self.open(x),
                    }
                    let role = match (role, x) {
                        (Role::Plain, Value::Opaque(o)) => Role::Object(o.form()),
                        (role, _) => role,
                    };
                    open.push((role, shared));
                }
                Step::Exit(_) => unreachable!("handled above"),
            }
        }
    }

    /// Stores the value on top of the stack in the memo under `key`.
    fn put(&mut self, key: u32) {
        match u8::try_from(key) {
            Ok(k) => self.out.extend_from_slice(&[BINPUT, k]),
            Err(_) => {
                self.out.push(LONG_BINPUT);
                self.out.extend_from_slice(&key.to_le_bytes());
            }
        }
    }

    /// Pushes the value stored under `key`.
    fn get(&mut self, key: u32) {
        match u8::try_from(key) {
            Ok(k) => self.out.extend_from_slice(&[BINGET, k]),
            Err(_) => {
                self.out.push(LONG_BINGET);
                self.out.extend_from_slice(&key.to_le_bytes());
            }
        }
    }

    /// How part `i` of an opaque object made by `form` is written, after any
    /// opcode due before it: the object is made (REDUCE, NEWOBJ, NEWOBJ_EX)
    /// once its callable, args and kwargs are on the stack, then its items are
    /// appended, its entries set, and its state built.
    fn part<'v>(&mut self, form: &'v Form, i: usize, x: &Value) -> Role<'v> {
        if i == ITEMS {
            self.out.push(match form {
                Form::NewObj => NEWOBJ,
                Form::NewObjEx => NEWOBJ_EX,
                _ => REDUCE,
            });
        }
        match i {
            KWARGS if *form != Form::NewObjEx => Role::Silent,
            ITEMS => Role::Items,
            ENTRIES => Role::Entries,
            STATE if matches!(x, Value::None) => Role::Silent,
            _ => Role::Plain,
        }
    }

    /// Items or entries added onto the object below them: a MARK when any.
    fn open_onto(&mut self, x: &Value) {
        if x.child(0).is_some() {
            self.out.push(MARK);
        }
    }

    /// APPENDS / SETITEMS after the items or entries, when any.
    fn close_onto(&mut self, x: &Value, op: u8) {
        if x.child(0).is_some() {
            self.out.push(op);
        }
    }

    /// The opcodes that start a container, before its items.
    fn open(&mut self, v: &Value) {
        match v {
            Value::List(items) => {
                self.out.push(EMPTY_LIST);
                if !items.is_empty() {
                    self.out.push(MARK);
                }
            }
            Value::Tuple(items) => match items.len() {
                0 => self.out.push(EMPTY_TUPLE),
                1..=3 => {}
                _ => self.out.push(MARK),
            },
            Value::Dict(d) => {
                self.out.push(EMPTY_DICT);
                if !d.is_empty() {
                    self.out.push(MARK);
                }
            }
            Value::Set(items) => {
                self.out.push(EMPTY_SET);
                if !items.is_empty() {
                    self.out.push(MARK);
                }
            }
            Value::FrozenSet(_) => self.out.push(MARK),
            _ => {}
        }
    }

    /// The opcode that builds a container from the items pushed since `open`.
    fn close(&mut self, v: &Value) {
        match v {
            Value::List(items) if !items.is_empty() => self.out.push(APPENDS),
            Value::Tuple(items) => match items.len() {
                0 => {}
                n @ 1..=3 => self.out.push(TUPLE1 + (n as u8 - 1)),
                _ => self.out.push(TUPLE),
            },
            Value::Dict(d) if !d.is_empty() => self.out.push(SETITEMS),
            Value::Set(items) if !items.is_empty() => self.out.push(ADDITEMS),
            Value::FrozenSet(_) => self.out.push(FROZENSET),
            Value::Opaque(o) if !matches!(o.state(), Some(Value::None)) => self.out.push(BUILD),
            _ => {}
        }
    }

    /// A value without children.
    pub(super) fn leaf(&mut self, v: &Value) {
        match v {
            Value::None => self.out.push(NONE),
            Value::Bool(true) => self.out.push(NEWTRUE),
            Value::Bool(false) => self.out.push(NEWFALSE),
            Value::Int(i) => self.int(*i),
            Value::BigInt(b) if b.is_empty() => self.int(0),
            Value::BigInt(b) => {
                if b.len() < 256 {
                    self.out.extend_from_slice(&[LONG1, b.len() as u8]);
                } else {
                    self.out.push(LONG4);
                    self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                }
                self.out.extend_from_slice(b);
            }
            Value::Float(f) => {
                self.out.push(BINFLOAT);
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => self.str(s),
            Value::Bytes(b) => self.bytes(b),
            Value::Slice(s) => {
                let b = |x: Option<i64>| x.map_or(Value::None, Value::Int);
                self.reduce("builtins", "slice", &[b(s.start), b(s.stop), b(s.step)]);
            }
            Value::Ref(t) => self.proxy(t),
            Value::Opaque(o) => match o.form() {
                Form::Global { module, name } => self.global(module, name),
                _ => self.value(v),
            },
            Value::List(_)
            | Value::Tuple(_)
            | Value::Dict(_)
            | Value::Set(_)
            | Value::FrozenSet(_)
            | Value::Shared(_) => self.value(v),
        }
    }

    /// A real `multiprocessing.managers.Token(typeid, address, id)` instance.
    pub(super) fn token(&mut self, t: &Token) {
        self.global("multiprocessing.managers", "Token");
        self.out.push(EMPTY_TUPLE);
        self.out.push(NEWOBJ);
        self.tuple_of(3, |w| {
            w.str(&t.typeid);
            w.value(w.origin.address);
            w.str(&t.id.to_string());
        });
        self.out.push(BUILD);
    }

    /// `RebuildProxy(ProxyType, token, 'pickle', kwds)`, as `BaseProxy.__reduce__`
    /// produces; the client rebuilds a working proxy (and increfs it). An
    /// `AutoProxy` carries `{'exposed': (...)}` as CPython's does: without it the
    /// client would ask `get_methods` over an unauthenticated connection.
    fn proxy(&mut self, t: &Token) {
        let proxy_type = super::proxy_type(&t.typeid);
        self.global("multiprocessing.managers", "RebuildProxy");
        self.out.push(MARK);
        self.global("multiprocessing.managers", proxy_type);
        self.token(t);
        self.str("pickle");
        self.out.push(EMPTY_DICT);
        if proxy_type == "AutoProxy" {
            if let Some(exposed) = (self.origin.exposed)(&t.typeid) {
                self.str("exposed");
                self.tuple_of(exposed.len(), |w| exposed.iter().for_each(|m| w.str(m)));
                self.out.push(SETITEM);
            }
        }
        self.out.push(TUPLE);
        self.out.push(REDUCE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn million_deep_values_are_written_without_recursion() {
        crate::proto::value::tests::on_small_stack(|| {
            const DEEP: usize = 1_000_000;
            let nest = |leaf: Value, wrap: fn(Value) -> Value| (0..DEEP).fold(leaf, |v, _| wrap(v));
            let address = Value::None;
            let origin = Origin::new(&address);
            // [[[...None...]]]: EMPTY_LIST MARK per level, NONE, APPENDS per level.
            let mut out = Vec::new();
            let v = nest(Value::None, |v| Value::List(vec![v]));
            let mut w = Writer {
                out: &mut out,
                origin: &origin,
            };
            w.value(&v);
            assert_eq!(out.len(), 3 * DEEP + 1);
            assert_eq!(&out[..4], &[EMPTY_LIST, MARK, EMPTY_LIST, MARK]);
            assert_eq!(out[2 * DEEP], NONE);
            assert!(out[2 * DEEP + 1..].iter().all(|&b| b == APPENDS));
            // A reply: its hashability check walks without recursion too, and
            // finds a list used as a dict key a million levels down.
            let bad = nest(Value::Dict(vec![(Value::List(vec![]), Value::None)]), |v| {
                Value::Tuple(vec![v])
            });
            let mut out = Vec::new();
            super::super::encode_reply(&crate::proto::Reply::Return(bad), &origin, &mut out);
            match super::super::decode_reply(&out).unwrap() {
                crate::proto::Reply::Unserializable(why) => {
                    assert!(why.contains("unhashable type: 'list'"), "{why}")
                }
                other => panic!("{other:?}"),
            }
            let mut out = Vec::new();
            super::super::encode_reply(&crate::proto::Reply::Return(v), &origin, &mut out);
            assert!(out.len() > 3 * DEEP);
        });
    }

    #[test]
    fn long_bytes_are_minimal() {
        assert_eq!(long_bytes(0), vec![0]);
        assert_eq!(long_bytes(255), vec![0xff, 0]);
        assert_eq!(long_bytes(-1), vec![0xff]);
        assert_eq!(long_bytes(-129), vec![0x7f, 0xff]);
        assert_eq!(long_bytes(i64::MAX).len(), 8);
    }
}
