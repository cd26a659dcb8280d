//! The `list` typeid: a Python list behind CPython's `ListProxy`, with its full
//! method set, Python's index and slice rules, `sort` with Python's ordering, and
//! CPython's error kinds and messages.
//!
//! Where CPython's manager hands back something a client cannot use, this type
//! returns what a user expects instead: `__reversed__` returns the reversed items
//! as a list (CPython pickles a `list_reverseiterator` over a copy), and
//! `__imul__` returns `None` (CPython sends the whole list back, which
//! `ListProxy.__imul__` throws away). `sort(key=…)` takes the pure builtins the server interprets (`str.lower`,
//! `len`, `operator.itemgetter(…)` …); any other key is refused with a `TypeError`:
//! a function cannot travel to the server (CPython fails to pickle it too).

use super::pykey::{py_eq, py_sort};
use super::pyseq::{
    delete_span, deref, int_arg, int_index, is_self, items_of, iterate, positional, resolve, Span,
};
use super::size::{reserve, value_bytes, values_bytes, vec_with, NODE};
use crate::proto::{ObjectId, RemoteError, Value};
use crate::server::{CallArgs, CallResult, Context, Server, SharedObject, TypeSpec};

/// The methods `ListProxy` exposes, in CPython's order.
pub(crate) const EXPOSED: &[&str] = &[
    "__add__",
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__len__",
    "__mul__",
    "__reversed__",
    "__rmul__",
    "__setitem__",
    "append",
    "count",
    "extend",
    "index",
    "insert",
    "pop",
    "remove",
    "reverse",
    "sort",
    "__imul__",
];

/// Registers `list`.
pub(crate) fn register(server: &mut Server) {
    server.register(
        TypeSpec::new("list", EXPOSED, |cx, args| {
            Ok(Box::new(PyList::from_args(cx, args)?))
        })
        .read_by_value()
        .reads_only(&[
            "__add__",
            "__contains__",
            "__getitem__",
            "__len__",
            "__mul__",
            "__reversed__",
            "__rmul__",
            "count",
            "index",
        ])
        .adds_only(&["append", "insert"]),
    );
}

/// A shared Python list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PyList {
    items: Vec<Value>,
    /// Estimated bytes of the items, kept up to date by every change.
    bytes: usize,
}

fn index_error(msg: &str) -> RemoteError {
    RemoteError::new("IndexError", msg)
}

fn indices_type_error(v: &Value) -> RemoteError {
    RemoteError::type_error(format!(
        "list indices must be integers or slices, not {}",
        v.type_name()
    ))
}

/// The count of `list * n` with Python's rules: a negative count is 0.
fn repeat_count(n: &Value) -> Result<usize, RemoteError> {
    match int_arg(n) {
        Err(e) if e.kind == "OverflowError" => Err(RemoteError::new(
            "OverflowError",
            "cannot fit 'int' into an index-sized integer",
        )),
        n => Ok(n?.max(0) as usize),
    }
}

/// `n` copies of `items` (which take `bytes`), after checking that the result
/// fits in `limit` bytes and reserving it fallibly: sized by bytes, not items,
/// so `[8 MiB of bytes] * 100000` is refused as surely as `[0] * 2**40`.
fn repeat(
    items: &[Value],
    bytes: usize,
    n: usize,
    limit: usize,
) -> Result<Vec<Value>, RemoteError> {
    if items.is_empty() || n == 0 {
        return Ok(Vec::new());
    }
    super::size::check_result(bytes.saturating_mul(n).saturating_add(NODE), limit)?;
    let mut out = vec_with(items.len() * n)?;
    for _ in 0..n {
        out.extend_from_slice(items);
    }
    Ok(out)
}

/// Python's bound of an index argument to `list.index`: negative counts from the
/// end, clamped to `[0, len]`.
fn clamp_bound(v: Option<&Value>, default: usize, len: usize) -> Result<usize, RemoteError> {
    let Some(v) = v else {
        return Ok(default);
    };
    let i = match super::pykey::int_of(v) {
        // A big int clamps like any out-of-range bound.
        Some(i) => i.small().unwrap_or(if i.is_negative() {
            i128::MIN
        } else {
            i128::MAX
        }),
        None => {
            return Err(RemoteError::type_error(
                "slice indices must be integers or have an __index__ method",
            ))
        }
    };
    let len = len as i128;
    let j = if i < 0 {
        (i.saturating_add(len)).max(0)
    } else {
        i.min(len)
    };
    Ok(j as usize)
}

