//! Sequence and argument helpers shared by the data types: binding the
//! positional-only arguments of a builtin method with CPython's error messages,
//! turning an iterable value into its items, and Python's index and slice
//! arithmetic (`PySlice_AdjustIndices`).
//!
//! Nothing here holds state; `list` and `Array` own their items.

use super::pykey::int_of;
use super::size::{check_result, vec_with, NODE};
use crate::proto::{RemoteError, Slice, Value};
use crate::server::Context;

/// Binds the positional-only arguments of a C-implemented method such as
/// `list.insert`: no keywords, between `min` and `max` positionals, with
/// CPython's messages for `owner.method` (`list`, `insert`; an empty `method`
/// names `owner` itself).
pub(crate) fn positional(
    owner: &str,
    method: &str,
    args: crate::server::CallArgs,
    min: usize,
    max: usize,
) -> Result<Vec<Value>, RemoteError> {
    let n = args.args.len();
    if args.kwargs.is_empty() && (min..=max).contains(&n) {
        return Ok(args.args);
    }
    let (qual, short) = if method.is_empty() {
        (owner.to_owned(), owner)
    } else {
        (format!("{owner}.{method}"), method)
    };
    if !args.kwargs.is_empty() {
        return Err(RemoteError::type_error(format!(
            "{qual}() takes no keyword arguments"
        )));
    }
    let plural = |k: usize| if k == 1 { "argument" } else { "arguments" };
    let msg = match (min, max) {
        (0, 0) => format!("{qual}() takes no arguments ({n} given)"),
        (1, 1) => format!("{qual}() takes exactly one argument ({n} given)"),
        _ if min == max => format!("{short} expected {min} {}, got {n}", plural(min)),
        _ if n < min => format!("{short} expected at least {min} {}, got {n}", plural(min)),
        _ => format!("{short} expected at most {max} {}, got {n}", plural(max)),
    };
    Err(RemoteError::type_error(msg))
}

/// Fails with `TypeError: '<type>' object is not iterable`.
pub(crate) fn not_iterable(v: &Value) -> RemoteError {
    RemoteError::type_error(format!("'{}' object is not iterable", v.type_name()))
}

/// The items of an iterable value, as Python's `list(v)` would give them: the
/// elements of a list, tuple or set, a dict's keys, a str's characters, a bytes
/// object's ints. The inner `Err` gives back a value that is not iterable here
/// (numbers, `None`, and proxies, whose referent this object cannot reach); the
/// outer one is a `MemoryError` when a str or bytes would expand into items
/// over `limit` bytes (see [`size`](super::size)), checked before allocating.
pub(crate) fn items_of(v: Value, limit: usize) -> Result<Result<Vec<Value>, Value>, RemoteError> {
    Ok(match v.resolved() {
        Value::List(_) | Value::Tuple(_) | Value::Set(_) | Value::FrozenSet(_) => v.into_items(),
        Value::Dict(_) => v
            .into_entries()
            .map(|d| d.into_iter().map(|(k, _)| k).collect()),
        Value::Str(s) => {
            let n = s.chars().count();
            check_result(n.saturating_mul(NODE).saturating_add(s.len()), limit)?;
            let mut out = vec_with(n)?;
            out.extend(s.chars().map(|c| Value::Str(c.to_string())));
            Ok(out)
        }
        Value::Bytes(b) => {
            check_result(b.len().saturating_mul(NODE), limit)?;
            let mut out = vec_with(b.len())?;
            out.extend(b.iter().map(|&x| Value::Int(i64::from(x))));
            Ok(out)
        }
        // A range, bytearray or array kept compact; a deque's items; a
        // Counter's, OrderedDict's or defaultdict's keys.
        Value::Opaque(o) => {
            if let Some((start, stop, step)) = o.range_bounds() {
                let n = range_len(start, stop, step);
                check_result(n.saturating_mul(NODE), limit)?;
                let mut out = vec_with(n)?;
                out.extend((0..n as i64).map(|k| {
                    Value::Int((i128::from(start) + i128::from(k) * i128::from(step)) as i64)
                }));
                return Ok(Ok(out));
            }
            if let Some(b) = o.bytearray_bytes() {
                check_result(b.len().saturating_mul(NODE), limit)?;
                let mut out = vec_with(b.len())?;
                out.extend(b.iter().map(|&x| Value::Int(i64::from(x))));
                return Ok(Ok(out));
            }
            if let Some((tc, data)) = o.array_data() {
                return super::array::array_items(tc, data, limit).map(Ok);
            }
            match (o.sequence_items(), o.mapping_entries()) {
                (Some(items), _) => Ok(items),
                (_, Some(entries)) => Ok(entries.into_iter().map(|(k, _)| k).collect()),
                _ => Err(v),
            }
        }
        _ => Err(v),
    })
}

/// `v` itself, or, when it is a proxy, the current value of the built-in
/// `list`, `dict` or `Array` it refers to ([`Context::snapshot`]: bounded like
/// any result, a `TypeError` for other types): what a method that iterates or
/// reads its argument works on, as Python's would iterate the proxy.
pub(crate) fn deref(cx: &Context<'_>, v: Value) -> Result<Value, RemoteError> {
    match &v {
        Value::Ref(t) => cx.snapshot(t),
        _ => Ok(v),
    }
}

