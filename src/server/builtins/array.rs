//! The `Array` typeid: CPython's `managers.Array(typecode, sequence, lock=True)`,
//! an `array.array`, behind `ArrayProxy` — `__len__`, `__getitem__` and
//! `__setitem__`, with `array.array`'s item checks per typecode (the same
//! `TypeError` and `OverflowError` kinds and messages CPython 3.11 raises).
//!
//! Where CPython sends an `array.array` (a slice `a[1:3]`, `_getvalue()`)
//! this type sends one too, as an opaque value in pickle's own form
//! (`_array_reconstructor`); slice assignment takes an array of the same
//! typecode and refuses a list with CPython's `TypeError`.

use super::pykey::{int_of, value_from_i128, PyInt};
use super::pyseq::{int_index, iterate, positional, resolve, Span};
use super::size::{check_result, reserve, vec_with, NODE};
use crate::proto::{ArrayData, RemoteError, Value};
use crate::server::{CallArgs, CallResult, Context, Server, SharedObject, TypeSpec};

/// The methods `ArrayProxy` exposes.
pub(crate) const EXPOSED: &[&str] = &["__len__", "__getitem__", "__setitem__"];

/// The typecodes CPython 3.11's `array` module knows.
const TYPECODES: &str = "bBuhHiIlLqQfd";

/// Registers `Array`.
pub(crate) fn register(server: &mut Server) {
    server.register(
        TypeSpec::new("Array", EXPOSED, |cx, args| {
            Ok(Box::new(PyArray::from_args(args, cx.max_result_bytes())?))
        })
        .read_by_value(),
    );
}

/// A shared typed array; every item has passed its typecode's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct PyArray {
    typecode: char,
    items: Vec<Value>,
}

fn overflow(msg: &str) -> RemoteError {
    RemoteError::new("OverflowError", msg)
}

/// Checks an integer against a C integer typecode, with the message CPython's
/// converter for that typecode gives (some typecodes go through a wider C type
/// first, whose message wins).
fn check_int(tc: char, n: &PyInt) -> Result<(), RemoteError> {
    const C_LONG: &str = "Python int too large to convert to C long";
    const C_ULONG: &str = "Python int too large to convert to C unsigned long";
    let neg = n.is_negative();
    let v = n.small();
    let fits = |lo: i128, hi: i128| v.is_some_and(|x| (lo..=hi).contains(&x));
    let i64r = (i128::from(i64::MIN), i128::from(i64::MAX));
    let u64max = i128::from(u64::MAX);
    // (range, message below, message above), checked in order.
    let steps: Vec<(i128, i128, &str, &str)> = match tc {
        'b' => vec![
            (i64r.0, i64r.1, C_LONG, C_LONG),
            (
                -32768,
                32767,
                "signed short integer is less than minimum",
                "signed short integer is greater than maximum",
            ),
            (
                -128,
                127,
                "signed char is less than minimum",
                "signed char is greater than maximum",
            ),
        ],
        'B' => vec![
            (i64r.0, i64r.1, C_LONG, C_LONG),
            (
                0,
                255,
                "unsigned byte integer is less than minimum",
                "unsigned byte integer is greater than maximum",
            ),
        ],
        'h' => vec![
            (i64r.0, i64r.1, C_LONG, C_LONG),
            (
                -32768,
                32767,
                "signed short integer is less than minimum",
                "signed short integer is greater than maximum",
            ),
        ],
        'H' => vec![
            (i64r.0, i64r.1, C_LONG, C_LONG),
            (
                i128::from(i32::MIN),
                i128::from(i32::MAX),
                "signed integer is less than minimum",
                "signed integer is greater than maximum",
            ),
            (
                0,
                65535,
                "unsigned short is less than minimum",
                "unsigned short is greater than maximum",
            ),
        ],
        'i' => vec![
            (i64r.0, i64r.1, C_LONG, C_LONG),
            (
                i128::from(i32::MIN),
                i128::from(i32::MAX),
                "signed integer is less than minimum",
                "signed integer is greater than maximum",
            ),
        ],
        'I' => vec![
            (
                0,
                u64max,
                "can't convert negative value to unsigned int",
                C_ULONG,
            ),
            (
                0,
                i128::from(u32::MAX),
                "",
                "unsigned int is greater than maximum",
            ),
        ],
        'l' => vec![(i64r.0, i64r.1, C_LONG, C_LONG)],
        'L' => vec![(
            0,
            u64max,
            "can't convert negative value to unsigned int",
            C_ULONG,
        )],
        'q' => vec![(
            i64r.0,
            i64r.1,
            "int too big to convert",
            "int too big to convert",
        )],
        'Q' => vec![(
            0,
            u64max,
            "can't convert negative int to unsigned",
            "int too big to convert",
        )],
        _ => vec![],
    };
    for (lo, hi, below, above) in steps {
        if !fits(lo, hi) {
            let is_below = match v {
                Some(x) => x < lo,
                None => neg,
            };
            return Err(overflow(if is_below { below } else { above }));
        }
    }
    Ok(())
}

