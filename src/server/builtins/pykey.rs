//! Python's value semantics for the data types: which values are hashable, when
//! two values are equal (`1 == 1.0 == True`, `-0.0 == 0.0`, tuples and frozensets by
//! content), how they order for `list.sort`, and [`PyKey`], the key type of
//! [`PyMap`](super::pymap::PyMap).
//!
//! Numbers are compared exactly across `bool`, `int` (including big ints) and
//! `float`, and hashed by their exact canonical value (not CPython's numeric hash,
//! whose collisions are public), so equal numbers always hash alike and the
//! map's seeded hasher decides everything else. This module knows nothing of
//! objects, calls or the wire.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use crate::proto::{RemoteError, Value};

/// An integer, exactly, whatever form it arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PyInt {
    /// Fits in an `i128`.
    Small(i128),
    /// Beyond `i128`: the sign and the big-endian magnitude, no leading zeros.
    Big {
        /// Whether the number is negative.
        neg: bool,
        /// Big-endian magnitude.
        mag: Vec<u8>,
    },
}

impl PyInt {
    /// The integer as an `i128`, when it fits.
    pub(crate) fn small(&self) -> Option<i128> {
        match self {
            PyInt::Small(i) => Some(*i),
            PyInt::Big { .. } => None,
        }
    }

    /// Whether the integer is below zero.
    pub(crate) fn is_negative(&self) -> bool {
        match self {
            PyInt::Small(i) => *i < 0,
            PyInt::Big { neg, .. } => *neg,
        }
    }

    /// The nearest float; infinite when the integer is too large for one.
    pub(crate) fn to_f64(&self) -> f64 {
        match self {
            PyInt::Small(i) => *i as f64,
            PyInt::Big { neg, mag } => {
                let m = mag
                    .iter()
                    .fold(0.0f64, |acc, &b| acc * 256.0 + f64::from(b));
                if *neg {
                    -m
                } else {
                    m
                }
            }
        }
    }
}

/// Reads a `BigInt`'s minimal little-endian two's-complement bytes.
fn int_from_bytes(b: &[u8]) -> PyInt {
    let Some(&last) = b.last() else {
        return PyInt::Small(0);
    };
    let neg = last & 0x80 != 0;
    if b.len() <= 16 {
        let mut buf = [if neg { 0xff } else { 0 }; 16];
        buf[..b.len()].copy_from_slice(b);
        return PyInt::Small(i128::from_le_bytes(buf));
    }
    let mut mag: Vec<u8> = b.to_vec();
    if neg {
        // Two's-complement negation: invert, add one.
        let mut carry = true;
        for x in mag.iter_mut() {
            let (v, c) = (!*x).overflowing_add(u8::from(carry));
            *x = v;
            carry = c;
        }
    }
    mag.reverse();
    let first = mag.iter().position(|&x| x != 0).unwrap_or(mag.len());
    mag.drain(..first);
    if mag.len() <= 16 {
        let mut buf = [0u8; 16];
        buf[16 - mag.len()..].copy_from_slice(&mag);
        let m = u128::from_be_bytes(buf);
        if !neg && m <= i128::MAX as u128 {
            return PyInt::Small(m as i128);
        }
        if neg && m <= 1u128 << 127 {
            return PyInt::Small((m as i128).wrapping_neg());
        }
    }
    PyInt::Big { neg, mag }
}

/// 2**127 as a float.
const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

/// The integer part of a finite float, exactly.
fn int_from_float(f: f64) -> PyInt {
    let t = f.trunc();
    // Every integral float in [-2**127, 2**127) is an `i128`; only larger ones are
    // `Big`, as `int_from_bytes` decides, so equal integers compare (and hash) alike.
    if (-TWO_127..TWO_127).contains(&t) {
        return PyInt::Small(t as i128);
    }
    let bits = t.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as u32 - 1075;
    let mant = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
    let shifted = (mant << (exp % 8)).to_be_bytes();
    let first = shifted.iter().position(|&x| x != 0).unwrap_or(16);
    let mut mag = shifted[first..].to_vec();
    mag.extend(std::iter::repeat_n(0, (exp / 8) as usize));
    PyInt::Big { neg: t < 0.0, mag }
}

/// The integer a `bool`, `int` or big `int` value stands for.
pub(crate) fn int_of(v: &Value) -> Option<PyInt> {
    match v.resolved() {
        Value::Bool(b) => Some(PyInt::Small(i128::from(*b))),
        Value::Int(i) => Some(PyInt::Small(i128::from(*i))),
        Value::BigInt(b) => Some(int_from_bytes(b)),
        _ => None,
    }
}

