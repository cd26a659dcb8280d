//! The pure builtins the server interprets on data — `str.lower`,
//! `str.upper`, `str.casefold`, `len`, `abs` and `operator.itemgetter` with
//! constant items — as sort keys (`l.sort(key=str.lower)`). They cannot run
//! code; anything else given as a key is refused by the caller.

use super::{Form, Value};

/// Python's `str.casefold` for the common cases: lowercase, with the full
/// case foldings of German sharp s and the final/ordinary sigmas.
pub(crate) fn casefold(s: &str) -> String {
    s.to_lowercase().replace('ß', "ss").replace('ς', "σ")
}

/// Python's `==` as the caller defines it (the server's: `1 == 1.0 == True`),
/// for looking a key up in a dict.
pub(crate) type Eq = fn(&Value, &Value) -> bool;

/// The key `key` (an opaque value naming a pure builtin, or an
/// `operator.itemgetter(...)` object) gives for `item`; `Err` with Python's
/// `TypeError` / `IndexError` / `KeyError` kind and text, or `None` when `key`
/// is not a function this interprets. A dict item's keys are matched with `eq`.
pub(crate) fn apply(
    key: &Value,
    item: &Value,
    eq: Eq,
) -> Option<Result<Value, (&'static str, String)>> {
    let o = key.as_opaque()?;
    let (module, name) = o.global_name()?;
    match (o.form(), module, name) {
        (Form::Global { .. }, "builtins", f) => Some(builtin(f, item)?),
        (Form::Reduce, "operator", "itemgetter") => {
            let Some(Value::Tuple(keys)) = o.args() else {
                return None;
            };
            if keys.is_empty() {
                return None;
            }
            if keys.len() == 1 {
                return Some(get_item(item, &keys[0], eq));
            }
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                match get_item(item, k, eq) {
                    Ok(v) => out.push(v),
                    Err(e) => return Some(Err(e)),
                }
            }
            Some(Ok(Value::Tuple(out)))
        }
        _ => None,
    }
}

/// `str.lower`, `str.upper` or `str.casefold` (named `f`) of `s`; `None` for
/// any other `f`. The decoder's `map()` and the sort keys both apply them here.
pub(crate) fn str_method(f: &str, s: &str) -> Option<String> {
    Some(match f {
        "str.lower" => s.to_lowercase(),
        "str.upper" => s.to_uppercase(),
        "str.casefold" => casefold(s),
        _ => return None,
    })
}

fn builtin(f: &str, item: &Value) -> Option<Result<Value, (&'static str, String)>> {
    let type_error = |msg: String| Err(("TypeError", msg));
    if let Value::Str(s) = item.resolved() {
        if let Some(out) = str_method(f, s) {
            return Some(Ok(Value::Str(out)));
        }
    }
    Some(match (f, item.resolved()) {
        ("str.lower" | "str.upper" | "str.casefold", other) => type_error(format!(
            "descriptor '{}' for 'str' objects doesn't apply to a '{}' object",
            &f[4..],
            other.type_name()
        )),
        ("len", Value::Str(s)) => Ok(Value::Int(s.chars().count() as i64)),
        ("len", Value::Bytes(b)) => Ok(Value::Int(b.len() as i64)),
        ("len", Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v)) => {
            Ok(Value::Int(v.len() as i64))
        }
        ("len", Value::Dict(d)) => Ok(Value::Int(d.len() as i64)),
        ("len", other) => type_error(format!(
            "object of type '{}' has no len()",
            other.type_name()
        )),
        ("abs", Value::Int(i)) => match i.checked_abs() {
            Some(a) => Ok(Value::Int(a)),
            None => Ok(Value::BigInt(super::minimal_le(
                (i128::from(*i).abs()).to_le_bytes().to_vec(),
            ))),
        },
        ("abs", Value::Bool(b)) => Ok(Value::Int(i64::from(*b))),
        ("abs", Value::Float(x)) => Ok(Value::Float(x.abs())),
        ("abs", other) => type_error(format!(
            "bad operand type for abs(): '{}'",
            other.type_name()
        )),
        _ => return None,
    })
}

/// `item[k]` for a list, tuple or str by int index, a dict by key (matched
/// with `eq`).
fn get_item(item: &Value, k: &Value, eq: Eq) -> Result<Value, (&'static str, String)> {
    let index = |len: usize| -> Result<usize, (&'static str, String)> {
        let Some(i) = k.as_int() else {
            return Err((
                "TypeError",
                format!(
                    "{} indices must be integers or slices, not {}",
                    item.type_name(),
                    k.type_name()
                ),
            ));
        };
        let j = if i < 0 { i + len as i64 } else { i };
        usize::try_from(j).ok().filter(|&j| j < len).ok_or_else(|| {
            (
                "IndexError",
                format!("{} index out of range", item.type_name()),
            )
        })
    };
    match item.resolved() {
        Value::List(v) | Value::Tuple(v) => Ok(v[index(v.len())?].clone()),
        Value::Str(s) => {
            let n = s.chars().count();
            let i = index(n)?;
            Ok(Value::Str(
                s.chars().nth(i).map(String::from).unwrap_or_default(),
            ))
        }
        Value::Dict(d) => d
            .iter()
            .find(|(x, _)| eq(x, k))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ("KeyError", k.to_string())),
        other => Err((
            "TypeError",
            format!("'{}' object is not subscriptable", other.type_name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn structural(a: &Value, b: &Value) -> bool {
        a == b
    }

    #[test]
    fn keys_like_python() {
        let lower = Value::opaque_global("builtins", "str.lower");
        assert_eq!(
            apply(&lower, &"AbC".into(), structural).unwrap(),
            Ok("abc".into())
        );
        assert_eq!(
            apply(&lower, &Value::Int(1), structural)
                .unwrap()
                .unwrap_err()
                .0,
            "TypeError"
        );
        let len = Value::opaque_global("builtins", "len");
        assert_eq!(
            apply(&len, &"héllo".into(), structural).unwrap(),
            Ok(Value::Int(5))
        );
        let abs = Value::opaque_global("builtins", "abs");
        assert_eq!(
            apply(&abs, &Value::Int(-3), structural).unwrap(),
            Ok(Value::Int(3))
        );
        let get1 = Value::opaque_call("operator", "itemgetter", vec![Value::Int(1)]);
        let t = Value::Tuple(vec![Value::Int(5), "b".into()]);
        assert_eq!(apply(&get1, &t, structural).unwrap(), Ok("b".into()));
        let get_k = Value::opaque_call("operator", "itemgetter", vec!["k".into(), Value::Int(0)]);
        let d = Value::Dict(vec![
            ("k".into(), Value::Int(2)),
            (Value::Int(0), Value::None),
        ]);
        assert_eq!(
            apply(&get_k, &d, structural).unwrap(),
            Ok(Value::Tuple(vec![Value::Int(2), Value::None]))
        );
        assert_eq!(casefold("Straße"), "strasse");
        let other = Value::opaque_global("os", "system");
        assert!(apply(&other, &t, structural).is_none());
    }
}
