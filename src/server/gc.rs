//! The cycle collector: frees objects that only reference one another (a list
//! that holds itself, a dict and a list that hold each other), which reference
//! counting alone never frees. CPython's manager leaks them forever
//! (gh-103136).
//!
//! It is trial deletion over the object graph the table keeps (each slot's
//! `holds`), run incrementally: each step does a bounded amount of work
//! ([`ServerConfig::gc_work_per_turn`](super::ServerConfig::gc_work_per_turn)
//! units: a slot looked at, a held reference followed, an object freed) and
//! remembers where it stopped, so a large graph never stalls a turn.
//!
//! One collection, over the slots in index order:
//! 1. **Init**: each live slot's `gc_refs` is its refcount (a snapshot).
//! 2. **Subtract**: each reference a scanned object holds to another scanned
//!    object is taken off the target's `gc_refs`. What is left counts the
//!    references from outside the graph: clients, names, loans.
//! 3. **Roots**: objects with `gc_refs > 0`, and those deferred calls wait on,
//!    are marked, and everything they hold, transitively.
//! 4. **Free**: scanned objects left unmarked are garbage: destroyed, and the
//!    references they held released (quietly for other garbage, which this
//!    pass frees itself, so a long ring is not freed in one sweep).
//!
//! Between steps the graph changes. The write barrier keeps that safe: any
//! object that gains a reference while a collection runs
//! ([`ObjectTable::incref`](super::objects::ObjectTable::incref), which every
//! new edge, client reference, loan and name goes through) or that a call is
//! deferred on is marked, and so is all it holds. An object could only turn
//! live by gaining a reference, so nothing live is freed; references dropped
//! meanwhile only leave garbage for the next collection. Objects created
//! during a collection are not scanned by it (their `gc_epoch` is not the
//! collection's) and so never freed by it. (One case cannot be undone: a
//! reference taken by bare id, with no reference held, to a member of a cycle
//! already being freed keeps that member and what is left of its cycle, not
//! the members freed before — as an object swept at refcount zero is gone.)
//!
//! A collection starts when a decref leaves an object that holds references
//! still referenced (the only way a cycle can become unreachable); while one
//! is wanted or running, [`Server::has_pending_work`](super::Server::has_pending_work)
//! is true so a host keeps turning.
//!
//! This module owns the collector's state and its steps; it calls into
//! objects only to destroy garbage, as the sweep does.

use super::context::Core;
use super::fasthash::FastMap;
use crate::proto::ObjectId;

/// Where a collection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Idle,
    Init,
    Subtract,
    /// `pending` once the deferred calls' objects have been marked.
    Roots {
        pending: bool,
    },
    Free,
}

/// The collector's state, kept in the object table (whose `incref` is the
/// write barrier).
#[derive(Debug, Default)]
pub(crate) struct Collector {
    phase: Phase,
    /// The running (or last) collection's number; never 0 (0 marks a slot
    /// no collection scanned).
    epoch: u32,
    /// The next slot index the phase looks at.
    cursor: usize,
    /// Marked objects whose held references are still to be followed.
    pub(super) worklist: Vec<ObjectId>,
    /// A decref may have left a cycle unreachable: collect (again).
    pub(crate) wanted: bool,
    /// Work units per step (0: the collector is off).
    pub(crate) work_per_turn: usize,
    /// Collections finished.
    pub(crate) collections: u64,
    /// Objects the collector freed.
    pub(crate) freed: u64,
    /// The most work one step did.
    pub(crate) longest_step: u64,
}

impl Collector {
    /// The running collection's epoch, or 0 when none runs.
    pub(super) fn epoch_running(&self) -> u32 {
        if self.phase == Phase::Idle {
            0
        } else {
            self.epoch
        }
    }

    /// Whether a collection is running or wanted.
    pub(crate) fn busy(&self) -> bool {
        self.work_per_turn > 0 && (self.wanted || self.phase != Phase::Idle)
    }
}

impl Core {
    /// Runs one step of the cycle collector: at most `gc.work_per_turn` units
    /// of work, plus the references of the last object looked at (an object's
    /// references are followed in one go, as recounting them after a call
    /// does). Returns the work done. Call it outside any callback.
    pub(crate) fn collect_step(&mut self) -> usize {
        let gc = &mut self.objects.gc;
        let budget = gc.work_per_turn;
        if budget == 0 {
            return 0;
        }
        if gc.phase == Phase::Idle {
            if !gc.wanted {
                return 0;
            }
            gc.wanted = false;
            gc.epoch = gc.epoch.wrapping_add(1).max(1);
            gc.cursor = 0;
            gc.worklist.clear();
            gc.phase = Phase::Init;
        }
        let mut work = 0;
        while work < budget {
            work += match self.objects.gc.phase {
                Phase::Idle => break,
                Phase::Init => self.init_one(),
                Phase::Subtract => self.subtract_one(),
                Phase::Roots { pending: false } => {
                    let ids: Vec<ObjectId> = self.pending_objects().collect();
                    for &id in &ids {
                        self.objects.touch(id);
                    }
                    self.objects.gc.phase = Phase::Roots { pending: true };
                    1 + ids.len()
                }
                Phase::Roots { pending: true } => self.root_one(),
                Phase::Free => self.free_one(),
            };
        }
        let gc = &mut self.objects.gc;
        gc.longest_step = gc.longest_step.max(work as u64);
        work
    }

