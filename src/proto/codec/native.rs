//! The native serializer: bincode over [`Request`] and [`Reply`].
//!
//! A native payload starts with [`NATIVE_VERSION`] (below 0x80, so it can never be
//! mistaken for a pickle, which starts with the PROTO opcode 0x80), then a message
//! tag, then the message in bincode's standard (varint) encoding. Encoding goes
//! through bincode's primitives; decoding is a small reader over the same format
//! (`Input`) that borrows strings from the payload where it can (a request's
//! method name) and checks every length against the bytes actually left in the
//! frame before anything is allocated. Every allocation is charged to one
//! running budget of [`NATIVE_BYTES_PER_INPUT_BYTE`] × the payload's length (plus
//! a floor, see [`decode_limit`](super::decode_limit)): a container is reserved
//! at its declared length only when that many items could still follow (each
//! takes at least a byte) and the budget can pay for them, so a declared length
//! never allocates more than the input can fill. Nesting is capped at
//! [`MAX_DEPTH`].
//!
//! A [`Value::Shared`] is written once, after a definition tag, and every further
//! place it appears in the same value as a back-reference to it, so an aliased
//! value travels (and decodes) in space linear in its distinct parts; the
//! decoder rebuilds the sharing, charging the budget once for a shared value, and
//! refuses a payload whose values expand beyond
//! [`expanded_limit`](super::expanded_limit).

use bincode::enc::write::Writer;
use bincode::enc::{Encode, Encoder};
use bincode::error::EncodeError;

use std::sync::Arc;

use super::{Budget, CodecError, Expanded, Globals, NATIVE_BYTES_PER_INPUT_BYTE};
use crate::proto::message::{RemoteError, Reply, Request, RequestRef};
use crate::proto::value::{Form, ObjectId, PyObject, Slice, Step, Token, Value, Walk, Written};

/// First byte of every native payload.
pub const NATIVE_VERSION: u8 = 1;

/// Deepest nesting of lists, dicts … accepted in one value.
pub const MAX_DEPTH: u32 = 128;

const MSG_REQUEST: u8 = 0;
const MSG_RETURN: u8 = 0;
const MSG_PROXY: u8 = 1;
const MSG_ERROR: u8 = 2;
const MSG_TRACEBACK: u8 = 3;
const MSG_UNSERIALIZABLE: u8 = 4;

// Value tags: stable wire numbers, never reused.
const T_NONE: u8 = 0;
const T_BOOL: u8 = 1;
const T_INT: u8 = 2;
const T_BIGINT: u8 = 3;
const T_FLOAT: u8 = 4;
const T_STR: u8 = 5;
const T_BYTES: u8 = 6;
const T_LIST: u8 = 7;
const T_TUPLE: u8 = 8;
const T_DICT: u8 = 9;
const T_SET: u8 = 10;
const T_FROZENSET: u8 = 11;
const T_REF: u8 = 12;
const T_SLICE: u8 = 13;
const T_OPAQUE: u8 = 14;
/// A shared value follows; it is numbered, in the order definitions end, for
/// [`T_SHARED_REF`] to refer back to.
const T_SHARED_DEF: u8 = 15;
/// A varint: the number of a shared value defined earlier in the same value.
const T_SHARED_REF: u8 = 16;

// Opaque forms (after T_OPAQUE): stable wire numbers.
const F_GLOBAL: u8 = 0;
const F_REDUCE: u8 = 1;
const F_NEWOBJ: u8 = 2;
const F_NEWOBJ_EX: u8 = 3;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Appends encoded bytes to a `Vec` that may already hold other frames.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl Writer for VecWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

fn encode_into<T: Encode>(tag: u8, msg: &T, out: &mut Vec<u8>) {
    out.push(NATIVE_VERSION);
    out.push(tag);
    // Writing into a Vec cannot fail and our encoders raise no errors of their own.
    bincode::encode_into_writer(msg, VecWriter(out), config())
        .expect("encoding into a Vec is infallible");
}

fn split_header(payload: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    match payload {
        [NATIVE_VERSION, tag, rest @ ..] => Ok((*tag, rest)),
        [v, ..] if *v != NATIVE_VERSION => Err(CodecError::new(format!(
            "unsupported native protocol version {v}"
        ))),
        _ => Err(CodecError::new("truncated native payload")),
    }
}

