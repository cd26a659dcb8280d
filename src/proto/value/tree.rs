//! Walking a [`Value`] tree without recursion: [`Walk`] (a pre-order walk with an
//! explicit stack) and the trait impls that must work at any depth — `Clone`,
//! `PartialEq` and `Drop` — on top of it. A value one level deep (a leaf, or a
//! container of leaves: nearly every value) takes a fast path that allocates
//! nothing beyond the copy itself.

use super::Value;

/// Where a value sits in its parent, as [`Walk`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The value the walk started from.
    Root,
    /// Item `i` of a list, tuple, set or frozenset.
    Item(usize),
    /// The key of a dict's entry `i`.
    Key(usize),
    /// The value of a dict's entry `i`.
    DictValue(usize),
}

/// One step of a [`Walk`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step<'a> {
    /// A value without children: anything but a list, tuple, dict, set or
    /// frozenset.
    Leaf(&'a Value, Slot),
    /// A container (possibly empty) starts; its children follow, then its `Exit`.
    Enter(&'a Value, Slot),
    /// The container last entered and not yet left ends.
    Exit(&'a Value),
}

/// A depth-first, pre-order walk over a value tree with an explicit stack (one
/// small frame per open container), so any nesting depth costs heap, not call
/// stack. Dict entries are visited key, then value.
///
/// It sees through [`Value::Shared`]: a shared value is walked as if it were
/// inline (so a value shared n times is visited n times), except by
/// [`Walk::raw`], which reports it as a leaf.
#[derive(Debug)]
pub(crate) struct Walk<'a> {
    root: Option<&'a Value>,
    open: Vec<(&'a Value, usize)>,
    raw: bool,
    /// The sharing the last step's value was reached through, if any.
    shared: Option<&'a std::sync::Arc<Value>>,
}

impl<'a> Walk<'a> {
    /// A walk starting at `root`, seeing through sharing.
    pub(crate) fn new(root: &'a Value) -> Walk<'a> {
        Walk {
            root: Some(root),
            open: Vec::new(),
            raw: false,
            shared: None,
        }
    }

    /// A walk starting at `root` that stops at sharing: a [`Value::Shared`] is
    /// a leaf.
    pub(crate) fn raw(root: &'a Value) -> Walk<'a> {
        Walk {
            root: Some(root),
            open: Vec::new(),
            raw: true,
            shared: None,
        }
    }

    /// How many containers are open: the depth of a `Leaf` just returned, or one
    /// more than the depth of a container just entered (the root is at depth 0).
    pub(crate) fn open(&self) -> usize {
        self.open.len()
    }

    /// The [`Value::Shared`] the last `Leaf` or `Enter` was reached through
    /// (`None` when it sat inline, and always for a raw walk): encoders write a
    /// shared value once and refer back to it by this `Arc`'s identity.
    pub(crate) fn shared(&self) -> Option<&'a std::sync::Arc<Value>> {
        self.shared
    }

    /// Skips the children of the container just entered: its `Exit` comes next.
    pub(crate) fn skip_children(&mut self) {
        if let Some((_, next)) = self.open.last_mut() {
            *next = usize::MAX;
        }
    }
}

/// The shared values ([`Value::Shared`]) an encoder has written, by identity,
/// numbered from 0 in the order they were recorded; the table is made at the
/// first one, so a value without sharing costs nothing. Both codecs write a
/// shared value once and every further place as a reference to its number.
#[derive(Debug, Default)]
pub(crate) struct Written(Option<std::collections::HashMap<*const Value, u32>>);

impl Written {
    /// The number of the shared value `p` (an `Arc::as_ptr`), if written.
    #[inline]
    pub(crate) fn get(&self, p: *const Value) -> Option<u32> {
        self.0.as_ref()?.get(&p).copied()
    }

    /// Records `p` as written and gives its number.
    pub(crate) fn add(&mut self, p: *const Value) -> u32 {
        let table = self.0.get_or_insert_with(Default::default);
        let n = table.len() as u32;
        table.insert(p, n);
        n
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = Step<'a>;

    fn next(&mut self) -> Option<Step<'a>> {
        let (v, slot) = match self.root.take() {
            Some(root) => (root, Slot::Root),
            None => {
                let (parent, next) = self.open.last_mut()?;
                match parent.child(*next) {
                    Some(child) => {
                        *next += 1;
                        child
                    }
                    None => {
                        let (done, _) = self.open.pop().expect("a container is open");
                        return Some(Step::Exit(done));
                    }
                }
            }
        };
        self.shared = match v {
            Value::Shared(a) if !self.raw => Some(a),
            _ => None,
        };
        let v = if self.raw { v } else { v.resolved() };
        Some(if v.is_container() {
            self.open.push((v, 0));
            Step::Enter(v, slot)
        } else {
            Step::Leaf(v, slot)
        })
    }
}

impl Value {
    /// Whether this is a list, tuple, dict, set or frozenset, or an opaque
    /// object (whose parts are its children).
    #[inline]
    pub(crate) fn is_container(&self) -> bool {
        matches!(
            self,
            Value::List(_) | Value::Tuple(_) | Value::Dict(_) | Value::Set(_) | Value::FrozenSet(_)
        ) || matches!(self, Value::Opaque(o) if !o.parts().is_empty())
    }

    /// Child `i` of a container (dict entries count twice: key, then value).
    pub(crate) fn child(&self, i: usize) -> Option<(&Value, Slot)> {
        match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                v.get(i).map(|x| (x, Slot::Item(i)))
            }
            Value::Opaque(o) => o.parts().get(i).map(|x| (x, Slot::Item(i))),
            Value::Dict(d) => d.get(i / 2).map(|(k, x)| {
                if i % 2 == 0 {
                    (k, Slot::Key(i / 2))
                } else {
                    (x, Slot::DictValue(i / 2))
                }
            }),
            _ => None,
        }
    }

    /// A copy of a value without children; `None` for a container.
    #[inline]
    fn clone_leaf(&self) -> Option<Value> {
        Some(match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::BigInt(b) => Value::BigInt(b.clone()),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Bytes(b) => Value::Bytes(b.clone()),
            Value::Ref(t) => Value::Ref(t.clone()),
            Value::Slice(s) => Value::Slice(*s),
            Value::Shared(a) => Value::Shared(a.clone()),
            Value::Opaque(o) if o.parts().is_empty() => Value::Opaque(o.clone()),
            Value::List(_)
            | Value::Tuple(_)
            | Value::Dict(_)
            | Value::Set(_)
            | Value::FrozenSet(_)
            | Value::Opaque(_) => return None,
        })
    }

    /// An empty container of the same kind as `self`, with room for its items.
    fn empty_like(&self) -> Building {
        match self {
            Value::Dict(d) => Building::Dict(Vec::with_capacity(d.len()), None),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                Building::Seq(Vec::with_capacity(v.len()))
            }
            Value::Opaque(o) => Building::Seq(Vec::with_capacity(o.parts().len())),
            _ => Building::Seq(Vec::new()),
        }
    }

    /// Compares two values without looking inside containers: `Some(answer)`
    /// when that settles it, `None` when they are containers of the same kind and
    /// length whose children must be compared.
    fn shallow_eq(&self, other: &Value) -> Option<bool> {
        if let (Value::Shared(a), Value::Shared(b)) = (self, other) {
            // The same object: Python's containers compare identical items as
            // equal without looking inside (so a shared NaN equals itself too).
            if std::sync::Arc::ptr_eq(a, b) {
                return Some(true);
            }
        }
        Some(match (self.resolved(), other.resolved()) {
            (Value::None, Value::None) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::BigInt(a), Value::BigInt(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Ref(a), Value::Ref(b)) => a == b,
            (Value::Slice(a), Value::Slice(b)) => a == b,
            (Value::Opaque(a), Value::Opaque(b)) => {
                if a.form() != b.form() || a.parts().len() != b.parts().len() {
                    false
                } else if a.parts().is_empty() {
                    true
                } else {
                    return None;
                }
            }
            (Value::List(a), Value::List(b))
            | (Value::Tuple(a), Value::Tuple(b))
            | (Value::Set(a), Value::Set(b))
            | (Value::FrozenSet(a), Value::FrozenSet(b)) => {
                if a.len() != b.len() {
                    false
                } else {
                    return None;
                }
            }
            (Value::Dict(a), Value::Dict(b)) => {
                if a.len() != b.len() {
                    false
                } else {
                    return None;
                }
            }
            _ => false,
        })
    }

    /// Whether a child of this value has children of its own (or is shared: its
    /// last owner frees what it shares).
    #[inline]
    fn has_nested(&self) -> bool {
        let nested = |x: &Value| x.child(0).is_some() || x.is_shared();
        match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                v.iter().any(nested)
            }
            Value::Opaque(o) => o.parts().iter().any(nested),
            Value::Dict(d) => d.iter().any(|(k, x)| nested(k) || nested(x)),
            _ => false,
        }
    }

    /// Moves out every child that has children of its own onto `stack`, leaving
    /// `None` in its place, so dropping `self` afterwards recurses no further.
    fn detach_nested(&mut self, stack: &mut Vec<Value>) {
        let mut take = |x: &mut Value| {
            if let Value::Shared(a) = x {
                // The last owner moves the shared value out to be freed here;
                // any other owner only drops its count.
                if let Some(inner) = std::sync::Arc::get_mut(a) {
                    stack.push(std::mem::take(inner));
                }
            } else if x.child(0).is_some() {
                stack.push(std::mem::take(x));
            }
        };
        match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                v.iter_mut().for_each(&mut take)
            }
            Value::Opaque(o) => o.parts_mut().iter_mut().for_each(&mut take),
            Value::Dict(d) => d.iter_mut().for_each(|(k, x)| {
                take(k);
                take(x);
            }),
            _ => {}
        }
    }
}

