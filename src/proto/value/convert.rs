//! Conversions between [`Value`] and Rust types: `From` into a value for the
//! primitives, strings, options, maps and tuples (and `collect()` into a list),
//! `TryFrom` a value back, with a [`ConversionError`] naming what was expected
//! and what was found. Numbers convert when they fit (a `Value::Int` of 300 is
//! no `u8`); a Python bool is an int, as in Python.
//!
//! Bytes convert with `Vec<u8>` → [`Value::Bytes`] and [`Value::into_bytes`] /
//! [`Value::as_bytes`] back; a `Vec<T>` converts item by item from a list (there
//! is no `TryFrom<Value> for u8`, so `Vec<u8>` always means bytes).
//!
//! ```
//! use std::collections::HashMap;
//! use mgr::Value;
//!
//! let list: Value = [1i64, 2].into_iter().collect();
//! let v = Value::from(HashMap::from([("a", list), ("b", Value::List(vec![]))]));
//! let back: HashMap<String, Vec<i64>> = v.try_into()?;
//! assert_eq!(back["a"], [1, 2]);
//! let raw = Value::from(b"\x00\x01".to_vec());
//! assert_eq!(raw.as_bytes(), Some(&[0u8, 1][..]));
//! let e = i64::try_from(Value::from("3")).unwrap_err();
//! assert_eq!((e.expected, e.found.as_str()), ("int", "str"));
//! # Ok::<(), mgr::ConversionError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;

use super::{Token, Value};

/// A value was not of the kind a conversion needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionError {
    /// What the conversion wanted ("int", "str", "a 2-tuple" …).
    pub expected: &'static str,
    /// The Python type name of what it got, or why a number did not fit.
    pub found: String,
}

impl fmt::Display for ConversionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}, found {}", self.expected, self.found)
    }
}

impl std::error::Error for ConversionError {}

/// So that code generic over `T: TryFrom<Value>` with
/// `ConversionError: From<T::Error>` takes [`Value`] itself (whose conversion
/// cannot fail).
impl From<std::convert::Infallible> for ConversionError {
    fn from(never: std::convert::Infallible) -> ConversionError {
        match never {}
    }
}

fn wrong(expected: &'static str, v: &Value) -> ConversionError {
    ConversionError {
        expected,
        found: v.type_name().to_owned(),
    }
}

impl From<i128> for Value {
    /// `Int` when it fits in 64 bits, else `BigInt`.
    fn from(n: i128) -> Value {
        match i64::try_from(n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(super::minimal_le(n.to_le_bytes().to_vec())),
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Value {
                Value::from(n as i128)
            }
        }
    )*};
}
from_int!(i8, i16, u8, u16, u32, u64, usize, isize);

