//! libmgr: share live objects between processes.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod proto;
