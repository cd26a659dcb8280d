//! What a value costs in bytes, and the errors and fallible reservations that
//! keep a peer's small request from becoming a giant allocation.
//!
//! [`value_bytes`] estimates the memory a [`Value`] takes on the server: one
//! `size_of::<Value>()` per value in the tree plus the bytes of its strings,
//! byte strings, big ints and typeids. It walks the tree with an explicit stack
//! (no recursion) and costs O(values); containers keep a running total of what
//! they store, updated on each mutation, so a repeat or copy is sized in O(1).
//!
//! Two bounds use it: one result (a repeat, a concatenation, a copy, the items a
//! str or bytes expands into) may not exceed the server's `max_frame`, and the
//! server-wide total of held bytes may not exceed `max_held_bytes` when set.
//! Neither is checked here: this module only measures and builds the errors.

use std::sync::Arc;

use crate::proto::{RemoteError, Value};

/// What one value costs before its payload: the `Value` itself.
pub(crate) const NODE: usize = std::mem::size_of::<Value>();

/// The bytes a value holds outside the tree: its string, bytes or typeid.
fn payload(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len(),
        Value::Bytes(b) | Value::BigInt(b) => b.len(),
        Value::Ref(t) => t.typeid.len(),
        // The box, and a global's names (a built object's parts are children).
        Value::Opaque(o) => {
            std::mem::size_of::<crate::proto::PyObject>()
                + o.global_name()
                    .filter(|_| o.parts().is_empty())
                    .map_or(0, |(m, n)| m.len() + n.len())
        }
        _ => 0,
    }
}

/// The children of a container, keys and values of a dict alternating.
enum Children<'a> {
    Items(std::slice::Iter<'a, Value>),
    Pairs(std::slice::Iter<'a, (Value, Value)>, Option<&'a Value>),
}

impl<'a> Iterator for Children<'a> {
    type Item = &'a Value;

    fn next(&mut self) -> Option<&'a Value> {
        match self {
            Children::Items(i) => i.next(),
            Children::Pairs(i, pending) => pending.take().or_else(|| {
                let (k, v) = i.next()?;
                *pending = Some(v);
                Some(k)
            }),
        }
    }
}

fn children(v: &Value) -> Option<Children<'_>> {
    match v {
        Value::List(x) | Value::Tuple(x) | Value::Set(x) | Value::FrozenSet(x) if !x.is_empty() => {
            Some(Children::Items(x.iter()))
        }
        Value::Dict(d) if !d.is_empty() => Some(Children::Pairs(d.iter(), None)),
        Value::Opaque(o) if !o.parts().is_empty() => Some(Children::Items(o.parts().iter())),
        _ => None,
    }
}

/// The estimated bytes `v` takes on the server (saturating): [`NODE`] per
/// value in the tree plus every payload. A shared value
/// ([`Value::Shared`]) is counted once, at its first place, and a further
/// place costs its slot ([`NODE`]): what the value holds, not what it expands
/// to. Iterative; its stack is as deep as the value is nested.
pub(crate) fn value_bytes(v: &Value) -> usize {
    if !v.is_shared() && children(v).is_none() {
        return NODE + payload(v);
    }
    // Shared values counted so far, by identity (made at the first one).
    let mut seen: Option<std::collections::HashSet<*const Value>> = None;
    let mut total = 0usize;
    let mut stack = Vec::new();
    /// Counts `c`'s slot and, unless it is a shared value counted before, its
    /// payload; gives the value whose children count next.
    fn visit<'a>(
        c: &'a Value,
        total: &mut usize,
        seen: &mut Option<std::collections::HashSet<*const Value>>,
    ) -> Option<&'a Value> {
        *total = total.saturating_add(NODE);
        let c = match c {
            Value::Shared(a) => {
                if !seen
                    .get_or_insert_with(Default::default)
                    .insert(Arc::as_ptr(a))
                {
                    return None;
                }
                // The Arc's counts, and its value's own slot.
                *total = total.saturating_add(16 + NODE);
                c.resolved()
            }
            c => c,
        };
        *total = total.saturating_add(payload(c));
        Some(c)
    }
    if let Some(more) = visit(v, &mut total, &mut seen).and_then(children) {
        stack.push(more);
    }
    while let Some(top) = stack.last_mut() {
        match top.next() {
            Some(c) => {
                if let Some(more) = visit(c, &mut total, &mut seen).and_then(children) {
                    stack.push(more);
                }
            }
            None => {
                stack.pop();
            }
        }
    }
    total
}

/// The estimated bytes of several values.
pub(crate) fn values_bytes<'a>(vs: impl IntoIterator<Item = &'a Value>) -> usize {
    vs.into_iter()
        .fold(0usize, |t, v| t.saturating_add(value_bytes(v)))
}