/// Appends the native payload of `req` (no frame header) to `out`.
pub fn encode_request(req: &Request, out: &mut Vec<u8>) {
    encode_into(MSG_REQUEST, req, out)
}

/// Decodes a native request payload.
///
/// # Errors
///
/// [`CodecError`] when the payload is malformed, over the decode budget
/// ([`NATIVE_BYTES_PER_INPUT_BYTE`] × its length + 1 MiB), nested too deeply,
/// or names a global the policy refuses.
pub fn decode_request(payload: &[u8]) -> Result<Request, CodecError> {
    decode_request_ref(payload).map(RequestRef::into_owned)
}

/// Decodes a native request payload in place: the method name borrows `payload`.
/// Opaque values pass under the [`Globals::Default`] policy.
///
/// # Errors
///
/// [`CodecError`] when the payload is malformed, over the decode budget
/// ([`NATIVE_BYTES_PER_INPUT_BYTE`] × its length + 1 MiB), nested too deeply,
/// or names a global the policy refuses.
pub fn decode_request_ref(payload: &[u8]) -> Result<RequestRef<'_>, CodecError> {
    decode_request_ref_with(payload, Globals::Default)
}

/// Decodes a native request payload as [`decode_request_ref`] does, refusing
/// opaque values that name a global `globals` does not allow.
///
/// # Errors
///
/// [`CodecError`] when the payload is malformed, over the decode budget
/// ([`NATIVE_BYTES_PER_INPUT_BYTE`] × its length + 1 MiB), nested too deeply,
/// or names a global the policy refuses.
pub fn decode_request_ref_with(
    payload: &[u8],
    globals: Globals,
) -> Result<RequestRef<'_>, CodecError> {
    match split_header(payload)? {
        (MSG_REQUEST, body) => Input::whole_with(body, globals, |d| {
            Ok(RequestRef {
                target: d.option(Input::varint)?.map(ObjectId),
                method: d.str()?,
                args: d.seq(|d| d.value(1))?,
                kwargs: d.seq(|d| Ok((d.string()?, d.value(1)?)))?,
            })
        }),
        (t, _) => Err(CodecError::new(format!("unknown native request tag {t}"))),
    }
}

/// Appends the native payload of `reply` (no frame header) to `out`.
///
/// A returned value nested deeper than [`MAX_DEPTH`] (which only a host can
/// build) would be refused by the peer's decoder: it is answered as
/// [`Reply::Unserializable`] instead, as CPython answers a result it cannot pickle.
pub fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Return(v) => {
            let start = out.len();
            out.extend_from_slice(&[NATIVE_VERSION, MSG_RETURN]);
            if bincode::encode_into_writer(DecodableDepth(v), VecWriter(out), config()).is_err() {
                out.truncate(start);
                let why = format!("the result is nested deeper than {MAX_DEPTH} levels");
                encode_into(MSG_UNSERIALIZABLE, &why, out);
            }
        }
        Reply::Proxy { exposed, token } => encode_into(MSG_PROXY, &(exposed, token), out),
        Reply::Error(e) => encode_into(MSG_ERROR, e, out),
        Reply::Traceback(s) => encode_into(MSG_TRACEBACK, s, out),
        Reply::Unserializable(s) => encode_into(MSG_UNSERIALIZABLE, s, out),
    }
}

/// Decodes a native reply payload.
///
/// # Errors
///
/// [`CodecError`] when the payload is malformed, over the decode budget
/// ([`NATIVE_BYTES_PER_INPUT_BYTE`] × its length + 1 MiB), nested too deeply,
/// or names a global the policy refuses.
pub fn decode_reply(payload: &[u8]) -> Result<Reply, CodecError> {
    let (tag, body) = split_header(payload)?;
    let text = |d: &mut Input<'_>| d.string();
    match tag {
        MSG_RETURN => Input::whole(body, |d| d.value(0).map(Reply::Return)),
        MSG_PROXY => Input::whole(body, |d| {
            Ok(Reply::Proxy {
                exposed: d.seq(text)?,
                token: d.token()?,
            })
        }),
        MSG_ERROR => Input::whole(body, |d| {
            Ok(Reply::Error(RemoteError {
                kind: text(d)?,
                message: text(d)?,
                args: d.seq(|d| d.value(1))?,
            }))
        }),
        MSG_TRACEBACK => Input::whole(body, |d| text(d).map(Reply::Traceback)),
        MSG_UNSERIALIZABLE => Input::whole(body, |d| text(d).map(Reply::Unserializable)),
        t => Err(CodecError::new(format!("unknown native reply tag {t}"))),
    }
}

