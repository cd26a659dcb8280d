//! [`Value`]: the dynamic data model of every argument and result.
//!
//! It covers what CPython managers send — None, bool, int (an `i64`, or a big int
//! kept exactly as its two's-complement bytes), float, str, bytes, list, tuple, dict,
//! set, frozenset — plus an object reference ([`Token`]) so shared objects can be
//! passed around and stored inside one another. Dicts and sets keep their elements
//! in order as vectors: the data model carries values, it does not index them.
//!
//! A value referenced from several places (Python's aliasing, `[[0] * 300] *
//! 300`) is one [`Value::Shared`]: decoders make it, encoders write it once, and
//! every reader sees through it ([`Value::resolved`]); a writer unshares first
//! ([`Value::unshare`]).
//!
//! A host may build a value of any depth (a million nested lists through the C
//! API), so nothing here recurses over the tree: dropping, cloning, comparing,
//! `Display` and `Debug` all go through `Walk` (in `tree`, with `Clone`,
//! `PartialEq` and `Drop`) or an explicit stack, and use stack space independent
//! of the nesting.

use std::fmt;

mod convert;
mod opaque;
mod printable;
// Sort keys are the server's; the decoder uses only `str_method` (`map`).
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) mod pure;
mod repr;
mod tree;

pub use convert::ConversionError;
pub use opaque::{ArrayData, Form, PyObject};
pub(crate) use opaque::{BUILT_PARTS, ENTRIES, ITEMS, KWARGS, STATE};
pub(crate) use pure::str_method;

pub(crate) use tree::{Slot, Step, Walk, Written};

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
///
/// `Clone`, `PartialEq` (structural: floats by `==`, so a NaN is unequal to
/// itself — except inside one [`Value::Shared`] compared with itself, which is
/// one object, as Python's containers compare it), `Debug`, `Display` and
/// `Drop` work at any nesting depth without recursion, and see through
/// [`Value::Shared`]. Because `Value` implements `Drop`, its fields cannot be moved out
/// by a pattern; take them with `std::mem::take` (the default value is `None`).
///
/// Rust values convert in with `From` and back with `TryFrom` (see
/// [`ConversionError`]); the `as_*` accessors borrow, the `into_*` ones move.
///
/// # Examples
///
/// ```
/// use mgr::Value;
///
/// // In: primitives, strings, options, tuples, maps; `collect()` makes a list.
/// let job = Value::from(("resize", 640i64, Some(480i64)));
/// assert_eq!(job.to_string(), "('resize', 640, 480)");
/// let squares: Value = (1..=3i64).map(|i| i * i).collect();
/// assert_eq!(squares, Value::List(vec![Value::Int(1), Value::Int(4), Value::Int(9)]));
///
/// // Out: `TryFrom`, with an error naming what was wanted and found.
/// let (op, w, h): (String, i64, Option<i64>) = job.try_into()?;
/// assert_eq!((op.as_str(), w, h), ("resize", 640, Some(480)));
/// assert!(u16::try_from(Value::Int(70_000)).is_err());
///
/// // Borrowing accessors, and moving fields out (not by a pattern: Value is Drop).
/// let v = Value::from("text");
/// assert_eq!(v.as_str(), Some("text"));
/// let s: String = v.into_str().unwrap();
/// assert_eq!(s, "text");
/// # Ok::<(), mgr::ConversionError>(())
/// ```
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
    /// A Python object the data model cannot represent (a `datetime`, an
    /// exception instance …), kept as inert data and handed back as it came.
    Opaque(Box<PyObject>),
    /// An immutable value referenced from more than one place (Python's
    /// aliasing: `[[0] * 300] * 300` holds one inner list 300 times). Decoders
    /// make it for a subtree a payload references more than once, so memory stays
    /// linear in the payload; encoders write it once and refer back to it.
    ///
    /// It is transparent: [`Value::resolved`], the accessors, `type_name`,
    /// conversions, `Display`, `Debug`, `PartialEq` and hashing all see the
    /// value inside, and a writer that changes it first calls
    /// [`Value::unshare`] (copy on write). Cloning one clones the `Arc`. Code
    /// that matches on a value's kind matches on `v.resolved()`: a method's
    /// argument is shared only when the request aliases it elsewhere (the
    /// server makes an argument shared with nothing else its own), but items
    /// inside arguments and stored values may be shared.
    Shared(std::sync::Arc<Value>),
}