/// A container being rebuilt by [`Value::clone`].
enum Building {
    Seq(Vec<Value>),
    /// Entries so far, and the key waiting for its value.
    Dict(Vec<(Value, Value)>, Option<Value>),
}

impl Building {
    fn push(&mut self, v: Value) {
        match self {
            Building::Seq(items) => items.push(v),
            Building::Dict(entries, pending) => match pending.take() {
                Some(k) => entries.push((k, v)),
                None => *pending = Some(v),
            },
        }
    }

    /// The finished container, of the kind of `like`.
    fn finish(self, like: &Value) -> Value {
        match (self, like) {
            (Building::Dict(entries, _), _) => Value::Dict(entries),
            (Building::Seq(items), Value::Tuple(_)) => Value::Tuple(items),
            (Building::Seq(items), Value::Set(_)) => Value::Set(items),
            (Building::Seq(items), Value::FrozenSet(_)) => Value::FrozenSet(items),
            (Building::Seq(items), Value::Opaque(o)) => Value::Opaque(Box::new(
                super::PyObject::from_parts(o.form().clone(), items)
                    .expect("a copy has the parts of its original"),
            )),
            (Building::Seq(items), _) => Value::List(items),
        }
    }
}

impl Clone for Value {
    fn clone(&self) -> Value {
        if let Some(leaf) = self.clone_leaf() {
            return leaf;
        }
        // A container of leaves (the common case) is copied directly.
        fn flat(items: &[Value]) -> Option<Vec<Value>> {
            let mut out = Vec::with_capacity(items.len());
            for x in items {
                out.push(x.clone_leaf()?);
            }
            Some(out)
        }
        let flat = match self {
            Value::List(v) => flat(v).map(Value::List),
            Value::Tuple(v) => flat(v).map(Value::Tuple),
            Value::Set(v) => flat(v).map(Value::Set),
            Value::FrozenSet(v) => flat(v).map(Value::FrozenSet),
            Value::Dict(d) => {
                let mut out = Vec::with_capacity(d.len());
                d.iter()
                    .try_for_each(|(k, x)| {
                        out.push((k.clone_leaf()?, x.clone_leaf()?));
                        Some(())
                    })
                    .map(|()| Value::Dict(out))
            }
            _ => None,
        };
        if let Some(v) = flat {
            return v;
        }
        let mut building: Vec<(&Value, Building)> = Vec::new();
        for step in Walk::raw(self) {
            let done = match step {
                Step::Leaf(v, _) => v.clone_leaf().expect("a leaf has no children"),
                Step::Enter(v, _) => {
                    building.push((v, v.empty_like()));
                    continue;
                }
                Step::Exit(_) => {
                    let (like, b) = building.pop().expect("entered before");
                    b.finish(like)
                }
            };
            match building.last_mut() {
                Some((_, parent)) => parent.push(done),
                None => return done,
            }
        }
        unreachable!("a walk ends by leaving its root")
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        if let Some(answer) = self.shallow_eq(other) {
            return answer;
        }
        let (this, other) = (self.resolved(), other.resolved());
        // Containers of the same kind and length. Children that settle without
        // looking further (leaves, the common case) need no stack.
        let mut i = 0;
        while let (Some((x, _)), Some((y, _))) = (this.child(i), other.child(i)) {
            match x.shallow_eq(y) {
                Some(true) => i += 1,
                Some(false) => return false,
                None => break,
            }
        }
        if this.child(i).is_none() {
            return true;
        }
        // Pairs of containers being compared, and the next child index.
        let mut open: Vec<(&Value, &Value, usize)> = vec![(this, other, i)];
        while let Some((a, b, next)) = open.last_mut() {
            let (a, b) = (*a, *b);
            let i = *next;
            *next += 1;
            match (a.child(i), b.child(i)) {
                (Some((x, _)), Some((y, _))) => match x.shallow_eq(y) {
                    Some(true) => {}
                    Some(false) => return false,
                    None => open.push((x.resolved(), y.resolved(), 0)),
                },
                _ => {
                    open.pop();
                }
            }
        }
        true
    }
}