// ---- the reader ---------------------------------------------------------------

fn malformed(why: impl std::fmt::Display) -> CodecError {
    CodecError::new(format!("malformed native payload: {why}"))
}

fn truncated() -> CodecError {
    malformed("unexpected end of payload")
}

/// A cursor over one message body, reading bincode's standard encoding: varint
/// integers (one byte below 251, else a marker byte 251/252/253 and 2/4/8
/// little-endian bytes), zigzag for signed ones, `u8` tags, `0`/`1` for bools and
/// `Option`, little-endian `f64`, and length-prefixed byte strings.
struct Input<'a> {
    rest: &'a [u8],
    budget: Budget,
    /// Globals opaque values may name.
    globals: Globals,
    /// Shared values defined so far, with the values each expands to.
    shared: Vec<(Arc<Value>, u64)>,
    /// Values decoded so far, a shared one counted at every reference.
    expanded: Expanded,
}

impl<'a> Input<'a> {
    /// Runs `f` over `body` and insists it used every byte; any global passes
    /// (a reply: the client trusts its server).
    fn whole<T>(
        body: &'a [u8],
        f: impl FnOnce(&mut Input<'a>) -> Result<T, CodecError>,
    ) -> Result<T, CodecError> {
        Self::whole_with(body, Globals::Any, f)
    }

    /// Runs `f` over `body` under a policy on globals.
    fn whole_with<T>(
        body: &'a [u8],
        globals: Globals,
        f: impl FnOnce(&mut Input<'a>) -> Result<T, CodecError>,
    ) -> Result<T, CodecError> {
        let mut d = Input {
            rest: body,
            budget: Budget::new(body.len(), NATIVE_BYTES_PER_INPUT_BYTE),
            globals,
            shared: Vec::new(),
            expanded: Expanded::new(body.len()),
        };
        let v = f(&mut d)?;
        if !d.rest.is_empty() {
            return Err(CodecError::new(format!(
                "{} trailing bytes after native message",
                d.rest.len()
            )));
        }
        Ok(v)
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.rest.split_first().ok_or_else(truncated)?;
        self.rest = rest;
        Ok(b)
    }

    /// The next `n` bytes, refused before anything is allocated for them when
    /// fewer are left.
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.rest.len() {
            return Err(truncated());
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, CodecError> {
        match self.byte()? {
            b @ 0..=250 => Ok(u64::from(b)),
            251 => Ok(u64::from(u16::from_le_bytes(self.array()?))),
            252 => Ok(u64::from(u32::from_le_bytes(self.array()?))),
            253 => Ok(u64::from_le_bytes(self.array()?)),
            b => Err(malformed(format_args!("invalid varint marker {b}"))),
        }
    }

    /// A zigzag-encoded signed varint.
    #[inline]
    fn int(&mut self) -> Result<i64, CodecError> {
        let n = self.varint()?;
        Ok(if n % 2 == 0 {
            (n / 2) as i64
        } else {
            !(n / 2) as i64
        })
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()?;
        usize::try_from(n).map_err(|_| malformed(format_args!("length {n} out of range")))
    }

    fn flag(&mut self) -> Result<bool, CodecError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(malformed(format_args!("invalid bool or option marker {b}"))),
        }
    }

    fn option<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, CodecError>,
    ) -> Result<Option<T>, CodecError> {
        if self.flag()? {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }

    fn float(&mut self) -> Result<f64, CodecError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.len()?;
        self.take(n)
    }

    #[inline]
    fn str(&mut self) -> Result<&'a str, CodecError> {
        let bytes = self.bytes()?;
        if bytes.is_ascii() {
            // SAFETY: ASCII is valid UTF-8. Method names and most keys are ASCII,
            // and `is_ascii` checks a word at a time where `from_utf8` goes byte
            // by byte over short strings.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(malformed)
    }

    /// An owned copy of a length-prefixed string, charged.
    fn string(&mut self) -> Result<String, CodecError> {
        let s = self.str()?;
        self.budget.spend(s.len())?;
        Ok(s.to_owned())
    }

    /// An owned copy of a length-prefixed byte string, charged.
    fn byte_vec(&mut self) -> Result<Vec<u8>, CodecError> {
        let b = self.bytes()?;
        self.budget.spend(b.len())?;
        Ok(b.to_vec())
    }

