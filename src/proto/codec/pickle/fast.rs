//! The fast path for the request a stock client sends on almost every call:
//! `(ident, methodname, args, kwds)` whose arguments are atoms (None, bools,
//! ints, floats, str, bytes) and lists, tuples and dicts of them, with memo
//! stores but no memo references and no globals.
//!
//! It builds [`Value`]s straight from the opcodes in one pass, with no arena,
//! no memo table and no reference count, so a call costs little more than its
//! own strings: the request tuple itself is never built, its ident is parsed
//! in place and its method name borrowed from the input
//! ([`request_ref`]), and the stack's buffers are reused from call to call
//! (at most [`KEEP_VALUES`] entries kept per thread). Anything else — a memo reference, a global, a set, a value
//! nested deeper than [`FAST_DEPTH`], a malformed or trailing byte, a request
//! that is not the 4-tuple — gives `None`, and the caller runs the general
//! machine ([`super::decode`]), which decides (and words any error) exactly as
//! it would have without this path: the fast path never refuses anything.
//!
//! Memory: it builds at most [`FAST_VALUES`] values (more falls back), so its
//! stack and containers hold a few hundred KiB at most, within the floor
//! every decode is allowed ([`DECODE_FLOOR_BYTES`](super::super::DECODE_FLOOR_BYTES));
//! every str or bytes is one copy of input bytes, within the general
//! machine's [`PICKLE_BYTES_PER_INPUT_BYTE`](super::super::PICKLE_BYTES_PER_INPUT_BYTE)
//! per input byte. Its cost is one pass over the input plus those copies.
//! Between requests it keeps only its stack's buffers, and those only while
//! they are small ([`KEEP_VALUES`]).

use std::cell::Cell;

use super::decode::{long_node, Node};
use crate::proto::message::{Request, RequestRef};
use crate::proto::value::{ObjectId, Value};

/// Deepest container nesting the fast path builds (the request tuple is 1,
/// its args 2); anything deeper goes to the general machine, which caps
/// nesting at [`MAX_DEPTH`](super::MAX_DEPTH).
pub(super) const FAST_DEPTH: u8 = 16;

/// Most values (atoms and containers) the fast path builds for one request;
/// more goes to the general machine. 1024 values of 48 bytes, with their
/// stack and containers' spare capacity, stay under 400 KiB.
pub(super) const FAST_VALUES: usize = 1024;

/// Most MARKs open at once on the fast path (the request tuple's and its
/// arguments'); more goes to the general machine.
const FAST_MARKS: usize = 8;

/// Reads the input, never past its end; `None` when it would.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return None;
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Some(s)
    }
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    #[inline]
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }
    #[inline]
    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    #[inline]
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
    /// A length that must fit in what is left of the input.
    #[inline]
    fn len(&mut self, n: u64) -> Option<usize> {
        let left = (self.data.len() - self.pos) as u64;
        (n <= left).then_some(n as usize)
    }
}

/// Stack entries kept between requests (see [`SCRATCH`]); a request that
/// grew the stack further gives that memory back.
const KEEP_VALUES: usize = 64;