impl PyList {
    /// A list of `items`.
    pub fn new(items: Vec<Value>) -> PyList {
        PyList {
            bytes: values_bytes(&items),
            items,
        }
    }

    /// `list(iterable=())`, as the `create` arguments carry it; a proxy of a
    /// list, dict or Array gives that object's current items (keys).
    fn from_args(cx: &Context<'_>, mut args: CallArgs) -> Result<PyList, RemoteError> {
        if let Some(v) = args.args.first_mut().filter(|v| matches!(v, Value::Ref(_))) {
            *v = deref(cx, std::mem::take(v))?;
        }
        PyList::from_values(args, cx.max_result_bytes())
    }

    /// `list(iterable=())` of plain values; a str or bytes expands into items
    /// of at most `limit` bytes.
    fn from_values(args: CallArgs, limit: usize) -> Result<PyList, RemoteError> {
        if !args.kwargs.is_empty() {
            return Err(RemoteError::type_error("list() takes no keyword arguments"));
        }
        if args.args.len() > 1 {
            return Err(RemoteError::type_error(format!(
                "list expected at most 1 argument, got {}",
                args.args.len()
            )));
        }
        match args.args.into_iter().next() {
            Some(v) => Ok(PyList::new(iterate(v, limit)?)),
            None => Ok(PyList::default()),
        }
    }

    fn get_item(&self, cx: &Context<'_>, key: &Value) -> Result<Value, RemoteError> {
        if let Value::Slice(s) = key {
            let span = Span::new(s, self.items.len())?;
            let bytes = if span.len == self.items.len() {
                self.bytes
            } else {
                values_bytes(span.positions().map(|p| &self.items[p]))
            };
            cx.check_result(NODE + bytes)?;
            return Ok(Value::List(
                span.positions().map(|p| self.items[p].clone()).collect(),
            ));
        }
        let i = int_index(key).ok_or_else(|| indices_type_error(key))??;
        resolve(i, self.items.len())
            .map(|p| self.items[p].clone())
            .ok_or_else(|| index_error("list index out of range"))
    }

    fn set_item(&mut self, cx: &Context<'_>, key: &Value, value: Value) -> Result<(), RemoteError> {
        let limit = cx.max_result_bytes();
        if let Value::Slice(s) = key {
            let span = Span::new(s, self.items.len())?;
            if let Some(range) = span.contiguous() {
                let new = items_of(deref(cx, value)?, limit)?
                    .map_err(|_| RemoteError::type_error("can only assign an iterable"))?;
                let (added, gone) = (values_bytes(&new), values_bytes(&self.items[range.clone()]));
                cx.check_growth(added.saturating_sub(gone))?;
                reserve(&mut self.items, new.len().saturating_sub(range.len()))?;
                self.items.splice(range, new);
                self.bytes = self.bytes - gone + added;
                return Ok(());
            }
            let new = items_of(deref(cx, value)?, limit)?
                .map_err(|_| RemoteError::type_error("must assign iterable to extended slice"))?;
            if new.len() != span.len {
                return Err(RemoteError::value_error(format!(
                    "attempt to assign sequence of size {} to extended slice of size {}",
                    new.len(),
                    span.len
                )));
            }
            let added = values_bytes(&new);
            let gone = values_bytes(span.positions().map(|p| &self.items[p]));
            cx.check_growth(added.saturating_sub(gone))?;
            for (p, v) in span.positions().zip(new) {
                self.items[p] = v;
            }
            self.bytes = self.bytes - gone + added;
            return Ok(());
        }
        let i = int_index(key).ok_or_else(|| indices_type_error(key))??;
        let p = resolve(i, self.items.len())
            .ok_or_else(|| index_error("list assignment index out of range"))?;
        let (added, gone) = (value_bytes(&value), value_bytes(&self.items[p]));
        cx.check_growth(added.saturating_sub(gone))?;
        self.items[p] = value;
        self.bytes = self.bytes - gone + added;
        Ok(())
    }

    fn del_item(&mut self, key: &Value) -> Result<(), RemoteError> {
        if let Value::Slice(s) = key {
            let span = Span::new(s, self.items.len())?;
            self.bytes -= values_bytes(span.positions().map(|p| &self.items[p]));
            delete_span(&mut self.items, &span);
            return Ok(());
        }
        let i = int_index(key).ok_or_else(|| indices_type_error(key))??;
        let p = resolve(i, self.items.len())
            .ok_or_else(|| index_error("list assignment index out of range"))?;
        self.take(p);
        Ok(())
    }