/// The value for an integer: an `Int` when it fits 64 bits, else a `BigInt`.
pub(crate) fn value_from_i128(i: i128) -> Value {
    if let Ok(small) = i64::try_from(i) {
        return Value::Int(small);
    }
    let bytes = i.to_le_bytes();
    let mut n = bytes.len();
    // Drop redundant sign-extension bytes, keeping the sign bit right.
    while n > 1 {
        let (top, next) = (bytes[n - 1], bytes[n - 2]);
        if (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    Value::BigInt(bytes[..n].to_vec())
}

fn cmp_int(a: &PyInt, b: &PyInt) -> Ordering {
    match (a, b) {
        (PyInt::Small(x), PyInt::Small(y)) => x.cmp(y),
        (PyInt::Small(_), PyInt::Big { neg, .. }) => {
            if *neg {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (PyInt::Big { .. }, PyInt::Small(_)) => cmp_int(b, a).reverse(),
        (PyInt::Big { neg: na, mag: ma }, PyInt::Big { neg: nb, mag: mb }) => match (na, nb) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            _ => {
                let by_mag = ma.len().cmp(&mb.len()).then_with(|| ma.cmp(mb));
                if *na {
                    by_mag.reverse()
                } else {
                    by_mag
                }
            }
        },
    }
}

/// A number as Python compares it.
enum Num {
    Int(PyInt),
    Float(f64),
}

fn num_of(v: &Value) -> Option<Num> {
    match v.resolved() {
        Value::Float(f) => Some(Num::Float(*f)),
        _ => int_of(v).map(Num::Int),
    }
}

/// Compares an integer with a float exactly; `None` when the float is NaN.
fn cmp_int_float(i: &PyInt, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f.is_infinite() {
        return Some(if f > 0.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        });
    }
    let by_int = cmp_int(i, &int_from_float(f));
    if by_int != Ordering::Equal {
        return Some(by_int);
    }
    let frac = f - f.trunc();
    Some(if frac > 0.0 {
        Ordering::Less
    } else if frac < 0.0 {
        Ordering::Greater
    } else {
        Ordering::Equal
    })
}

fn cmp_num(a: &Num, b: &Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(cmp_int(x, y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(y),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, *y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, *x).map(Ordering::reverse),
    }
}

/// Fails with Python's `TypeError: unhashable type: 'list'` unless `v` may be a
/// dict key or set member.
pub(crate) fn check_hashable(v: &Value) -> Result<(), RemoteError> {
    match v.resolved() {
        Value::List(_) | Value::Dict(_) | Value::Set(_) | Value::Slice(_) => Err(
            RemoteError::type_error(format!("unhashable type: '{}'", v.type_name())),
        ),
        Value::Tuple(items) | Value::FrozenSet(items) => items.iter().try_for_each(check_hashable),
        _ => Ok(()),
    }
}

// Type tags fed to the hasher before a value, so values of different kinds that
// can never be equal do not share a hash stream by construction.
const TAG_INT: u8 = 0;
const TAG_STR: u8 = 1;
const TAG_BYTES: u8 = 2;
const TAG_NONE: u8 = 3;
const TAG_TUPLE: u8 = 4;
const TAG_SET: u8 = 5;
const TAG_REF: u8 = 6;
const TAG_OTHER: u8 = 7;
const TAG_INT128: u8 = 8;
const TAG_BIGINT: u8 = 9;
const TAG_NAN: u8 = 10;
const TAG_FLOAT: u8 = 11;
const TAG_OPAQUE: u8 = 12;

/// 2**63 as a float: integral floats below it in magnitude convert to `i64` exactly.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

#[inline]
fn hash_i64<H: Hasher>(i: i64, h: &mut H) {
    h.write_u8(TAG_INT);
    h.write_i64(i);
}

/// Feeds an integer to `h` in its one canonical form: an `i64` when it fits, else
/// an `i128`, else its sign and minimal big-endian magnitude. The choice depends
/// only on the number, so `1`, `1.0`, `True` and a non-minimal big int of 1 all
/// feed the same bytes.
fn hash_int<H: Hasher>(i: &PyInt, h: &mut H) {
    match i {
        PyInt::Small(n) => match i64::try_from(*n) {
            Ok(n) => hash_i64(n, h),
            Err(_) => {
                h.write_u8(TAG_INT128);
                h.write_i128(*n);
            }
        },
        PyInt::Big { neg, mag } => {
            h.write_u8(TAG_BIGINT);
            h.write_u8(u8::from(*neg));
            mag.hash(h);
        }
    }
}

/// An integral float hashes as the integer it equals; any other float by its
/// bits, except that every NaN hashes alike (a [`PyKey`] NaN equals any NaN).
fn hash_float<H: Hasher>(f: f64, h: &mut H) {
    if f.trunc() == f {
        // Finite and integral (`trunc` keeps infinities, but they fail below).
        if f.abs() < TWO_63 {
            return hash_i64(f as i64, h);
        }
        if f.is_finite() {
            return hash_int(&int_from_float(f), h);
        }
    }
    if f.is_nan() {
        h.write_u8(TAG_NAN);
    } else {
        h.write_u8(TAG_FLOAT);
        h.write_u64(f.to_bits());
    }
}

/// Feeds a hashable value to `h`, consistently with [`PyKey`]'s equality.
///
/// Nothing is reduced before it reaches `h`: numbers go in as their exact
/// canonical value (not CPython's hash modulo 2**61 - 1, whose collisions anyone
/// can compute), so with a per-map seeded `h` no key type has collisions a client
/// can choose. Set members are hashed with a hasher seeded from `h`'s state, so
/// their order-insensitive sum is keyed by the same secret.
fn hash_into<H: Hasher>(v: &Value, h: &mut H) {
    match v.resolved() {
        Value::Str(s) => {
            h.write_u8(TAG_STR);
            s.hash(h);
        }
        Value::Int(i) => hash_i64(*i, h),
        Value::Bytes(b) => {
            h.write_u8(TAG_BYTES);
            b.hash(h);
        }
        Value::Float(f) => hash_float(*f, h),
        Value::Bool(b) => hash_i64(i64::from(*b), h),
        Value::BigInt(b) => hash_int(&int_from_bytes(b), h),
        Value::None => h.write_u8(TAG_NONE),
        Value::Tuple(items) => {
            h.write_u8(TAG_TUPLE);
            h.write_usize(items.len());
            items.iter().for_each(|x| hash_into(x, h));
        }
        Value::FrozenSet(items) | Value::Set(items) => {
            h.write_u8(TAG_SET);
            // Order-insensitive: a sum of independently hashed members, each with
            // a hasher keyed by what `h` holds so far (secret when `h` is seeded).
            let member = foldhash::fast::SeedableRandomState::with_seed(
                h.finish(),
                foldhash::SharedSeed::global_random(),
            );
            let sum = items.iter().fold(0u64, |acc, x| {
                let mut one = member.build_hasher();
                hash_into(x, &mut one);
                acc.wrapping_add(one.finish())
            });
            h.write_u64(sum);
        }
        Value::Ref(t) => {
            h.write_u8(TAG_REF);
            h.write_u64(t.id.0);
        }
        // By content, as `eq_impl` compares it (parts that are dicts or lists
        // feed only their tag, which equal ones share).
        Value::Opaque(o) => {
            h.write_u8(TAG_OPAQUE);
            o.form().hash(h);
            h.write_usize(o.parts().len());
            o.parts().iter().for_each(|x| hash_into(x, h));
        }
        _ => h.write_u8(TAG_OTHER),
    }
}

/// Whether every member of `a` is in `b` (set semantics).
fn all_in(a: &[Value], b: &[Value], nan_eq: bool) -> bool {
    if b.len() > 8 && b.iter().all(|x| check_hashable(x).is_ok()) {
        let set: std::collections::HashSet<KeyRef<'_>> = b.iter().map(KeyRef).collect();
        return a.iter().all(|x| {
            check_hashable(x).is_ok() && (nan_eq || !is_nan(x)) && set.contains(&KeyRef(x))
        });
    }
    a.iter().all(|x| b.iter().any(|y| eq_impl(x, y, nan_eq)))
}

/// Whether every item of dict `a` is in dict `b` with an equal value.
fn dict_in(a: &[(Value, Value)], b: &[(Value, Value)], nan_eq: bool) -> bool {
    if b.len() > 8 && b.iter().all(|(k, _)| check_hashable(k).is_ok()) {
        let map: HashMap<KeyRef<'_>, &Value> = b.iter().map(|(k, v)| (KeyRef(k), v)).collect();
        return a.iter().all(|(k, v)| {
            check_hashable(k).is_ok()
                && (nan_eq || !is_nan(k))
                && map.get(&KeyRef(k)).is_some_and(|v2| eq_impl(v, v2, nan_eq))
        });
    }
    a.iter().all(|(k, v)| {
        b.iter()
            .any(|(k2, v2)| eq_impl(k, k2, nan_eq) && eq_impl(v, v2, nan_eq))
    })
}

fn is_nan(v: &Value) -> bool {
    matches!(v.resolved(), Value::Float(f) if f.is_nan())
}

fn eq_impl(a: &Value, b: &Value, nan_eq: bool) -> bool {
    // One shared value is one object: Python compares it equal to itself
    // without looking inside.
    if let (Value::Shared(x), Value::Shared(y)) = (a, b) {
        if std::sync::Arc::ptr_eq(x, y) {
            return true;
        }
    }
    let (a, b) = (a.resolved(), b.resolved());
    // Strings and bytes first: they are most keys, and never equal a number.
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => return x == y,
        (Value::Bytes(x), Value::Bytes(y)) => return x == y,
        _ => {}
    }
    if let (Some(x), Some(y)) = (num_of(a), num_of(b)) {
        return match cmp_num(&x, &y) {
            Some(o) => o == Ordering::Equal,
            None => nan_eq && is_nan(a) && is_nan(b),
        };
    }
    match (a, b) {
        (Value::None, Value::None) => true,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq_impl(p, q, nan_eq))
        }
        (Value::Set(x) | Value::FrozenSet(x), Value::Set(y) | Value::FrozenSet(y)) => {
            x.len() == y.len() && all_in(x, y, nan_eq)
        }
        (Value::Dict(x), Value::Dict(y)) => x.len() == y.len() && dict_in(x, y, nan_eq),
        (Value::Ref(x), Value::Ref(y)) => x.id == y.id,
        (Value::Slice(x), Value::Slice(y)) => x == y,
        (Value::Opaque(x), Value::Opaque(y)) => {
            x.form() == y.form()
                && x.parts().len() == y.parts().len()
                && x.parts()
                    .iter()
                    .zip(y.parts())
                    .all(|(p, q)| eq_impl(p, q, nan_eq))
        }
        _ => false,
    }
}

