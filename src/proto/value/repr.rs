//! Python's `repr()` of a [`Value`]: the `Display` impl, written with an explicit
//! walk (no recursion) so a value of any depth prints on a small stack.

use std::fmt;

use super::{Slot, Step, Value, Walk};

impl Value {
    /// Writes a value without children as Python's `repr()` would.
    fn fmt_leaf(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::BigInt(b) => write!(f, "<int of {} bytes>", b.len()),
            Value::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 => {
                write!(f, "{x:.1}")
            }
            Value::Float(x) if x.is_nan() => f.write_str("nan"),
            Value::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { "inf" } else { "-inf" })
            }
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "'{}'", s.escape_debug()),
            Value::Bytes(b) => write!(f, "b'{}'", b.escape_ascii()),
            Value::Ref(t) => write!(f, "<{} proxy id={}>", t.typeid, t.id),
            Value::Slice(s) => {
                let part = |b: Option<i64>| b.map_or("None".to_owned(), |i| i.to_string());
                write!(
                    f,
                    "slice({}, {}, {})",
                    part(s.start),
                    part(s.stop),
                    part(s.step)
                )
            }
            Value::List(_)
            | Value::Tuple(_)
            | Value::Dict(_)
            | Value::Set(_)
            | Value::FrozenSet(_) => Ok(()),
        }
    }
}

impl fmt::Display for Value {
    /// Python's `repr()` of the value, near enough for messages and `__repr__`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in Walk::new(self) {
            let (v, slot) = match step {
                Step::Leaf(v, slot) | Step::Enter(v, slot) => (v, slot),
                Step::Exit(v) => {
                    f.write_str(match v {
                        Value::List(_) => "]",
                        Value::Tuple(t) if t.len() == 1 => ",)",
                        Value::Tuple(_) => ")",
                        Value::Dict(_) => "}",
                        Value::Set(s) if s.is_empty() => "",
                        Value::Set(_) => "}",
                        _ => "})",
                    })?;
                    continue;
                }
            };
            match slot {
                Slot::Item(i) | Slot::Key(i) if i > 0 => f.write_str(", ")?,
                Slot::DictValue(_) => f.write_str(": ")?,
                _ => {}
            }
            match (step, v) {
                (Step::Leaf(..), _) => v.fmt_leaf(f)?,
                (_, Value::List(_)) => f.write_str("[")?,
                (_, Value::Tuple(_)) => f.write_str("(")?,
                (_, Value::Dict(_)) => f.write_str("{")?,
                (_, Value::Set(s)) if s.is_empty() => f.write_str("set()")?,
                (_, Value::Set(_)) => f.write_str("{")?,
                _ => f.write_str("frozenset({")?,
            }
        }
        Ok(())
    }
}
