//! The built-in `SyncManager` types, one file each, with CPython's typeids, exposed
//! methods, arguments and semantics, registered together by [`register_builtins`]:
//! the blocking types (Queue, JoinableQueue, Event, Lock, RLock, Semaphore,
//! BoundedSemaphore, Condition, Barrier) on deferred replies and the wait queues of
//! `waiters`, and the data types (`dict`, `list`, `Namespace`, `Value`, `Array`,
//! `Iterator`) with the Python semantics helpers they share (`pykey`, `pymap`,
//! `pyseq`), and the byte-size estimates that bound what a call may build
//! (`size`).

use super::Server;

mod array;
mod barrier;
mod condition;
mod dict;
mod event;
mod iterator;
mod list;
mod lock;
mod namespace;
mod pykey;
mod pymap;
mod pyseq;
mod queue;
mod semaphore;
pub(crate) mod size;
mod value;
mod waiters;

/// Registers every built-in SyncManager type on `server`.
pub fn register_builtins(server: &mut Server) {
    queue::register(server);
    event::register(server);
    lock::register(server);
    semaphore::register(server);
    condition::register(server);
    barrier::register(server);
    array::register(server);
    dict::register(server);
    iterator::register(server);
    list::register(server);
    namespace::register(server);
    value::register(server);
}
