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

use std::collections::HashMap;
use std::sync::Arc;

use crate::proto::value::{Step, Walk};
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

/// The estimated bytes `v` takes on the server (saturating): [`NODE`] per
/// value in the tree plus every payload. A shared value ([`Value::Shared`])
/// counts in full at every place it appears (plus its `Arc`'s counts), as if
/// copied: a walk through the value (`repr`, `==`, a copy on write) reads all
/// of it there, so a result or held total measured here bounds those walks as
/// it did before values could share. Each shared value's total is computed
/// once, so this costs what the value holds, not what it expands to.
/// Iterative: no recursion however deep the value or its chain of shares.
pub(crate) fn value_bytes(v: &Value) -> usize {
    if !v.is_shared() && !v.is_container() {
        return NODE + payload(v);
    }
    // The full bytes of each shared value counted so far, by identity.
    let mut full: HashMap<*const Value, usize> = HashMap::new();
    // Values to total: the root at the bottom, above it shared values met
    // before their totals were known.
    let mut todo: Vec<&Value> = vec![v];
    while let Some(&x) = todo.last() {
        let id: *const Value = x;
        if todo.len() > 1 && full.contains_key(&id) {
            todo.pop();
            continue;
        }
        let (mut total, waiting) = (0usize, todo.len());
        for step in Walk::raw(x) {
            match step {
                Step::Leaf(Value::Shared(a), _) => match full.get(&Arc::as_ptr(a)) {
                    Some(&n) => total = total.saturating_add(NODE + 16).saturating_add(n),
                    None => todo.push(a),
                },
                Step::Leaf(y, _) | Step::Enter(y, _) => {
                    total = total.saturating_add(NODE + payload(y));
                }
                Step::Exit(_) => {}
            }
        }
        if todo.len() > waiting {
            // Total the shared values it holds first, then walk it again.
            continue;
        }
        todo.pop();
        if todo.is_empty() {
            return total;
        }
        full.insert(id, total);
    }
    unreachable!("the root is totalled last")
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
    fn a_shared_value_counts_at_every_place_but_is_totalled_once() {
        let inner = Value::List(vec![Value::Int(0); 300]);
        let one = value_bytes(&inner);
        let shared = Value::Shared(Arc::new(inner));
        let v = Value::List(vec![shared.clone(); 300]);
        // 300 slots, each with the whole shared list (and its Arc): what a
        // walk through it reads, as if copied.
        assert_eq!(value_bytes(&v), NODE + 300 * (NODE + 16 + one));
        assert_eq!(value_bytes(&shared), NODE + 16 + one);
        // Shares inside shares: 2**40 places from 40 levels of doubling,
        // totalled in 40 short walks (saturating, never overflowing).
        let mut doubled = Value::List(vec![Value::Int(0); 1000]);
        for _ in 0..40 {
            let s = Value::Shared(Arc::new(doubled));
            doubled = Value::List(vec![s.clone(), s]);
        }
        assert!(value_bytes(&doubled) > 1 << 40);
        // A chain of 200,000 shares in shares: no recursion.
        let mut chain = Value::None;
        for _ in 0..200_000 {
            chain = Value::Shared(Arc::new(Value::List(vec![chain])));
        }
        assert_eq!(value_bytes(&chain), 200_000 * (2 * NODE + 16) + NODE);
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