/// `MemoryError` with `message`.
pub(crate) fn memory_error(message: impl Into<String>) -> RemoteError {
    RemoteError::new("MemoryError", message)
}

/// The error for a result over the per-result limit.
pub(crate) fn result_too_big(bytes: usize, limit: usize) -> RemoteError {
    memory_error(format!(
        "the result would take about {bytes} bytes, over the server's limit of {limit} bytes per result (max_frame)"
    ))
}

/// Fails when a result of `bytes` would exceed `limit`.
pub(crate) fn check_result(bytes: usize, limit: usize) -> Result<(), RemoteError> {
    if bytes > limit {
        return Err(result_too_big(bytes, limit));
    }
    Ok(())
}

fn alloc_failed(n: usize) -> RemoteError {
    memory_error(format!("cannot allocate memory for {n} more items"))
}

/// Makes room for `n` more items in `v`, failing with `MemoryError` instead of
/// aborting when the allocator says no.
pub(crate) fn reserve<T>(v: &mut Vec<T>, n: usize) -> Result<(), RemoteError> {
    v.try_reserve(n).map_err(|_| alloc_failed(n))
}

/// A vector with room for exactly `n` items, or `MemoryError`.
pub(crate) fn vec_with<T>(n: usize) -> Result<Vec<T>, RemoteError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| alloc_failed(n))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ObjectId, Token};

    #[test]
    fn a_shared_value_counts_once_per_measure() {
        let inner = Value::List(vec![Value::Int(0); 300]);
        let one = value_bytes(&inner);
        let shared = Value::Shared(Arc::new(inner));
        let v = Value::List(vec![shared.clone(); 300]);
        // 300 slots, the shared list once (with its Arc), not 300 copies.
        assert_eq!(value_bytes(&v), NODE + 300 * NODE + 16 + one);
        assert!(value_bytes(&v) < 2 * 300 * NODE + one);
        assert_eq!(value_bytes(&shared), NODE + 16 + one);
        // Shares inside shares: each counted at its first place.
        let three = Value::List(vec![Value::Shared(Arc::new(v)); 100]);
        assert!(value_bytes(&three) < 1000 * NODE + one);
    }

    #[test]
    fn sizes_count_every_value_and_payload() {
        assert_eq!(value_bytes(&Value::None), NODE);
        assert_eq!(value_bytes(&Value::Bytes(vec![0; 100])), NODE + 100);
        assert_eq!(value_bytes(&Value::from("abc")), NODE + 3);
        let token = Value::Ref(Token {
            typeid: "dict".into(),
            id: ObjectId(1),
        });
        assert_eq!(value_bytes(&token), NODE + 4);
        let nested = Value::List(vec![
            Value::Int(1),
            Value::Dict(vec![(Value::from("k"), Value::Tuple(vec![Value::None]))]),
            Value::List(vec![]),
        ]);
        // list, int, dict, "k", tuple, None, empty list: 7 values and 1 byte.
        assert_eq!(value_bytes(&nested), 7 * NODE + 1);
        assert_eq!(
            values_bytes(&[Value::None, Value::from("xy")]),
            2 * NODE + 2
        );
    }

    #[test]
    fn opaque_values_count_their_parts() {
        let big = Value::opaque_call("decimal", "Decimal", vec![Value::Bytes(vec![0; 1000])]);
        assert!(value_bytes(&big) > 1000 + 6 * NODE, "{}", value_bytes(&big));
        let g = Value::opaque_global("builtins", "list");
        assert_eq!(
            value_bytes(&g),
            NODE + std::mem::size_of::<crate::proto::PyObject>() + 12
        );
    }

    #[test]
    fn deep_values_do_not_recurse() {
        let mut v = Value::None;
        for _ in 0..200_000 {
            v = Value::List(vec![v]);
        }
        assert_eq!(value_bytes(&v), 200_001 * NODE);
        // Dropping it would recurse; leak it instead (a test-only value).
        std::mem::forget(v);
    }

    #[test]
    fn limits_and_reservations_fail_as_memory_errors() {
        assert!(check_result(10, 10).is_ok());
        let e = check_result(11, 10).unwrap_err();
        assert_eq!(e.kind, "MemoryError");
        assert!(e.message.contains("max_frame"), "{}", e.message);
        let mut v: Vec<u64> = Vec::new();
        assert_eq!(
            reserve(&mut v, usize::MAX / 2).unwrap_err().kind,
            "MemoryError"
        );
        assert!(vec_with::<u64>(usize::MAX / 4).is_err());
        assert!(vec_with::<u64>(4).unwrap().capacity() >= 4);
    }
}
