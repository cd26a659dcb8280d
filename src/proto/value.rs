//! [`Value`]: the dynamic data model of every argument and result.
//!
//! It covers what CPython managers send — None, bool, int (an `i64`, or a big int
//! kept exactly as its two's-complement bytes), float, str, bytes, list, tuple, dict,
//! set, frozenset — plus an object reference ([`Token`]) so shared objects can be
//! passed around and stored inside one another. Dicts and sets keep their elements
//! in order as vectors: the data model carries values, it does not index them.

use std::fmt;

/// Identity of a shared object on one server: slab index plus generation.
///
/// A freed slot reused later gets a new generation, so a stale id is reported as an
/// unknown object instead of reaching another object. On the pickle path the id
/// travels as the lowercase hex string CPython uses for its idents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u64);

impl ObjectId {
    /// Builds an id from a slab index and a generation.
    pub fn new(index: u32, generation: u32) -> ObjectId {
        ObjectId((u64::from(generation) << 32) | u64::from(index))
    }

    /// The slab index part.
    pub fn index(self) -> u32 {
        self.0 as u32
    }

    /// The generation part.
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Parses the hex form CPython clients send as an ident.
    pub fn from_hex(s: &str) -> Option<ObjectId> {
        if s.is_empty() || s.len() > 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(ObjectId)
    }
}

impl fmt::Display for ObjectId {
    /// The hex ident form, as CPython prints object idents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A reference to a shared object: its type id and its id on the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token {
    /// The registered type id (e.g. `"Queue"`).
    pub typeid: String,
    /// The object's id.
    pub id: ObjectId,
}

/// One dynamically typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Python's `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// An integer beyond 64 bits: minimal little-endian two's-complement bytes (the
    /// form pickle's LONG1/LONG4 opcodes carry), kept exactly.
    BigInt(Vec<u8>),
    /// A double-precision float.
    Float(f64),
    /// A Unicode string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict, as key/value pairs in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A set, elements in order of appearance.
    Set(Vec<Value>),
    /// A frozenset.
    FrozenSet(Vec<Value>),
    /// A reference to a shared object.
    Ref(Token),
    /// A slice (`l[1:3]`, `a[::2]`), as list and array subscripts carry them.
    Slice(Slice),
}

/// Python's `slice(start, stop, step)` with integer (or absent) bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Slice {
    /// First index, `None` for the default.
    pub start: Option<i64>,
    /// End index (exclusive), `None` for the default.
    pub stop: Option<i64>,
    /// Step, `None` for 1.
    pub step: Option<i64>,
}

