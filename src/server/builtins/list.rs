//! The `list` typeid: a Python list behind CPython's `ListProxy`, with its full
//! method set, Python's index and slice rules, `sort` with Python's ordering, and
//! CPython's error kinds and messages.
//!
//! Where CPython's manager hands back something a client cannot use, this type
//! returns what a user expects instead: `__reversed__` returns the reversed items
//! as a list (CPython pickles a `list_reverseiterator` over a copy), and
//! `__imul__` returns `None` (CPython sends the whole list back, which
//! `ListProxy.__imul__` throws away). `sort(key=…)` is refused with a `TypeError`:
//! a function cannot travel to the server (CPython fails to pickle it too).

use super::pykey::{py_eq, py_sort};
use super::pyseq::{delete_span, int_arg, int_index, items_of, iterate, positional, resolve, Span};
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

/// The most items a repetition (`l * n`, `l *= n`) may produce; beyond it the
/// call fails with `MemoryError` instead of exhausting the server.
pub(crate) const MAX_REPEAT_ITEMS: usize = 1 << 26;

/// Registers `list`.
pub(crate) fn register(server: &mut Server) {
    server.register(
        TypeSpec::new("list", EXPOSED, |_, args| {
            Ok(Box::new(PyList::from_args(args)?))
        })
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

/// `list * n` with Python's rules: a negative count gives an empty list.
fn repeat(items: &[Value], n: &Value) -> Result<Vec<Value>, RemoteError> {
    let n = match int_arg(n) {
        Err(e) if e.kind == "OverflowError" => {
            return Err(RemoteError::new(
                "OverflowError",
                "cannot fit 'int' into an index-sized integer",
            ))
        }
        n => n?.max(0) as usize,
    };
    if items.len().saturating_mul(n) > MAX_REPEAT_ITEMS {
        return Err(RemoteError::new("MemoryError", ""));
    }
    Ok(items
        .iter()
        .cloned()
        .cycle()
        .take(items.len() * n)
        .collect())
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
        PyList { items }
    }

    /// `list(iterable=())`, as the `create` arguments carry it.
    fn from_args(args: CallArgs) -> Result<PyList, RemoteError> {
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
            Some(v) => Ok(PyList::new(iterate(v)?)),
            None => Ok(PyList::default()),
        }
    }

    fn get_item(&self, key: &Value) -> Result<Value, RemoteError> {
        if let Value::Slice(s) = key {
            let span = Span::new(s, self.items.len())?;
            return Ok(Value::List(
                span.positions().map(|p| self.items[p].clone()).collect(),
            ));
        }
        let i = int_index(key).ok_or_else(|| indices_type_error(key))??;
        resolve(i, self.items.len())
            .map(|p| self.items[p].clone())
            .ok_or_else(|| index_error("list index out of range"))
    }

    fn set_item(&mut self, key: &Value, value: Value) -> Result<(), RemoteError> {
        if let Value::Slice(s) = key {
            let span = Span::new(s, self.items.len())?;
            if let Some(range) = span.contiguous() {
                let new = items_of(value)
                    .map_err(|_| RemoteError::type_error("can only assign an iterable"))?;
                self.items.splice(range, new);
                return Ok(());
            }
            let new = items_of(value)
                .map_err(|_| RemoteError::type_error("must assign iterable to extended slice"))?;
            if new.len() != span.len {
                return Err(RemoteError::value_error(format!(
                    "attempt to assign sequence of size {} to extended slice of size {}",
                    new.len(),
                    span.len
                )));
            }
            for (p, v) in span.positions().zip(new) {
                self.items[p] = v;
            }
            return Ok(());
        }
        let i = int_index(key).ok_or_else(|| indices_type_error(key))??;
        let p = resolve(i, self.items.len())
            .ok_or_else(|| index_error("list assignment index out of range"))?;
        self.items[p] = value;
        Ok(())
    }

    fn del_item(&mut self, key: &Value) -> Result<(), RemoteError> {
        if let Value::Slice(s) = key {
            let span = Span::new(s, self.items.len())?;
            delete_span(&mut self.items, &span);
            return Ok(());
        }
        let i = int_index(key).ok_or_else(|| indices_type_error(key))??;
        let p = resolve(i, self.items.len())
            .ok_or_else(|| index_error("list assignment index out of range"))?;
        self.items.remove(p);
        Ok(())
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
        if let Some(k) = args.take(usize::MAX, "key") {
            if k != Value::None {
                return Err(RemoteError::type_error(
                    "sort(key=...) is not supported on a shared list: a key function cannot be sent to the server",
                ));
            }
        }
        let reverse = match args.take(usize::MAX, "reverse") {
            None => false,
            Some(v) => int_arg(&v)? != 0,
        };
        py_sort(&mut self.items, reverse)
    }
}