thread_local! {
    /// The stack's buffers, kept between requests on this thread (at most
    /// [`KEEP_VALUES`] entries, 3 KiB), so the common call allocates only what
    /// it returns: its arguments' containers and strings.
    static SCRATCH: Cell<(Vec<Value>, Vec<u8>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// The values on the machine's stack, with each one's container height
/// (0 for an atom) beside it.
///
/// The request tuple's first two items, when they are str (the ident and the
/// method name), are read in place instead of built: the ident parsed into
/// its [`ObjectId`], the method name borrowed from the input, a placeholder
/// on the stack. An op that would take either placeholder into a container
/// falls back, so only the request tuple itself ever holds them.
struct Stack<'a> {
    values: Vec<Value>,
    heights: Vec<u8>,
    marks: [usize; FAST_MARKS],
    open: usize,
    /// Values built so far.
    made: usize,
    /// The ident, read in place (its placeholder is at stack position 0).
    ident: Option<ObjectId>,
    /// The method name, read in place (its placeholder is at position 1).
    method: Option<&'a str>,
}

impl<'a> Stack<'a> {
    /// Where the items above the innermost MARK start.
    #[inline]
    fn floor(&self) -> usize {
        if self.open == 0 {
            0
        } else {
            self.marks[self.open - 1]
        }
    }

    /// Pushes a new value; `None` past [`FAST_VALUES`].
    #[inline(always)]
    fn push(&mut self, v: Value, h: u8) -> Option<()> {
        self.made += 1;
        if self.made > FAST_VALUES {
            return None;
        }
        self.heights.push(h);
        self.values.push(v);
        Some(())
    }

    /// Which of the request tuple's first two items the next value is (0 or
    /// 1): the stack holds fewer than two values, all above the one open
    /// MARK, which stands at the bottom.
    #[inline]
    fn head_slot(&self) -> Option<usize> {
        let n = self.values.len();
        (self.open == 1 && self.marks[0] == 0 && n < 2).then_some(n)
    }

    /// Whether taking the items from `m` on into a container would take a
    /// placeholder of a value read in place (then the fast path gives up).
    #[inline]
    fn takes_head(&self, m: usize) -> bool {
        m < 2 && (self.ident.is_some() || self.method.is_some())
    }

    /// Removes the innermost MARK and returns where it stood.
    #[inline]
    fn pop_mark(&mut self) -> Option<usize> {
        self.open = self.open.checked_sub(1)?;
        Some(self.marks[self.open])
    }

    /// The height of a container holding the items from `m` on (`None` past
    /// [`FAST_DEPTH`]).
    #[inline]
    fn height(&self, m: usize) -> Option<u8> {
        let h = self.heights[m..].iter().copied().max().unwrap_or(0) + 1;
        (h <= FAST_DEPTH).then_some(h)
    }

    /// The items from `m` on, taken off the stack, and the height of a
    /// container holding them.
    #[inline]
    fn split(&mut self, m: usize) -> Option<(Vec<Value>, u8)> {
        if self.takes_head(m) {
            return None;
        }
        let h = self.height(m)?;
        self.heights.truncate(m);
        Some((self.values.split_off(m), h))
    }

    /// Adds the items from `m` on to the list (`pairs` false) or dict
    /// (`pairs` true) just below them.
    fn extend(&mut self, m: usize, pairs: bool) -> Option<()> {
        if m <= self.floor() || m > self.values.len() || self.takes_head(m) {
            return None;
        }
        let h = self.height(m)?;
        let n = self.values.len() - m;
        let (below, items) = self.values.split_at_mut(m);
        match (&mut below[m - 1], pairs) {
            (Value::List(v), false) => {
                v.reserve(n);
                v.extend(items.iter_mut().map(std::mem::take));
            }
            (Value::Dict(d), true) if n % 2 == 0 => {
                d.reserve(n / 2);
                let mut it = items.iter_mut().map(std::mem::take);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            _ => return None,
        }
        self.values.truncate(m);
        self.heights.truncate(m);
        let top = &mut self.heights[m - 1];
        *top = (*top).max(h);
        Some(())
    }

    /// Pushes a str, or reads it in place if it is the ident or the method
    /// name (see [`Stack`]). `None` for text that is not UTF-8 (lone
    /// surrogates are the general machine's) or an ident that is not hex.
    #[inline]
    fn str(&mut self, b: &'a [u8]) -> Option<()> {
        match self.head_slot() {
            Some(0) => {
                self.ident = Some(ident(b)?);
                self.push(Value::None, 0)
            }
            Some(_) => {
                self.method = Some(text(b)?);
                self.push(Value::None, 0)
            }
            None => self.push(Value::Str(text(b)?.to_owned()), 0),
        }
    }
}

/// `b` as text, if it is UTF-8.
#[inline]
fn text(b: &[u8]) -> Option<&str> {
    if b.is_ascii() {
        // SAFETY: ASCII is valid UTF-8. Idents, method names and most keys are
        // ASCII, and `is_ascii` checks a word at a time where `from_utf8` has a
        // set-up cost that dominates a short string.
        return Some(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).ok()
}

/// The object id a str ident names, as [`ObjectId::from_hex`] reads it
/// (which takes anything but 1–16 plain hex digits).
#[inline]
fn ident(b: &[u8]) -> Option<ObjectId> {
    if (1..=16).contains(&b.len()) {
        let mut n = 0u64;
        for &c in b {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return ObjectId::from_hex(text(b)?),
            };
            n = n << 4 | u64::from(d);
        }
        return Some(ObjectId(n));
    }
    ObjectId::from_hex(text(b)?)
}

/// Runs `data` as a request of the common shape, or `None` to leave it to
/// the general machine.
pub(super) fn request(data: &[u8]) -> Option<Request> {
    request_ref(data).map(RequestRef::into_owned)
}

/// Runs `data` as a request of the common shape, its method name borrowed
/// from `data`, or `None` to leave it to the general machine.
pub(super) fn request_ref(data: &[u8]) -> Option<RequestRef<'_>> {
    let (values, heights) = SCRATCH.take();
    let mut s = Stack {
        values,
        heights,
        marks: [0; FAST_MARKS],
        open: 0,
        made: 0,
        ident: None,
        method: None,
    };
    let req = run(&mut s, data);
    let (mut values, mut heights) = (s.values, s.heights);
    if values.capacity() <= KEEP_VALUES {
        values.clear();
        heights.clear();
        SCRATCH.set((values, heights));
    }
    req
}

/// Runs the opcodes of `data`, which must pickle the request tuple: the
/// tuple is not built, its four items are left on the stack.
fn run<'a>(s: &mut Stack<'a>, data: &'a [u8]) -> Option<RequestRef<'a>> {
    let mut r = Reader { data, pos: 0 };
    loop {
        let op = r.byte()?;
        match op {
            0x80 => {
                if !(2..=5).contains(&r.byte()?) {
                    return None;
                }
            }
            0x95 => {
                let n = r.u64()?;
                r.len(n)?;
            }
            // STOP before the request tuple is complete.
            b'.' => return None,
            b'(' => {
                if s.open == FAST_MARKS {
                    return None;
                }
                s.marks[s.open] = s.values.len();
                s.open += 1;
            }
            // Memo stores: nothing here reads them back (a GET falls back), so
            // only what the general machine checks is checked.
            0x94 => {
                if s.values.len() <= s.floor() {
                    return None;
                }
            }
            b'q' | b'r' => {
                let k = if op == b'q' {
                    u32::from(r.byte()?)
                } else {
                    r.u32()?
                };
                if k as usize >= data.len() || s.values.len() <= s.floor() {
                    return None;
                }
            }
            b'N' => s.push(Value::None, 0)?,
            0x88 => s.push(Value::Bool(true), 0)?,
            0x89 => s.push(Value::Bool(false), 0)?,
            b'J' => s.push(Value::Int(i64::from(r.u32()? as i32)), 0)?,
            b'K' => s.push(Value::Int(i64::from(r.byte()?)), 0)?,
            b'M' => s.push(Value::Int(i64::from(r.u16()?)), 0)?,
            0x8a => {
                let n = r.byte()?;
                let v = match long_node(r.take(usize::from(n))?) {
                    Node::Int(i) => Value::Int(i),
                    Node::BigInt(b) => Value::BigInt(b),
                    _ => return None,
                };
                s.push(v, 0)?
            }
            b'G' => {
                let b = r.take(8)?;
                s.push(Value::Float(f64::from_be_bytes(b.try_into().ok()?)), 0)?
            }
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => u64::from(r.byte()?),
                    b'X' => u64::from(r.u32()?),
                    _ => r.u64()?,
                };
                let n = r.len(n)?;
                s.str(r.take(n)?)?
            }
            b'C' | b'B' | 0x8e => {
                let n = match op {
                    b'C' => u64::from(r.byte()?),
                    b'B' => u64::from(r.u32()?),
                    _ => r.u64()?,
                };
                let n = r.len(n)?;
                s.push(Value::Bytes(r.take(n)?.to_vec()), 0)?
            }
            b')' => s.push(Value::Tuple(Vec::new()), 1)?,
            b']' => s.push(Value::List(Vec::new()), 1)?,
            b'}' => s.push(Value::Dict(Vec::new()), 1)?,
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if s.values.len() < s.floor() + n {
                    return None;
                }
                let (items, h) = s.split(s.values.len() - n)?;
                s.push(Value::Tuple(items), h)?
            }
            b't' | b'l' => {
                let m = s.pop_mark()?;
                if op == b't' && m == 0 && s.open == 0 {
                    // The outermost tuple: the request, if it has four items.
                    if s.values.len() != 4 {
                        return None;
                    }
                    s.height(0)?;
                    break;
                }
                let (items, h) = s.split(m)?;
                let v = if op == b't' {
                    Value::Tuple(items)
                } else {
                    Value::List(items)
                };
                s.push(v, h)?
            }
            b'a' => s.extend(s.values.len().checked_sub(1)?, false)?,
            b's' => s.extend(s.values.len().checked_sub(2)?, true)?,
            b'e' | b'u' => {
                let m = s.pop_mark()?;
                s.extend(m, op == b'u')?
            }
            _ => return None,
        }
    }
    // The request tuple is complete (and not built): only memo stores of it,
    // a frame and STOP may follow.
    loop {
        match r.byte()? {
            0x94 => {}
            b'q' => {
                if usize::from(r.byte()?) >= data.len() {
                    return None;
                }
            }
            b'r' => {
                if r.u32()? as usize >= data.len() {
                    return None;
                }
            }
            0x95 => {
                let n = r.u64()?;
                r.len(n)?;
            }
            b'.' => break,
            _ => return None,
        }
    }
    if r.pos != data.len() {
        return None;
    }
    let target = match (s.ident, &s.values[0]) {
        (Some(id), _) => Some(id),
        (None, Value::None) => None,
        _ => return None,
    };
    let method = s.method?;
    let args = match &mut s.values[2] {
        Value::Tuple(v) | Value::List(v) => std::mem::take(v),
        _ => return None,
    };
    let kwargs = match &mut s.values[3] {
        Value::None => Vec::new(),
        Value::Dict(e) if e.is_empty() => {
            *e = Vec::new();
            Vec::new()
        }
        Value::Dict(e) if e.iter().all(|(k, _)| matches!(k, Value::Str(_))) => std::mem::take(e)
            .into_iter()
            .map(|(k, v)| k.into_str().ok().map(|k| (k, v)))
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    // What is left of the four items owns nothing (None, or containers
    // emptied above): no drop to run.
    debug_assert!(s.values.iter().all(|v| v.child(0).is_none()));
    s.values.drain(..).for_each(std::mem::forget);
    s.heights.clear();
    Some(RequestRef {
        target,
        method,
        args,
        kwargs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codec::pickle::{decode, encode_request, request as general, Origin};
    use crate::proto::codec::{CodecError, Globals};
    use proptest::prelude::*;

    /// The general machine alone, which the fast path must agree with.
    fn slow(data: &[u8]) -> Result<Request, CodecError> {
        general(decode::run(data, Globals::Default)?)
    }

    #[test]
    fn takes_a_stock_clients_call() {
        // What CPython's client writes for `d['k'] = b'x' * 16` (protocol 4,
        // framed, memoized); the frame length is filled in below.
        let mut data = b"\x80\x04\x95\0\0\0\0\0\0\0\0(\x8c\x0c7f4512345678\x94".to_vec();
        data.extend(b"\x8c\x0b__setitem__\x94\x8c\x01k\x94C\x10xxxxxxxxxxxxxxxx\x94");
        data.extend(b"\x86\x94}\x94t\x94.");
        let n = (data.len() - 11) as u64;
        data[3..11].copy_from_slice(&n.to_le_bytes());
        let req = request(&data).expect("the common shape");
        assert_eq!(Ok(req.clone()), slow(&data));
        assert_eq!(req.method, "__setitem__");
        assert_eq!(req.target, ObjectId::from_hex("7f4512345678"));
        assert_eq!(
            req.args,
            vec![Value::Str("k".into()), Value::Bytes(b"x".repeat(16))]
        );
    }

    #[test]
    fn leaves_everything_else_to_the_general_machine() {
        // A memo reference (BINGET), a global, a set, trailing bytes, an
        // unclosed MARK, a bad ident, a root that is not the 4-tuple, a
        // surrogate: all fall back.
        let cases: &[&[u8]] = &[
            b"\x80\x04(N\x8c\x01m\x94)h\x00t.",
            b"\x80\x04(N\x8c\x01m)cos\nsystem\n\x85}t.",
            b"\x80\x04(N\x8c\x01m)\x8f}t.",
            b"\x80\x04(N\x8c\x01m)}t.N",
            b"\x80\x04((N\x8c\x01m)}t.",
            b"\x80\x04(\x8c\x02zz\x8c\x01m)}t.",
            b"\x80\x04N.",
            b"\x80\x04(N\x8c\x03\xed\xa0\x80)}t.",
        ];
        for c in cases {
            assert_eq!(request(c), None, "{c:?}");
        }
        // Nesting past FAST_DEPTH falls back; the general machine takes it.
        let mut deep = b"\x80\x04(N\x8c\x01m)".to_vec();
        deep.extend(std::iter::repeat_n(0x85, usize::from(FAST_DEPTH)));
        deep.extend(b"}t.");
        assert_eq!(request(&deep), None);
        assert!(slow(&deep).is_ok());
        // So do more than FAST_VALUES values (the memory bound).
        let mut wide = b"\x80\x04(N\x8c\x01m(".to_vec();
        wide.extend(std::iter::repeat_n(b'N', FAST_VALUES));
        wide.extend(b"t}t.");
        assert_eq!(request(&wide), None);
        assert_eq!(slow(&wide).unwrap().args.len(), FAST_VALUES);
        let mut fits = b"\x80\x04(N\x8c\x01m(".to_vec();
        fits.extend(std::iter::repeat_n(b'N', FAST_VALUES - 5));
        fits.extend(b"t}t.");
        assert_eq!(request(&fits), Some(slow(&fits).unwrap()));
    }

    #[test]
    fn the_head_is_read_in_place_only_while_it_stays_the_head() {
        // The ident and method name are read in place; an op that takes
        // either into a container, or any op after the request tuple but a
        // memo store, falls back (and the general machine decides).
        let ok = request(b"\x80\x04(\x8c\x02ab\x94\x8c\x01m\x94)}t\x94.").unwrap();
        assert_eq!(ok.target, Some(ObjectId(0xab)));
        assert_eq!(ok.method, "m");
        let public = request(b"\x80\x04(N\x8c\x01m)Nt.").unwrap();
        assert_eq!(public.target, None);
        let cases: &[&[u8]] = &[
            b"\x80\x04(\x8c\x02ab\x8c\x01m\x86)}t.",
            b"\x80\x04(\x8c\x02ab\x85\x8c\x01m)}t.",
            b"\x80\x04(\x8c\x02ab\x8c\x01ml)}t.",
            b"\x80\x04(]\x8c\x01ma)}t.",
            b"\x80\x04(\x8c\x02ab\x8c\x01m)}tN.",
            b"\x80\x04(\x8c\x02ab\x8c\x01m)}t\x85.",
            b"\x80\x04(\x8c\x01+\x8c\x01m)}t.",
            b"\x80\x04(\x8c\x11ffffffffffffffff0\x8c\x01m)}t.",
            b"\x80\x04(K\x01\x8c\x01m)}t.",
            b"\x80\x04(NK\x01)}t.",
            b"\x80\x04(N\x8c\x01m)}\x8c\x01xt.",
        ];
        for c in cases {
            assert_eq!(request(c), None, "{c:?}");
        }
        // An ident the general machine reads (a sign, upper case) is read the same.
        for c in [
            &b"\x80\x04(\x8c\x03+ab\x8c\x01m)}t."[..],
            b"\x80\x04(\x8c\x02AB\x8c\x01m)}t.",
        ] {
            assert_eq!(request(c).map(Ok), Some(slow(c)), "{c:?}");
        }
    }

    #[test]
    fn the_kept_stack_is_small() {
        let mut wide = b"\x80\x04(N\x8c\x01m(".to_vec();
        wide.extend(std::iter::repeat_n(b'N', FAST_VALUES - 8));
        wide.extend(b"t}t.");
        assert!(request(&wide).is_some());
        let (values, heights) = SCRATCH.take();
        assert!(values.capacity() <= KEEP_VALUES && heights.capacity() <= KEEP_VALUES);
        assert!(request(b"\x80\x04(N\x8c\x01m)}t.").is_some());
        let (values, heights) = SCRATCH.take();
        assert!(values.capacity() > 0 && values.capacity() <= KEEP_VALUES);
        assert!(values.is_empty() && heights.is_empty());
    }

    /// Pickle pieces that put strs where the ident and method name go, and
    /// ops that move them.
    fn piece() -> impl Strategy<Value = &'static [u8]> {
        prop::sample::select(vec![
            &b"("[..],
            b"N",
            b"\x8c\x01m",
            b"\x8c\x02ab",
            b"X\x01\0\0\0z",
            b"K\x05",
            b")",
            b"]",
            b"}",
            b"\x85",
            b"\x86",
            b"\x87",
            b"t",
            b"l",
            b"a",
            b"e",
            b"s",
            b"\x94",
        ])
    }

    fn atom() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(Value::Float),
            ".{0,12}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
        ]
    }

    fn arg() -> impl Strategy<Value = Value> {
        atom().prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Tuple),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_the_general_machine(
            target in any::<Option<u64>>(),
            method in "[a-z_]{0,16}",
            args in proptest::collection::vec(arg(), 0..4),
            kwargs in proptest::collection::vec(("[a-z]{1,8}", arg()), 0..3),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let address = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(5000)]);
            let req = Request { target: target.map(ObjectId), method, args, kwargs };
            let mut out = Vec::new();
            encode_request(&req, &Origin::new(&address), &mut out);
            // Generated requests of atoms take the fast path, and say what
            // the general machine says.
            prop_assert_eq!(request(&out), Some(req.clone()));
            prop_assert_eq!(slow(&out), Ok(req));
            // Cut short, or with one byte changed: whenever the fast path
            // answers, it answers as the general machine does.
            let mut damaged = out.clone();
            let i = flip.0.index(damaged.len());
            damaged[i] = flip.1;
            let short = &out[..cut.index(out.len())];
            for data in [&damaged[..], short] {
                if let Some(fast) = request(data) {
                    prop_assert_eq!(Ok(fast), slow(data));
                }
            }
        }

        #[test]
        fn fast_path_answers_as_the_general_machine_on_moved_heads(
            pieces in proptest::collection::vec(piece(), 0..12),
            tail in prop::sample::select(vec![&b"t."[..], b"t\x94.", b"."]),
        ) {
            let mut data = vec![0x80, 4, b'('];
            data.extend(pieces.concat());
            data.extend(tail);
            if let Some(fast) = request(&data) {
                prop_assert_eq!(Ok(fast), slow(&data));
            }
        }

        #[test]
        fn fast_path_answers_as_the_general_machine_on_random_input(
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut data = vec![0x80, 4, b'('];
            data.extend(bytes);
            if let Some(fast) = request(&data) {
                prop_assert_eq!(Ok(fast), slow(&data));
            }
        }
    }
}