/// Whether `v` is a proxy of the object running the call (`l.extend(l)`).
pub(crate) fn is_self(cx: &Context<'_>, v: &Value) -> bool {
    matches!(v, Value::Ref(t) if Some(t.id) == cx.object_id())
}

/// The number of items of `range(start, stop, step)` (`step` is not 0),
/// saturating.
pub(crate) fn range_len(start: i64, stop: i64, step: i64) -> usize {
    if (step > 0 && start < stop) || (step < 0 && start > stop) {
        let span = (i128::from(stop) - i128::from(start)).unsigned_abs();
        let n = (span - 1) / u128::from(step.unsigned_abs()) + 1;
        usize::try_from(n).unwrap_or(usize::MAX)
    } else {
        0
    }
}

/// [`items_of`], failing with Python's `'int' object is not iterable`.
pub(crate) fn iterate(v: Value, limit: usize) -> Result<Vec<Value>, RemoteError> {
    items_of(v, limit)?.map_err(|v| not_iterable(&v))
}

/// An integer index argument: `int` or `bool`; a big int is an `IndexError` as
/// in CPython ("cannot fit 'int' into an index-sized integer"); `None` when the
/// value is not an integer at all.
pub(crate) fn int_index(v: &Value) -> Option<Result<i64, RemoteError>> {
    let i = int_of(v)?;
    Some(
        i.small()
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| {
                RemoteError::new("IndexError", "cannot fit 'int' into an index-sized integer")
            }),
    )
}

/// An integer argument used as a count or position (`list.insert`'s index,
/// `list.pop`'s index): `TypeError: '<type>' object cannot be interpreted as an
/// integer` for anything else, `OverflowError` for a big int.
pub(crate) fn int_arg(v: &Value) -> Result<i64, RemoteError> {
    match int_of(v) {
        Some(i) => i
            .small()
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| {
                RemoteError::new(
                    "OverflowError",
                    "Python int too large to convert to C ssize_t",
                )
            }),
        None => Err(RemoteError::type_error(format!(
            "'{}' object cannot be interpreted as an integer",
            v.type_name()
        ))),
    }
}

/// Resolves an index against a length (negative counts from the end); `None`
/// when out of range.
pub(crate) fn resolve(i: i64, len: usize) -> Option<usize> {
    let len = len as i128;
    let j = if i < 0 { i as i128 + len } else { i as i128 };
    (0..len).contains(&j).then_some(j as usize)
}

/// A slice resolved against a length: the positions it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// First position (meaningful when `len > 0`).
    pub(crate) start: i64,
    /// Stop position after adjustment (used by step-1 assignment).
    pub(crate) stop: i64,
    /// Step, never zero.
    pub(crate) step: i64,
    /// Number of positions selected.
    pub(crate) len: usize,
}

impl Span {
    /// Python's `slice.indices(len)` plus the selected length; `ValueError` for a
    /// zero step.
    pub(crate) fn new(s: &Slice, len: usize) -> Result<Span, RemoteError> {
        let step = s.step.unwrap_or(1);
        if step == 0 {
            return Err(RemoteError::value_error("slice step cannot be zero"));
        }
        let step = step.max(-i64::MAX);
        let len = len as i64;
        let adjust = |b: Option<i64>, default: i64| -> i64 {
            match b {
                None => default,
                Some(x) if x < 0 => {
                    let x = x.saturating_add(len);
                    if x < 0 {
                        if step < 0 {
                            -1
                        } else {
                            0
                        }
                    } else {
                        x
                    }
                }
                Some(x) if x >= len => {
                    if step < 0 {
                        len - 1
                    } else {
                        len
                    }
                }
                Some(x) => x,
            }
        };
        let (start, stop) = if step < 0 {
            (adjust(s.start, len - 1), adjust(s.stop, -1))
        } else {
            (adjust(s.start, 0), adjust(s.stop, len))
        };
        let n = if step < 0 {
            if stop < start {
                (start - stop - 1) / (-step) + 1
            } else {
                0
            }
        } else if start < stop {
            (stop - start - 1) / step + 1
        } else {
            0
        };
        Ok(Span {
            start,
            stop,
            step,
            len: n as usize,
        })
    }

    /// The selected positions, in slice order.
    pub(crate) fn positions(&self) -> impl Iterator<Item = usize> {
        let (start, step) = (self.start, self.step);
        (0..self.len as i64).map(move |k| (start + k * step) as usize)
    }

    /// For a step-1 slice, the range it replaces (`stop` clamped to `start`).
    pub(crate) fn contiguous(&self) -> Option<std::ops::Range<usize>> {
        (self.step == 1).then(|| {
            let start = self.start as usize;
            start..(self.stop.max(self.start) as usize)
        })
    }
}

