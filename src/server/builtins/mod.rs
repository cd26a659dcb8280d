//! The built-in `SyncManager` types, one file each, registered together by
//! [`register_builtins`]: the data types (`dict`, `list`, `Namespace`, `Value`,
//! `Array`, `Iterator`) with the Python semantics helpers they share (`pykey`,
//! `pymap`, `pyseq`).

use super::Server;

mod array;
mod dict;
mod iterator;
mod list;
mod namespace;
mod pykey;
mod pymap;
mod pyseq;
mod value;

/// Registers every built-in SyncManager type on `server`.
pub fn register_builtins(server: &mut Server) {
    array::register(server);
    dict::register(server);
    iterator::register(server);
    list::register(server);
    namespace::register(server);
    value::register(server);
}
