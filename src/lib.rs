//! libmgr: share live objects between processes, the way Python's
//! `multiprocessing.managers` does, from an embeddable single-threaded server.
//!
//! - [`proto`]: the sans-IO protocol core (framing, handshake, values, codecs).
//! - `server`: the manager server, driven by the host's event loop (feature
//!   `server`, on by default).
//! - `client`: a blocking client with refcounted proxies and pipelining, and
//!   a non-blocking one (`client::NbClient`) for a host's own event loop
//!   (feature `client`, on by default).
//!
//! Feature `tokio` adds `server::serve`, which serves on a tokio
//! current-thread runtime.
//!
//! The C ABI (`libmgr.so`, `libmgr.a`, `include/mgr.h`) is the `libmgr-capi`
//! package beside this one, a thin layer over this crate's public API.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod address;
#[cfg(feature = "client")]
pub mod client;
#[cfg(any(feature = "client", feature = "server"))]
mod entropy;
pub mod error;
pub mod proto;
#[cfg(feature = "server")]
pub mod server;

pub use address::Address;
#[cfg(feature = "client")]
pub use client::{ConnectOptions, Manager, Proxy};
pub use error::{Error, Result};
pub use proto::{ConversionError, ObjectId, RemoteError, Reply, Request, Token, Value};
#[cfg(feature = "server")]
pub use server::{Globals, Server, ServerConfig};
