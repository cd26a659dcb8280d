//! The `Value` typeid: CPython's `managers.Value(typecode, value, lock=True)`
//! behind `ValueProxy` — `get()` and `set(value)`. As in CPython the typecode is
//! kept for `repr` only and never checked against the value.
//!
//! `_getvalue()` returns a `managers.Value` instance (an opaque value with
//! `_typecode` and `_value` as its state), as CPython's server does.

use super::pyseq::positional;
use super::size::value_bytes;
use crate::proto::{ObjectId, RemoteError, Value};
use crate::server::{CallArgs, CallResult, Context, Server, SharedObject, TypeSpec};

/// The methods `ValueProxy` exposes.
pub(crate) const EXPOSED: &[&str] = &["get", "set"];

/// Registers `Value`.
pub(crate) fn register(server: &mut Server) {
    server.register(
        TypeSpec::new("Value", EXPOSED, |_, args| {
            Ok(Box::new(SharedValue::from_args(args)?))
        })
        .reads_only(&["get"]),
    );
}

/// A shared single value with a typecode (named so as not to clash with
/// [`proto::Value`](crate::proto::Value)).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedValue {
    typecode: Value,
    value: Value,
    /// Estimated bytes of `typecode` and `value`.
    bytes: usize,
}

impl SharedValue {
    /// `Value(typecode, value, lock=True)`; `lock` is accepted and ignored, as
    /// CPython's manager ignores it.
    fn from_args(mut args: CallArgs) -> Result<SharedValue, RemoteError> {
        args.check("Value.__init__", 3, &["typecode", "value", "lock"])?;
        let typecode = args.take(0, "typecode");
        let value = args.take(1, "value");
        let _lock = args.take(2, "lock");
        match (typecode, value) {
            (Some(typecode), Some(value)) => Ok(SharedValue {
                bytes: value_bytes(&typecode) + value_bytes(&value),
                typecode,
                value,
            }),
            (None, None) => Err(RemoteError::type_error(
                "Value.__init__() missing 2 required positional arguments: 'typecode' and 'value'",
            )),
            (None, Some(_)) => Err(RemoteError::type_error(
                "Value.__init__() missing 1 required positional argument: 'typecode'",
            )),
            (Some(_), None) => Err(RemoteError::type_error(
                "Value.__init__() missing 1 required positional argument: 'value'",
            )),
        }
    }
}

impl SharedObject for SharedValue {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, mut args: CallArgs) -> CallResult {
        match method {
            "get" => {
                positional("Value", "get", args, 0, 0)?;
                Ok(self.value.clone().into())
            }
            "set" => {
                args.check("Value.set", 1, &["value"])?;
                let value = args.take(0, "value").ok_or_else(|| {
                    RemoteError::type_error(
                        "Value.set() missing 1 required positional argument: 'value'",
                    )
                })?;
                let (new, old) = (value_bytes(&value), value_bytes(&self.value));
                cx.check_growth(new.saturating_sub(old))?;
                self.value = value;
                self.bytes = self.bytes - old + new;
                Ok(Value::None.into())
            }
            other => Err(RemoteError::new(
                "AttributeError",
                format!("'Value' object has no attribute '{other}'"),
            )),
        }
    }

    /// CPython's `Value.__repr__`: `Value('i', 5)`.
    fn repr(&self) -> Option<String> {
        Some(format!("Value({}, {})", self.typecode, self.value))
    }

    /// A `multiprocessing.managers.Value` instance, as CPython's server
    /// returns it (`_typecode` and `_value` as its state).
    fn get_value(&self) -> Result<Value, RemoteError> {
        Ok(Value::opaque_instance(
            "multiprocessing.managers",
            "Value",
            Value::Dict(vec![
                (Value::Str("_typecode".into()), self.typecode.clone()),
                (Value::Str("_value".into()), self.value.clone()),
            ]),
        ))
    }

    fn visit_refs(&self, f: &mut dyn FnMut(ObjectId)) {
        self.value.visit_refs(&mut |t| f(t.id));
    }

    fn held_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructor_binds_like_python() {
        let v = SharedValue::from_args(CallArgs {
            args: vec![Value::from("i")],
            kwargs: vec![
                ("value".into(), Value::Int(5)),
                ("lock".into(), Value::Bool(false)),
            ],
        })
        .unwrap();
        assert_eq!(v.repr().unwrap(), "Value('i', 5)");
        let e = SharedValue::from_args(CallArgs::positional(vec![Value::from("i")])).unwrap_err();
        assert_eq!(
            e.message,
            "Value.__init__() missing 1 required positional argument: 'value'"
        );
        let e = SharedValue::from_args(CallArgs::positional(vec![Value::None; 4])).unwrap_err();
        assert_eq!(e.kind, "TypeError");
    }
}