impl SharedObject for PyList {
    fn call(&mut self, _cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
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
            "__add__" => match &a[0] {
                Value::List(other) => {
                    let mut out = Vec::with_capacity(self.items.len() + other.len());
                    out.extend(self.items.iter().cloned());
                    out.extend(other.iter().cloned());
                    Value::List(out)
                }
                other => {
                    return Err(RemoteError::type_error(format!(
                        "can only concatenate list (not \"{}\") to list",
                        other.type_name()
                    )))
                }
            },
            "__contains__" => Value::Bool(self.items.iter().any(|x| py_eq(x, &a[0]))),
            "__delitem__" => {
                self.del_item(&a[0])?;
                Value::None
            }
            "__getitem__" => self.get_item(&a[0])?,
            "__len__" => Value::Int(self.items.len() as i64),
            "__mul__" | "__rmul__" => Value::List(repeat(&self.items, &a[0])?),
            "__imul__" => {
                self.items = repeat(&self.items, &a[0])?;
                Value::None
            }
            "__reversed__" => Value::List(self.items.iter().rev().cloned().collect()),
            "__setitem__" => {
                let value = a.pop().expect("two arguments");
                self.set_item(&a[0], value)?;
                Value::None
            }
            "append" => {
                self.items.push(a.pop().expect("one argument"));
                Value::None
            }
            "count" => Value::Int(self.items.iter().filter(|x| py_eq(x, &a[0])).count() as i64),
            "extend" => {
                let new = iterate(a.pop().expect("one argument"))?;
                self.items.extend(new);
                Value::None
            }
            "index" => self.index(&a)?,
            "insert" => {
                let value = a.pop().expect("two arguments");
                let i = int_arg(&a[0])?;
                let len = self.items.len() as i64;
                let p = if i < 0 { (i + len).max(0) } else { i.min(len) };
                self.items.insert(p as usize, value);
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
                self.items.remove(p)
            }
            "remove" => {
                let p = self
                    .items
                    .iter()
                    .position(|x| py_eq(x, &a[0]))
                    .ok_or_else(|| RemoteError::value_error("list.remove(x): x not in list"))?;
                self.items.remove(p);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_args_takes_any_iterable() {
        let l = PyList::from_args(CallArgs::positional(vec![Value::Tuple(vec![Value::Int(
            1,
        )])]))
        .unwrap();
        assert_eq!(l.items, [Value::Int(1)]);
        let e = PyList::from_args(CallArgs::positional(vec![Value::Int(1)])).unwrap_err();
        assert_eq!(e.message, "'int' object is not iterable");
        let e =
            PyList::from_args(CallArgs::positional(vec![Value::None, Value::None])).unwrap_err();
        assert_eq!(e.message, "list expected at most 1 argument, got 2");
    }

    #[test]
    fn slices_get_set_delete() {
        let mut l = PyList::new((0..6).map(Value::Int).collect());
        let s = |start, stop, step| Value::Slice(crate::proto::Slice { start, stop, step });
        assert_eq!(
            l.get_item(&s(None, None, Some(-2))).unwrap(),
            Value::List(vec![Value::Int(5), Value::Int(3), Value::Int(1)])
        );
        l.set_item(&s(Some(4), Some(1), None), Value::List(vec![Value::Int(9)]))
            .unwrap();
        assert_eq!(l.items.len(), 7);
        assert_eq!(l.items[4], Value::Int(9));
        let e = l
            .set_item(&s(None, None, Some(2)), Value::List(vec![Value::Int(1)]))
            .unwrap_err();
        assert_eq!(
            e.message,
            "attempt to assign sequence of size 1 to extended slice of size 4"
        );
        l.del_item(&s(None, None, Some(2))).unwrap();
        assert_eq!(l.items.len(), 3);
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