/// Python's `a == b` for values that arrived as copies (so identity never makes a
/// NaN equal to itself).
pub(crate) fn py_eq(a: &Value, b: &Value) -> bool {
    eq_impl(a, b, false)
}

fn not_supported(a: &Value, b: &Value) -> RemoteError {
    RemoteError::type_error(format!(
        "'<' not supported between instances of '{}' and '{}'",
        a.type_name(),
        b.type_name()
    ))
}

/// Python's `a < b`: numbers across int/float/bool, str with str, bytes with bytes,
/// lists with lists and tuples with tuples lexicographically, sets by inclusion;
/// `TypeError` otherwise.
pub(crate) fn py_lt(a: &Value, b: &Value) -> Result<bool, RemoteError> {
    if let (Some(x), Some(y)) = (num_of(a), num_of(b)) {
        return Ok(cmp_num(&x, &y) == Some(Ordering::Less));
    }
    match (a.resolved(), b.resolved()) {
        (Value::Str(x), Value::Str(y)) => Ok(x < y),
        (Value::Bytes(x), Value::Bytes(y)) => Ok(x < y),
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
            match x.iter().zip(y).find(|(p, q)| !py_eq(p, q)) {
                Some((p, q)) => py_lt(p, q),
                None => Ok(x.len() < y.len()),
            }
        }
        (Value::Set(x) | Value::FrozenSet(x), Value::Set(y) | Value::FrozenSet(y)) => {
            Ok(x.len() < y.len() && all_in(x, y, false))
        }
        _ => Err(not_supported(a, b)),
    }
}