    /// A length-prefixed sequence, reserved at its declared length: every item
    /// takes at least one byte, so a length beyond the bytes left is refused
    /// before anything is allocated, and the room is charged to the budget.
    fn seq<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, CodecError>,
    ) -> Result<Vec<T>, CodecError> {
        let n = self.len()?;
        if n > self.rest.len() {
            return Err(malformed(format_args!(
                "{n} items declared but only {} bytes left",
                self.rest.len()
            )));
        }
        self.budget.spend_items::<T>(n)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(item(self)?);
        }
        Ok(v)
    }

    fn token(&mut self) -> Result<Token, CodecError> {
        Ok(Token {
            typeid: self.string()?,
            id: ObjectId(self.varint()?),
        })
    }

    /// A str, bytes or big int read by `read`, its payload counted toward the
    /// expanded cap.
    fn payload<T>(
        &mut self,
        read: fn(&mut Self) -> Result<T, CodecError>,
        len: fn(&T) -> usize,
    ) -> Result<T, CodecError> {
        let v = read(self)?;
        self.expanded.add_payload(len(&v))?;
        Ok(v)
    }

    fn value(&mut self, depth: u32) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(malformed("value nested too deeply"));
        }
        let inner = |d: &mut Self| d.value(depth + 1);
        let opt_int = |d: &mut Self| d.option(Self::int);
        let tag = self.byte()?;
        if tag != T_SHARED_DEF && tag != T_SHARED_REF {
            self.expanded.add(1)?;
        }
        Ok(match tag {
            T_SHARED_DEF => {
                // Sharing of sharing is never written, and refusing it keeps
                // the reader's recursion within MAX_DEPTH.
                if let Some(&(T_SHARED_DEF | T_SHARED_REF)) = self.rest.first() {
                    return Err(malformed("a shared value cannot be another share"));
                }
                let before = self.expanded.count();
                // The Arc's counts and value, and the table's entry (twice, as
                // the table grows by doubling).
                self.budget.spend(16 + std::mem::size_of::<Value>())?;
                self.budget.spend_items::<(Arc<Value>, u64)>(2)?;
                let v = Arc::new(self.value(depth)?);
                let n = self.expanded.count() - before;
                self.shared.push((v.clone(), n));
                Value::Shared(v)
            }
            T_SHARED_REF => {
                let i = self.len()?;
                let Some((v, n)) = self.shared.get(i) else {
                    return Err(malformed(format_args!("unknown shared value {i}")));
                };
                let (v, n) = (v.clone(), *n);
                self.expanded.add(n)?;
                Value::Shared(v)
            }
            T_NONE => Value::None,
            T_BOOL => Value::Bool(self.flag()?),
            T_INT => Value::Int(self.int()?),
            T_BIGINT => Value::BigInt(self.payload(Self::byte_vec, Vec::len)?),
            T_FLOAT => Value::Float(self.float()?),
            T_STR => Value::Str(self.payload(Self::string, String::len)?),
            T_BYTES => Value::Bytes(self.payload(Self::byte_vec, Vec::len)?),
            T_LIST => Value::List(self.seq(inner)?),
            T_TUPLE => Value::Tuple(self.seq(inner)?),
            T_SET => Value::Set(self.seq(inner)?),
            T_FROZENSET => Value::FrozenSet(self.seq(inner)?),
            T_DICT => Value::Dict(self.seq(|d| Ok((inner(d)?, inner(d)?)))?),
            T_REF => Value::Ref(self.token()?),
            T_SLICE => Value::Slice(Slice {
                start: opt_int(self)?,
                stop: opt_int(self)?,
                step: opt_int(self)?,
            }),
            T_OPAQUE => self.opaque(depth)?,
            tag => return Err(malformed(format_args!("unknown value tag {tag}"))),
        })
    }

    /// An opaque value: its form, then a global's module and name or a built
    /// object's six parts (charged like any value, checked for their shapes).
    fn opaque(&mut self, depth: u32) -> Result<Value, CodecError> {
        let form = match self.byte()? {
            F_GLOBAL => {
                let (module, name) = (self.string()?, self.string()?);
                if !self.globals.allows_bare(&module, &name) {
                    return Err(CodecError::new(self.globals.refusal(&module, &name)));
                }
                self.budget.spend_items::<PyObject>(1)?;
                return Ok(Value::Opaque(Box::new(PyObject::global(module, name))));
            }
            F_REDUCE => Form::Reduce,
            F_NEWOBJ => Form::NewObj,
            F_NEWOBJ_EX => Form::NewObjEx,
            f => return Err(malformed(format_args!("unknown opaque form {f}"))),
        };
        self.budget
            .spend_items::<Value>(crate::proto::value::BUILT_PARTS)?;
        self.budget.spend_items::<PyObject>(1)?;
        let mut parts = Vec::with_capacity(crate::proto::value::BUILT_PARTS);
        for _ in 0..crate::proto::value::BUILT_PARTS {
            parts.push(self.value(depth + 1)?);
        }
        // What makes it is a global the policy lets a client call, as the
        // pickle decoder requires.
        match parts.first().and_then(Value::as_opaque).map(PyObject::form) {
            Some(Form::Global { module, name }) => {
                if !self.globals.allows(module, name) {
                    return Err(CodecError::new(self.globals.refusal(module, name)));
                }
            }
            _ => return Err(malformed("an opaque object must be made by a global")),
        }
        match PyObject::from_parts(form, parts) {
            Some(o) => Ok(Value::Opaque(Box::new(o))),
            None => Err(malformed("opaque object parts have the wrong shapes")),
        }
    }
}