// A value is one 48-byte slot wherever it sits, and crosses threads.
const _: () = assert!(std::mem::size_of::<Value>() == 48);
const _: fn() = || {
    fn send<T: Send + Sync>() {}
    send::<Value>();
};

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

/// The minimal little-endian two's-complement form of an integer's bytes (what
/// [`Value::BigInt`] keeps): trailing bytes that only repeat the sign are dropped.
pub(crate) fn minimal_le(mut b: Vec<u8>) -> Vec<u8> {
    while b.len() > 1 {
        let (last, prev) = (b[b.len() - 1], b[b.len() - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            b.pop();
        } else {
            break;
        }
    }
    b
}

impl Default for Value {
    /// `None`: what `std::mem::take` leaves behind.
    fn default() -> Value {
        Value::None
    }
}

impl Value {
    /// The value itself, or for a [`Value::Shared`] the value it shares: what
    /// every reader looks at.
    #[inline]
    pub fn resolved(&self) -> &Value {
        let mut v = self;
        while let Value::Shared(inner) = v {
            v = inner;
        }
        v
    }

    /// Whether this is a [`Value::Shared`].
    #[inline]
    pub fn is_shared(&self) -> bool {
        matches!(self, Value::Shared(_))
    }

    /// Makes this value its own: a [`Value::Shared`] is replaced by the value it
    /// shares (moved out when this was its last owner, copied otherwise), so it
    /// can be changed without changing the other places that share it. Any
    /// other value is left as it is.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mgr::Value;
    ///
    /// let inner = Arc::new(Value::List(vec![Value::Int(0)]));
    /// let mut a = Value::Shared(inner.clone());
    /// let b = Value::Shared(inner);
    /// assert_eq!(a, b);
    /// a.unshare();
    /// assert!(!a.is_shared() && a == b);
    /// ```
    pub fn unshare(&mut self) -> &mut Value {
        while let Value::Shared(arc) = self {
            let own = std::mem::take(std::sync::Arc::make_mut(arc));
            *self = own;
        }
        self
    }

    /// Replaces a [`Value::Shared`] that is the last owner of its value with
    /// that value (moved, not copied); a value still shared elsewhere stays
    /// shared.
    #[cfg(feature = "server")]
    pub(crate) fn take_unique(&mut self) {
        while let Value::Shared(arc) = self {
            match std::sync::Arc::get_mut(arc) {
                Some(inner) => {
                    let own = std::mem::take(inner);
                    *self = own;
                }
                None => break,
            }
        }
    }

    /// A short name of the value's kind, as Python would call its type; an
    /// opaque object's is its class name (`datetime`, `ValueError`, a user's
    /// `Point`), as Python's error messages name it.
    pub fn type_name(&self) -> &str {
        match self.resolved() {
            Value::Shared(_) => unreachable!("resolved"),
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
            Value::Opaque(o) => o.type_name(),
        }
    }

    /// The string of a `Str`, moved out.
    ///
    /// # Errors
    ///
    /// Any other value comes back unchanged as the error.
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::Value;
    ///
    /// assert_eq!(Value::from("a").into_str(), Ok("a".to_owned()));
    /// assert_eq!(Value::Int(1).into_str(), Err(Value::Int(1)));
    /// ```
    pub fn into_str(mut self) -> Result<String, Value> {
        if !matches!(self.resolved(), Value::Str(_)) {
            return Err(self);
        }
        match self.unshare() {
            Value::Str(s) => Ok(std::mem::take(s)),
            _ => Err(self),
        }
    }

    /// The items of a list, tuple, set or frozenset, moved out.
    ///
    /// # Errors
    ///
    /// Any other value comes back unchanged as the error.
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::Value;
    ///
    /// let pair = Value::from((1i64, "b"));
    /// assert_eq!(pair.into_items(), Ok(vec![Value::Int(1), Value::from("b")]));
    /// ```
    pub fn into_items(mut self) -> Result<Vec<Value>, Value> {
        if !matches!(
            self.resolved(),
            Value::List(_) | Value::Tuple(_) | Value::Set(_) | Value::FrozenSet(_)
        ) {
            return Err(self);
        }
        match self.unshare() {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                Ok(std::mem::take(v))
            }
            _ => Err(self),
        }
    }

    /// The entries of a dict, moved out.
    ///
    /// # Errors
    ///
    /// Any other value comes back unchanged as the error.
    pub fn into_entries(mut self) -> Result<Vec<(Value, Value)>, Value> {
        if !matches!(self.resolved(), Value::Dict(_)) {
            return Err(self);
        }
        match self.unshare() {
            Value::Dict(d) => Ok(std::mem::take(d)),
            _ => Err(self),
        }
    }

    /// The string inside a `Str`, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self.resolved() {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside an `Int` (or a `Bool`, as Python treats bools as ints).
    pub fn as_int(&self) -> Option<i64> {
        match *self.resolved() {
            Value::Int(i) => Some(i),
            Value::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }

    /// The number as a float: floats, ints and bools.
    pub fn as_float(&self) -> Option<f64> {
        match *self.resolved() {
            Value::Float(f) => Some(f),
            Value::Int(i) => Some(i as f64),
            Value::Bool(b) => Some(f64::from(u8::from(b))),
            _ => None,
        }
    }

    /// Python truthiness.
    pub fn truthy(&self) -> bool {
        match self.resolved() {
            Value::Shared(_) => unreachable!("resolved"),
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::BigInt(b) => b.iter().any(|&x| x != 0),
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => !v.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Ref(_) | Value::Slice(_) | Value::Opaque(_) => true,
        }
    }

    /// Calls `f` with every object reference inside this value, depth first;
    /// a shared value ([`Value::Shared`]) is looked into once, however many
    /// places hold it.
    pub fn visit_refs(&self, f: &mut dyn FnMut(&Token)) {
        self.find_ref(&mut |t| {
            f(t);
            false
        });
    }

    /// Calls `f` with the object references inside this value until it says
    /// `true` (then answers `true`), looking into each shared value once: the
    /// cost is what the value holds, not what it expands to.
    fn find_ref(&self, f: &mut dyn FnMut(&Token) -> bool) -> bool {
        let mut seen: Option<std::collections::HashSet<*const Value>> = None;
        let mut walks = vec![Walk::raw(self)];
        while let Some(w) = walks.last_mut() {
            match w.next() {
                None => {
                    walks.pop();
                }
                Some(Step::Leaf(Value::Ref(t), _)) => {
                    if f(t) {
                        return true;
                    }
                }
                Some(Step::Leaf(Value::Shared(a), _)) => {
                    let seen = seen.get_or_insert_with(Default::default);
                    if seen.insert(std::sync::Arc::as_ptr(a)) {
                        walks.push(Walk::raw(a));
                    }
                }
                Some(_) => {}
            }
        }
        false
    }

    /// Whether any object reference is inside this value.
    #[inline]
    pub fn has_refs(&self) -> bool {
        match self.resolved() {
            Value::Ref(_) => true,
            v => v.is_container() && v.container_has_refs(),
        }
    }

    fn container_has_refs(&self) -> bool {
        // A container of leaves (the common case) without a walk, or of leaves
        // and sequences of leaves (a `create` reply's `(ident, exposed)`).
        let leaves = |v: &[Value]| v.iter().all(|x| !x.is_container() && !x.is_shared());
        let has_ref = |v: &[Value]| v.iter().any(|x| matches!(x, Value::Ref(_)));
        if let Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) = self {
            if leaves(v) {
                return has_ref(v);
            }
            let shallow = v.iter().all(|x| match x {
                Value::List(w) | Value::Tuple(w) => leaves(w),
                x => !x.is_container() && !x.is_shared(),
            });
            if shallow {
                return v.iter().any(|x| match x {
                    Value::List(w) | Value::Tuple(w) => has_ref(w),
                    x => matches!(x, Value::Ref(_)),
                });
            }
        }
        self.find_ref(&mut |_| true)
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

impl fmt::Debug for Value {
    /// The derived form (`List([Int(1), Str("a")])`), on one line even for
    /// `{:#?}`, written without recursion.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in Walk::new(self) {
            let (v, slot) = match step {
                Step::Leaf(v, slot) | Step::Enter(v, slot) => (v, slot),
                Step::Exit(Value::Dict(d)) if !d.is_empty() => {
                    f.write_str(")])")?;
                    continue;
                }
                Step::Exit(_) => {
                    f.write_str("])")?;
                    continue;
                }
            };
            match slot {
                Slot::Item(i) if i > 0 => f.write_str(", ")?,
                Slot::Key(0) => f.write_str("(")?,
                Slot::Key(_) => f.write_str("), (")?,
                Slot::DictValue(_) => f.write_str(", ")?,
                _ => {}
            }
            match v {
                Value::None => f.write_str("None")?,
                Value::Bool(b) => write!(f, "Bool({b:?})")?,
                Value::Int(i) => write!(f, "Int({i:?})")?,
                Value::BigInt(b) => write!(f, "BigInt({b:?})")?,
                Value::Float(x) => write!(f, "Float({x:?})")?,
                Value::Str(s) => write!(f, "Str({s:?})")?,
                Value::Bytes(b) => write!(f, "Bytes({b:?})")?,
                Value::Ref(t) => write!(f, "Ref({t:?})")?,
                Value::Slice(s) => write!(f, "Slice({s:?})")?,
                Value::Opaque(o) if o.parts().is_empty() => {
                    write!(f, "Opaque({:?}, [])", o.form())?
                }
                Value::Opaque(o) => write!(f, "Opaque({:?}, [", o.form())?,
                Value::List(_) => f.write_str("List([")?,
                Value::Tuple(_) => f.write_str("Tuple([")?,
                Value::Dict(_) => f.write_str("Dict([")?,
                Value::Set(_) => f.write_str("Set([")?,
                Value::FrozenSet(_) => f.write_str("FrozenSet([")?,
                Value::Shared(_) => unreachable!("a walk sees through sharing"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
            r#"[None, True, -3, 2.0, "a'b", (1,), {'k': b'\x00z'}, set(), slice(1, None, -2)]"#
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
        // The shallow forms (leaves and sequences of leaves) and one level deeper.
        let seq = |x: Value| Value::Tuple(vec![Value::Int(1), Value::List(vec![x])]);
        assert!(seq(Value::Ref(t.clone())).has_refs());
        assert!(!seq(Value::Str("m".into())).has_refs());
        assert!(seq(Value::Set(vec![Value::Ref(t)])).has_refs());
    }

    /// Runs `f` on a thread with a 2 MiB stack (the default for spawned threads):
    /// anything recursing once per level of a million-deep value overflows it.
    pub(crate) fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("no overflow, no panic");
    }

    /// `n` levels of `wrap` around `leaf`.
    fn nest(n: usize, leaf: Value, wrap: impl Fn(Value) -> Value) -> Value {
        (0..n).fold(leaf, |v, _| wrap(v))
    }

    const DEEP: usize = 1_000_000;

    #[test]
    fn million_deep_values_clone_compare_print_and_drop_without_recursion() {
        on_small_stack(|| {
            let t = Token {
                typeid: "dict".into(),
                id: ObjectId(9),
            };
            type Wrap = fn(Value) -> Value;
            let kinds: [(&str, Wrap); 5] = [
                ("list", |v| Value::List(vec![v])),
                ("tuple", |v| Value::Tuple(vec![Value::Int(1), v])),
                ("dict", |v| Value::Dict(vec![(Value::Str("k".into()), v)])),
                ("dict key", |v| Value::Dict(vec![(v, Value::None)])),
                ("frozenset", |v| Value::FrozenSet(vec![v])),
            ];
            for (name, wrap) in kinds {
                let v = nest(DEEP, Value::Ref(t.clone()), wrap);
                let copy = v.clone();
                assert!(copy == v, "{name}: a clone equals its original");
                let other = nest(
                    DEEP,
                    Value::Ref(Token {
                        id: ObjectId(8),
                        ..t.clone()
                    }),
                    wrap,
                );
                assert!(other != v, "{name}: a different leaf a million levels down");
                assert!(v.has_refs());
                let mut seen = Vec::new();
                v.visit_refs(&mut |t| seen.push(t.id));
                assert_eq!(seen, vec![ObjectId(9)]);
                let repr = v.to_string();
                assert!(repr.len() > 2 * DEEP, "{name}: {} bytes", repr.len());
                assert!(repr.contains("<DictProxy object, typeid 'dict' at 0x9>"));
                let debug = format!("{v:?}");
                assert!(debug.contains("Ref(Token { typeid: \"dict\", id: ObjectId(9) })"));
                drop((v, copy, other));
            }
            // A long list of deep values, and a wide one: both free without recursion.
            let forest = Value::List(
                (0..10)
                    .map(|_| nest(DEEP / 10, Value::None, |v| Value::List(vec![v])))
                    .collect(),
            );
            drop(forest.clone());
            drop(forest);
        });
    }

    #[test]
    fn clone_eq_and_debug_match_the_derived_forms() {
        let v = Value::List(vec![
            Value::None,
            Value::Bool(true),
            Value::Int(-3),
            Value::BigInt(vec![0, 1]),
            Value::Float(2.0),
            Value::Str("a".into()),
            Value::Bytes(vec![0, 122]),
            Value::Tuple(vec![Value::Int(1)]),
            Value::Dict(vec![
                (Value::Str("k".into()), Value::Set(vec![])),
                (Value::Int(2), Value::FrozenSet(vec![Value::Int(3)])),
            ]),
            Value::Dict(vec![]),
            Value::Slice(Slice {
                start: Some(1),
                stop: None,
                step: Some(-2),
            }),
            Value::Ref(Token {
                typeid: "dict".into(),
                id: ObjectId(5),
            }),
        ]);
        assert_eq!(
            format!("{v:?}"),
            "List([None, Bool(true), Int(-3), BigInt([0, 1]), Float(2.0), Str(\"a\"), \
             Bytes([0, 122]), Tuple([Int(1)]), Dict([(Str(\"k\"), Set([])), \
             (Int(2), FrozenSet([Int(3)]))]), Dict([]), \
             Slice(Slice { start: Some(1), stop: None, step: Some(-2) }), \
             Ref(Token { typeid: \"dict\", id: ObjectId(5) })])"
        );
        let copy = v.clone();
        assert!(copy == v);
        assert_eq!(format!("{copy:?}"), format!("{v:?}"));
        // Structural equality: kinds, lengths, order and float `==` all count.
        let l = |x: Vec<Value>| Value::List(x);
        assert!(l(vec![Value::Int(1)]) != Value::Tuple(vec![Value::Int(1)]));
        assert!(l(vec![Value::Int(1)]) != l(vec![Value::Int(1), Value::Int(2)]));
        assert!(l(vec![Value::Int(1), Value::Int(2)]) != l(vec![Value::Int(2), Value::Int(1)]));
        assert!(Value::Int(1) != Value::Float(1.0));
        assert!(Value::Float(f64::NAN) != Value::Float(f64::NAN));
        assert!(Value::Float(-0.0) == Value::Float(0.0));
        let d = |k: i64, x: i64| Value::Dict(vec![(Value::Int(k), Value::Int(x))]);
        assert!(d(1, 2) == d(1, 2) && d(1, 2) != d(1, 3) && d(1, 2) != d(0, 2));
        let deep = |x| l(vec![l(vec![Value::Int(0)]), l(vec![l(vec![x])])]);
        assert!(deep(Value::Int(1)) == deep(Value::Int(1)));
        assert!(deep(Value::Int(1)) != deep(Value::Int(2)));
        let mixed = |x| l(vec![Value::Int(1), l(vec![x]), Value::Int(3)]);
        assert!(mixed(Value::Int(2)) == mixed(Value::Int(2)));
        assert!(mixed(Value::Int(2)) != mixed(Value::Int(4)));
        assert!(mixed(Value::Int(2)).clone() == mixed(Value::Int(2)));
    }

    #[test]
    fn into_helpers_move_parts_out() {
        assert_eq!(Value::Str("s".into()).into_str().unwrap(), "s");
        assert_eq!(Value::Int(1).into_str().unwrap_err(), Value::Int(1));
        assert_eq!(
            Value::Set(vec![Value::None]).into_items().unwrap(),
            vec![Value::None]
        );
        assert!(Value::Dict(vec![]).into_items().is_err());
        assert_eq!(
            Value::Dict(vec![(Value::None, Value::None)])
                .into_entries()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn shared_values_are_seen_through_and_unshared_to_change() {
        use std::sync::Arc;
        let inner = Arc::new(Value::List(vec![Value::Int(1), Value::Str("a".into())]));
        let sh = Value::Shared(inner.clone());
        let v = Value::List(vec![sh.clone(), sh.clone(), Value::None]);
        let plain = Value::List(vec![(*inner).clone(), (*inner).clone(), Value::None]);
        // Readers see the value inside.
        assert_eq!(v, plain);
        assert_eq!(plain, v);
        assert_eq!(v.to_string(), "[[1, 'a'], [1, 'a'], None]");
        assert_eq!(format!("{v:?}"), format!("{plain:?}"));
        assert_eq!(sh.type_name(), "list");
        assert_eq!(sh.as_list().map(<[Value]>::len), Some(2));
        assert!(sh.truthy());
        let s = Value::Shared(Arc::new(Value::Str("x".repeat(80))));
        assert_eq!(s.as_str().map(str::len), Some(80));
        assert_eq!(String::try_from(s.clone()).unwrap().len(), 80);
        assert_eq!(
            Vec::<i64>::try_from(Value::Shared(Arc::new(Value::List(vec![Value::Int(4)])))),
            Ok(vec![4])
        );
        assert_eq!(
            sh.clone().into_items().unwrap(),
            inner.as_list().unwrap().to_vec()
        );
        // A clone shares; unsharing copies while others hold the value, and
        // moves it out from its last owner.
        let c = v.clone();
        assert!(matches!(&c.as_list().unwrap()[0], Value::Shared(a) if Arc::ptr_eq(a, &inner)));
        let mut mine = sh.clone();
        mine.unshare();
        assert!(!mine.is_shared() && mine == sh);
        if let Value::List(items) = &mut mine {
            items.push(Value::Int(2));
        }
        assert_eq!(sh.as_list().unwrap().len(), 2, "the others keep theirs");
        drop((v, c, sh));
        let mut last = Value::Shared(inner);
        last.unshare();
        assert_eq!(last.as_list().unwrap().len(), 2);
        // An identical shared NaN equals itself, as the same object does in Python.
        let nan = Value::Shared(Arc::new(Value::Float(f64::NAN)));
        assert!(Value::List(vec![nan.clone()]) == Value::List(vec![nan.clone()]));
        assert!(Value::List(vec![nan]) != Value::List(vec![Value::Float(f64::NAN)]));
        // References inside a share are found (once per share).
        let t = Token {
            typeid: "dict".into(),
            id: ObjectId(3),
        };
        let r = Value::Shared(Arc::new(Value::List(vec![Value::Ref(t)])));
        let v = Value::List(vec![r.clone(), r]);
        assert!(v.has_refs());
        let mut seen = 0;
        v.visit_refs(&mut |_| seen += 1);
        assert_eq!(seen, 1);
    }

    #[test]
    fn deep_chains_of_shares_drop_without_recursion() {
        on_small_stack(|| {
            // Each level shared by two places: the last owner frees it on the
            // explicit stack, whatever the depth.
            let mut v = Value::None;
            for _ in 0..200_000 {
                let s = Value::Shared(std::sync::Arc::new(v));
                v = Value::List(vec![s.clone(), Value::Tuple(vec![s])]);
            }
            let copy = v.clone();
            drop(v);
            drop(copy);
        });
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
