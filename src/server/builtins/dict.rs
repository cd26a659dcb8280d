//! The `dict` typeid: a Python dict behind CPython's `DictProxy`, with its full
//! method set, Python's key semantics ([`PyMap`]: hashable keys only,
//! `1 == 1.0 == True`, insertion order, O(1) lookups) and CPython's error kinds
//! and messages. `__iter__` is in method_to_typeid (→ `Iterator`), so iterating
//! a shared dict gives an `Iterator` proxy.
//!
//! What CPython's manager returns and what this type returns instead:
//! `keys()`, `values()` and `items()` return lists (CPython 3.11's server sends
//! lists too, as a view cannot be pickled); `__iter__` returns a snapshot of the
//! keys in an `Iterator` object that watches the dict's [`DictVersion`], so
//! changing the dict's size (or its keys) while iterating raises `RuntimeError`
//! as a live dict iterator does (see `iterator`).

use std::fmt::Write as _;

use std::rc::Rc;

use super::iterator::{DictVersion, PyIterator};
use super::pykey::PyKey;
use super::pymap::PyMap;
use super::pyseq::{deref, is_self, items_of, iterate, positional};
use super::size::value_bytes;
use crate::proto::{ObjectId, RemoteError, Value};
use crate::server::{CallArgs, CallResult, Context, Outcome, Server, SharedObject, TypeSpec};

/// The methods `DictProxy` exposes, in CPython's order.
pub(crate) const EXPOSED: &[&str] = &[
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__iter__",
    "__len__",
    "__setitem__",
    "clear",
    "copy",
    "get",
    "items",
    "keys",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "values",
];

/// Registers `dict`.
pub(crate) fn register(server: &mut Server) {
    server.register(
        TypeSpec::new("dict", EXPOSED, |cx, args| {
            Ok(Box::new(PyDict::from_args(cx, args)?))
        })
        .read_by_value()
        .method_to_typeid("__iter__", "Iterator")
        .reads_only(&[
            "__contains__",
            "__getitem__",
            "__iter__",
            "__len__",
            "copy",
            "get",
            "items",
            "keys",
            "values",
        ]),
    );
}

/// A shared Python dict.
#[derive(Debug, Default)]
pub struct PyDict {
    map: PyMap,
    /// What its iterators watch; made by the first `__iter__`.
    version: Option<Rc<DictVersion>>,
}

/// Adds `other` (a dict, or an iterable of key/value pairs) and then `kwargs` to
/// `map`, as `dict.update` does; a str or bytes expands into items of at most
/// `limit` bytes.
pub(crate) fn update(
    map: &mut PyMap,
    other: Option<Value>,
    kwargs: Vec<(String, Value)>,
    limit: usize,
) -> Result<(), RemoteError> {
    // A Counter, OrderedDict or defaultdict is a mapping of its entries.
    let other = match other.as_ref().and_then(Value::as_opaque) {
        Some(o) => o.mapping_entries().map(Value::Dict).or(other),
        None => other,
    };
    match other {
        None => {}
        Some(pairs) if matches!(pairs.resolved(), Value::Dict(_)) => {
            let pairs = pairs.into_entries().expect("a dict");
            map.try_reserve(pairs.len())?;
            for (k, v) in pairs {
                map.insert(PyKey::new(k)?, v);
            }
        }
        Some(v) => {
            for (i, item) in iterate(v, limit)?.into_iter().enumerate() {
                let pair = items_of(item, limit)?.map_err(|_| {
                    RemoteError::type_error(format!(
                        "cannot convert dictionary update sequence element #{i} to a sequence"
                    ))
                })?;
                if pair.len() != 2 {
                    return Err(RemoteError::value_error(format!(
                        "dictionary update sequence element #{i} has length {}; 2 is required",
                        pair.len()
                    )));
                }
                let mut pair = pair.into_iter();
                let (k, v) = (pair.next().expect("two"), pair.next().expect("two"));
                map.insert(PyKey::new(k)?, v);
            }
        }
    }
    for (k, v) in kwargs {
        map.insert(PyKey::new(Value::Str(k))?, v);
    }
    Ok(())
}