fn encode_str<E: Encoder>(s: &[u8], e: &mut E) -> Result<(), EncodeError> {
    (s.len() as u64).encode(e)?;
    e.writer().write(s)
}

// ---- values -------------------------------------------------------------------

/// Writes one value without its children: a leaf whole, a container's tag and
/// length (its items follow as the walk reaches them).
fn encode_head<E: Encoder>(v: &Value, e: &mut E) -> Result<(), EncodeError> {
    let seq = |tag: u8, n: usize, e: &mut E| {
        tag.encode(e)?;
        (n as u64).encode(e)
    };
    match v {
        Value::None => T_NONE.encode(e),
        Value::Bool(b) => {
            T_BOOL.encode(e)?;
            b.encode(e)
        }
        Value::Int(i) => {
            T_INT.encode(e)?;
            i.encode(e)
        }
        Value::BigInt(b) => {
            T_BIGINT.encode(e)?;
            encode_str(b, e)
        }
        Value::Float(f) => {
            T_FLOAT.encode(e)?;
            f.encode(e)
        }
        Value::Str(s) => {
            T_STR.encode(e)?;
            encode_str(s.as_bytes(), e)
        }
        Value::Bytes(b) => {
            T_BYTES.encode(e)?;
            encode_str(b, e)
        }
        Value::List(v) => seq(T_LIST, v.len(), e),
        Value::Tuple(v) => seq(T_TUPLE, v.len(), e),
        Value::Set(v) => seq(T_SET, v.len(), e),
        Value::FrozenSet(v) => seq(T_FROZENSET, v.len(), e),
        Value::Dict(d) => seq(T_DICT, d.len(), e),
        Value::Ref(t) => {
            T_REF.encode(e)?;
            t.encode(e)
        }
        Value::Slice(s) => {
            T_SLICE.encode(e)?;
            s.start.encode(e)?;
            s.stop.encode(e)?;
            s.step.encode(e)
        }
        Value::Shared(v) => encode_head(v, e),
        Value::Opaque(o) => {
            T_OPAQUE.encode(e)?;
            match o.form() {
                Form::Global { module, name } => {
                    F_GLOBAL.encode(e)?;
                    encode_str(module.as_bytes(), e)?;
                    encode_str(name.as_bytes(), e)
                }
                Form::Reduce => F_REDUCE.encode(e),
                Form::NewObj => F_NEWOBJ.encode(e),
                Form::NewObjEx => F_NEWOBJ_EX.encode(e),
            }
        }
    }
}

