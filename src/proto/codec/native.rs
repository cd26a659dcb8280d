//! The native serializer: bincode over [`Request`] and [`Reply`].
//!
//! A native payload starts with [`NATIVE_VERSION`] (below 0x80, so it can never be
//! mistaken for a pickle, which starts with the PROTO opcode 0x80), then a message
//! tag, then the message in bincode's standard (varint) encoding. The encodings are
//! written by hand on bincode's primitives rather than derived: every length is
//! checked against the bytes actually left in the frame before anything is
//! allocated, and nesting is capped at [`MAX_DEPTH`], so a hostile payload costs at
//! most a small multiple of its own size.

use bincode::de::read::Reader;
use bincode::de::{Decode, Decoder};
use bincode::enc::write::Writer;
use bincode::enc::{Encode, Encoder};
use bincode::error::{DecodeError, EncodeError};

use super::CodecError;
use crate::proto::message::{RemoteError, Reply, Request};
use crate::proto::value::{ObjectId, Slice, Token, Value};

/// First byte of every native payload.
pub const NATIVE_VERSION: u8 = 1;

/// Deepest nesting of lists, dicts … accepted in one value.
pub const MAX_DEPTH: u32 = 128;

/// Elements reserved up front for a container; more are grown as they decode.
const PREALLOC: usize = 1024;

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

fn decode_all<T: Decode<()>>(body: &[u8]) -> Result<T, CodecError> {
    let (msg, used) = bincode::decode_from_slice::<T, _>(body, config())
        .map_err(|e| CodecError::new(format!("malformed native payload: {e}")))?;
    if used != body.len() {
        return Err(CodecError::new(format!(
            "{} trailing bytes after native message",
            body.len() - used
        )));
    }
    Ok(msg)
}

/// Appends the native payload of `req` (no frame header) to `out`.
pub fn encode_request(req: &Request, out: &mut Vec<u8>) {
    encode_into(MSG_REQUEST, req, out)
}

/// Decodes a native request payload.
pub fn decode_request(payload: &[u8]) -> Result<Request, CodecError> {
    match split_header(payload)? {
        (MSG_REQUEST, body) => decode_all(body),
        (t, _) => Err(CodecError::new(format!("unknown native request tag {t}"))),
    }
}

/// Appends the native payload of `reply` (no frame header) to `out`.
pub fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Return(v) => encode_into(MSG_RETURN, v, out),
        Reply::Proxy { exposed, token } => encode_into(MSG_PROXY, &(exposed, token), out),
        Reply::Error(e) => encode_into(MSG_ERROR, e, out),
        Reply::Traceback(s) => encode_into(MSG_TRACEBACK, s, out),
        Reply::Unserializable(s) => encode_into(MSG_UNSERIALIZABLE, s, out),
    }
}

/// Decodes a native reply payload.
pub fn decode_reply(payload: &[u8]) -> Result<Reply, CodecError> {
    let (tag, body) = split_header(payload)?;
    Ok(match tag {
        MSG_RETURN => Reply::Return(decode_all(body)?),
        MSG_PROXY => {
            let Strings(exposed, token): Strings<Token> = decode_all(body)?;
            Reply::Proxy { exposed, token }
        }
        MSG_ERROR => Reply::Error(decode_all(body)?),
        MSG_TRACEBACK => Reply::Traceback(decode_all::<Text>(body)?.0),
        MSG_UNSERIALIZABLE => Reply::Unserializable(decode_all::<Text>(body)?.0),
        t => return Err(CodecError::new(format!("unknown native reply tag {t}"))),
    })
}

// ---- bounded primitives -------------------------------------------------------

fn decode_len<D: Decoder>(d: &mut D) -> Result<usize, DecodeError> {
    let n = u64::decode(d)?;
    usize::try_from(n).map_err(|_| DecodeError::OutsideUsizeRange(n))
}

/// Reads `len` raw bytes, refusing before allocation when the input is shorter.
fn decode_bytes<D: Decoder>(d: &mut D) -> Result<Vec<u8>, DecodeError> {
    let len = decode_len(d)?;
    let r = d.reader();
    let bytes = r
        .peek_read(len)
        .ok_or(DecodeError::UnexpectedEnd { additional: len })?;
    let v = bytes.to_vec();
    r.consume(len);
    Ok(v)
}

fn decode_string<D: Decoder>(d: &mut D) -> Result<String, DecodeError> {
    String::from_utf8(decode_bytes(d)?).map_err(|e| DecodeError::Utf8 {
        inner: e.utf8_error(),
    })
}