    /// Removes and returns the item at `p`.
    fn take(&mut self, p: usize) -> Value {
        let v = self.items.remove(p);
        self.bytes -= value_bytes(&v);
        v
    }

    /// Adds `v` at `p`, if the server may hold it.
    fn put(&mut self, cx: &Context<'_>, p: usize, v: Value) -> Result<(), RemoteError> {
        let b = value_bytes(&v);
        cx.check_growth(b)?;
        reserve(&mut self.items, 1)?;
        self.items.insert(p, v);
        self.bytes += b;
        Ok(())
    }

    /// `extend`: the items of an iterable, or this list's own items again when
    /// the argument is a proxy of this list (`l.extend(l)`, `l += l`), or the
    /// current items of another list, dict or Array a proxy refers to.
    fn extend(&mut self, cx: &Context<'_>, arg: Value) -> Result<(), RemoteError> {
        if is_self(cx, &arg) {
            cx.check_result(self.bytes.saturating_mul(2).saturating_add(NODE))?;
            cx.check_growth(self.bytes)?;
            let n = self.items.len();
            reserve(&mut self.items, n)?;
            self.items.extend_from_within(..);
            self.bytes *= 2;
            return Ok(());
        }
        let new = iterate(deref(cx, arg)?, cx.max_result_bytes())?;
        let added = values_bytes(&new);
        cx.check_growth(added)?;
        reserve(&mut self.items, new.len())?;
        self.items.extend(new);
        self.bytes += added;
        Ok(())
    }

    /// `l *= n`, in place: checked against the result limit and the held-bytes
    /// cap, and reserved, before anything changes.
    fn repeat_in_place(&mut self, cx: &Context<'_>, n: usize) -> Result<(), RemoteError> {
        if n == 0 {
            self.items.clear();
            self.bytes = 0;
            return Ok(());
        }
        if n == 1 || self.items.is_empty() {
            return Ok(());
        }
        cx.check_result(self.bytes.saturating_mul(n).saturating_add(NODE))?;
        let more = self.bytes.saturating_mul(n - 1);
        cx.check_growth(more)?;
        let len = self.items.len();
        reserve(&mut self.items, len * (n - 1))?;
        for _ in 1..n {
            self.items.extend_from_within(..len);
        }
        self.bytes += more;
        Ok(())
    }

    /// `self + other`, where `other` may be a proxy of this list (`l + l`) or
    /// of another list (its current items).
    fn concat(&self, cx: &Context<'_>, other: &Value) -> Result<Value, RemoteError> {
        let read;
        let (other, other_bytes) = match other.resolved() {
            v if is_self(cx, v) => (&self.items[..], self.bytes),
            Value::List(o) => (&o[..], values_bytes(o)),
            Value::Ref(t) => {
                read = match cx.snapshot(t) {
                    Ok(v @ Value::List(_)) => v,
                    Err(e) if e.kind != "TypeError" => return Err(e),
                    _ => {
                        return Err(RemoteError::type_error(format!(
                            "can only concatenate list (not \"{}\") to list",
                            crate::proto::codec::pickle::proxy_type(&t.typeid)
                        )))
                    }
                };
                let Value::List(o) = &read else {
                    unreachable!("a list")
                };
                (&o[..], values_bytes(o))
            }
            other => {
                return Err(RemoteError::type_error(format!(
                    "can only concatenate list (not \"{}\") to list",
                    other.type_name()
                )))
            }
        };
        cx.check_result(NODE + self.bytes.saturating_add(other_bytes))?;
        let mut out = vec_with(self.items.len() + other.len())?;
        out.extend_from_slice(&self.items);
        out.extend_from_slice(other);
        Ok(Value::List(out))
    }

    fn index(&self, a: &[Value]) -> Result<Value, RemoteError> {
        let len = self.items.len();
        let start = clamp_bound(a.get(1), 0, len)?;
        let stop = clamp_bound(a.get(2), len, len)?;
        (start..stop.max(start))
            .find(|&i| py_eq(&self.items[i], &a[0]))
            .map(|i| Value::Int(i as i64))
            .ok_or_else(|| RemoteError::value_error(format!("{} is not in list", a[0])))
    }