/// Converts one item for typecode `tc` as `array.array.__setitem__` does.
fn convert(tc: char, v: Value) -> Result<Value, RemoteError> {
    match tc {
        'f' | 'd' => {
            let x = match &v {
                Value::Float(f) => *f,
                other => match int_of(other) {
                    Some(i) => {
                        let f = i.to_f64();
                        if f.is_infinite() {
                            return Err(overflow("int too large to convert to float"));
                        }
                        f
                    }
                    None => {
                        return Err(RemoteError::type_error(format!(
                            "must be real number, not {}",
                            other.type_name()
                        )))
                    }
                },
            };
            Ok(Value::Float(if tc == 'f' { x as f32 as f64 } else { x }))
        }
        'u' => match v {
            Value::Str(ref s) if s.chars().count() == 1 => Ok(v),
            _ => Err(RemoteError::type_error(
                "array item must be unicode character",
            )),
        },
        _ => match int_of(&v) {
            Some(i) => {
                check_int(tc, &i)?;
                Ok(value_from_i128(i.small().expect("checked to fit")))
            }
            None => Err(RemoteError::type_error(format!(
                "'{}' object cannot be interpreted as an integer",
                v.type_name()
            ))),
        },
    }
}

/// Item size in bytes, as `array.array.itemsize` reports it on 64-bit Linux.
fn item_size(tc: char) -> usize {
    match tc {
        'b' | 'B' => 1,
        'h' | 'H' => 2,
        'u' | 'i' | 'I' | 'f' => 4,
        _ => 8,
    }
}

/// Estimated bytes one item of typecode `tc` takes on the server (a `Value`,
/// and a 'u' item's character).
fn held_item_bytes(tc: char) -> usize {
    NODE + if tc == 'u' { 4 } else { 0 }
}

/// `array.frombytes`: native-endian machine values, checked against `limit`
/// before allocating (each item becomes a `Value`, many times its bytes).
fn from_bytes(tc: char, b: &[u8], limit: usize) -> Result<Vec<Value>, RemoteError> {
    let size = item_size(tc);
    if b.len() % size != 0 {
        return Err(RemoteError::value_error(
            "bytes length not a multiple of item size",
        ));
    }
    let n = b.len() / size;
    check_result(n.saturating_mul(held_item_bytes(tc)), limit)?;
    let mut out = vec_with(n)?;
    for item in b.chunks(size).map(|c| {
        let mut buf = [0u8; 8];
        buf[..size].copy_from_slice(c);
        let raw = u64::from_ne_bytes(buf);
        Ok(match tc {
            'b' => Value::Int(i64::from(c[0] as i8)),
            'h' => Value::Int(i64::from(i16::from_ne_bytes([c[0], c[1]]))),
            'i' => Value::Int(i64::from(i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))),
            'l' | 'q' => Value::Int(raw as i64),
            'f' => Value::Float(f64::from(f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))),
            'd' => Value::Float(f64::from_bits(raw)),
            'u' => {
                let code = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                let ch = char::from_u32(code).ok_or_else(|| {
                    RemoteError::value_error(format!(
                        "character U+{code:x} is not in range [U+0000; U+10ffff]"
                    ))
                })?;
                Value::Str(ch.to_string())
            }
            // Unsigned typecodes.
            _ => value_from_i128(i128::from(raw)),
        })
    }) {
        out.push(item?);
    }
    Ok(out)
}

