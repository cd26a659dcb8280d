//! The fast path for the request a stock client sends on almost every call:
//! `(ident, methodname, args, kwds)` whose arguments are atoms (None, bools,
//! ints, floats, str, bytes) and lists, tuples and dicts of them, with memo
//! stores but no memo references and no globals.
//!
//! It builds [`Value`]s straight from the opcodes in one pass, with no arena,
//! no memo table and no reference count, so a call costs little more than its
//! own strings. Anything else — a memo reference, a global, a set, a value
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

use super::decode::{long_node, Node};
use crate::proto::message::Request;
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

/// The values on the machine's stack, with each one's container height
/// (0 for an atom) kept beside it, in place (no allocation).
struct Stack {
    values: Vec<Value>,
    heights: [u8; FAST_VALUES],
    marks: [usize; FAST_MARKS],
    open: usize,
    /// Values built so far.
    made: usize,
}

impl Stack {
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
    #[inline]
    fn push(&mut self, v: Value, h: u8) -> Option<()> {
        self.made += 1;
        if self.made > FAST_VALUES {
            return None;
        }
        self.heights[self.values.len()] = h;
        self.values.push(v);
        Some(())
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
        let n = self.values.len();
        let h = self.heights[m..n].iter().copied().max().unwrap_or(0) + 1;
        (h <= FAST_DEPTH).then_some(h)
    }

    /// The items from `m` on, taken off the stack, and the height of a
    /// container holding them.
    #[inline]
    fn split(&mut self, m: usize) -> Option<(Vec<Value>, u8)> {
        let h = self.height(m)?;
        Some((self.values.split_off(m), h))
    }

    /// Adds the items from `m` on to the list (`pairs` false) or dict
    /// (`pairs` true) just below them.
    fn extend(&mut self, m: usize, pairs: bool) -> Option<()> {
        if m <= self.floor() || m > self.values.len() {
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
        let top = &mut self.heights[m - 1];
        *top = (*top).max(h);
        Some(())
    }
}

/// Runs `data` as a request of the common shape, or `None` to leave it to
/// the general machine.
pub(super) fn request(data: &[u8]) -> Option<Request> {
    let root = run(data)?;
    if !matches!(&root, Value::Tuple(p) if p.len() == 4) {
        return None;
    }
    let mut parts = root.into_items().ok()?;
    let kwds = parts.pop()?;
    let args = parts.pop()?;
    let method = parts.pop()?;
    let ident = parts.pop()?;
    let target = match &ident {
        Value::None => None,
        Value::Str(s) => Some(ObjectId::from_hex(s)?),
        _ => return None,
    };
    let method = method.into_str().ok()?;
    if !matches!(args, Value::Tuple(_) | Value::List(_)) {
        return None;
    }
    let args = args.into_items().ok()?;
    let kwargs = match &kwds {
        Value::None => Vec::new(),
        Value::Dict(e) if e.iter().all(|(k, _)| matches!(k, Value::Str(_))) => kwds
            .into_entries()
            .ok()?
            .into_iter()
            .map(|(k, v)| k.into_str().ok().map(|k| (k, v)))
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    Some(Request {
        target,
        method,
        args,
        kwargs,
    })
}

/// Runs the opcodes of `data` into the one value it pickles.
fn run(data: &[u8]) -> Option<Value> {
    let mut r = Reader { data, pos: 0 };
    let mut s = Stack {
        values: Vec::with_capacity(8),
        heights: [0; FAST_VALUES],
        marks: [0; FAST_MARKS],
        open: 0,
        made: 0,
    };
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
            b'.' => break,
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
                // Lone surrogates (not UTF-8) are the general machine's.
                let text = std::str::from_utf8(r.take(n)?).ok()?;
                s.push(Value::Str(text.to_owned()), 0)?
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
    if r.pos != data.len() || s.open != 0 || s.values.len() != 1 {
        return None;
    }
    s.values.pop()
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