impl PyDict {
    /// `dict(mapping_or_pairs=(), **kwargs)`, as the `create` arguments carry it.
    /// A proxy of a dict, list or Array gives that object's current items.
    fn from_args(cx: &Context<'_>, mut args: CallArgs) -> Result<PyDict, RemoteError> {
        if let Some(v) = args.args.first_mut().filter(|v| matches!(v, Value::Ref(_))) {
            *v = deref(cx, std::mem::take(v))?;
        }
        PyDict::from_values(args, cx.max_result_bytes())
    }

    /// `dict(mapping_or_pairs=(), **kwargs)` of plain values.
    fn from_values(args: CallArgs, limit: usize) -> Result<PyDict, RemoteError> {
        if args.args.len() > 1 {
            return Err(RemoteError::type_error(format!(
                "dict expected at most 1 argument, got {}",
                args.args.len()
            )));
        }
        let mut d = PyDict::default();
        update(&mut d.map, args.args.into_iter().next(), args.kwargs, limit)?;
        Ok(d)
    }

    fn keys(&self) -> Vec<Value> {
        self.map.iter().map(|(k, _)| k.clone()).collect()
    }
}

impl SharedObject for PyDict {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        let before = self.map.len();
        let r = self.call_inner(cx, method, args);
        if let Some(v) = &self.version {
            let after = self.map.len();
            if after != before {
                v.changed(before, after);
            }
        }
        r
    }

    fn repr(&self) -> Option<String> {
        let mut s = String::from("{");
        for (i, (k, v)) in self.map.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(s, "{k}: {v}");
        }
        s.push('}');
        Some(s)
    }

    fn get_value(&self) -> Result<Value, RemoteError> {
        Ok(self.map.to_value())
    }

    fn visit_refs(&self, f: &mut dyn FnMut(ObjectId)) {
        for (k, v) in self.map.iter() {
            k.visit_refs(&mut |t| f(t.id));
            v.visit_refs(&mut |t| f(t.id));
        }
    }

    fn held_bytes(&self) -> usize {
        self.map.bytes()
    }
}

