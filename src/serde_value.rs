//! Rust types to and from [`Value`] through serde (feature `serde`):
//! [`to_value`] and [`from_value`].
//!
//! The mapping is the one a CPython client expects to read: a struct is a dict
//! with str keys, a sequence a list, a tuple (and a tuple struct) a tuple,
//! `Option` `None` or the value, a unit `None`, bytes (`serialize_bytes`, as
//! `serde_bytes` does) `bytes`, a map a dict. An enum's unit variant is its name as a str; a
//! newtype, tuple or struct variant a one-entry dict `{name: value}`.
//! Reading back, any of list, tuple, set and frozenset reads as a sequence, and
//! a value that has no serde form (an int beyond 64 bits, a proxy reference, a
//! slice, an opaque object) is an error naming it; `bytes` also reads as a
//! sequence of ints (so `Vec<u8>` takes it).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! enum Shape {
//!     Point,
//!     Circle { r: f64 },
//! }
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct Job {
//!     name: String,
//!     tries: u32,
//!     shape: Shape,
//!     tags: Vec<String>,
//!     owner: Option<String>,
//! }
//!
//! let job = Job {
//!     name: "render".into(),
//!     tries: 3,
//!     shape: Shape::Circle { r: 1.5 },
//!     tags: vec!["fast".into()],
//!     owner: None,
//! };
//! let v = mgr::to_value(&job)?;
//! // {'name': 'render', 'tries': 3, 'shape': {'Circle': {'r': 1.5}}, 'tags': ['fast'], 'owner': None}
//! assert!(v.to_string().contains("'shape': {'Circle': {'r': 1.5}}"));
//! assert_eq!(mgr::from_value::<Job>(v)?, job);
//! # Ok::<(), mgr::Error>(())
//! ```

use std::fmt;

use ::serde::de::value::{MapDeserializer, SeqDeserializer};
use ::serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use ::serde::ser::{self, Serialize};

use crate::error::{Error, Result};
use crate::proto::codec::CodecError;
use crate::proto::Value;

/// Converts `value` to a [`Value`].
///
/// # Errors
///
/// [`Error::Codec`] if `value` cannot be represented: an integer outside
/// `i64`, a map key that is itself a dict or list (unhashable in Python), or
/// an error of `value`'s own `Serialize`.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    value.serialize(ValueSerializer).map_err(Error::from)
}

/// Converts a [`Value`] to a `T`.
///
/// # Errors
///
/// [`Error::Codec`] if the value does not have `T`'s shape (a missing field,
/// a str where an int is wanted …) or has no serde form (see the module).
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    T::deserialize(value).map_err(Error::from)
}

/// The error of both directions (turned into [`Error::Codec`]).
#[derive(Debug)]
pub struct SerdeError(String);

impl fmt::Display for SerdeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SerdeError {}

impl ser::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeError(msg.to_string())
    }
}

impl de::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeError(msg.to_string())
    }
}

impl From<SerdeError> for Error {
    fn from(e: SerdeError) -> Error {
        Error::Codec(CodecError::new(e.0))
    }
}

type SResult<T> = std::result::Result<T, SerdeError>;

/// Builds a [`Value`].
struct ValueSerializer;

/// A sequence, tuple or map under construction.
struct Collect {
    items: Vec<Value>,
    /// For a map: its entries (`items` unused).
    entries: Vec<(Value, Value)>,
    /// The key of a map entry whose value is next.
    key: Option<Value>,
    /// What it becomes.
    kind: Kind,
    /// Set for an enum variant: the result is `{variant: collected}`.
    variant: Option<&'static str>,
}

#[derive(Clone, Copy)]
enum Kind {
    List,
    Tuple,
    Dict,
}

impl Collect {
    fn new(kind: Kind, len: Option<usize>, variant: Option<&'static str>) -> Collect {
        // The length hint comes from the value being serialized: cap it.
        let cap = len.unwrap_or(0).min(1024);
        Collect {
            items: Vec::with_capacity(if matches!(kind, Kind::Dict) { 0 } else { cap }),
            entries: Vec::with_capacity(if matches!(kind, Kind::Dict) { cap } else { 0 }),
            key: None,
            kind,
            variant,
        }
    }

    fn finish(self) -> Value {
        let v = match self.kind {
            Kind::List => Value::List(self.items),
            Kind::Tuple => Value::Tuple(self.items),
            Kind::Dict => Value::Dict(self.entries),
        };
        wrap(self.variant, v)
    }
}

/// `{variant: v}` for an enum variant, else `v`.
fn wrap(variant: Option<&'static str>, v: Value) -> Value {
    match variant {
        Some(name) => Value::Dict(vec![(Value::Str(name.to_owned()), v)]),
        None => v,
    }
}