/// Removes the positions a span selects.
pub(crate) fn delete_span<T>(items: &mut Vec<T>, span: &Span) {
    if let Some(r) = span.contiguous() {
        items.drain(r);
        return;
    }
    let mut doomed = vec![false; items.len()];
    span.positions().for_each(|p| doomed[p] = true);
    let mut k = 0;
    items.retain(|_| {
        k += 1;
        !doomed[k - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::CallArgs;

    fn sl(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Slice {
        Slice { start, stop, step }
    }

    fn pick(s: Slice, len: usize) -> Vec<usize> {
        Span::new(&s, len).unwrap().positions().collect()
    }

    #[test]
    fn spans_match_python_slices() {
        // Checked against python3: list(range(6))[...]
        assert_eq!(pick(sl(Some(1), Some(3), None), 6), [1, 2]);
        assert_eq!(pick(sl(None, None, Some(-2)), 6), [5, 3, 1]);
        assert_eq!(pick(sl(Some(-2), None, None), 6), [4, 5]);
        assert_eq!(pick(sl(Some(4), Some(1), None), 6), Vec::<usize>::new());
        assert_eq!(pick(sl(Some(-100), Some(100), Some(3)), 6), [0, 3]);
        assert_eq!(pick(sl(Some(100), None, Some(-1)), 3), [2, 1, 0]);
        assert_eq!(pick(sl(None, Some(i64::MIN), Some(i64::MIN)), 3), [2]);
        let e = Span::new(&sl(None, None, Some(0)), 3).unwrap_err();
        assert_eq!(
            (e.kind.as_str(), e.message.as_str()),
            ("ValueError", "slice step cannot be zero")
        );
        let s = Span::new(&sl(Some(4), Some(1), None), 6).unwrap();
        assert_eq!(s.contiguous(), Some(4..4));
    }

    #[test]
    fn delete_span_like_del_slice() {
        let mut v: Vec<i32> = (0..6).collect();
        delete_span(&mut v, &Span::new(&sl(None, None, Some(-2)), 6).unwrap());
        assert_eq!(v, [0, 2, 4]);
        let mut v: Vec<i32> = (0..6).collect();
        delete_span(&mut v, &Span::new(&sl(Some(1), Some(-1), None), 6).unwrap());
        assert_eq!(v, [0, 5]);
    }

    #[test]
    fn resolve_negative_indices() {
        assert_eq!(resolve(-1, 3), Some(2));
        assert_eq!(resolve(3, 3), None);
        assert_eq!(resolve(-4, 3), None);
        assert_eq!(resolve(i64::MIN, 3), None);
    }

    #[test]
    fn positional_binding_messages_are_cpythons() {
        let a = |n: usize| CallArgs::positional(vec![Value::None; n]);
        let msg = |r: Result<Vec<Value>, RemoteError>| r.unwrap_err().message;
        assert_eq!(
            msg(positional("list", "append", a(0), 1, 1)),
            "list.append() takes exactly one argument (0 given)"
        );
        assert_eq!(
            msg(positional("list", "insert", a(1), 2, 2)),
            "insert expected 2 arguments, got 1"
        );
        assert_eq!(
            msg(positional("list", "pop", a(2), 0, 1)),
            "pop expected at most 1 argument, got 2"
        );
        assert_eq!(
            msg(positional("list", "index", a(0), 1, 3)),
            "index expected at least 1 argument, got 0"
        );
        assert_eq!(
            msg(positional("list", "reverse", a(1), 0, 0)),
            "list.reverse() takes no arguments (1 given)"
        );
        let kw = CallArgs {
            args: vec![],
            kwargs: vec![("x".into(), Value::None)],
        };
        assert_eq!(
            msg(positional("dict", "get", kw, 1, 2)),
            "dict.get() takes no keyword arguments"
        );
        assert_eq!(positional("list", "pop", a(1), 0, 1).unwrap().len(), 1);
    }

    #[test]
    fn iterables() {
        assert_eq!(
            iterate(Value::Str("ab".into()), 1 << 20).unwrap(),
            vec![Value::from("a"), Value::from("b")]
        );
        assert_eq!(
            iterate(Value::Dict(vec![(Value::Int(1), Value::None)]), 1 << 20).unwrap(),
            vec![Value::Int(1)]
        );
        assert_eq!(
            iterate(Value::Int(5), 1 << 20).unwrap_err().message,
            "'int' object is not iterable"
        );
        // A str or bytes expands into one value per item: bounded before allocating.
        let e = iterate(Value::Bytes(vec![0; 1000]), 999 * NODE).unwrap_err();
        assert_eq!(e.kind, "MemoryError");
        assert_eq!(
            iterate(Value::Bytes(vec![0; 1000]), 1000 * NODE)
                .unwrap()
                .len(),
            1000
        );
        let e = iterate(Value::from("ab"), 2 * NODE + 1).unwrap_err();
        assert_eq!(e.kind, "MemoryError");
        assert_eq!(
            int_arg(&Value::Float(1.0)).unwrap_err().message,
            "'float' object cannot be interpreted as an integer"
        );
        assert_eq!(int_index(&Value::Bool(true)).unwrap().unwrap(), 1);
        assert!(int_index(&Value::Str("x".into())).is_none());
    }
}
