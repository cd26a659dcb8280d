//! The object table: live objects in a slab, addressed by generation-checked ids,
//! with refcounts and the references objects hold to one another.
//!
//! An object whose count reaches zero is not dropped on the spot: it is queued and
//! dropped by the [`Core`](super::context::Core)'s sweep, once every callback that
//! might still be using it has returned. This module never calls into an object.

use std::rc::Rc;

use slab::Slab;

use super::registry::{SharedObject, TypeSpec};
use crate::proto::ObjectId;

/// One live object.
pub(crate) struct Slot {
    generation: u32,
    pub(crate) spec: Rc<TypeSpec>,
    /// `None` while a callback has the object checked out.
    pub(crate) object: Option<Box<dyn SharedObject>>,
    pub(crate) refcount: u32,
    /// Objects this one holds references to, sorted (counted in their refcounts).
    pub(crate) holds: Vec<ObjectId>,
    /// Set when a callback panicked: the object's state may be half-updated, so
    /// it is not called again (calls get this message) but is released normally.
    pub(crate) broken: Option<Rc<str>>,
}

/// The table of live objects.
#[derive(Default)]
pub(crate) struct ObjectTable {
    slots: Slab<Slot>,
    next_generation: u32,
    /// Objects that may have reached refcount zero, checked at the next sweep.
    maybe_dead: Vec<ObjectId>,
}

impl std::fmt::Debug for ObjectTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectTable")
            .field("live", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl ObjectTable {
    /// Adds an object with refcount zero; unless a reference is taken before the
    /// next sweep, the sweep drops it.
    pub(crate) fn insert(&mut self, spec: Rc<TypeSpec>, object: Box<dyn SharedObject>) -> ObjectId {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let index = self.slots.insert(Slot {
            generation,
            spec,
            object: Some(object),
            refcount: 0,
            holds: Vec::new(),
            broken: None,
        });
        let id = ObjectId::new(index as u32, generation);
        self.maybe_dead.push(id);
        id
    }

    pub(crate) fn get(&self, id: ObjectId) -> Option<&Slot> {
        self.slots
            .get(id.index() as usize)
            .filter(|s| s.generation == id.generation())
    }

    pub(crate) fn get_mut(&mut self, id: ObjectId) -> Option<&mut Slot> {
        self.slots
            .get_mut(id.index() as usize)
            .filter(|s| s.generation == id.generation())
    }

    pub(crate) fn contains(&self, id: ObjectId) -> bool {
        self.get(id).is_some()
    }

    /// Number of live objects (CPython's `number_of_objects`).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Adds one reference. False when the id is unknown.
    pub(crate) fn incref(&mut self, id: ObjectId) -> bool {
        match self.get_mut(id) {
            Some(s) => {
                s.refcount += 1;
                true
            }
            None => false,
        }
    }

    /// Drops one reference. False when the id is unknown or already at zero.
    pub(crate) fn decref(&mut self, id: ObjectId) -> bool {
        let Some(s) = self.get_mut(id) else {
            return false;
        };
        if s.refcount == 0 {
            return false;
        }
        s.refcount -= 1;
        if s.refcount == 0 {
            self.maybe_dead.push(id);
        }
        true
    }

    /// Removes and returns the next object whose refcount is zero and which no
    /// callback has checked out, with the references it held. The caller runs the
    /// object's destroy hook, then releases the held references.
    pub(crate) fn pop_dead(&mut self) -> Option<(ObjectId, Slot)> {
        while let Some(id) = self.maybe_dead.pop() {
            let dead = self
                .get(id)
                .is_some_and(|s| s.refcount == 0 && s.object.is_some());
            if dead {
                return Some((id, self.slots.remove(id.index() as usize)));
            }
        }
        None
    }

    /// Queues `id` to be checked at the next sweep (after a callback returns it).
    pub(crate) fn recheck(&mut self, id: ObjectId) {
        self.maybe_dead.push(id);
    }

    /// Whether a sweep has anything to look at.
    pub(crate) fn needs_sweep(&self) -> bool {
        !self.maybe_dead.is_empty()
    }

    /// Live ids, for debug_info.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ObjectId, &Slot)> {
        self.slots
            .iter()
            .map(|(i, s)| (ObjectId::new(i as u32, s.generation), s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RemoteError;
    use crate::server::context::Context;
    use crate::server::registry::{CallArgs, CallResult};

    struct Nothing;
    impl SharedObject for Nothing {
        fn call(&mut self, _: &mut Context<'_>, _: &str, _: CallArgs) -> CallResult {
            Err(RemoteError::type_error("no methods"))
        }
    }

    fn spec() -> Rc<TypeSpec> {
        Rc::new(TypeSpec::new("nothing", &[], |_, _| Ok(Box::new(Nothing))))
    }

    #[test]
    fn refcount_to_zero_is_swept() {
        let mut t = ObjectTable::default();
        let id = t.insert(spec(), Box::new(Nothing));
        assert!(t.incref(id));
        assert!(t.pop_dead().is_none(), "held objects survive the sweep");
        assert!(t.decref(id));
        assert!(!t.decref(id), "no decref below zero");
        let (dead, _) = t.pop_dead().unwrap();
        assert_eq!(dead, id);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn stale_id_is_unknown_after_reuse() {
        let mut t = ObjectTable::default();
        let old = t.insert(spec(), Box::new(Nothing));
        assert!(t.pop_dead().is_some());
        let new = t.insert(spec(), Box::new(Nothing));
        assert_eq!(old.index(), new.index(), "the slot is reused");
        assert_ne!(old, new);
        assert!(!t.contains(old));
        assert!(!t.incref(old));
        assert!(t.incref(new));
    }

    #[test]
    fn checked_out_object_is_not_swept() {
        let mut t = ObjectTable::default();
        let id = t.insert(spec(), Box::new(Nothing));
        let obj = t.get_mut(id).unwrap().object.take();
        assert!(t.pop_dead().is_none());
        t.get_mut(id).unwrap().object = obj;
        t.recheck(id);
        assert!(t.pop_dead().is_some());
    }
}