/// Encodes a value tree with an explicit stack (a host may build one of any
/// depth); with `max_depth`, fails once a value sits deeper than that.
fn encode_value<E: Encoder>(
    v: &Value,
    e: &mut E,
    max_depth: Option<usize>,
) -> Result<(), EncodeError> {
    // Leaves, and containers of leaves (depth 1), without a walk.
    let flat = |x: &Value| !x.is_container() && !x.is_shared();
    match v {
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items)
            if items.iter().all(flat) && max_depth != Some(0) =>
        {
            encode_head(v, e)?;
            return items.iter().try_for_each(|x| encode_head(x, e));
        }
        Value::List(_)
        | Value::Tuple(_)
        | Value::Set(_)
        | Value::FrozenSet(_)
        | Value::Dict(_)
        | Value::Shared(_) => {}
        Value::Opaque(_) if v.is_container() => {}
        _ => return encode_head(v, e),
    }
    // Shared values written so far; per open container, the shared value it
    // defines (numbered when its definition ends).
    let mut memo = Written::default();
    let mut defining: Vec<Option<*const Value>> = Vec::new();
    let mut walk = Walk::new(v);
    while let Some(step) = walk.next() {
        let (v, depth) = match step {
            Step::Leaf(v, _) => (v, walk.open()),
            Step::Enter(v, _) => (v, walk.open() - 1),
            Step::Exit(_) => {
                if let Some(Some(p)) = defining.pop() {
                    memo.add(p);
                }
                continue;
            }
        };
        if max_depth.is_some_and(|max| depth > max) {
            return Err(EncodeError::Other("value nested too deeply"));
        }
        let shared = walk.shared().map(Arc::as_ptr);
        if let Some(p) = shared {
            if let Some(n) = memo.get(p) {
                T_SHARED_REF.encode(e)?;
                u64::from(n).encode(e)?;
                if matches!(step, Step::Enter(..)) {
                    walk.skip_children();
                    defining.push(None);
                }
                continue;
            }
            T_SHARED_DEF.encode(e)?;
            if matches!(step, Step::Leaf(..)) {
                memo.add(p);
            }
        }
        if matches!(step, Step::Enter(..)) {
            defining.push(shared);
        }
        encode_head(v, e)?;
    }
    Ok(())
}

impl Encode for Value {
    #[inline]
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        if !self.is_container() && !self.is_shared() {
            return encode_head(self, e);
        }
        encode_value(self, e, None)
    }
}

/// A reply's value, refused when nested deeper than [`decode_reply`] accepts.
struct DecodableDepth<'a>(&'a Value);

impl Encode for DecodableDepth<'_> {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        encode_value(self.0, e, Some(MAX_DEPTH as usize))
    }
}

impl Encode for Token {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        encode_str(self.typeid.as_bytes(), e)?;
        self.id.0.encode(e)
    }
}

// ---- messages -----------------------------------------------------------------

impl Encode for Request {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        self.target.map(|id| id.0).encode(e)?;
        encode_str(self.method.as_bytes(), e)?;
        self.args.encode(e)?;
        (self.kwargs.len() as u64).encode(e)?;
        self.kwargs.iter().try_for_each(|(k, v)| {
            encode_str(k.as_bytes(), e)?;
            v.encode(e)
        })
    }
}

impl Encode for RemoteError {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        encode_str(self.kind.as_bytes(), e)?;
        encode_str(self.message.as_bytes(), e)?;
        self.args.encode(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        Value::List(vec![
            Value::None,
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Value::Float(-0.5),
            Value::Str("héllo".into()),
            Value::Bytes(vec![0, 255]),
            Value::Tuple(vec![Value::Int(1)]),
            Value::Dict(vec![(
                Value::Str("k".into()),
                Value::Set(vec![Value::Int(2)]),
            )]),
            Value::FrozenSet(vec![]),
            Value::Slice(Slice {
                start: None,
                stop: Some(-1),
                step: Some(2),
            }),
            Value::Ref(Token {
                typeid: "dict".into(),
                id: ObjectId::new(3, 9),
            }),
        ])
    }

    #[test]
    fn request_roundtrip() {
        let req = Request {
            target: Some(ObjectId::new(1, 2)),
            method: "put".into(),
            args: vec![sample()],
            kwargs: vec![("timeout".into(), Value::Float(1.5))],
        };
        let mut out = Vec::new();
        encode_request(&req, &mut out);
        assert_eq!(out[0], NATIVE_VERSION);
        assert_eq!(decode_request(&out).unwrap(), req);
        let public = Request::public("number_of_objects", vec![]);
        out.clear();
        encode_request(&public, &mut out);
        assert_eq!(decode_request(&out).unwrap(), public);
    }