    /// Init: snapshots one slot's refcount.
    fn init_one(&mut self) -> usize {
        let t = &mut self.objects;
        let epoch = t.gc.epoch;
        if t.gc.cursor >= t.slots.capacity() {
            t.gc.cursor = 0;
            t.gc.phase = Phase::Subtract;
            return 1;
        }
        if let Some(s) = t.slots.get_mut(t.gc.cursor) {
            s.gc_epoch = epoch;
            s.gc_refs = i64::from(s.refcount);
            s.gc_marked = false;
        }
        t.gc.cursor += 1;
        1
    }

    /// Subtract: takes one scanned slot's held references off their targets.
    fn subtract_one(&mut self) -> usize {
        let t = &mut self.objects;
        let epoch = t.gc.epoch;
        let at = t.gc.cursor;
        if at >= t.slots.capacity() {
            t.gc.cursor = 0;
            t.gc.phase = Phase::Roots { pending: false };
            return 1;
        }
        t.gc.cursor += 1;
        let n = match t.slots.get(at) {
            Some(s) if s.gc_epoch == epoch => s.holds.len(),
            _ => return 1,
        };
        for k in 0..n {
            let h = t.slots[at].holds[k];
            if let Some(target) = t.get_mut(h) {
                if target.gc_epoch == epoch {
                    target.gc_refs -= 1;
                }
            }
        }
        1 + n
    }

    /// Follows the references of one marked object, marking what they name.
    fn trace_one(&mut self, id: ObjectId) -> usize {
        let t = &mut self.objects;
        let n = t.get(id).map_or(0, |s| s.holds.len());
        for k in 0..n {
            let h = t.get(id).expect("live").holds[k];
            t.touch(h);
        }
        1 + n
    }

    /// Roots: traces a marked object, or marks one slot if only outside
    /// references explain its refcount; then goes on to Free.
    fn root_one(&mut self) -> usize {
        if let Some(id) = self.objects.gc.worklist.pop() {
            return self.trace_one(id);
        }
        let t = &mut self.objects;
        let epoch = t.gc.epoch;
        let at = t.gc.cursor;
        if at >= t.slots.capacity() {
            t.gc.cursor = 0;
            t.gc.phase = Phase::Free;
            return 1;
        }
        t.gc.cursor += 1;
        if let Some(s) = t.slots.get_mut(at) {
            let checked_out = s.object.is_none();
            if s.gc_epoch == epoch && !s.gc_marked && (s.gc_refs > 0 || checked_out) {
                s.gc_marked = true;
                let id = ObjectId::new(at as u32, s.generation);
                t.gc.worklist.push(id);
            }
        }
        1
    }

    /// Free: traces what the barrier marked meanwhile, else frees one slot
    /// if it is garbage; at the end, the collection is over.
    fn free_one(&mut self) -> usize {
        if let Some(id) = self.objects.gc.worklist.pop() {
            return self.trace_one(id);
        }
        let t = &mut self.objects;
        let epoch = t.gc.epoch;
        let at = t.gc.cursor;
        if at >= t.slots.capacity() {
            t.gc.phase = Phase::Idle;
            t.gc.collections += 1;
            return 1;
        }
        t.gc.cursor += 1;
        let id = match t.slots.get(at) {
            Some(s) if s.gc_epoch == epoch && !s.gc_marked && s.object.is_some() => {
                ObjectId::new(at as u32, s.generation)
            }
            _ => return 1,
        };
        let slot = t.remove(id);
        t.gc.freed += 1;
        let holds = self.destroy(id, slot);
        let n = holds.len();
        for h in holds {
            if self.is_garbage(h) {
                self.objects.decref_quietly(h);
            } else {
                self.objects.decref(h);
            }
        }
        1 + n
    }

    /// Whether `id` was scanned by the running collection and not marked.
    fn is_garbage(&self, id: ObjectId) -> bool {
        let epoch = self.objects.gc.epoch_running();
        self.objects
            .get(id)
            .is_some_and(|s| epoch != 0 && s.gc_epoch == epoch && !s.gc_marked)
    }
}