/// The machine format code (`array._array_reconstructor`'s) of typecode
/// `tc`'s native values on this host (LP64).
fn native_mformat(tc: char) -> i64 {
    let base = match tc {
        'b' => return 1,
        'B' => return 0,
        'H' => 2,
        'h' => 4,
        'I' => 6,
        'i' => 8,
        'L' | 'Q' => 10,
        'l' | 'q' => 12,
        'f' => 14,
        'd' => 16,
        _ => 20, // 'u': UCS-4
    };
    if cfg!(target_endian = "little") {
        base
    } else {
        base + 1
    }
}

/// The items of an `array.array` value (an opaque one, as a client sent it),
/// checked against `limit` before allocating.
pub(crate) fn array_items(
    tc: char,
    data: ArrayData<'_>,
    limit: usize,
) -> Result<Vec<Value>, RemoteError> {
    if !TYPECODES.contains(tc) {
        return Err(RemoteError::value_error(
            "bad typecode (must be b, B, u, h, H, i, I, l, L, q, Q, f or d)",
        ));
    }
    match data {
        ArrayData::Items(v) => {
            check_result(v.len().saturating_mul(held_item_bytes(tc)), limit)?;
            let mut out = vec_with(v.len())?;
            for x in v {
                out.push(convert(tc, x.clone())?);
            }
            Ok(out)
        }
        ArrayData::Text(t) => {
            let n = t.chars().count();
            check_result(n.saturating_mul(held_item_bytes(tc)), limit)?;
            let mut out = vec_with(n)?;
            out.extend(t.chars().map(|c| Value::Str(c.to_string())));
            Ok(out)
        }
        ArrayData::Native(b) => from_bytes(tc, b, limit),
        ArrayData::Machine(fmt, b) if fmt == native_mformat(tc) => from_bytes(tc, b, limit),
        ArrayData::Machine(fmt, _) => Err(RemoteError::value_error(format!(
            "an array of typecode '{tc}' in machine format {fmt} (another host's) is not supported"
        ))),
    }
}

/// An `array.array` of typecode `tc` holding the `n` `items` (checked for it), as
/// CPython pickles one: `_array_reconstructor(array, tc, mformat, bytes)`.
fn to_array<'a>(
    tc: char,
    n: usize,
    items: impl Iterator<Item = &'a Value>,
    limit: usize,
) -> Result<Value, RemoteError> {
    let size = item_size(tc);
    check_result(n.saturating_mul(size).saturating_add(NODE), limit)?;
    let mut b = vec_with::<u8>(n * size)?;
    for v in items {
        let int = || int_of(v).and_then(|i| i.small()).unwrap_or(0);
        match tc {
            'f' => b.extend_from_slice(&(v.as_float().unwrap_or(0.0) as f32).to_ne_bytes()),
            'd' => b.extend_from_slice(&v.as_float().unwrap_or(0.0).to_ne_bytes()),
            'u' => {
                let c = v.as_str().and_then(|s| s.chars().next()).unwrap_or('\0');
                b.extend_from_slice(&u32::from(c).to_ne_bytes());
            }
            _ => b.extend_from_slice(&int().to_ne_bytes()[..size]),
        }
    }
    if cfg!(target_endian = "big") && !matches!(tc, 'f' | 'd' | 'u') {
        // `i128::to_ne_bytes()[..size]` takes the high bytes on big-endian.
        return Err(RemoteError::new(
            "NotImplementedError",
            "arrays on big-endian hosts",
        ));
    }
    Ok(Value::opaque_call(
        "array",
        "_array_reconstructor",
        vec![
            Value::opaque_global("array", "array"),
            Value::Str(tc.to_string()),
            Value::Int(native_mformat(tc)),
            Value::Bytes(b),
        ],
    ))
}