    #[test]
    fn request_ref_borrows_the_method_name_from_the_payload() {
        let req = Request::call(
            ObjectId::new(1, 2),
            "__getitem__",
            vec![Value::Str("k".into())],
        );
        let mut out = Vec::new();
        encode_request(&req, &mut out);
        let r = decode_request_ref(&out).unwrap();
        assert_eq!(r.method, "__getitem__");
        let span = out.as_ptr_range();
        assert!(span.contains(&r.method.as_ptr()), "method name was copied");
        assert_eq!(r.into_owned(), req);
        // A non-ASCII name still decodes (the UTF-8 path), a broken one is refused.
        let req = Request::public("créer", vec![]);
        out.clear();
        encode_request(&req, &mut out);
        assert_eq!(decode_request_ref(&out).unwrap().method, "créer");
        let at = out.iter().position(|&b| b == 0xc3).unwrap();
        out[at] = 0xff;
        assert!(decode_request_ref(&out).is_err());
    }

    #[test]
    fn reply_roundtrip_every_kind() {
        let replies = [
            Reply::Return(sample()),
            Reply::Proxy {
                exposed: vec!["__next__".into()],
                token: Token {
                    typeid: "Iterator".into(),
                    id: ObjectId(77),
                },
            },
            Reply::Error(RemoteError::key_error(Value::Str("k".into()))),
            Reply::Traceback("KeyError: unknown".into()),
            Reply::Unserializable("nope".into()),
        ];
        for r in replies {
            let mut out = Vec::new();
            encode_reply(&r, &mut out);
            assert_eq!(decode_reply(&out).unwrap(), r);
        }
    }