    fn sort(&mut self, mut args: CallArgs) -> Result<(), RemoteError> {
        if !args.args.is_empty() {
            return Err(RemoteError::type_error(
                "sort() takes no positional arguments",
            ));
        }
        args.check("sort", 0, &["key", "reverse"])?;
        let key = args.take(usize::MAX, "key").filter(|k| *k != Value::None);
        let reverse = match args.take(usize::MAX, "reverse") {
            None => false,
            Some(v) => int_arg(&v)? != 0,
        };
        let Some(key) = key else {
            return py_sort(&mut self.items, reverse);
        };
        // A pure builtin is interpreted; nothing else can run here.
        let mut keys = super::size::vec_with(self.items.len())?;
        for item in &self.items {
            match crate::proto::value::pure::apply(&key, item, super::pykey::py_eq) {
                Some(Ok(k)) => keys.push(k),
                Some(Err((kind, msg))) => return Err(RemoteError::new(kind, msg)),
                None => {
                    return Err(RemoteError::type_error(format!(
                        "sort(key={key}) is not supported on a shared list: only str.lower, \
                         str.upper, str.casefold, len, abs and operator.itemgetter(...) are \
                         interpreted (a key function cannot run on the server)"
                    )))
                }
            }
        }
        super::pykey::py_sort_keyed(&mut self.items, keys, reverse)
    }
}