/// A map key must be hashable in Python.
fn key(v: Value) -> SResult<Value> {
    match v {
        Value::List(_) | Value::Dict(_) | Value::Set(_) => Err(SerdeError(format!(
            "a dict key must be hashable, not {}",
            v.type_name()
        ))),
        v => Ok(v),
    }
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = SerdeError;
    type SerializeSeq = Collect;
    type SerializeTuple = Collect;
    type SerializeTupleStruct = Collect;
    type SerializeTupleVariant = Collect;
    type SerializeMap = Collect;
    type SerializeStruct = Collect;
    type SerializeStructVariant = Collect;

    fn serialize_bool(self, v: bool) -> SResult<Value> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> SResult<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> SResult<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> SResult<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> SResult<Value> {
        Ok(Value::Int(v))
    }
    fn serialize_u8(self, v: u8) -> SResult<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> SResult<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> SResult<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> SResult<Value> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| SerdeError(format!("{v} is beyond a 64-bit signed int")))
    }
    fn serialize_f32(self, v: f32) -> SResult<Value> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> SResult<Value> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> SResult<Value> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> SResult<Value> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> SResult<Value> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> SResult<Value> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> SResult<Value> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> SResult<Value> {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _: &'static str) -> SResult<Value> {
        Ok(Value::None)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> SResult<Value> {
        Ok(Value::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> SResult<Value> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> SResult<Value> {
        Ok(wrap(Some(variant), value.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> SResult<Collect> {
        Ok(Collect::new(Kind::List, len, None))
    }
    fn serialize_tuple(self, len: usize) -> SResult<Collect> {
        Ok(Collect::new(Kind::Tuple, Some(len), None))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> SResult<Collect> {
        Ok(Collect::new(Kind::Tuple, Some(len), None))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> SResult<Collect> {
        Ok(Collect::new(Kind::Tuple, Some(len), Some(variant)))
    }
    fn serialize_map(self, len: Option<usize>) -> SResult<Collect> {
        Ok(Collect::new(Kind::Dict, len, None))
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> SResult<Collect> {
        Ok(Collect::new(Kind::Dict, Some(len), None))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> SResult<Collect> {
        Ok(Collect::new(Kind::Dict, Some(len), Some(variant)))
    }
}

macro_rules! seq_like {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Collect {
            type Ok = Value;
            type Error = SerdeError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> SResult<()> {
                self.items.push(value.serialize(ValueSerializer)?);
                Ok(())
            }
            fn end(self) -> SResult<Value> {
                Ok(self.finish())
            }
        }
    )*};
}

seq_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Collect {
    type Ok = Value;
    type Error = SerdeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> SResult<()> {
        self.key = Some(key(k.serialize(ValueSerializer)?)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> SResult<()> {
        let k = self
            .key
            .take()
            .ok_or_else(|| SerdeError("a map value came without its key".into()))?;
        self.entries.push((k, value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> SResult<Value> {
        Ok(self.finish())
    }
}

macro_rules! struct_like {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Collect {
            type Ok = Value;
            type Error = SerdeError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                value: &T,
            ) -> SResult<()> {
                self.entries
                    .push((Value::Str(name.to_owned()), value.serialize(ValueSerializer)?));
                Ok(())
            }
            fn end(self) -> SResult<Value> {
                Ok(self.finish())
            }
        }
    )*};
}

struct_like!(SerializeStruct, SerializeStructVariant);

impl<'de> IntoDeserializer<'de, SerdeError> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

/// The error for a value `what` was not expected to be.
fn unsupported(v: &Value) -> SerdeError {
    SerdeError(format!("a {} value has no serde form", v.type_name()))
}

impl<'de> de::Deserializer<'de> for Value {
    type Error = SerdeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> SResult<V::Value> {
        match self.resolved() {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(_) => visitor.visit_string(self.into_str().unwrap_or_default()),
            Value::Bytes(_) => visitor.visit_byte_buf(self.into_bytes().unwrap_or_default()),
            Value::List(_) | Value::Tuple(_) | Value::Set(_) | Value::FrozenSet(_) => {
                let items = self.into_items().unwrap_or_default();
                SeqDeserializer::new(items.into_iter()).deserialize_any(visitor)
            }
            Value::Dict(_) => {
                let entries = self.into_entries().unwrap_or_default();
                MapDeserializer::new(entries.into_iter()).deserialize_any(visitor)
            }
            _ => Err(unsupported(&self)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> SResult<V::Value> {
        match self {
            Value::None => visitor.visit_none(),
            v => visitor.visit_some(v),
        }
    }

    /// Bytes read as a sequence too, so `Vec<u8>` takes Python `bytes`.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> SResult<V::Value> {
        match self.resolved() {
            Value::Bytes(_) => {
                let bytes = self.into_bytes().unwrap_or_default();
                SeqDeserializer::new(bytes.into_iter().map(|b| Value::Int(b.into())))
                    .deserialize_any(visitor)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> SResult<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> SResult<V::Value> {
        match self.resolved() {
            Value::Str(_) => {
                visitor.visit_enum(self.into_str().unwrap_or_default().into_deserializer())
            }
            Value::Dict(d) if d.len() == 1 => {
                let (name, value) = self
                    .into_entries()
                    .unwrap_or_default()
                    .pop()
                    .expect("one entry");
                visitor.visit_enum(Variant { name, value })
            }
            other => Err(SerdeError(format!(
                "an enum is a str or a one-entry dict, not {}",
                other.type_name()
            ))),
        }
    }

    ::serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// A `{name: value}` enum variant being read.
struct Variant {
    name: Value,
    value: Value,
}

impl<'de> de::EnumAccess<'de> for Variant {
    type Error = SerdeError;
    type Variant = Value;
    fn variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> SResult<(S::Value, Value)> {
        let Variant { name, value } = self;
        Ok((seed.deserialize(name)?, value))
    }
}

impl<'de> de::VariantAccess<'de> for Value {
    type Error = SerdeError;
    fn unit_variant(self) -> SResult<()> {
        match self {
            Value::None => Ok(()),
            other => Err(SerdeError(format!(
                "a unit variant carries None, not {}",
                other.type_name()
            ))),
        }
    }
    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> SResult<S::Value> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> SResult<V::Value> {
        de::Deserializer::deserialize_any(self, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> SResult<V::Value> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}
