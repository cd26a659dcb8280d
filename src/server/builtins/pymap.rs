//! [`PyMap`]: the insertion-ordered hash map with Python dict semantics that
//! `dict` and `Namespace` store their items in. Keys are [`PyKey`]s, so equality
//! and hashing are Python's (`1 == 1.0 == True`).

use super::pykey::PyKey;
use super::size::{value_bytes, NODE};
use crate::proto::Value;
use crate::server::fasthash::FastMap;

/// An insertion-ordered map with Python dict semantics and O(1) operations: a
/// hash index over [`PyKey`]s into a slot vector whose removed entries are
/// tombstones, compacted once they outnumber the live ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct PyMap {
    index: FastMap<PyKey, usize>,
    slots: Vec<Option<(Value, Value)>>,
    /// Estimated bytes of the live keys and of the live values
    /// ([`value_bytes`]), kept up to date by every change.
    keys_total: usize,
    values_total: usize,
}

impl PyMap {
    /// Number of items.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The value stored under `key`.
    pub(crate) fn get(&self, key: &PyKey) -> Option<&Value> {
        let i = *self.index.get(key)?;
        self.slots[i].as_ref().map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub(crate) fn contains(&self, key: &PyKey) -> bool {
        self.index.contains_key(key)
    }

    /// Sets `key` to `value`, keeping the first-inserted key object and its
    /// position when an equal key is present; returns the old value.
    pub(crate) fn insert(&mut self, key: PyKey, value: Value) -> Option<Value> {
        let vb = value_bytes(&value);
        if let Some(&i) = self.index.get(&key) {
            let slot = self.slots[i].as_mut().expect("indexed slots are live");
            let old = std::mem::replace(&mut slot.1, value);
            self.values_total = self.values_total.saturating_sub(value_bytes(&old)) + vb;
            return Some(old);
        }
        self.keys_total += value_bytes(key.as_value());
        self.values_total += vb;
        self.slots.push(Some((key.as_value().clone(), value)));
        self.index.insert(key, self.slots.len() - 1);
        None
    }

    /// The bytes holding `value` under `key` would add (0 when it shrinks).
    pub(crate) fn growth(&self, key: &PyKey, value: &Value) -> usize {
        let vb = value_bytes(value);
        match self.get(key) {
            Some(old) => vb.saturating_sub(value_bytes(old)),
            None => 2 * value_bytes(key.as_value()) + vb,
        }
    }

    /// Makes room for `n` more items, failing instead of aborting.
    pub(crate) fn try_reserve(&mut self, n: usize) -> Result<(), crate::proto::RemoteError> {
        super::size::reserve(&mut self.slots, n)?;
        self.index.try_reserve(n).map_err(|_| {
            super::size::memory_error(format!("cannot allocate memory for {n} more items"))
        })
    }

    fn forget(&mut self, k: &Value, v: &Value) {
        self.keys_total = self.keys_total.saturating_sub(value_bytes(k));
        self.values_total = self.values_total.saturating_sub(value_bytes(v));
    }

    /// Removes `key`, returning the stored key and value.
    pub(crate) fn remove(&mut self, key: &PyKey) -> Option<(Value, Value)> {
        let i = self.index.remove(key)?;
        let item = self.slots[i].take();
        if let Some((k, v)) = &item {
            self.forget(k, v);
        }
        self.compact();
        item
    }

    /// Removes the last-inserted item (`popitem`).
    pub(crate) fn pop_last(&mut self) -> Option<(Value, Value)> {
        while let Some(slot) = self.slots.pop() {
            if let Some((k, v)) = slot {
                self.forget(&k, &v);
                let key = PyKey::trusted(k);
                self.index.remove(&key);
                return Some((key.into_value(), v));
            }
        }
        None
    }

    /// Removes everything.
    pub(crate) fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.keys_total = 0;
        self.values_total = 0;
    }

    /// Estimated bytes the map holds: each key twice (the index and the
    /// slot) and each value.
    pub(crate) fn bytes(&self) -> usize {
        2 * self.keys_total + self.values_total
    }

    /// Estimated bytes of a list of the keys, of the values, and of the map
    /// as a dict or a list of pairs (one tuple per item).
    pub(crate) fn sizes(&self) -> MapSizes {
        MapSizes {
            keys: NODE + self.keys_total,
            values: NODE + self.values_total,
            dict: NODE + self.keys_total + self.values_total,
            items: NODE + self.keys_total + self.values_total + self.len() * NODE,
        }
    }

    /// Items in insertion order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Value, &Value)> {
        self.slots.iter().flatten().map(|(k, v)| (k, v))
    }

    /// The items as a `Value::Dict`.
    pub(crate) fn to_value(&self) -> Value {
        Value::Dict(self.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn compact(&mut self) {
        let dead = self.slots.len() - self.index.len();
        if dead <= 16 || dead <= self.index.len() {
            return;
        }
        self.slots.retain(Option::is_some);
        for (i, slot) in self.slots.iter().enumerate() {
            let (k, _) = slot.as_ref().expect("retained");
            *self
                .index
                .get_mut(&PyKey::trusted(k.clone()))
                .expect("every live slot is indexed") = i;
        }
    }
}

/// Estimated sizes of copies of a [`PyMap`] (see [`PyMap::sizes`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapSizes {
    pub(crate) keys: usize,
    pub(crate) values: usize,
    pub(crate) dict: usize,
    pub(crate) items: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: Value) -> PyKey {
        PyKey::new(v).unwrap()
    }

    #[test]
    fn map_keeps_order_and_first_key() {
        let mut m = PyMap::default();
        assert_eq!(m.insert(key(Value::Int(1)), Value::from("a")), None);
        m.insert(key(Value::from("x")), Value::Int(2));
        assert_eq!(
            m.insert(key(Value::Float(1.0)), Value::from("b")),
            Some(Value::from("a"))
        );
        let items: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(
            items,
            vec![
                (Value::Int(1), Value::from("b")),
                (Value::from("x"), Value::Int(2))
            ]
        );
        assert_eq!(m.get(&key(Value::Bool(true))), Some(&Value::from("b")));
        // Keys twice (index and slot), values once: 1, "x" -> "b", 2.
        assert_eq!(m.bytes(), 2 * (2 * NODE + 1) + 2 * NODE + 1);
        assert_eq!(m.growth(&key(Value::Int(1)), &Value::from("bb")), 1);
        assert_eq!(m.growth(&key(Value::Int(1)), &Value::None), 0);
        assert_eq!(m.growth(&key(Value::Int(7)), &Value::None), 3 * NODE);
        assert_eq!(m.pop_last(), Some((Value::from("x"), Value::Int(2))));
        assert_eq!(m.len(), 1);
        assert!(m.remove(&key(Value::Int(1))).is_some());
        assert_eq!(m.len(), 0);
        assert_eq!(m.pop_last(), None);
        assert_eq!(m.bytes(), 0);
    }

    #[test]
    fn map_compacts_tombstones_and_stays_consistent() {
        let mut m = PyMap::default();
        for i in 0..1000 {
            m.insert(key(Value::Int(i)), Value::Int(i * 10));
        }
        for i in 0..990 {
            assert!(m.remove(&key(Value::Int(i))).is_some());
        }
        assert!(m.slots.len() < 100, "tombstones were compacted");
        for i in 990..1000 {
            assert_eq!(m.get(&key(Value::Int(i))), Some(&Value::Int(i * 10)));
        }
        m.insert(key(Value::Int(5)), Value::None);
        let keys: Vec<_> = m.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys.first(), Some(&Value::Int(990)));
        assert_eq!(keys.last(), Some(&Value::Int(5)));
    }
}