fn typecode_arg(v: Value) -> Result<char, RemoteError> {
    let s = match v.into_str() {
        Ok(s) => s,
        Err(other) => {
            return Err(RemoteError::type_error(format!(
                "array() argument 1 must be a unicode character, not {}",
                other.type_name()
            )))
        }
    };
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if TYPECODES.contains(c) => Ok(c),
        (Some(_), None) => Err(RemoteError::value_error(
            "bad typecode (must be b, B, u, h, H, i, I, l, L, q, Q, f or d)",
        )),
        _ => Err(RemoteError::type_error(
            "array() argument 1 must be a unicode character, not str",
        )),
    }
}

impl PyArray {
    /// `Array(typecode, sequence, lock=True)`; `lock` is accepted and ignored, as
    /// CPython's manager ignores it.
    fn from_args(mut args: CallArgs, limit: usize) -> Result<PyArray, RemoteError> {
        args.check("Array", 3, &["typecode", "sequence", "lock"])?;
        let typecode = args.take(0, "typecode");
        let sequence = args.take(1, "sequence");
        let (typecode, sequence) =
            match (typecode, sequence) {
                (Some(t), Some(s)) => (t, s),
                (None, _) => return Err(RemoteError::type_error(
                    "Array() missing 2 required positional arguments: 'typecode' and 'sequence'",
                )),
                (Some(_), None) => {
                    return Err(RemoteError::type_error(
                        "Array() missing 1 required positional argument: 'sequence'",
                    ))
                }
            };
        let tc = typecode_arg(typecode)?;
        let items = match sequence.resolved() {
            Value::Str(_) if tc != 'u' => {
                return Err(RemoteError::type_error(format!(
                    "cannot use a str to initialize an array with typecode '{tc}'"
                )))
            }
            Value::Bytes(b) => from_bytes(tc, b, limit)?,
            _ => iterate(sequence, limit)?
                .into_iter()
                .map(|v| convert(tc, v))
                .collect::<Result<_, _>>()?,
        };
        Ok(PyArray {
            typecode: tc,
            items,
        })
    }

    fn get_item(&self, limit: usize, key: &Value) -> Result<Value, RemoteError> {
        if let Value::Slice(s) = key {
            let span = Span::new(s, self.items.len())?;
            check_result(
                NODE + span.len.saturating_mul(held_item_bytes(self.typecode)),
                limit,
            )?;
            let items = span.positions().map(|p| &self.items[p]);
            return to_array(self.typecode, span.len, items, limit);
        }
        let i = int_index(key)
            .ok_or_else(|| RemoteError::type_error("array indices must be integers"))??;
        resolve(i, self.items.len())
            .map(|p| self.items[p].clone())
            .ok_or_else(|| RemoteError::new("IndexError", "array index out of range"))
    }