/// Sorts `items` stably by [`py_lt`], as `list.sort(reverse=…)` does; on a
/// comparison error `items` is left as it was.
pub(crate) fn py_sort(items: &mut Vec<Value>, reverse: bool) -> Result<(), RemoteError> {
    let order = sorted_positions(items, reverse)?;
    permute(items, order);
    Ok(())
}

/// Sorts `items` stably by their `keys` (one per item, as a key function
/// gave them), as `list.sort(key=…, reverse=…)` does; on a comparison error
/// `items` is left as it was.
pub(crate) fn py_sort_keyed(
    items: &mut Vec<Value>,
    keys: Vec<Value>,
    reverse: bool,
) -> Result<(), RemoteError> {
    let order = sorted_positions(&keys, reverse)?;
    permute(items, order);
    Ok(())
}

/// The positions of `keys` in stable [`py_lt`] order (the values are not
/// moved or copied: a failed comparison leaves them as they were).
fn sorted_positions(keys: &[Value], reverse: bool) -> Result<Vec<usize>, RemoteError> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    if reverse {
        // CPython reverses, sorts stably and reverses back, so equal items keep
        // their order.
        order.reverse();
    }
    let mut order = merge_sort(order, &mut |&a, &b| py_lt(&keys[a], &keys[b]))?;
    if reverse {
        order.reverse();
    }
    Ok(order)
}

/// Puts `items` in `order` (each position once).
fn permute(items: &mut Vec<Value>, order: Vec<usize>) {
    let mut old: Vec<Option<Value>> = std::mem::take(items).into_iter().map(Some).collect();
    items.extend(
        order
            .into_iter()
            .map(|i| old[i].take().expect("each position once")),
    );
}

type Lt<'a, T> = dyn FnMut(&T, &T) -> Result<bool, RemoteError> + 'a;

/// A stable merge sort with a fallible `<`: never panics, whatever `lt` answers.
fn merge_sort<T>(v: Vec<T>, lt: &mut Lt<'_, T>) -> Result<Vec<T>, RemoteError> {
    if v.len() <= 1 {
        return Ok(v);
    }
    let mut left = v;
    let right = left.split_off(left.len() / 2);
    let left = merge_sort(left, lt)?;
    let right = merge_sort(right, lt)?;
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    while let (Some(a), Some(b)) = (l.peek(), r.peek()) {
        // Take from the right only when it is strictly smaller: stability.
        if lt(b, a)? {
            out.extend(r.next());
        } else {
            out.extend(l.next());
        }
    }
    out.extend(l);
    out.extend(r);
    Ok(out)
}

/// A borrowed hashable value, for temporary sets.
struct KeyRef<'a>(&'a Value);

