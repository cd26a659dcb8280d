//! The `Namespace` typeid: CPython's `managers.Namespace` behind
//! `NamespaceProxy` — attributes given as keyword arguments at creation, read,
//! set and deleted with `__getattribute__`, `__setattr__` and `__delattr__`.
//!
//! `__getattribute__('__dict__')` returns the attributes as a dict, as Python's
//! would. `_getvalue()` returns a `Namespace` instance (an opaque value whose
//! state is that dict), as CPython's server does.

use super::pykey::PyKey;
use super::pymap::PyMap;
use super::pyseq::positional;
use crate::proto::{ObjectId, RemoteError, Value};
use crate::server::{CallArgs, CallResult, Context, Server, SharedObject, TypeSpec};

/// The methods `NamespaceProxy` exposes.
pub(crate) const EXPOSED: &[&str] = &["__getattribute__", "__setattr__", "__delattr__"];

/// Registers `Namespace`.
pub(crate) fn register(server: &mut Server) {
    server.register(
        TypeSpec::new("Namespace", EXPOSED, |_, args| {
            Ok(Box::new(Namespace::from_args(args)?))
        })
        .reads_only(&["__getattribute__"]),
    );
}

/// A shared namespace: named attributes in insertion order.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    attrs: PyMap,
}

fn no_attribute(name: &str) -> RemoteError {
    RemoteError::new(
        "AttributeError",
        format!("'Namespace' object has no attribute '{name}'"),
    )
}

fn attr_name(v: Value) -> Result<String, RemoteError> {
    v.into_str().map_err(|other| {
        RemoteError::type_error(format!(
            "attribute name must be string, not '{}'",
            other.type_name()
        ))
    })
}

fn key(name: &str) -> PyKey {
    PyKey::new(Value::Str(name.to_owned())).expect("a str is hashable")
}

impl Namespace {
    /// `Namespace(**kwds)`: keyword arguments only.
    fn from_args(args: CallArgs) -> Result<Namespace, RemoteError> {
        if !args.args.is_empty() {
            return Err(RemoteError::type_error(format!(
                "Namespace.__init__() takes 1 positional argument but {} were given",
                args.args.len() + 1
            )));
        }
        let mut ns = Namespace::default();
        for (k, v) in args.kwargs {
            ns.attrs.insert(key(&k), v);
        }
        Ok(ns)
    }
}

impl SharedObject for Namespace {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        let n = if method == "__setattr__" { 2 } else { 1 };
        let mut a = positional("Namespace", method, args, n, n)?;
        let value = if n == 2 { a.pop() } else { None };
        let name = attr_name(a.pop().expect("arity checked"))?;
        let v = match method {
            "__getattribute__" if name == "__dict__" => {
                cx.check_result(self.attrs.sizes().dict)?;
                self.attrs.to_value()
            }
            "__getattribute__" => self
                .attrs
                .get(&key(&name))
                .cloned()
                .ok_or_else(|| no_attribute(&name))?,
            "__setattr__" => {
                let (k, v) = (key(&name), value.expect("arity checked"));
                if cx.held_bytes_capped() {
                    cx.check_growth(self.attrs.growth(&k, &v))?;
                }
                self.attrs.try_reserve(1)?;
                self.attrs.insert(k, v);
                Value::None
            }
            "__delattr__" => {
                self.attrs
                    .remove(&key(&name))
                    .ok_or_else(|| no_attribute(&name))?;
                Value::None
            }
            other => return Err(no_attribute(other)),
        };
        Ok(v.into())
    }

    /// CPython's `Namespace.__repr__`: public attributes as `name=repr`, sorted.
    fn repr(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .attrs
            .iter()
            .filter_map(|(k, v)| match k.resolved() {
                Value::Str(name) if !name.starts_with('_') => Some(format!("{name}={v}")),
                _ => None,
            })
            .collect();
        parts.sort();
        Some(format!("Namespace({})", parts.join(", ")))
    }

    /// A `multiprocessing.managers.Namespace` instance with the attributes as
    /// its state, as CPython's server returns it.
    fn get_value(&self) -> Result<Value, RemoteError> {
        Ok(Value::opaque_instance(
            "multiprocessing.managers",
            "Namespace",
            self.attrs.to_value(),
        ))
    }

    fn visit_refs(&self, f: &mut dyn FnMut(ObjectId)) {
        self.attrs
            .iter()
            .for_each(|(_, v)| v.visit_refs(&mut |t| f(t.id)));
    }

    fn held_bytes(&self) -> usize {
        self.attrs.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_sorts_and_hides_private_names() {
        let ns = Namespace::from_args(CallArgs {
            args: vec![],
            kwargs: vec![
                ("b".into(), Value::Int(2)),
                ("a".into(), Value::from("x")),
                ("_c".into(), Value::Int(3)),
            ],
        })
        .unwrap();
        assert_eq!(ns.repr().unwrap(), "Namespace(a='x', b=2)");
        let e = Namespace::from_args(CallArgs::positional(vec![Value::Int(1)])).unwrap_err();
        assert_eq!(
            e.message,
            "Namespace.__init__() takes 1 positional argument but 2 were given"
        );
    }
}