    fn set_item(&mut self, cx: &Context<'_>, key: &Value, value: Value) -> Result<(), RemoteError> {
        if let Value::Slice(s) = key {
            let span = Span::new(s, self.items.len())?;
            // Only an array of the same typecode, as CPython's array takes.
            let new: Vec<Value> = match value.as_opaque().and_then(|o| o.array_data()) {
                Some((tc, data)) if tc == self.typecode => {
                    array_items(tc, data, cx.max_result_bytes())?
                }
                Some(_) => {
                    return Err(RemoteError::type_error(
                        "bad argument type for built-in operation",
                    ))
                }
                None => {
                    let name = match &value {
                        Value::Opaque(o) => o.type_name().to_owned(),
                        other => other.type_name().to_owned(),
                    };
                    return Err(RemoteError::type_error(format!(
                        "can only assign array (not \"{name}\") to array slice"
                    )));
                }
            };
            if let Some(range) = span.contiguous() {
                let more = new.len().saturating_sub(range.len());
                cx.check_growth(more * held_item_bytes(self.typecode))?;
                reserve(&mut self.items, more)?;
                self.items.splice(range, new);
                return Ok(());
            }
            if new.len() != span.len {
                return Err(RemoteError::value_error(format!(
                    "attempt to assign array of size {} to extended slice of size {}",
                    new.len(),
                    span.len
                )));
            }
            for (p, v) in span.positions().zip(new) {
                self.items[p] = v;
            }
            return Ok(());
        }
        let i = int_index(key)
            .ok_or_else(|| RemoteError::type_error("array indices must be integers"))??;
        let p = resolve(i, self.items.len())
            .ok_or_else(|| RemoteError::new("IndexError", "array assignment index out of range"))?;
        self.items[p] = convert(self.typecode, value)?;
        Ok(())
    }
}

