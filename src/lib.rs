//! libmgr: share live objects between processes, the way Python's
//! `multiprocessing.managers` does, from an embeddable single-threaded server.
//!
//! - [`proto`]: the sans-IO protocol core (framing, handshake, values, codecs).
//! - [`server`]: the manager server, driven by the host's event loop.
//! - [`client`]: a blocking client with refcounted proxies and pipelining.
//!
//! The C ABI (`libmgr.so`, `libmgr.a`, `include/mgr.h`) is the `libmgr-capi`
//! package beside this one, a thin layer over this crate's public API.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod address;
pub mod client;
mod entropy;
pub mod error;
pub mod proto;
pub mod server;

pub use address::Address;
pub use client::{ConnectOptions, Manager, Proxy};
pub use error::{Error, Result};
pub use proto::{ConversionError, ObjectId, RemoteError, Reply, Request, Token, Value};
pub use server::{Globals, Server, ServerConfig};