fn encode_str<E: Encoder>(s: &[u8], e: &mut E) -> Result<(), EncodeError> {
    (s.len() as u64).encode(e)?;
    e.writer().write(s)
}

fn decode_seq<D: Decoder, T>(
    d: &mut D,
    mut item: impl FnMut(&mut D) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let len = decode_len(d)?;
    let mut v = Vec::with_capacity(len.min(PREALLOC));
    for _ in 0..len {
        v.push(item(d)?);
    }
    Ok(v)
}

/// A String that decodes through the bounded path.
struct Text(String);

impl<C> Decode<C> for Text {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        decode_string(d).map(Text)
    }
}

/// A list of strings followed by one more item (the `#PROXY` body).
struct Strings<T>(Vec<String>, T);

impl<C, T: Decode<C>> Decode<C> for Strings<T> {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        let names = decode_seq(d, decode_string)?;
        Ok(Strings(names, T::decode(d)?))
    }
}

// ---- values -------------------------------------------------------------------

impl Encode for Value {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        fn seq<E: Encoder>(tag: u8, v: &[Value], e: &mut E) -> Result<(), EncodeError> {
            tag.encode(e)?;
            (v.len() as u64).encode(e)?;
            v.iter().try_for_each(|x| x.encode(e))
        }
        match self {
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
            Value::List(v) => seq(T_LIST, v, e),
            Value::Tuple(v) => seq(T_TUPLE, v, e),
            Value::Set(v) => seq(T_SET, v, e),
            Value::FrozenSet(v) => seq(T_FROZENSET, v, e),
            Value::Dict(d) => {
                T_DICT.encode(e)?;
                (d.len() as u64).encode(e)?;
                d.iter().try_for_each(|(k, v)| {
                    k.encode(e)?;
                    v.encode(e)
                })
            }
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
        }
    }
}

fn decode_value<D: Decoder>(d: &mut D, depth: u32) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::Other("value nested too deeply"));
    }
    let inner = |d: &mut D| decode_value(d, depth + 1);
    Ok(match u8::decode(d)? {
        T_NONE => Value::None,
        T_BOOL => Value::Bool(bool::decode(d)?),
        T_INT => Value::Int(i64::decode(d)?),
        T_BIGINT => Value::BigInt(decode_bytes(d)?),
        T_FLOAT => Value::Float(f64::decode(d)?),
        T_STR => Value::Str(decode_string(d)?),
        T_BYTES => Value::Bytes(decode_bytes(d)?),
        T_LIST => Value::List(decode_seq(d, inner)?),
        T_TUPLE => Value::Tuple(decode_seq(d, inner)?),
        T_SET => Value::Set(decode_seq(d, inner)?),
        T_FROZENSET => Value::FrozenSet(decode_seq(d, inner)?),
        T_DICT => Value::Dict(decode_seq(d, |d| Ok((inner(d)?, inner(d)?)))?),
        T_REF => Value::Ref(decode_token(d)?),
        T_SLICE => Value::Slice(Slice {
            start: Option::<i64>::decode(d)?,
            stop: Option::<i64>::decode(d)?,
            step: Option::<i64>::decode(d)?,
        }),
        found => {
            return Err(DecodeError::UnexpectedVariant {
                type_name: "Value",
                allowed: &bincode::error::AllowedEnumVariants::Range { min: 0, max: 13 },
                found: u32::from(found),
            })
        }
    })
}

impl<C> Decode<C> for Value {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        decode_value(d, 0)
    }
}

impl Encode for Token {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        encode_str(self.typeid.as_bytes(), e)?;
        self.id.0.encode(e)
    }
}

fn decode_token<D: Decoder>(d: &mut D) -> Result<Token, DecodeError> {
    let typeid = decode_string(d)?;
    Ok(Token {
        typeid,
        id: ObjectId(u64::decode(d)?),
    })
}

impl<C> Decode<C> for Token {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        decode_token(d)
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

impl<C> Decode<C> for Request {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        let target = Option::<u64>::decode(d)?.map(ObjectId);
        let method = decode_string(d)?;
        let args = decode_seq(d, |d| decode_value(d, 1))?;
        let kwargs = decode_seq(d, |d| Ok((decode_string(d)?, decode_value(d, 1)?)))?;
        Ok(Request {
            target,
            method,
            args,
            kwargs,
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

impl<C> Decode<C> for RemoteError {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        Ok(RemoteError {
            kind: decode_string(d)?,
            message: decode_string(d)?,
            args: decode_seq(d, |d| decode_value(d, 1))?,
        })
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
}