impl Value {
    /// A short name of the value's kind, as Python would call its type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Ref(_) => "proxy",
            Value::Slice(_) => "slice",
        }
    }

    /// The string inside a `Str`, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside an `Int` (or a `Bool`, as Python treats bools as ints).
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }

    /// The number as a float: floats, ints and bools.
    pub fn as_float(&self) -> Option<f64> {
        match *self {
            Value::Float(f) => Some(f),
            Value::Int(i) => Some(i as f64),
            Value::Bool(b) => Some(f64::from(u8::from(b))),
            _ => None,
        }
    }

    /// Python truthiness.
    pub fn truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::BigInt(b) => b.iter().any(|&x| x != 0),
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => !v.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Ref(_) | Value::Slice(_) => true,
        }
    }

    /// Calls `f` with every object reference inside this value, depth first.
    pub fn visit_refs(&self, f: &mut dyn FnMut(&Token)) {
        match self {
            Value::Ref(t) => f(t),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                v.iter().for_each(|x| x.visit_refs(f))
            }
            Value::Dict(d) => d.iter().for_each(|(k, v)| {
                k.visit_refs(f);
                v.visit_refs(f);
            }),
            _ => {}
        }
    }

    /// Whether any object reference is inside this value.
    pub fn has_refs(&self) -> bool {
        match self {
            Value::Ref(_) => true,
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                v.iter().any(Value::has_refs)
            }
            Value::Dict(d) => d.iter().any(|(k, v)| k.has_refs() || v.has_refs()),
            _ => false,
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<i32> for Value {
    fn from(i: i32) -> Value {
        Value::Int(i64::from(i))
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Bytes(b)
    }
}
impl From<Token> for Value {
    fn from(t: Token) -> Value {
        Value::Ref(t)
    }
}

impl fmt::Display for Value {
    /// Python's `repr()` of the value, near enough for messages and `__repr__`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, open: &str, v: &[Value], close: &str) -> fmt::Result {
            f.write_str(open)?;
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{x}")?;
            }
            f.write_str(close)
        }
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::BigInt(b) => write!(f, "<int of {} bytes>", b.len()),
            Value::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 => {
                write!(f, "{x:.1}")
            }
            Value::Float(x) if x.is_nan() => f.write_str("nan"),
            Value::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { "inf" } else { "-inf" })
            }
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "'{}'", s.escape_debug()),
            Value::Bytes(b) => write!(f, "b'{}'", b.escape_ascii()),
            Value::List(v) => seq(f, "[", v, "]"),
            Value::Tuple(v) if v.len() == 1 => write!(f, "({},)", v[0]),
            Value::Tuple(v) => seq(f, "(", v, ")"),
            Value::Dict(d) => {
                f.write_str("{")?;
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Set(v) if v.is_empty() => f.write_str("set()"),
            Value::Set(v) => seq(f, "{", v, "}"),
            Value::FrozenSet(v) => seq(f, "frozenset({", v, "})"),
            Value::Ref(t) => write!(f, "<{} proxy id={}>", t.typeid, t.id),
            Value::Slice(s) => {
                let part = |b: Option<i64>| b.map_or("None".to_owned(), |i| i.to_string());
                write!(
                    f,
                    "slice({}, {}, {})",
                    part(s.start),
                    part(s.stop),
                    part(s.step)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_parts_and_hex() {
        let id = ObjectId::new(7, 3);
        assert_eq!(id.index(), 7);
        assert_eq!(id.generation(), 3);
        assert_eq!(id.to_string(), "300000007");
        assert_eq!(ObjectId::from_hex("300000007"), Some(id));
        assert_eq!(ObjectId::from_hex("xyz"), None);
        assert_eq!(ObjectId::from_hex(""), None);
        assert_eq!(ObjectId::from_hex("11112222333344445"), None);
    }

    #[test]
    fn repr_like_python() {
        let v = Value::List(vec![
            Value::None,
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(2.0),
            Value::Str("a'b".into()),
            Value::Tuple(vec![Value::Int(1)]),
            Value::Dict(vec![(
                Value::Str("k".into()),
                Value::Bytes(b"\x00z".to_vec()),
            )]),
            Value::Set(vec![]),
            Value::Slice(Slice {
                start: Some(1),
                stop: None,
                step: Some(-2),
            }),
        ]);
        assert_eq!(
            v.to_string(),
            r"[None, True, -3, 2.0, 'a\'b', (1,), {'k': b'\x00z'}, set(), slice(1, None, -2)]"
        );
    }

    #[test]
    fn refs_are_found_when_nested() {
        let t = Token {
            typeid: "dict".into(),
            id: ObjectId(5),
        };
        let v = Value::Dict(vec![(
            Value::Str("a".into()),
            Value::List(vec![Value::Ref(t.clone())]),
        )]);
        assert!(v.has_refs());
        let mut seen = Vec::new();
        v.visit_refs(&mut |t| seen.push(t.id));
        assert_eq!(seen, vec![ObjectId(5)]);
        assert!(!Value::List(vec![Value::Int(1)]).has_refs());
    }

    #[test]
    fn truthiness() {
        assert!(!Value::None.truthy());
        assert!(!Value::Int(0).truthy());
        assert!(Value::Str("x".into()).truthy());
        assert!(!Value::Dict(vec![]).truthy());
        assert!(!Value::BigInt(vec![0, 0]).truthy());
    }
}
