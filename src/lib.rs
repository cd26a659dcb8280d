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
//! current-thread runtime; feature `spawn` (on by default, part of the
//! client) adds `client::SpawnedServer`, which starts a private `mgrd` as a
//! child process, as CPython's `BaseManager.start()` does.
//!
//! # Example
//!
//! A server on a thread of its own, and a client that shares a dict through
//! it (any other process could connect too, a stock CPython client among
//! them):
//!
//! ```
//! # #[cfg(all(feature = "client", feature = "server"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use mgr::{Manager, Server, ServerConfig, Value};
//!
//! // A server lives on the thread that binds it (it is not `Send`).
//! let (tx, rx) = std::sync::mpsc::channel();
//! let serving = std::thread::spawn(move || -> mgr::Result<()> {
//!     let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse()?, b"secret"))?;
//!     server.register_builtins(); // dict, list, Queue, Lock, Namespace …
//!     tx.send(server.address().clone()).unwrap();
//!     server.run() // until a client asks for shutdown
//! });
//!
//! let m = Manager::connect_to(&rx.recv()?, b"secret")?;
//! let d = m.create("dict", vec![])?;
//! d.call("__setitem__", vec![Value::from("answer"), Value::Int(42)])?;
//! assert_eq!(d.call("get", vec![Value::from("answer")])?, Value::Int(42));
//!
//! // A Python exception raised remotely is an error with its kind.
//! let e = d.call("__getitem__", vec![Value::from("missing")]).unwrap_err();
//! assert_eq!(e.remote_kind(), Some("KeyError"));
//!
//! drop(d); // releases the reference
//! m.shutdown()?;
//! serving.join().unwrap()?;
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "client", feature = "server")))]
//! # fn main() {}
//! ```
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
#[cfg(feature = "serde")]
mod serde_value;
#[cfg(feature = "server")]
pub mod server;

pub use address::Address;
#[cfg(feature = "client")]
pub use client::{ConnectOptions, Manager, Proxy};
pub use error::{Error, Result};
pub use proto::{ConversionError, ObjectId, RemoteError, Reply, Request, Token, Value};
#[cfg(feature = "serde")]
pub use serde_value::{from_value, to_value, SerdeError};
#[cfg(feature = "server")]
pub use server::{Globals, Server, ServerConfig};
