//! The object table: live objects in a slab, addressed by generation-checked ids,
//! with refcounts and the references objects hold to one another.
//!
//! An object whose count reaches zero is not dropped on the spot: it is queued and
//! dropped by the [`Core`](super::context::Core)'s sweep, once every callback that
//! might still be using it has returned. This module never calls into an object.

use std::rc::Rc;

use slab::Slab;

use super::context::ConnId;
use super::fasthash::FastMap;
use super::gc::Collector;
use super::guard;
use super::registry::{SharedObject, TypeSpec};
use crate::proto::ObjectId;

/// One live object.
pub(crate) struct Slot {
    pub(super) generation: u32,
    pub(crate) spec: Rc<TypeSpec>,
    /// `None` while a callback has the object checked out.
    pub(crate) object: Option<Box<dyn SharedObject>>,
    pub(crate) refcount: u32,
    /// Objects this one holds references to, sorted (counted in their refcounts).
    pub(crate) holds: Vec<ObjectId>,
    /// Set when a callback panicked: the object's state may be half-updated, so
    /// it is not called again (calls get this message) but is released normally.
    pub(crate) broken: Option<Rc<str>>,
    /// The bytes it held when last asked ([`SharedObject::held_bytes`]),
    /// counted in the table's total.
    pub(crate) bytes: usize,
    /// The connection whose request created it, counted in its tally.
    owner: Option<ConnId>,
    /// The collection this slot was last scanned in (0: none; see `gc`).
    pub(super) gc_epoch: u32,
    /// Its refcount less the references other scanned objects hold to it.
    pub(super) gc_refs: i64,
    /// Reached from a root in the current collection.
    pub(super) gc_marked: bool,
}

/// The table of live objects.
#[derive(Default)]
pub(crate) struct ObjectTable {
    pub(super) slots: Slab<Slot>,
    next_generation: u32,
    /// Objects that may have reached refcount zero, checked at the next sweep.
    maybe_dead: Vec<ObjectId>,
    /// Sum of every slot's `bytes`.
    held: usize,
    /// Live objects per creating connection (entries at zero are removed).
    per_owner: FastMap<ConnId, usize>,
    /// The cycle collector's state (its write barrier is in `incref`).
    pub(crate) gc: Collector,
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
    #[cfg(test)]
    pub(crate) fn insert(&mut self, spec: Rc<TypeSpec>, object: Box<dyn SharedObject>) -> ObjectId {
        let bytes = held_bytes_of(&*object, 0);
        self.insert_owned(spec, object, None, bytes)
    }

    /// [`insert`](Self::insert), counting the object in `owner`'s tally and its
    /// `bytes` (its [`SharedObject::held_bytes`]) in the total.
    pub(crate) fn insert_owned(
        &mut self,
        spec: Rc<TypeSpec>,
        object: Box<dyn SharedObject>,
        owner: Option<ConnId>,
        bytes: usize,
    ) -> ObjectId {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        if let Some(c) = owner {
            *self.per_owner.entry(c).or_insert(0) += 1;
        }
        self.held = self.held.saturating_add(bytes);
        let index = self.slots.insert(Slot {
            generation,
            spec,
            object: Some(object),
            refcount: 0,
            holds: Vec::new(),
            broken: None,
            bytes,
            owner,
            gc_epoch: 0,
            gc_refs: 0,
            gc_marked: false,
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

    /// Bytes all live objects hold, as they last reported them.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held
    }

    /// Live objects `conn` created.
    pub(crate) fn owned_by(&self, conn: ConnId) -> usize {
        self.per_owner.get(&conn).copied().unwrap_or(0)
    }

    /// Returns a checked-out object to its slot and records the bytes it holds
    /// now (its [`SharedObject::held_bytes`], asked behind the panic guard; a
    /// panic keeps the last figure) in the table's total: one lookup, as this
    /// runs after every callback.
    pub(crate) fn check_in(&mut self, id: ObjectId, object: Box<dyn SharedObject>) -> &mut Slot {
        let slot = self
            .slots
            .get_mut(id.index() as usize)
            .filter(|s| s.generation == id.generation())
            .expect("a checked-out object is never removed");
        let bytes = held_bytes_of(&*object, slot.bytes);
        let old = std::mem::replace(&mut slot.bytes, bytes);
        self.held = self.held.saturating_sub(old).saturating_add(bytes);
        slot.object = Some(object);
        slot
    }

    /// Number of live objects (CPython's `number_of_objects`).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Adds one reference. False when the id is unknown.
    ///
    /// While a collection runs this is its write barrier: an object that gains
    /// a reference is live (marked, and what it holds is marked in turn).
    pub(crate) fn incref(&mut self, id: ObjectId) -> bool {
        match self.get_mut(id) {
            Some(s) => {
                s.refcount += 1;
                self.touch(id);
                true
            }
            None => false,
        }
    }

    /// Tells a running collection that `id` is in use (a reference taken, a
    /// call deferred on it): it is marked live if it was scanned.
    pub(crate) fn touch(&mut self, id: ObjectId) {
        let epoch = self.gc.epoch_running();
        if epoch == 0 {
            return;
        }
        if let Some(s) = self.get_mut(id) {
            if s.gc_epoch == epoch && !s.gc_marked {
                s.gc_marked = true;
                self.gc.worklist.push(id);
            }
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
        } else if !s.holds.is_empty() {
            // It may be left in a cycle only its own references keep alive.
            self.gc.wanted = true;
        }
        true
    }

    /// Drops one reference without queueing the object for the sweep: the
    /// collector freeing a cycle, whose other members it frees itself.
    pub(super) fn decref_quietly(&mut self, id: ObjectId) {
        if let Some(s) = self.get_mut(id) {
            s.refcount = s.refcount.saturating_sub(1);
        }
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
                return Some((id, self.remove(id)));
            }
        }
        None
    }

    /// Takes a live slot out of the table, whatever its refcount (the caller
    /// checked it may go).
    pub(super) fn remove(&mut self, id: ObjectId) -> Slot {
        let slot = self.slots.remove(id.index() as usize);
        self.held = self.held.saturating_sub(slot.bytes);
        if let Some(c) = slot.owner {
            if let Some(n) = self.per_owner.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    self.per_owner.remove(&c);
                }
            }
        }
        slot
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

/// `object.held_bytes()`, or `fallback` if it panics (a host type's bug costs
/// only its own accounting).
pub(crate) fn held_bytes_of(object: &dyn SharedObject, fallback: usize) -> usize {
    guard::catch(|| object.held_bytes()).unwrap_or(fallback)
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