impl From<f32> for Value {
    fn from(f: f32) -> Value {
        Value::Float(f64::from(f))
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Str(s.clone())
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Value {
        Value::Bytes(b.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    /// `None` for `None`, else the value.
    fn from(o: Option<T>) -> Value {
        o.map_or(Value::None, Into::into)
    }
}

impl<K: Into<Value>, V: Into<Value>> From<BTreeMap<K, V>> for Value {
    /// A dict, in the map's key order.
    fn from(m: BTreeMap<K, V>) -> Value {
        Value::Dict(m.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<K: Into<Value>, V: Into<Value>, S> From<HashMap<K, V, S>> for Value {
    /// A dict, in the map's iteration order.
    fn from(m: HashMap<K, V, S>) -> Value {
        Value::Dict(m.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<T: Into<Value>> FromIterator<T> for Value {
    /// A list: `(1..4).collect::<Value>()` is `[1, 2, 3]`.
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Value {
        Value::List(items.into_iter().map(Into::into).collect())
    }
}

macro_rules! tuples {
    ($(($($n:ident $i:tt),+) = $len:literal;)*) => {$(
        impl<$($n: Into<Value>),+> From<($($n,)+)> for Value {
            /// A tuple.
            fn from(t: ($($n,)+)) -> Value {
                Value::Tuple(vec![$(t.$i.into()),+])
            }
        }

        impl<$($n: TryFrom<Value, Error = ConversionError>),+> TryFrom<Value> for ($($n,)+) {
            type Error = ConversionError;
            /// From a tuple (or list) of exactly this many items.
            fn try_from(v: Value) -> Result<Self, ConversionError> {
                let items = match v.resolved() {
                    Value::Tuple(_) | Value::List(_) => v.into_items().expect("a sequence"),
                    other => return Err(wrong(concat!("a ", $len, "-tuple"), other)),
                };
                if items.len() != $len {
                    return Err(ConversionError {
                        expected: concat!("a ", $len, "-tuple"),
                        found: format!("{} items", items.len()),
                    });
                }
                let mut it = items.into_iter();
                Ok(($($n::try_from(it.next().expect("counted"))?,)+))
            }
        }
    )*};
}
tuples! {
    (A 0, B 1) = 2;
    (A 0, B 1, C 2) = 3;
    (A 0, B 1, C 2, D 3) = 4;
}

impl TryFrom<Value> for bool {
    type Error = ConversionError;
    /// A `Bool` only (use [`Value::truthy`] for Python's truth value).
    fn try_from(v: Value) -> Result<bool, ConversionError> {
        match *v.resolved() {
            Value::Bool(b) => Ok(b),
            ref other => Err(wrong("bool", other)),
        }
    }
}

/// The integer in an `Int`, `Bool` or (up to 128 bits) `BigInt`.
fn integer(v: &Value) -> Result<i128, ConversionError> {
    match v.resolved() {
        Value::Int(i) => Ok(i128::from(*i)),
        Value::Bool(b) => Ok(i128::from(*b)),
        Value::BigInt(b) if b.len() <= 16 => {
            let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                0xff
            } else {
                0
            };
            let mut buf = [fill; 16];
            buf[..b.len()].copy_from_slice(b);
            Ok(i128::from_le_bytes(buf))
        }
        Value::BigInt(_) => Err(ConversionError {
            expected: "an int of at most 128 bits",
            found: "a larger int".to_owned(),
        }),
        other => Err(wrong("int", other)),
    }
}

macro_rules! try_from_int {
    ($($t:ty),*) => {$(
        impl TryFrom<Value> for $t {
            type Error = ConversionError;
            /// An int (or bool) that fits.
            fn try_from(v: Value) -> Result<$t, ConversionError> {
                let n = integer(&v)?;
                <$t>::try_from(n).map_err(|_| ConversionError {
                    expected: concat!("an int that fits ", stringify!($t)),
                    found: n.to_string(),
                })
            }
        }
    )*};
}
try_from_int!(i8, i16, i32, i64, i128, u16, u32, u64, usize, isize);

impl TryFrom<Value> for f64 {
    type Error = ConversionError;
    /// A float, or an int or bool (as Python's `float()` takes them).
    fn try_from(v: Value) -> Result<f64, ConversionError> {
        v.as_float().ok_or_else(|| wrong("float", &v))
    }
}

impl TryFrom<Value> for String {
    type Error = ConversionError;
    /// A `Str`.
    fn try_from(v: Value) -> Result<String, ConversionError> {
        v.into_str().map_err(|other| wrong("str", &other))
    }
}

impl TryFrom<Value> for Token {
    type Error = ConversionError;
    /// A reference to a shared object.
    fn try_from(mut v: Value) -> Result<Token, ConversionError> {
        match v.unshare() {
            Value::Ref(t) => Ok(std::mem::replace(
                t,
                Token {
                    typeid: String::new(),
                    id: super::ObjectId(0),
                },
            )),
            _ => Err(wrong("a shared object reference", &v)),
        }
    }
}

impl<T: TryFrom<Value, Error = ConversionError>> TryFrom<Value> for Option<T> {
    type Error = ConversionError;
    /// `None` for `None`, else the converted value.
    fn try_from(v: Value) -> Result<Option<T>, ConversionError> {
        match v.resolved() {
            Value::None => Ok(None),
            _ => T::try_from(v).map(Some),
        }
    }
}

impl<T: TryFrom<Value, Error = ConversionError>> TryFrom<Value> for Vec<T> {
    type Error = ConversionError;
    /// A list, tuple, set or frozenset, item by item.
    fn try_from(v: Value) -> Result<Vec<T>, ConversionError> {
        v.into_items()
            .map_err(|other| wrong("a list", &other))?
            .into_iter()
            .map(T::try_from)
            .collect()
    }
}

/// A dict's entries, each key and value converted.
fn entries<K, V>(
    v: Value,
) -> Result<impl Iterator<Item = Result<(K, V), ConversionError>>, ConversionError>
where
    K: TryFrom<Value, Error = ConversionError>,
    V: TryFrom<Value, Error = ConversionError>,
{
    Ok(v.into_entries()
        .map_err(|other| wrong("a dict", &other))?
        .into_iter()
        .map(|(k, v)| Ok((K::try_from(k)?, V::try_from(v)?))))
}

impl<K, V> TryFrom<Value> for BTreeMap<K, V>
where
    K: TryFrom<Value, Error = ConversionError> + Ord,
    V: TryFrom<Value, Error = ConversionError>,
{
    type Error = ConversionError;
    /// A dict.
    fn try_from(v: Value) -> Result<BTreeMap<K, V>, ConversionError> {
        entries(v)?.collect()
    }
}

impl<K, V> TryFrom<Value> for HashMap<K, V>
where
    K: TryFrom<Value, Error = ConversionError> + Eq + Hash,
    V: TryFrom<Value, Error = ConversionError>,
{
    type Error = ConversionError;
    /// A dict.
    fn try_from(v: Value) -> Result<HashMap<K, V>, ConversionError> {
        entries(v)?.collect()
    }
}

impl Value {
    /// The flag inside a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self.resolved() {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The bytes inside a `Bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self.resolved() {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The bytes of a `Bytes`, moved out.
    ///
    /// # Errors
    ///
    /// Any other value comes back unchanged as the error.
    pub fn into_bytes(mut self) -> Result<Vec<u8>, Value> {
        if !matches!(self.resolved(), Value::Bytes(_)) {
            return Err(self);
        }
        match self.unshare() {
            Value::Bytes(b) => Ok(std::mem::take(b)),
            _ => Err(self),
        }
    }

    /// The items of a list, tuple, set or frozenset.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self.resolved() {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => Some(v),
            _ => None,
        }
    }

    /// The entries of a dict, in order.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self.resolved() {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The value a dict holds for `key` (compared structurally: `Value::Int(1)`
    /// does not find a `Value::Float(1.0)` key, though Python would).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use mgr::Value;
    ///
    /// let scores = Value::from(BTreeMap::from([("alice", 10i64), ("bob", 7)]));
    /// assert_eq!(scores.get("bob"), Some(&Value::Int(7)));
    /// // And back to Rust types, with an error naming what did not fit:
    /// let map: BTreeMap<String, i64> = scores.try_into()?;
    /// assert_eq!(map["alice"], 10);
    /// let e = String::try_from(Value::Int(3)).unwrap_err();
    /// assert_eq!(e.to_string(), "expected str, found int");
    /// # Ok::<(), mgr::ConversionError>(())
    /// ```
    pub fn get(&self, key: impl Into<Value>) -> Option<&Value> {
        let key = key.into();
        self.as_dict()?
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Item `i` of a list, tuple, set or frozenset.
    pub fn item(&self, i: usize) -> Option<&Value> {
        self.as_list()?.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_convert_when_they_fit() {
        assert_eq!(Value::from(7u8), Value::Int(7));
        assert_eq!(
            Value::from(u64::MAX),
            Value::BigInt(vec![0xff; 8].into_iter().chain([0]).collect())
        );
        assert_eq!(u64::try_from(Value::from(u64::MAX)), Ok(u64::MAX));
        assert_eq!(i128::try_from(Value::from(i128::MIN)), Ok(i128::MIN));
        assert_eq!(i64::try_from(Value::Bool(true)), Ok(1));
        let e = u16::try_from(Value::Int(70_000)).unwrap_err();
        assert_eq!(e.found, "70000");
        let e = i32::try_from(Value::from("x")).unwrap_err();
        assert_eq!(e.to_string(), "expected int, found str");
        assert_eq!(f64::try_from(Value::Int(2)), Ok(2.0));
        assert!(bool::try_from(Value::Int(1)).is_err());
    }

    #[test]
    fn containers_round_trip() {
        let v: Value = vec![1i64, 2, 3].into_iter().collect();
        assert_eq!(
            v,
            Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
        );
        assert_eq!(Vec::<i64>::try_from(v.clone()), Ok(vec![1, 2, 3]));
        assert_eq!(v.item(1), Some(&Value::Int(2)));

        let mut m = BTreeMap::new();
        m.insert("a".to_owned(), Some(1i64));
        m.insert("b".to_owned(), None);
        let d = Value::from(m.clone());
        assert_eq!(d.get("a"), Some(&Value::Int(1)));
        assert_eq!(d.get("z"), None);
        assert_eq!(BTreeMap::<String, Option<i64>>::try_from(d.clone()), Ok(m));
        let h = HashMap::<String, Option<i64>>::try_from(d).unwrap();
        assert_eq!(h["b"], None);

        let t = Value::from(("x", 2i64, 1.5f64));
        assert_eq!(
            <(String, i64, f64)>::try_from(t.clone()),
            Ok(("x".to_owned(), 2, 1.5))
        );
        let e = <(String, i64)>::try_from(t).unwrap_err();
        assert_eq!(e.found, "3 items");
        assert_eq!(Value::from(vec![1u8, 2]).into_bytes(), Ok(vec![1, 2]));
        assert!(Vec::<i64>::try_from(Value::from(vec![1u8])).is_err());
    }
}