impl SharedObject for PyArray {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        let v = match method {
            "__len__" => {
                positional("array", "__len__", args, 0, 0)?;
                Value::Int(self.items.len() as i64)
            }
            "__getitem__" => {
                let a = positional("array", "__getitem__", args, 1, 1)?;
                self.get_item(cx.max_result_bytes(), &a[0])?
            }
            "__setitem__" => {
                let mut a = positional("array", "__setitem__", args, 2, 2)?;
                let value = a.pop().expect("two arguments");
                self.set_item(cx, &a[0], value)?;
                Value::None
            }
            other => {
                return Err(RemoteError::new(
                    "AttributeError",
                    format!("'array.array' object has no attribute '{other}'"),
                ))
            }
        };
        Ok(v.into())
    }

    /// `array('i', [1, 2])`, `array('u', 'ab')`, `array('d')` as Python writes them.
    fn repr(&self) -> Option<String> {
        let tc = self.typecode;
        if self.items.is_empty() {
            return Some(format!("array('{tc}')"));
        }
        if tc == 'u' {
            let s: String = self.items.iter().filter_map(Value::as_str).collect();
            return Some(format!("array('u', {})", Value::Str(s)));
        }
        Some(format!(
            "array('{tc}', {})",
            Value::List(self.items.clone())
        ))
    }

    /// The `array.array`, as CPython's server returns it.
    fn get_value(&self) -> Result<Value, RemoteError> {
        to_array(
            self.typecode,
            self.items.len(),
            self.items.iter(),
            usize::MAX,
        )
    }

    fn held_bytes(&self) -> usize {
        self.items.len() * held_item_bytes(self.typecode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(tc: char, v: Value) -> (String, String) {
        let e = convert(tc, v).unwrap_err();
        (e.kind, e.message)
    }

    fn big(neg: bool) -> Value {
        // ±2**70
        let mut b = vec![0u8; 8];
        b.push(if neg { 0xc0 } else { 0x40 });
        Value::BigInt(b)
    }

    #[test]
    fn integer_checks_match_cpython() {
        // Messages printed by python3.11 for array.array(tc)[0] = v.
        let o = |m: &str| ("OverflowError".to_owned(), m.to_owned());
        assert_eq!(
            err('b', Value::Int(-129)),
            o("signed char is less than minimum")
        );
        assert_eq!(
            err('b', Value::Int(40000)),
            o("signed short integer is greater than maximum")
        );
        assert_eq!(
            err('b', big(false)),
            o("Python int too large to convert to C long")
        );
        assert_eq!(
            err('B', Value::Int(-1)),
            o("unsigned byte integer is less than minimum")
        );
        assert_eq!(
            err('H', Value::Int(-1)),
            o("unsigned short is less than minimum")
        );
        assert_eq!(
            err('H', Value::Int(1 << 31)),
            o("signed integer is greater than maximum")
        );
        assert_eq!(
            err('i', Value::Int(1 << 31)),
            o("signed integer is greater than maximum")
        );
        assert_eq!(
            err('I', Value::Int(-1)),
            o("can't convert negative value to unsigned int")
        );
        assert_eq!(
            err('I', Value::Int(1 << 32)),
            o("unsigned int is greater than maximum")
        );
        assert_eq!(
            err('I', big(false)),
            o("Python int too large to convert to C unsigned long")
        );
        assert_eq!(
            err('L', big(true)),
            o("can't convert negative value to unsigned int")
        );
        assert_eq!(err('q', big(true)), o("int too big to convert"));
        assert_eq!(
            err('Q', Value::Int(-5)),
            o("can't convert negative int to unsigned")
        );
        assert_eq!(
            err('i', Value::Float(1.5)),
            (
                "TypeError".into(),
                "'float' object cannot be interpreted as an integer".into()
            )
        );
        assert_eq!(convert('B', Value::Bool(true)).unwrap(), Value::Int(1));
        let q = convert('Q', value_from_i128(i128::from(u64::MAX))).unwrap();
        assert_eq!(q, value_from_i128(i128::from(u64::MAX)));
    }

    #[test]
    fn float_and_char_checks() {
        assert_eq!(
            convert('f', Value::Float(0.1)).unwrap(),
            Value::Float(0.1f32 as f64)
        );
        assert_eq!(convert('d', Value::Int(3)).unwrap(), Value::Float(3.0));
        assert_eq!(err('d', Value::from("x")).1, "must be real number, not str");
        assert_eq!(
            err('u', Value::from("xy")).1,
            "array item must be unicode character"
        );
        assert!(convert('u', Value::from("é")).is_ok());
    }

    #[test]
    fn constructor_and_repr() {
        let mk = |tc: &str, seq: Value| {
            PyArray::from_args(CallArgs::positional(vec![Value::from(tc), seq]), 1 << 20)
        };
        let a = mk("d", Value::List(vec![Value::Int(1), Value::Float(2.5)])).unwrap();
        assert_eq!(a.repr().unwrap(), "array('d', [1.0, 2.5])");
        assert_eq!(
            mk("u", Value::from("ab")).unwrap().repr().unwrap(),
            "array('u', 'ab')"
        );
        assert_eq!(
            mk("i", Value::List(vec![])).unwrap().repr().unwrap(),
            "array('i')"
        );
        let e = mk("z", Value::List(vec![])).unwrap_err();
        assert_eq!(
            e.message,
            "bad typecode (must be b, B, u, h, H, i, I, l, L, q, Q, f or d)"
        );
        let e = mk("i", Value::from("ab")).unwrap_err();
        assert_eq!(
            e.message,
            "cannot use a str to initialize an array with typecode 'i'"
        );
        let e = mk("B", Value::List(vec![Value::Int(-1)])).unwrap_err();
        assert_eq!(e.kind, "OverflowError");
        let h = mk("h", Value::Bytes(vec![1, 0, 0xff, 0xff])).unwrap();
        assert_eq!(h.items, vec![Value::Int(1), Value::Int(-1)]);
        assert!(mk("h", Value::Bytes(vec![1])).is_err());
        // Bytes expand into one Value per item: sized before allocating.
        let few = CallArgs::positional(vec![Value::from("b"), Value::Bytes(vec![0; 100])]);
        let e = PyArray::from_args(few.clone(), 99 * NODE).unwrap_err();
        assert_eq!(e.kind, "MemoryError");
        assert_eq!(
            PyArray::from_args(few, 100 * NODE).unwrap().items.len(),
            100
        );
    }
}