impl Core {
    /// How many live objects only loans keep alive (a reply's grace), directly
    /// or through what such objects hold. Costs the loans plus the references
    /// held by the objects found (a cycle among them is not found: it is the
    /// collector's to free, and is counted until then).
    pub(crate) fn on_loan_only(&self) -> usize {
        let loans: FastMap<ObjectId, u32> = self.loans.lent().collect();
        // References each object gets from objects found so far.
        let mut from_found: FastMap<ObjectId, u32> = FastMap::default();
        let mut found: Vec<ObjectId> = loans
            .iter()
            .filter(|&(&id, &n)| self.objects.get(id).is_some_and(|s| s.refcount <= n))
            .map(|(&id, _)| id)
            .collect();
        let mut i = 0;
        while let Some(&id) = found.get(i) {
            i += 1;
            let Some(slot) = self.objects.get(id) else {
                continue;
            };
            for &h in &slot.holds {
                let Some(target) = self.objects.get(h) else {
                    continue;
                };
                let n = from_found.entry(h).or_insert(0);
                *n += 1;
                let lent = loans.get(&h).copied().unwrap_or(0);
                if *n + lent == target.refcount {
                    found.push(h);
                }
            }
        }
        found.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RemoteError;
    use crate::server::context::Context;
    use crate::server::registry::{CallArgs, CallResult, SharedObject, TypeSpec};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Holds the references in its shared cell (so a test can rewire it).
    struct Node(Rc<RefCell<Vec<ObjectId>>>);
    impl SharedObject for Node {
        fn call(&mut self, _: &mut Context<'_>, _: &str, _: CallArgs) -> CallResult {
            Err(RemoteError::type_error("no methods"))
        }
        fn visit_refs(&self, f: &mut dyn FnMut(ObjectId)) {
            self.0.borrow().iter().for_each(|&id| f(id));
        }
    }

    fn spec() -> Rc<TypeSpec> {
        Rc::new(TypeSpec::new("node", &[], |_, _| {
            Err(RemoteError::type_error("unused"))
        }))
    }

    /// `n` nodes; returns their ids and the cells of what they hold.
    fn nodes(core: &mut Core, n: usize) -> Vec<(ObjectId, Rc<RefCell<Vec<ObjectId>>>)> {
        let spec = spec();
        (0..n)
            .map(|_| {
                let cell = Rc::new(RefCell::new(Vec::new()));
                let id = core
                    .objects
                    .insert(spec.clone(), Box::new(Node(cell.clone())));
                (id, cell)
            })
            .collect()
    }

    /// Makes `from` hold `to` (and counts it, as a call storing it would).
    fn link(core: &mut Core, from: &(ObjectId, Rc<RefCell<Vec<ObjectId>>>), to: ObjectId) {
        from.1.borrow_mut().push(to);
        core.rescan_refs(from.0);
    }

    fn core(work: usize) -> Core {
        let mut core = Core::new();
        core.objects.gc.work_per_turn = work;
        core
    }

    /// Steps until the collector is idle; returns the steps and the most work
    /// one did. Panics past `max_steps`.
    fn run(core: &mut Core, max_steps: usize) -> (usize, usize) {
        let (mut steps, mut most) = (0, 0);
        core.sweep();
        while core.objects.gc.busy() {
            most = most.max(core.collect_step());
            core.sweep();
            steps += 1;
            assert!(steps <= max_steps, "the collector does not finish");
        }
        (steps, most)
    }

    #[test]
    fn a_big_ring_is_freed_in_bounded_steps() {
        const N: usize = 100_000;
        const WORK: usize = 1000;
        let mut core = core(WORK);
        let ring = nodes(&mut core, N);
        for i in 0..N {
            link(&mut core, &ring[i], ring[(i + 1) % N].0);
        }
        // A client holds the first node; the ring is live.
        assert!(core.objects.incref(ring[0].0));
        core.sweep();
        run(&mut core, 10_000);
        assert_eq!(core.objects.len(), N, "a referenced ring is kept");
        // The client lets go: only the ring's own references are left.
        assert!(core.objects.decref(ring[0].0));
        core.sweep();
        assert_eq!(core.objects.len(), N, "refcounting alone frees nothing");
        assert!(core.objects.gc.busy());
        let (steps, most) = run(&mut core, 10_000);
        assert_eq!(core.objects.len(), 0, "the collector frees the whole ring");
        assert_eq!(core.objects.gc.freed, N as u64);
        // Each step stops once it has spent its budget; the last unit is one
        // object's references (one here).
        assert!(most <= WORK + 1, "a step did {most} units");
        // Init, Subtract, Roots and Free each visit every slot once: work the
        // steps shared out, rather than one step doing it all.
        assert!(steps >= 4 * N / (WORK + 1), "{steps} steps");
    }

    #[test]
    fn a_self_reference_and_a_pair_are_freed_and_what_is_held_from_outside_is_not() {
        let mut core = core(16);
        let n = nodes(&mut core, 5);
        // 0 holds itself; 1 <-> 2; 3 is held by a client and holds 4, which
        // holds 3 back.
        link(&mut core, &n[0], n[0].0);
        link(&mut core, &n[1], n[2].0);
        link(&mut core, &n[2], n[1].0);
        link(&mut core, &n[3], n[4].0);
        link(&mut core, &n[4], n[3].0);
        core.objects.incref(n[3].0);
        core.objects.gc.wanted = true;
        core.sweep();
        run(&mut core, 1000);
        assert_eq!(core.objects.len(), 2);
        assert!(core.objects.contains(n[3].0) && core.objects.contains(n[4].0));
    }

    #[test]
    fn a_pending_call_and_a_loan_keep_a_cycle() {
        let mut core = core(16);
        let n = nodes(&mut core, 4);
        link(&mut core, &n[0], n[1].0);
        link(&mut core, &n[1], n[0].0);
        link(&mut core, &n[2], n[3].0);
        link(&mut core, &n[3], n[2].0);
        let h = core.defer(None, n[0].0, None);
        core.lend(&crate::proto::Value::Ref(crate::proto::Token {
            typeid: "node".into(),
            id: n[2].0,
        }));
        core.objects.gc.wanted = true;
        core.sweep();
        run(&mut core, 1000);
        assert_eq!(core.objects.len(), 4, "both cycles are reachable");
        core.discard(h);
        core.repay_all_loans();
        core.objects.gc.wanted = true;
        run(&mut core, 1000);
        assert_eq!(core.objects.len(), 0);
    }

    #[test]
    fn what_only_a_loan_keeps_is_not_counted_as_held() {
        let mut core = core(0);
        let n = nodes(&mut core, 4);
        // 0 -> 1 -> 2, and 3 -> 2; 0 is only on loan, 3 held by a client.
        link(&mut core, &n[0], n[1].0);
        link(&mut core, &n[1], n[2].0);
        link(&mut core, &n[3], n[2].0);
        core.objects.incref(n[3].0);
        core.lend(&crate::proto::Value::Ref(crate::proto::Token {
            typeid: "node".into(),
            id: n[0].0,
        }));
        core.sweep();
        assert_eq!(core.on_loan_only(), 2, "0 and 1; 2 is held by 3 too");
        assert_eq!(core.held_objects(), 2);
        core.objects.decref(n[3].0);
        core.sweep();
        assert_eq!(
            core.on_loan_only(),
            3,
            "3 went: 2 is reached only from the loan too"
        );
        assert_eq!(core.objects.len(), 3);
        assert_eq!(core.held_objects(), 0);
    }

    #[test]
    fn references_taken_during_a_collection_keep_what_they_reach() {
        // Stop a collection in every phase and step, take a reference to a
        // cycle member, and check nothing reachable is freed.
        for stop_after in 0..40 {
            let mut core = core(1);
            let n = nodes(&mut core, 3);
            link(&mut core, &n[0], n[1].0);
            link(&mut core, &n[1], n[2].0);
            link(&mut core, &n[2], n[0].0);
            core.objects.gc.wanted = true;
            for _ in 0..stop_after {
                core.collect_step();
            }
            // A client takes a reference to node 1 by its bare id.
            let freeing = core.objects.gc.phase == Phase::Free;
            let resurrected = core.objects.incref(n[1].0);
            run(&mut core, 1000);
            if resurrected {
                assert!(core.objects.contains(n[1].0), "stopped after {stop_after}");
                if !freeing {
                    assert_eq!(core.objects.len(), 3, "stopped after {stop_after}");
                }
                core.objects.decref(n[1].0);
                run(&mut core, 1000);
            }
            assert_eq!(core.objects.len(), 0, "stopped after {stop_after}");
        }
    }

    #[test]
    fn an_edge_moved_during_a_collection_is_followed() {
        // A live holder (client reference) takes over a cycle member while the
        // collection runs: the member and what it reaches stay.
        for stop_after in 0..40 {
            let mut core = core(1);
            let n = nodes(&mut core, 3);
            core.objects.incref(n[0].0);
            link(&mut core, &n[1], n[2].0);
            link(&mut core, &n[2], n[1].0);
            link(&mut core, &n[0], n[1].0);
            core.objects.gc.wanted = true;
            for _ in 0..stop_after {
                core.collect_step();
            }
            // n0 lets go of n1 and takes it back in one call.
            n[0].1.borrow_mut().clear();
            core.rescan_refs(n[0].0);
            link(&mut core, &n[0], n[1].0);
            core.sweep();
            run(&mut core, 1000);
            assert_eq!(core.objects.len(), 3, "stopped after {stop_after}");
        }
    }
}
