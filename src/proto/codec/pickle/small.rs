//! The writer for the common `#RETURN` reply: a result that is an atom (None,
//! a bool, an int, a float, a str or bytes) or a list or tuple of atoms is
//! written in one pass straight into the output, with no tree walk, no
//! unhashable-key check (there are no keys) and no allocation. Anything else
//! (nested containers, dicts, sets, references, opaque or shared values) is
//! left to the general writer ([`super::encode`]), which writes the same bytes
//! for what this one takes (the tests below compare them).

use super::encode::Writer;
use super::{Origin, RETURN_HEAD};
use crate::proto::value::Value;

/// TUPLE2 (the `(kind, result)` pair), then STOP.
const RETURN_TAIL: &[u8] = b"\x86.";

/// Appends the pickle of `('#RETURN', v)` and returns true when `v` is an
/// atom or a list or tuple of atoms; otherwise writes nothing and returns
/// false.
pub(super) fn write_return(v: &Value, origin: &Origin<'_>, out: &mut Vec<u8>) -> bool {
    let flat = match v {
        Value::List(items) | Value::Tuple(items) => items.iter().all(atom),
        _ => atom(v),
    };
    if !flat {
        return false;
    }
    out.extend_from_slice(RETURN_HEAD);
    let mut w = Writer { out, origin };
    match v {
        Value::List(items) => {
            w.op(b']'); // EMPTY_LIST
            if !items.is_empty() {
                w.op(b'('); // MARK
                items.iter().for_each(|x| w.leaf(x));
                w.op(b'e'); // APPENDS
            }
        }
        Value::Tuple(items) => w.tuple_of(items.len(), |w| items.iter().for_each(|x| w.leaf(x))),
        _ => w.leaf(v),
    }
    w.out.extend_from_slice(RETURN_TAIL);
    true
}

/// A value with no children and no token to write.
#[inline]
fn atom(v: &Value) -> bool {
    matches!(
        v,
        Value::None
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::Str(_)
            | Value::Bytes(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the general writer makes of `('#RETURN', v)`.
    fn general(v: &Value) -> Vec<u8> {
        let none = Value::None;
        let origin = Origin::new(&none);
        let mut out = RETURN_HEAD.to_vec();
        let mut w = Writer {
            out: &mut out,
            origin: &origin,
        };
        w.value(v);
        out.extend_from_slice(RETURN_TAIL);
        out
    }

    fn fast(v: &Value) -> Option<Vec<u8>> {
        let none = Value::None;
        let mut out = Vec::new();
        write_return(v, &Origin::new(&none), &mut out).then_some(out)
    }

    #[test]
    fn leaves_anything_but_flat_atoms_to_the_general_writer() {
        let nested = Value::List(vec![Value::Tuple(vec![])]);
        let dict = Value::Dict(vec![]);
        let set = Value::Set(vec![Value::Int(1)]);
        let big = Value::BigInt(vec![1; 9]);
        for v in [nested, dict, set, big] {
            assert_eq!(fast(&v), None, "{v:?}");
        }
    }

    fn atom_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            ".{0,300}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
        ]
    }

    proptest! {
        #[test]
        fn writes_what_the_general_writer_writes(
            one in atom_value(),
            items in proptest::collection::vec(atom_value(), 0..6),
        ) {
            for v in [one, Value::List(items.clone()), Value::Tuple(items)] {
                prop_assert_eq!(fast(&v), Some(general(&v)));
            }
        }
    }
}