impl SharedObject for PyList {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        if method == "sort" {
            self.sort(args)?;
            return Ok(Value::None.into());
        }
        let (min, max) = match method {
            "__len__" | "__reversed__" | "reverse" => (0, 0),
            "pop" => (0, 1),
            "__setitem__" | "insert" => (2, 2),
            "index" => (1, 3),
            _ => (1, 1),
        };
        let mut a = positional("list", method, args, min, max)?;
        let v = match method {
            "__add__" => self.concat(cx, &a[0])?,
            "__contains__" => Value::Bool(self.items.iter().any(|x| py_eq(x, &a[0]))),
            "__delitem__" => {
                self.del_item(&a[0])?;
                Value::None
            }
            "__getitem__" => self.get_item(cx, &a[0])?,
            "__len__" => Value::Int(self.items.len() as i64),
            "__mul__" | "__rmul__" => {
                let n = repeat_count(&a[0])?;
                let limit = cx.max_result_bytes();
                Value::List(repeat(&self.items, self.bytes, n, limit)?)
            }
            "__imul__" => {
                self.repeat_in_place(cx, repeat_count(&a[0])?)?;
                Value::None
            }
            "__reversed__" => {
                cx.check_result(NODE + self.bytes)?;
                Value::List(self.items.iter().rev().cloned().collect())
            }
            "__setitem__" => {
                let value = a.pop().expect("two arguments");
                self.set_item(cx, &a[0], value)?;
                Value::None
            }
            "append" => {
                let end = self.items.len();
                self.put(cx, end, a.pop().expect("one argument"))?;
                Value::None
            }
            "count" => Value::Int(self.items.iter().filter(|x| py_eq(x, &a[0])).count() as i64),
            "extend" => {
                self.extend(cx, a.pop().expect("one argument"))?;
                Value::None
            }
            "index" => self.index(&a)?,
            "insert" => {
                let value = a.pop().expect("two arguments");
                let i = int_arg(&a[0])?;
                let len = self.items.len() as i64;
                let p = if i < 0 { (i + len).max(0) } else { i.min(len) };
                self.put(cx, p as usize, value)?;
                Value::None
            }
            "pop" => {
                let i = match a.first() {
                    Some(v) => int_arg(v)?,
                    None => -1,
                };
                if self.items.is_empty() {
                    return Err(index_error("pop from empty list"));
                }
                let p = resolve(i, self.items.len())
                    .ok_or_else(|| index_error("pop index out of range"))?;
                self.take(p)
            }
            "remove" => {
                let p = self
                    .items
                    .iter()
                    .position(|x| py_eq(x, &a[0]))
                    .ok_or_else(|| RemoteError::value_error("list.remove(x): x not in list"))?;
                self.take(p);
                Value::None
            }
            "reverse" => {
                self.items.reverse();
                Value::None
            }
            other => {
                return Err(RemoteError::new(
                    "AttributeError",
                    format!("'list' object has no attribute '{other}'"),
                ))
            }
        };
        Ok(v.into())
    }

    fn repr(&self) -> Option<String> {
        Some(Value::List(self.items.clone()).to_string())
    }

    fn get_value(&self) -> Result<Value, RemoteError> {
        Ok(Value::List(self.items.clone()))
    }

    fn visit_refs(&self, f: &mut dyn FnMut(ObjectId)) {
        self.items
            .iter()
            .for_each(|v| v.visit_refs(&mut |t| f(t.id)));
    }

    fn held_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl PyList {
        fn from_args_for_test(args: CallArgs) -> Result<PyList, RemoteError> {
            PyList::from_values(args, 1 << 30)
        }
    }

    #[test]
    fn from_args_takes_any_iterable() {
        let l =
            PyList::from_args_for_test(CallArgs::positional(vec![Value::Tuple(vec![Value::Int(
                1,
            )])]))
            .unwrap();
        assert_eq!(l.items, [Value::Int(1)]);
        let e = PyList::from_args_for_test(CallArgs::positional(vec![Value::Int(1)])).unwrap_err();
        assert_eq!(e.message, "'int' object is not iterable");
        let e = PyList::from_args_for_test(CallArgs::positional(vec![Value::None, Value::None]))
            .unwrap_err();
        assert_eq!(e.message, "list expected at most 1 argument, got 2");
    }

    #[test]
    fn slices_get_set_delete() {
        let mut core = crate::server::context::Core::new();
        let cx = core.context(None);
        let mut l = PyList::new((0..6).map(Value::Int).collect());
        let s = |start, stop, step| Value::Slice(crate::proto::Slice { start, stop, step });
        assert_eq!(
            l.get_item(&cx, &s(None, None, Some(-2))).unwrap(),
            Value::List(vec![Value::Int(5), Value::Int(3), Value::Int(1)])
        );
        l.set_item(
            &cx,
            &s(Some(4), Some(1), None),
            Value::List(vec![Value::Int(9)]),
        )
        .unwrap();
        assert_eq!(l.items.len(), 7);
        assert_eq!(l.items[4], Value::Int(9));
        let e = l
            .set_item(
                &cx,
                &s(None, None, Some(2)),
                Value::List(vec![Value::Int(1)]),
            )
            .unwrap_err();
        assert_eq!(
            e.message,
            "attempt to assign sequence of size 1 to extended slice of size 4"
        );
        l.del_item(&s(None, None, Some(2))).unwrap();
        assert_eq!(l.items.len(), 3);
        assert_eq!(l.bytes, values_bytes(&l.items), "the running total follows");
    }

    #[test]
    fn the_running_total_follows_every_change() {
        let mut core = crate::server::context::Core::new();
        let mut cx = core.context(None);
        let mut l = PyList::default();
        let b = |n: usize| Value::Bytes(vec![1; n]);
        let sl = |start, stop| {
            Value::Slice(crate::proto::Slice {
                start,
                stop,
                step: None,
            })
        };
        let steps: Vec<(&str, Vec<Value>)> = vec![
            ("append", vec![b(10)]),
            (
                "extend",
                vec![Value::List(vec![b(3), Value::from("xyz"), b(7)])],
            ),
            ("extend", vec![Value::from("ab")]),
            ("insert", vec![Value::Int(1), b(100)]),
            ("__setitem__", vec![Value::Int(0), b(1)]),
            (
                "__setitem__",
                vec![sl(Some(1), Some(3)), Value::List(vec![b(50)])],
            ),
            ("__imul__", vec![Value::Int(3)]),
            ("pop", vec![Value::Int(2)]),
            ("remove", vec![b(7)]),
            ("__delitem__", vec![sl(Some(0), Some(2))]),
            ("__delitem__", vec![Value::Int(-1)]),
            ("reverse", vec![]),
            ("__imul__", vec![Value::Int(0)]),
            ("append", vec![Value::List(vec![b(5)])]),
        ];
        for (method, args) in steps {
            l.call(&mut cx, method, CallArgs::positional(args)).unwrap();
            assert_eq!(l.bytes, values_bytes(&l.items), "after {method}");
            assert_eq!(l.held_bytes(), l.bytes);
        }
    }

    #[test]
    fn index_bounds_like_python() {
        let l = PyList::new(vec![Value::Int(1), Value::Int(2), Value::Int(1)]);
        assert_eq!(
            l.index(&[Value::Int(1), Value::Int(1)]).unwrap(),
            Value::Int(2)
        );
        assert_eq!(
            l.index(&[Value::Float(2.0), Value::Int(-2)]).unwrap(),
            Value::Int(1)
        );
        let e = l
            .index(&[Value::Int(1), Value::Int(1), Value::Int(2)])
            .unwrap_err();
        assert_eq!(
            (e.kind.as_str(), e.message.as_str()),
            ("ValueError", "1 is not in list")
        );
        let e = l.index(&[Value::Str("x".into())]).unwrap_err();
        assert_eq!(e.message, "'x' is not in list");
    }
}
