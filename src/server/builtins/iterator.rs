//! The `Iterator` typeid behind CPython's `IteratorProxy`: what a method in a
//! method_to_typeid map returns when it maps to `Iterator` (`dict.__iter__`). It is
//! built from that one value (a list of keys, any iterable) and yields its items.
//!
//! `__next__` raises `StopIteration` at the end. CPython's manager wraps the
//! object `__iter__` returned (a `dict_keyiterator`), which has no `send`, `throw`
//! or `close`, so those calls fail there; here they behave as on a generator that
//! yields the items: `send(value)` advances like `__next__` (the value is
//! dropped), `throw(kind, message=None)` finishes the iterator and raises that
//! error kind, `close()` finishes it.

use std::collections::VecDeque;

use super::pyseq::{iterate, positional};
use super::size::{value_bytes, values_bytes};
use crate::proto::{ObjectId, RemoteError, Value};
use crate::server::{CallArgs, CallResult, Context, Server, SharedObject, TypeSpec};

/// The methods `IteratorProxy` exposes.
pub(crate) const EXPOSED: &[&str] = &["__next__", "send", "throw", "close"];

/// Registers `Iterator`.
pub(crate) fn register(server: &mut Server) {
    server.register(TypeSpec::new("Iterator", EXPOSED, |cx, args| {
        Ok(Box::new(PyIterator::from_args(
            args,
            cx.max_result_bytes(),
        )?))
    }));
}

/// A shared iterator over a snapshot of items.
#[derive(Debug, Clone, Default)]
pub struct PyIterator {
    rest: VecDeque<Value>,
    /// Estimated bytes of `rest`.
    bytes: usize,
}

fn stop() -> RemoteError {
    RemoteError::new("StopIteration", "")
}

impl PyIterator {
    /// An iterator over `items`.
    pub fn new(items: Vec<Value>) -> PyIterator {
        PyIterator {
            bytes: values_bytes(&items),
            rest: items.into(),
        }
    }

    /// Built from exactly one iterable argument, as CPython builds a typeid
    /// registered without a callable; a str or bytes expands into items of at
    /// most `limit` bytes.
    fn from_args(args: CallArgs, limit: usize) -> Result<PyIterator, RemoteError> {
        let a = positional("Iterator", "", args, 1, 1)?;
        Ok(PyIterator::new(iterate(
            a.into_iter().next().expect("one argument"),
            limit,
        )?))
    }

    fn next(&mut self) -> CallResult {
        let v = self.rest.pop_front().ok_or_else(stop)?;
        self.bytes -= value_bytes(&v);
        Ok(v.into())
    }

    fn finish(&mut self) {
        self.rest.clear();
        self.bytes = 0;
    }
}

impl SharedObject for PyIterator {
    fn call(&mut self, _cx: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
        match method {
            "__next__" => {
                positional("Iterator", "__next__", args, 0, 0)?;
                self.next()
            }
            "send" => {
                positional("Iterator", "send", args, 1, 1)?;
                self.next()
            }
            "throw" => {
                let a = positional("Iterator", "throw", args, 1, 3)?;
                let kind = match &a[0] {
                    Value::Str(s) => s.clone(),
                    other => {
                        return Err(RemoteError::type_error(format!(
                            "throw() expects an exception kind as a str, not '{}'",
                            other.type_name()
                        )))
                    }
                };
                let message = match a.get(1) {
                    None | Some(Value::None) => String::new(),
                    Some(Value::Str(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                self.finish();
                Err(RemoteError::new(kind, message))
            }
            "close" => {
                positional("Iterator", "close", args, 0, 0)?;
                self.finish();
                Ok(Value::None.into())
            }
            other => Err(RemoteError::new(
                "AttributeError",
                format!("'Iterator' object has no attribute '{other}'"),
            )),
        }
    }

    /// The items not yet taken, as a list.
    fn get_value(&self) -> Result<Value, RemoteError> {
        Ok(Value::List(self.rest.iter().cloned().collect()))
    }

    fn visit_refs(&self, f: &mut dyn FnMut(ObjectId)) {
        self.rest
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

    #[test]
    fn built_from_one_iterable() {
        let it = PyIterator::from_args(
            CallArgs::positional(vec![Value::Tuple(vec![Value::Int(1)])]),
            1 << 20,
        )
        .unwrap();
        assert_eq!(it.get_value().unwrap(), Value::List(vec![Value::Int(1)]));
        assert!(PyIterator::from_args(CallArgs::positional(vec![]), 1 << 20).is_err());
        let e =
            PyIterator::from_args(CallArgs::positional(vec![Value::Int(3)]), 1 << 20).unwrap_err();
        assert_eq!(e.message, "'int' object is not iterable");
    }
}
