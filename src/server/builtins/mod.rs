//! The built-in SyncManager types, with CPython's typeids, exposed methods,
//! arguments and semantics. Each file registers its own types.

mod barrier;
mod condition;
mod event;
mod lock;
mod queue;
mod semaphore;
mod waiters;

use super::Server;

/// Registers every built-in SyncManager type on `server`.
pub fn register_builtins(server: &mut Server) {
    queue::register(server);
    event::register(server);
    lock::register(server);
    semaphore::register(server);
    condition::register(server);
    barrier::register(server);
}