impl PyDict {
    /// Runs `method` (the version is brought up to date by the caller).
    fn call_inner(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        if method == "update" {
            if args.args.len() > 1 {
                return Err(RemoteError::type_error(format!(
                    "update expected at most 1 argument, got {}",
                    args.args.len()
                )));
            }
            // A proxy stands for its object's current value; this dict's
            // own proxy changes nothing (`d.update(d)`).
            let other = match args.args.into_iter().next() {
                Some(v) if is_self(cx, &v) => None,
                Some(v) => Some(deref(cx, v)?),
                None => None,
            };
            // At most what the arguments hold, keys counted twice.
            let more = other.iter().map(value_bytes).sum::<usize>()
                + args
                    .kwargs
                    .iter()
                    .map(|(k, v)| k.len() + value_bytes(v))
                    .sum::<usize>();
            cx.check_growth(more.saturating_mul(2))?;
            let limit = cx.max_result_bytes();
            update(&mut self.map, other, args.kwargs, limit)?;
            return Ok(Value::None.into());
        }
        let (min, max) = match method {
            "__iter__" | "__len__" | "clear" | "copy" | "items" | "keys" | "popitem" | "values" => {
                (0, 0)
            }
            "get" | "pop" | "setdefault" => (1, 2),
            "__setitem__" => (2, 2),
            _ => (1, 1),
        };
        let mut a = positional("dict", method, args, min, max)?;
        let default = if a.len() == 2 { a.pop() } else { None };
        if method == "pop" && self.map.len() == 0 {
            // CPython's dict.pop answers an empty dict before hashing the key.
            return match (default, a.pop()) {
                (Some(d), _) => Ok(d.into()),
                (None, Some(k)) => Err(RemoteError::key_error(k)),
                (None, None) => unreachable!("arity checked"),
            };
        }
        let key = match a.pop() {
            Some(k) => Some(PyKey::new(k)?),
            None => None,
        };
        let key = move || key.expect("arity checked");
        let v = match method {
            "__contains__" => Value::Bool(self.map.contains(&key())),
            "__delitem__" => {
                let k = key();
                if self.map.remove(&k).is_none() {
                    return Err(RemoteError::key_error(k.into_value()));
                }
                Value::None
            }
            "__getitem__" => {
                let k = key();
                match self.map.get(&k) {
                    Some(v) => v.clone(),
                    None => return Err(RemoteError::key_error(k.into_value())),
                }
            }
            "__iter__" => {
                cx.check_result(self.map.sizes().keys)?;
                let len = self.map.len();
                let version = self
                    .version
                    .get_or_insert_with(|| Rc::new(DictVersion::new(len)))
                    .clone();
                let it = PyIterator::over_dict(self.keys(), version);
                return Ok(Outcome::Object(Box::new(it)));
            }
            "keys" => {
                cx.check_result(self.map.sizes().keys)?;
                Value::List(self.keys())
            }
            "__len__" => Value::Int(self.map.len() as i64),
            "__setitem__" => {
                let (k, v) = (key(), default.expect("arity checked"));
                if cx.held_bytes_capped() {
                    cx.check_growth(self.map.growth(&k, &v))?;
                }
                self.map.try_reserve(1)?;
                self.map.insert(k, v);
                Value::None
            }
            "clear" => {
                self.map.clear();
                Value::None
            }
            "copy" => {
                cx.check_result(self.map.sizes().dict)?;
                self.map.to_value()
            }
            "get" => self
                .map
                .get(&key())
                .cloned()
                .unwrap_or(default.unwrap_or(Value::None)),
            "items" => {
                cx.check_result(self.map.sizes().items)?;
                Value::List(
                    self.map
                        .iter()
                        .map(|(k, v)| Value::Tuple(vec![k.clone(), v.clone()]))
                        .collect(),
                )
            }
            "pop" => {
                let k = key();
                match (self.map.remove(&k), default) {
                    (Some((_, v)), _) => v,
                    (None, Some(d)) => d,
                    (None, None) => return Err(RemoteError::key_error(k.into_value())),
                }
            }
            "popitem" => match self.map.pop_last() {
                Some((k, v)) => Value::Tuple(vec![k, v]),
                None => {
                    return Err(RemoteError::new(
                        "KeyError",
                        "popitem(): dictionary is empty",
                    ))
                }
            },
            "setdefault" => {
                let k = key();
                match self.map.get(&k) {
                    Some(v) => v.clone(),
                    None => {
                        let d = default.unwrap_or(Value::None);
                        if cx.held_bytes_capped() {
                            cx.check_growth(self.map.growth(&k, &d))?;
                        }
                        self.map.try_reserve(1)?;
                        self.map.insert(k, d.clone());
                        d
                    }
                }
            }
            "values" => {
                cx.check_result(self.map.sizes().values)?;
                Value::List(self.map.iter().map(|(_, v)| v.clone()).collect())
            }
            other => {
                return Err(RemoteError::new(
                    "AttributeError",
                    format!("'dict' object has no attribute '{other}'"),
                ))
            }
        };
        Ok(v.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl PyDict {
        fn from_args_for_test(args: CallArgs) -> Result<PyDict, RemoteError> {
            PyDict::from_values(args, 1 << 30)
        }
    }

    #[test]
    fn construct_from_mapping_pairs_and_keywords() {
        let d = PyDict::from_args_for_test(CallArgs {
            args: vec![Value::List(vec![Value::Tuple(vec![
                Value::Int(1),
                Value::from("a"),
            ])])],
            kwargs: vec![("z".into(), Value::Int(5))],
        })
        .unwrap();
        assert_eq!(d.map.len(), 2);
        assert_eq!(d.repr().unwrap(), "{1: 'a', 'z': 5}");
        let e =
            PyDict::from_args_for_test(CallArgs::positional(vec![Value::List(vec![Value::Int(
                1,
            )])]))
            .unwrap_err();
        assert_eq!(
            e.message,
            "cannot convert dictionary update sequence element #0 to a sequence"
        );
        let e = PyDict::from_args_for_test(CallArgs::positional(vec![Value::List(vec![
            Value::Tuple(vec![Value::Int(1); 3]),
        ])]))
        .unwrap_err();
        assert_eq!(
            e.message,
            "dictionary update sequence element #0 has length 3; 2 is required"
        );
        let e = PyDict::from_args_for_test(CallArgs::positional(vec![Value::Dict(vec![(
            Value::List(vec![]),
            Value::None,
        )])]))
        .unwrap_err();
        assert_eq!(e.message, "unhashable type: 'list'");
    }
}