impl Drop for Value {
    /// Frees a tree of any depth: nested containers are moved onto a heap stack
    /// and emptied one by one, so no drop recurses more than one level.
    #[inline]
    fn drop(&mut self) {
        // Leaves and containers of leaves (nearly every value) drop as they are.
        let mut stack = Vec::new();
        if let Value::Shared(a) = self {
            match std::sync::Arc::get_mut(a) {
                Some(inner) if inner.has_nested() || inner.is_shared() => {
                    stack.push(std::mem::take(inner))
                }
                _ => return,
            }
        } else if !self.has_nested() {
            return;
        } else {
            self.detach_nested(&mut stack);
        }
        while let Some(mut v) = stack.pop() {
            v.detach_nested(&mut stack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_visits_in_order_and_tracks_depth() {
        let v = Value::List(vec![
            Value::Int(1),
            Value::Dict(vec![(Value::Str("k".into()), Value::Tuple(vec![]))]),
        ]);
        let mut w = Walk::new(&v);
        let mut trace = Vec::new();
        while let Some(step) = w.next() {
            trace.push(match step {
                Step::Leaf(x, slot) => format!("leaf {x} {slot:?} at {}", w.open()),
                Step::Enter(x, slot) => {
                    format!("enter {} {slot:?} at {}", x.type_name(), w.open() - 1)
                }
                Step::Exit(x) => format!("exit {}", x.type_name()),
            });
        }
        assert_eq!(
            trace,
            [
                "enter list Root at 0",
                "leaf 1 Item(0) at 1",
                "enter dict Item(1) at 1",
                "leaf 'k' Key(0) at 2",
                "enter tuple DictValue(0) at 2",
                "exit tuple",
                "exit dict",
                "exit list",
            ]
        );
    }
}