    #[test]
    fn a_reply_deeper_than_the_decoder_takes_is_unserializable() {
        let nest = |n: u32| (0..n).fold(Value::None, |v, _| Value::List(vec![v]));
        // One level more than `deep_nesting_is_refused` shows decoding.
        let mut out = vec![0xaa];
        encode_reply(&Reply::Return(nest(MAX_DEPTH + 1)), &mut out);
        assert_eq!(out[0], 0xaa, "bytes already in the buffer are kept");
        match decode_reply(&out[1..]).unwrap() {
            Reply::Unserializable(why) => assert!(why.contains("nested deeper"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A million levels built by a host: encoded without recursion.
        crate::proto::value::tests::on_small_stack(move || {
            let deep = nest(1_000_000);
            let mut out = Vec::new();
            encode_reply(&Reply::Return(deep.clone()), &mut out);
            assert!(matches!(decode_reply(&out), Ok(Reply::Unserializable(_))));
            // A request (a C client's argument) is written whole; the server's
            // decoder refuses it as too deep.
            out.clear();
            encode_request(&Request::call(ObjectId(1), "put", vec![deep]), &mut out);
            assert!(out.len() > 2_000_000);
            let err = decode_request(&out).unwrap_err();
            assert!(err.to_string().contains("nested"), "{err}");
        });
    }

    #[test]
    fn opaque_values_round_trip_under_the_policy() {
        let mut uuid = PyObject::built(Form::NewObj, Value::opaque_global("uuid", "UUID"), vec![]);
        uuid.set_state(Value::Dict(vec![(Value::Str("int".into()), Value::Int(5))]));
        let v = Value::List(vec![
            Value::opaque_call("decimal", "Decimal", vec![Value::Str("1.5".into())]),
            Value::Opaque(Box::new(uuid)),
            Value::opaque_global("builtins", "list"),
        ]);
        let req = Request::call(ObjectId(1), "append", vec![v]);
        let mut out = Vec::new();
        encode_request(&req, &mut out);
        assert_eq!(decode_request(&out).unwrap(), req);
        let e = decode_request_ref_with(&out, Globals::None).unwrap_err();
        assert!(e.to_string().contains("--globals none"), "{e}");
        // A global the default policy refuses, and a callable that is no global.
        let evil = Request::call(
            ObjectId(1),
            "append",
            vec![Value::opaque_call(
                "os",
                "system",
                vec![Value::Str("true".into())],
            )],
        );
        out.clear();
        encode_request(&evil, &mut out);
        assert!(decode_request(&out).is_err());
        assert!(decode_request_ref_with(&out, Globals::Any).is_ok());
        let parts = vec![
            Value::Int(1),
            Value::Tuple(vec![]),
            Value::Dict(vec![]),
            Value::List(vec![]),
            Value::Dict(vec![]),
            Value::None,
        ];
        let odd = PyObject::from_parts(Form::Reduce, parts).unwrap();
        out.clear();
        encode_request(
            &Request::call(ObjectId(1), "append", vec![Value::Opaque(Box::new(odd))]),
            &mut out,
        );
        let e = decode_request_ref_with(&out, Globals::Any).unwrap_err();
        assert!(e.to_string().contains("made by a global"), "{e}");
    }

    #[test]
    fn huge_length_is_refused_without_allocating() {
        // A str claiming u64::MAX/2 bytes inside a tiny payload.
        let mut out = vec![NATIVE_VERSION, MSG_RETURN, T_STR];
        bincode::encode_into_writer(u64::MAX / 2, VecWriter(&mut out), config()).unwrap();
        let err = decode_reply(&out).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
        // A list claiming a billion elements decodes element by element and stops.
        let mut out = vec![NATIVE_VERSION, MSG_RETURN, T_LIST];
        bincode::encode_into_writer(1_000_000_000u64, VecWriter(&mut out), config()).unwrap();
        assert!(decode_reply(&out).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut out = vec![NATIVE_VERSION, MSG_RETURN];
        out.extend(std::iter::repeat_n([T_LIST, 1], 100_000).flatten());
        out.push(T_NONE);
        let err = decode_reply(&out).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
        // Within the limit is fine.
        let mut v = Value::None;
        for _ in 0..MAX_DEPTH {
            v = Value::List(vec![v]);
        }
        let mut out = Vec::new();
        encode_reply(&Reply::Return(v.clone()), &mut out);
        assert_eq!(decode_reply(&out).unwrap(), Reply::Return(v));
    }

    #[test]
    fn bad_headers_and_trailing_bytes() {
        assert!(decode_request(&[]).is_err());
        assert!(decode_request(&[2, 0])
            .unwrap_err()
            .to_string()
            .contains("version"));
        assert!(decode_request(&[NATIVE_VERSION, 9]).is_err());
        let mut out = Vec::new();
        encode_reply(&Reply::Return(Value::None), &mut out);
        out.push(0);
        assert!(decode_reply(&out)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
        assert!(decode_reply(&[NATIVE_VERSION, MSG_RETURN, 200]).is_err());
        assert!(decode_reply(&[NATIVE_VERSION, MSG_RETURN, T_STR, 2, 0xff, 0xfe]).is_err());
    }

    #[test]
    fn shared_values_travel_once_and_come_back_shared() {
        let share = |v: Value| Value::Shared(Arc::new(v));
        let inner = share(Value::List(vec![Value::Int(0); 100]));
        let middle = share(Value::List(vec![inner; 100]));
        let three = Value::List(vec![middle; 100]);
        // Shared leaves, a share inside a dict key and value, and two shares
        // met in turn (numbered in the order their definitions end).
        let s = share(Value::Str("x".repeat(100)));
        let t = share(Value::Tuple(vec![s.clone(), Value::Int(1)]));
        let mixed = Value::Dict(vec![
            (t.clone(), Value::List(vec![t.clone(), s.clone()])),
            (s.clone(), t.clone()),
        ]);
        for v in [three, mixed] {
            let mut out = Vec::new();
            encode_reply(&Reply::Return(v.clone()), &mut out);
            let Reply::Return(back) = decode_reply(&out).unwrap() else {
                panic!("a return")
            };
            assert_eq!(back, v);
            let mut req = Vec::new();
            encode_request(&Request::public("f", vec![v.clone()]), &mut req);
            assert_eq!(decode_request(&req).unwrap().args, vec![v.clone()]);
            // Shares come back as shares: one value at every place.
            let mut ptrs = std::collections::HashSet::new();
            let mut shares = 0;
            let mut walk = Walk::new(&back);
            while let Some(step) = walk.next() {
                if let (Step::Enter(..) | Step::Leaf(..), Some(a)) = (step, walk.shared()) {
                    shares += 1;
                    ptrs.insert(Arc::as_ptr(a));
                }
            }
            assert!(
                shares > ptrs.len() && !ptrs.is_empty(),
                "{shares} {}",
                ptrs.len()
            );
        }
        // 1,010,101 values in a few hundred bytes.
        let inner = share(Value::List(vec![Value::Int(0); 100]));
        let three = Value::List(vec![share(Value::List(vec![inner; 100])); 100]);
        let mut out = Vec::new();
        encode_reply(&Reply::Return(three), &mut out);
        assert!(out.len() < 1000, "{} bytes", out.len());
    }
}
