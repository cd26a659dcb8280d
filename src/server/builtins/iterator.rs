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
//!
//! An iterator made by `dict.__iter__` is invalidated as CPython's
//! `dict_keyiterator` is: it shares a [`DictVersion`] with its dict (one `Rc`
//! handed over when the dict builds it, so `__next__` reads two cells and looks
//! nothing up), and `__next__` raises `RuntimeError('dictionary changed size
//! during iteration')` once the dict's size differs from what it was when the
//! iterator was made (and keeps raising it, as CPython does), or
//! `RuntimeError('dictionary keys changed during iteration')` once a key was
//! added while the size came back to the same (a key deleted and another added:
//! the iterator is finished then, as CPython's drops its dict). CPython raises
//! the latter only when the walk over its entry table meets more entries than
//! it expected, which depends on the table's layout: later, or not at all (a
//! temporary key added and deleted again, a resize that compacts the table).
//! Here the first `__next__` after any key was added raises, whatever happened
//! since — deterministic, and within what Python documents ("may raise a
//! RuntimeError or fail to iterate over all entries"). Knowing exactly which
//! keys are new since the iterator was made would need an insertion stamp per
//! entry; the two counters keep the check O(1) with no per-entry cost. An
//! iterator that has raised `StopIteration` stays finished whatever the dict
//! does. Values stored under existing keys may change freely, as in CPython
//! (the iterator yields keys).

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

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

/// What a dict's iterators watch: its size and how many keys it has added,
/// updated by the dict after each change that alters its size.
#[derive(Debug, Default)]
pub(crate) struct DictVersion {
    len: Cell<usize>,
    added: Cell<u64>,
}

impl DictVersion {
    /// The version of a dict of `len` items.
    pub(crate) fn new(len: usize) -> DictVersion {
        DictVersion {
            len: Cell::new(len),
            added: Cell::new(0),
        }
    }

    /// The dict went from `before` to `after` items in one call (every dict
    /// method only adds keys or only removes them, so a growth is that many
    /// keys added).
    pub(crate) fn changed(&self, before: usize, after: usize) {
        if after > before {
            self.added
                .set(self.added.get().wrapping_add((after - before) as u64));
        }
        self.len.set(after);
    }
}

/// The dict an iterator came from, as it was then.
#[derive(Debug, Clone)]
struct Source {
    version: Rc<DictVersion>,
    /// The size it had; `usize::MAX` once a size change was reported (sticky).
    len: usize,
    added: u64,
}

/// A shared iterator over a snapshot of items.
#[derive(Debug, Clone, Default)]
pub struct PyIterator {
    rest: VecDeque<Value>,
    /// Estimated bytes of `rest`.
    bytes: usize,
    /// The dict it iterates, watched for changes (`None` for an iterator built
    /// from a value, and once finished).
    source: Option<Source>,
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
            source: None,
        }
    }

    /// An iterator over the keys of a dict whose changes `version` tracks
    /// (`keys` is a snapshot of them, taken now).
    pub(crate) fn over_dict(keys: Vec<Value>, version: Rc<DictVersion>) -> PyIterator {
        let mut it = PyIterator::new(keys);
        it.source = Some(Source {
            len: version.len.get(),
            added: version.added.get(),
            version,
        });
        it
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

    /// The error CPython's dict iterator raises when its dict changed.
    fn check_source(&mut self) -> Result<(), RemoteError> {
        let Some(s) = &mut self.source else {
            return Ok(());
        };
        if s.len != s.version.len.get() {
            s.len = usize::MAX;
            return Err(RemoteError::new(
                "RuntimeError",
                "dictionary changed size during iteration",
            ));
        }
        if s.added != s.version.added.get() {
            self.finish();
            return Err(RemoteError::new(
                "RuntimeError",
                "dictionary keys changed during iteration",
            ));
        }
        Ok(())
    }

    fn next(&mut self) -> CallResult {
        self.check_source()?;
        let Some(v) = self.rest.pop_front() else {
            self.finish();
            return Err(stop());
        };
        self.bytes -= value_bytes(&v);
        Ok(v.into())
    }

    fn finish(&mut self) {
        self.rest.clear();
        self.bytes = 0;
        self.source = None;
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
                let kind = match a[0].resolved() {
                    Value::Str(s) => s.clone(),
                    other => {
                        return Err(RemoteError::type_error(format!(
                            "throw() expects an exception kind as a str, not '{}'",
                            other.type_name()
                        )))
                    }
                };
                let message = match a.get(1).map(Value::resolved) {
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
    use crate::server::Outcome;

    fn next(it: &mut PyIterator) -> Result<Value, (String, String)> {
        match it.next() {
            Ok(Outcome::Value(v)) => Ok(v),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err((e.kind, e.message)),
        }
    }

    fn size_changed() -> Result<Value, (String, String)> {
        Err((
            "RuntimeError".into(),
            "dictionary changed size during iteration".into(),
        ))
    }

    #[test]
    fn a_dict_iterator_raises_like_cpythons_once_its_dict_changes() {
        let keys = || vec![Value::Int(1), Value::Int(2)];
        // Size changed: raised, and raised again even once the size is back.
        let v = Rc::new(DictVersion::new(2));
        let mut it = PyIterator::over_dict(keys(), v.clone());
        assert_eq!(next(&mut it), Ok(Value::Int(1)));
        v.changed(2, 0);
        assert_eq!(next(&mut it), size_changed());
        v.changed(0, 2);
        assert_eq!(next(&mut it), size_changed());
        // Same size, other keys: raised once, then finished.
        let v = Rc::new(DictVersion::new(2));
        let mut it = PyIterator::over_dict(keys(), v.clone());
        v.changed(2, 1);
        v.changed(1, 2);
        assert_eq!(
            next(&mut it),
            Err((
                "RuntimeError".into(),
                "dictionary keys changed during iteration".into()
            ))
        );
        assert_eq!(next(&mut it).unwrap_err().0, "StopIteration");
        // Exhausted first: later changes are not its business.
        let v = Rc::new(DictVersion::new(2));
        let mut it = PyIterator::over_dict(keys(), v.clone());
        assert_eq!(next(&mut it), Ok(Value::Int(1)));
        assert_eq!(next(&mut it), Ok(Value::Int(2)));
        assert_eq!(next(&mut it).unwrap_err().0, "StopIteration");
        v.changed(2, 3);
        assert_eq!(next(&mut it).unwrap_err().0, "StopIteration");
        // Unchanged size and keys (values may change): iterates to the end.
        let v = Rc::new(DictVersion::new(2));
        let mut it = PyIterator::over_dict(keys(), v.clone());
        v.changed(2, 2);
        assert_eq!(next(&mut it), Ok(Value::Int(1)));
        assert_eq!(next(&mut it), Ok(Value::Int(2)));
    }

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