impl PartialEq for KeyRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        eq_impl(self.0, other.0, true)
    }
}
impl Eq for KeyRef<'_> {}
impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_into(self.0, state)
    }
}

/// A dict key with Python's semantics: only hashable values, equal when Python
/// says so. NaN keys equal each other (CPython tells NaNs apart by identity,
/// which copies sent over the wire never share).
#[derive(Debug, Clone)]
pub(crate) struct PyKey(Value);

impl PyKey {
    /// Wraps `v`, or fails with `TypeError: unhashable type`.
    pub(crate) fn new(v: Value) -> Result<PyKey, RemoteError> {
        check_hashable(&v)?;
        Ok(PyKey(v))
    }

    /// Wraps a value already known to be hashable (a key taken out of a map).
    pub(crate) fn trusted(v: Value) -> PyKey {
        PyKey(v)
    }

    /// The key's value.
    pub(crate) fn as_value(&self) -> &Value {
        &self.0
    }

    /// Unwraps the key's value.
    pub(crate) fn into_value(self) -> Value {
        self.0
    }
}

#[cfg(test)]
thread_local! {
    /// How many times [`PyKey`]s were compared on this thread (tests count probes).
    static KEY_EQ_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl PartialEq for PyKey {
    fn eq(&self, other: &Self) -> bool {
        #[cfg(test)]
        KEY_EQ_CALLS.with(|c| c.set(c.get() + 1));
        eq_impl(&self.0, &other.0, true)
    }
}
impl Eq for PyKey {}
impl Hash for PyKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_into(&self.0, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ObjectId, Token};

    fn key(v: Value) -> PyKey {
        PyKey::new(v).unwrap()
    }

    fn hash_of(v: &Value) -> u64 {
        foldhash::fast::FixedState::with_seed(42).hash_one(KeyRef(v))
    }

    #[test]
    fn shared_keys_hash_compare_and_order_as_their_values() {
        let share = |v: Value| Value::Shared(std::sync::Arc::new(v));
        let t = Value::Tuple(vec![Value::Int(1), Value::Str("k".repeat(80))]);
        let st = share(t.clone());
        assert_eq!(hash_of(&st), hash_of(&t));
        assert!(key(st.clone()) == key(t.clone()));
        assert!(py_eq(
            &share(Value::List(vec![st.clone()])),
            &Value::List(vec![t.clone()])
        ));
        assert!(
            PyKey::new(share(Value::List(vec![]))).is_err(),
            "a shared list is unhashable"
        );
        let one = share(Value::List(vec![Value::Int(1)]));
        let two = Value::List(vec![Value::Int(2)]);
        assert!(py_lt(&one, &two).unwrap() && !py_lt(&two, &one).unwrap());
        assert_eq!(
            int_of(&share(Value::BigInt(vec![1; 70]))).map(|i| i.is_negative()),
            Some(false)
        );
    }

    /// `k * (2**61 - 1)` for k in 1..=n: all of them hash to 0 under CPython's
    /// numeric hash. With `shift`, times 2**128 too (big ints beyond `i128`).
    fn modulus_multiples(n: i128, shift: bool) -> Vec<Value> {
        (1..=n)
            .map(|k| {
                let m = k * ((1 << 61) - 1);
                if shift {
                    let mut b = vec![0u8; 16];
                    b.extend_from_slice(&m.to_le_bytes());
                    Value::BigInt(b)
                } else {
                    value_from_i128(m)
                }
            })
            .collect()
    }

    /// Distinct pseudo-random ints (an LCG), the ordinary keys to compare with.
    fn ordinary_ints(n: usize) -> Vec<Value> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                Value::Int(((x >> 20) as i64) * 100_000 + i as i64)
            })
            .collect()
    }

    /// Key comparisons made while inserting `keys` into a fresh `PyMap` and
    /// looking each up once.
    fn comparisons_to_insert(keys: &[Value]) -> u64 {
        let mut map = super::super::pymap::PyMap::default();
        KEY_EQ_CALLS.with(|c| c.set(0));
        for k in keys {
            map.insert(key(k.clone()), Value::None);
        }
        assert_eq!(map.len(), keys.len());
        for k in keys {
            assert!(map.contains(&key(k.clone())));
        }
        KEY_EQ_CALLS.with(|c| c.get())
    }

    /// The largest number of keys sharing one of 2**15 buckets of a per-map seeded
    /// hash, and the number of distinct full hashes.
    fn bucket_stats(keys: &[Value]) -> (usize, usize) {
        let state = foldhash::fast::RandomState::default();
        let hashes: Vec<u64> = keys.iter().map(|k| state.hash_one(KeyRef(k))).collect();
        let mut buckets = vec![0usize; 1 << 15];
        for h in &hashes {
            buckets[(h >> 49) as usize] += 1;
        }
        let distinct: std::collections::HashSet<u64> = hashes.iter().copied().collect();
        (buckets.into_iter().max().unwrap_or(0), distinct.len())
    }

    #[test]
    fn colliding_int_floods_cost_what_ordinary_keys_cost() {
        const N: usize = 20_000;
        let ordinary = ordinary_ints(N);
        let floods = [
            modulus_multiples(N as i128, false),
            modulus_multiples(N as i128, true),
        ];
        let base = comparisons_to_insert(&ordinary);
        let (base_bucket, base_distinct) = bucket_stats(&ordinary);
        assert_eq!(base_distinct, N);
        for flood in &floods {
            // One chain of colliding keys would take ~N*N/2 = 2e8 comparisons.
            let cmp = comparisons_to_insert(flood);
            assert!(
                cmp <= 2 * base + 1_000,
                "{cmp} key comparisons for the flood, {base} for ordinary keys"
            );
            let (bucket, distinct) = bucket_stats(flood);
            assert_eq!(distinct, N, "no two flood keys share a full hash");
            assert!(
                bucket <= base_bucket + 8,
                "largest bucket {bucket} vs {base_bucket} for ordinary keys"
            );
        }
    }

    #[test]
    fn equal_numbers_hash_alike_whatever_their_form() {
        let two_127 = 2f64.powi(127);
        let big = |mut b: Vec<u8>, top: &[u8]| {
            b.extend_from_slice(top);
            Value::BigInt(b)
        };
        let groups: Vec<Vec<Value>> = vec![
            vec![
                Value::Int(1),
                Value::Float(1.0),
                Value::Bool(true),
                Value::BigInt(vec![1, 0, 0]),
            ],
            vec![
                Value::Int(0),
                Value::Float(-0.0),
                Value::Float(0.0),
                Value::Bool(false),
                Value::BigInt(vec![]),
            ],
            vec![
                Value::Int(-1),
                Value::Float(-1.0),
                Value::BigInt(vec![0xff, 0xff]),
            ],
            vec![Value::Float(2f64.powi(63)), value_from_i128(1 << 63)],
            vec![Value::Float(-(2f64.powi(63))), Value::Int(i64::MIN)],
            vec![Value::Float(2f64.powi(100)), value_from_i128(1 << 100)],
            // Between 1.7e38 and 2**127: an i128 either way.
            vec![
                Value::Float(two_127 - 2f64.powi(80)),
                value_from_i128(i128::MAX - (1 << 80) + 1),
            ],
            vec![Value::Float(-two_127), value_from_i128(i128::MIN)],
            vec![Value::Float(two_127), big(vec![0; 15], &[0x80, 0])],
            vec![Value::Float(2f64.powi(200)), big(vec![0; 25], &[1])],
            vec![
                Value::Float(f64::NAN),
                Value::Float(-f64::NAN),
                Value::Float(f64::from_bits(0x7ff0_0000_0000_0001)),
            ],
            vec![Value::Float(1.5)],
            vec![Value::Float(f64::INFINITY)],
            vec![Value::Float(f64::NEG_INFINITY)],
        ];
        for (i, g) in groups.iter().enumerate() {
            for a in g {
                for b in g {
                    assert_eq!(key(a.clone()), key(b.clone()), "{a:?} == {b:?}");
                    assert_eq!(hash_of(a), hash_of(b), "hash {a:?} == hash {b:?}");
                }
            }
            for other in groups.iter().skip(i + 1) {
                assert_ne!(key(g[0].clone()), key(other[0].clone()));
                assert_ne!(hash_of(&g[0]), hash_of(&other[0]), "{:?}", g[0]);
            }
        }
        // Tuples and frozensets of equal numbers too.
        let t = |a: Value, b: Value| Value::Tuple(vec![a, b]);
        assert_eq!(
            hash_of(&t(Value::Int(1), Value::Float(2.0))),
            hash_of(&t(Value::Bool(true), value_from_i128(2)))
        );
        let f = |v: Vec<Value>| Value::FrozenSet(v);
        assert_eq!(
            hash_of(&f(vec![Value::Int(1), Value::Float(2.5)])),
            hash_of(&f(vec![Value::Float(2.5), Value::Float(1.0)]))
        );
    }

    #[test]
    fn frozenset_members_are_hashed_with_the_maps_seed() {
        // The same frozensets hash differently under two seeds, and so does the
        // difference of their member sums: a collision found under one seed says
        // nothing about another.
        let a = Value::FrozenSet(vec![Value::Int(1), Value::Int(2)]);
        let b = Value::FrozenSet(vec![Value::Int(3), Value::Int(4)]);
        let h =
            |seed: u64, v: &Value| foldhash::fast::FixedState::with_seed(seed).hash_one(KeyRef(v));
        assert_ne!(h(1, &a), h(2, &a));
        assert_ne!(
            h(1, &a).wrapping_sub(h(1, &b)),
            h(2, &a).wrapping_sub(h(2, &b))
        );
    }

    #[test]
    fn one_one_point_oh_and_true_are_one_key() {
        let a = key(Value::Int(1));
        let b = key(Value::Float(1.0));
        let c = key(Value::Bool(true));
        assert!(a == b && b == c);
        assert_eq!(hash_of(&a.0), hash_of(&b.0));
        assert_eq!(hash_of(&b.0), hash_of(&c.0));
        assert_eq!(key(Value::Float(-0.0)), key(Value::Int(0)));
        assert_ne!(key(Value::Int(1)), key(Value::Str("1".into())));
        assert_ne!(key(Value::Float(1.5)), key(Value::Int(1)));
    }

    #[test]
    fn big_ints_compare_and_hash_with_floats() {
        let big = value_from_i128(1 << 100);
        assert!(matches!(big, Value::BigInt(_)));
        assert_eq!(key(big.clone()), key(Value::Float(2f64.powi(100))));
        assert_eq!(hash_of(&big), hash_of(&Value::Float(2f64.powi(100))));
        // Beyond i128: 2**200 as 26 bytes.
        let mut b = vec![0u8; 25];
        b.push(1);
        let huge = Value::BigInt(b);
        assert!(py_eq(&huge, &Value::Float(2f64.powi(200))));
        assert!(py_lt(&Value::Float(1e59), &huge).unwrap());
        assert!(!py_lt(&huge, &Value::Int(5)).unwrap());
        assert_eq!(
            hash_of(&huge),
            hash_of(&Value::Float(2f64.powi(200))),
            "equal numbers hash alike"
        );
        // -2**200.
        let mut nb = vec![0u8; 25];
        nb.push(0xff);
        assert!(py_lt(&Value::BigInt(nb), &Value::Float(-1e59)).unwrap());
        assert_eq!(
            value_from_i128(-(1 << 64)),
            Value::BigInt(vec![0; 8].into_iter().chain([0xff]).collect())
        );
    }

    #[test]
    fn int_float_comparison_is_exact() {
        // 2**53 + 1 is not equal to the float 2**53.
        let i = Value::Int((1 << 53) + 1);
        let f = Value::Float(2f64.powi(53));
        assert!(!py_eq(&i, &f));
        assert!(py_lt(&f, &i).unwrap());
        assert!(py_lt(&Value::Int(1), &Value::Float(1.5)).unwrap());
        assert!(!py_lt(&Value::Float(f64::NAN), &Value::Int(1)).unwrap());
        assert!(!py_eq(&Value::Float(f64::NAN), &Value::Float(f64::NAN)));
        assert_eq!(key(Value::Float(f64::NAN)), key(Value::Float(f64::NAN)));
    }

    #[test]
    fn containers_compare_by_content() {
        let t1 = Value::Tuple(vec![Value::Int(1), Value::Str("a".into())]);
        let t2 = Value::Tuple(vec![Value::Float(1.0), Value::Str("a".into())]);
        assert_eq!(key(t1.clone()), key(t2.clone()));
        assert_eq!(hash_of(&t1), hash_of(&t2));
        let f1 = Value::FrozenSet(vec![Value::Int(1), Value::Int(2)]);
        let f2 = Value::FrozenSet(vec![Value::Int(2), Value::Float(1.0)]);
        assert_eq!(key(f1.clone()), key(f2.clone()));
        assert_eq!(hash_of(&f1), hash_of(&f2));
        assert!(!py_eq(&Value::List(vec![]), &Value::Tuple(vec![])));
        assert!(!py_eq(&Value::Set(vec![Value::Int(1)]), &f1));
        assert!(py_eq(&Value::Set(vec![Value::Int(2), Value::Int(1)]), &f1));
        let r = |i| {
            Value::Ref(Token {
                typeid: "dict".into(),
                id: ObjectId(i),
            })
        };
        assert_eq!(key(r(3)), key(r(3)));
        assert_ne!(key(r(3)), key(r(4)));
    }

    #[test]
    fn opaque_values_hash_and_compare_by_content_and_refuse_ordering() {
        let dec = |s: &str| Value::opaque_call("decimal", "Decimal", vec![Value::Str(s.into())]);
        assert_eq!(key(dec("1.5")), key(dec("1.5")));
        assert_eq!(hash_of(&dec("1.5")), hash_of(&dec("1.5")));
        assert_ne!(key(dec("1.5")), key(dec("2.5")));
        let frac = Value::opaque_call("fractions", "Fraction", vec![Value::Str("1.5".into())]);
        assert_ne!(key(dec("1.5")), key(frac));
        assert!(!py_eq(&dec("1"), &Value::Int(1)));
        assert!(check_hashable(&dec("1")).is_ok());
        let e = py_lt(&dec("1"), &dec("2")).unwrap_err();
        assert_eq!(e.kind, "TypeError");
        assert!(py_lt(&dec("1"), &Value::Int(2)).is_err());
    }

    #[test]
    fn large_dicts_and_sets_compare_by_content() {
        let d1 = Value::Dict(
            (0..20)
                .map(|i| (Value::Int(i), Value::Int(i * 2)))
                .collect(),
        );
        let d2 = Value::Dict(
            (0..20)
                .rev()
                .map(|i| (Value::Float(i as f64), Value::Int(i * 2)))
                .collect(),
        );
        assert!(py_eq(&d1, &d2));
        let d3 = Value::Dict((0..20).map(|i| (Value::Int(i), Value::Int(i))).collect());
        assert!(!py_eq(&d1, &d3));
        let s1 = Value::Set((0..20).map(Value::Int).collect());
        let s2 = Value::FrozenSet((0..20).rev().map(Value::Int).collect());
        assert!(py_eq(&s1, &s2));
        let n1 = Value::Set(
            (0..20)
                .map(|i| Value::Float(if i == 0 { f64::NAN } else { i as f64 }))
                .collect(),
        );
        assert!(
            !py_eq(&n1, &n1.clone()),
            "NaNs sent as copies are never equal"
        );
    }

    #[test]
    fn unhashable_values_are_refused_like_python() {
        let e = PyKey::new(Value::List(vec![])).unwrap_err();
        assert_eq!(
            (e.kind.as_str(), e.message.as_str()),
            ("TypeError", "unhashable type: 'list'")
        );
        let e = PyKey::new(Value::Tuple(vec![Value::Int(1), Value::Dict(vec![])])).unwrap_err();
        assert_eq!(e.message, "unhashable type: 'dict'");
        assert!(PyKey::new(Value::Set(vec![])).is_err());
        assert!(PyKey::new(Value::FrozenSet(vec![Value::Tuple(vec![])])).is_ok());
    }

    #[test]
    fn ordering_like_python() {
        let s = |x: &str| Value::Str(x.into());
        assert!(py_lt(&s("a"), &s("b")).unwrap());
        assert!(py_lt(&Value::Bool(false), &Value::Float(0.5)).unwrap());
        let l = |v: Vec<Value>| Value::List(v);
        assert!(py_lt(
            &l(vec![Value::Int(1)]),
            &l(vec![Value::Int(1), Value::Int(0)])
        )
        .unwrap());
        assert!(py_lt(
            &l(vec![Value::Int(1), s("z")]),
            &l(vec![Value::Int(2), Value::Int(0)])
        )
        .unwrap());
        let e = py_lt(&Value::Int(1), &s("a")).unwrap_err();
        assert_eq!(
            e.message,
            "'<' not supported between instances of 'int' and 'str'"
        );
        assert!(py_lt(&l(vec![]), &Value::Tuple(vec![])).is_err());
        assert!(py_lt(&Value::None, &Value::None).is_err());
        assert!(py_lt(
            &Value::Set(vec![Value::Int(1)]),
            &Value::FrozenSet(vec![Value::Int(1), Value::Int(2)])
        )
        .unwrap());
    }

    #[test]
    fn sort_is_stable_reversible_and_atomic_on_error() {
        let mut v = vec![
            Value::Int(2),
            Value::Float(1.0),
            Value::Bool(true),
            Value::Int(0),
            Value::Float(2.0),
        ];
        py_sort(&mut v, false).unwrap();
        assert_eq!(
            v,
            vec![
                Value::Int(0),
                Value::Float(1.0),
                Value::Bool(true),
                Value::Int(2),
                Value::Float(2.0)
            ]
        );
        py_sort(&mut v, true).unwrap();
        assert_eq!(
            v,
            vec![
                Value::Int(2),
                Value::Float(2.0),
                Value::Float(1.0),
                Value::Bool(true),
                Value::Int(0)
            ]
        );
        let mut bad = vec![Value::Int(3), Value::Str("a".into()), Value::Int(1)];
        let before = bad.clone();
        assert_eq!(py_sort(&mut bad, false).unwrap_err().kind, "TypeError");
        assert_eq!(bad, before);
        let mut nans = vec![
            Value::Float(f64::NAN),
            Value::Int(1),
            Value::Float(f64::NAN),
        ];
        py_sort(&mut nans, false).unwrap();
        assert_eq!(nans.len(), 3);
    }

    #[test]
    fn a_keyed_sort_is_stable_both_ways_and_a_failed_one_changes_nothing() {
        let s = |x: &str| Value::Str(x.into());
        let items = || vec![s("b1"), s("a1"), s("b2"), s("a2")];
        let keys = || vec![s("b"), s("a"), s("b"), s("a")];
        let mut v = items();
        py_sort_keyed(&mut v, keys(), false).unwrap();
        assert_eq!(v, [s("a1"), s("a2"), s("b1"), s("b2")]);
        let mut v = items();
        py_sort_keyed(&mut v, keys(), true).unwrap();
        assert_eq!(v, [s("b1"), s("b2"), s("a1"), s("a2")]);
        let mut v = items();
        let bad = vec![s("b"), Value::Int(1), s("b"), s("a")];
        assert_eq!(
            py_sort_keyed(&mut v, bad, false).unwrap_err().kind,
            "TypeError"
        );
        assert_eq!(v, items());
    }
}
