#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]
//! The sans-IO protocol core: bytes in, bytes out.
//!
//! Nothing in this module touches a socket, a clock source or mio: callers feed it
//! bytes (and, where time matters, the current instant) and take bytes back. That is
//! what makes every piece of it unit-testable without a socket or a sleep.

pub mod auth;
pub mod codec;
pub mod frame;
pub mod message;
pub mod session;
pub mod value;

pub use message::{RemoteError, Reply, Request, RequestRef};
pub use value::{ArrayData, ConversionError, Form, ObjectId, PyObject, Slice, Token, Value};
