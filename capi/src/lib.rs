//! libmgr's C ABI: builds `libmgr.so` (SONAME `libmgr.so.0`) and `libmgr.a`, whose
//! header `include/mgr.h` cbindgen generates from [`ffi`] (`tests/header.rs` checks
//! it). Everything here is a thin wrapper over the public Rust API of the `libmgr`
//! package (crate `mgr`); Rust programs depend on that package, not on this one.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

// The C surface is written against the Rust library's modules by their crate-level
// names (`crate::server`, `crate::proto` …).
pub(crate) use mgr::{address, client, error, proto, server, Error, Result};

pub mod ffi;

#[cfg(test)]
mod tests;
