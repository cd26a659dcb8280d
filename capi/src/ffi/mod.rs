//! The C ABI (`include/mgr.h`): thin wrappers over [`server`](crate::server) and
//! [`client`](crate::client), and nothing else.
//!
//! Conventions, after rustls-ffi: every exported function is `#[no_mangle] pub
//! unsafe extern "C"` and its whole body runs inside `ffi_boundary!`, which catches
//! panics and turns failures into the fallback of the return type (an error
//! [`mgr_status`], NULL, 0 or nothing). Opaque types only: the header sees
//! `typedef struct mgr_x mgr_x;` and Rust casts the pointer to the real type.
//! `_new` returns an owned pointer, `_free` consumes it and accepts NULL. NULL
//! arguments are rejected with [`mgr_status::MGR_ERR_NULL_ARGUMENT`]; out-pointers
//! are written only on success; the message of the last failure on this thread is
//! [`mgr_last_error`](status::mgr_last_error).
//!
//! This module owns the C surface only; it must not reach into server or client
//! internals beyond their public Rust API.
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, CStr};

/// Runs an exported function's body behind a panic boundary.
///
/// The body is a closure body returning `Result<R, Fail>` (so `?` works); an `Err`
/// is recorded as the thread's last error and turned into `R`'s failure value, as
/// is a panic (with [`mgr_status::MGR_ERR_PANIC`]). Every `extern "C"` function in
/// `capi/src/ffi` has this macro as its body (`tests/header.rs` checks it).
macro_rules! ffi_boundary {
    ($($body:tt)*) => {{
        #[allow(unused_unsafe, clippy::redundant_closure_call)]
        let r = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(
            || -> ::std::result::Result<_, $crate::ffi::status::Fail> { unsafe { $($body)* } },
        ));
        $crate::ffi::status::finish(r)
    }};
}

pub mod client;
pub mod host_type;
pub mod nbclient;
pub mod request;
pub mod segment;
pub mod server;
pub mod spawn;
pub mod status;
pub mod value;

pub use client::{mgr_client, mgr_proxy};
pub use host_type::{mgr_method_typeid, mgr_type, MGR_TYPE_VERSION};
pub use nbclient::{
    mgr_nb_callback, mgr_nb_client, mgr_nb_options, mgr_nb_phase, mgr_nb_proxy,
    MGR_NB_OPTIONS_VERSION, MGR_NB_READ, MGR_NB_WRITE,
};
pub use request::{mgr_peer, mgr_reply, mgr_request, MGR_PEER_TCP, MGR_PEER_UNIX};
pub use segment::mgr_segment;
pub use server::{
    mgr_log_fn, mgr_log_kind, mgr_server, mgr_server_options, mgr_stats, MGR_SERVER_OPTIONS_VERSION,
};
pub use spawn::mgr_spawned;
pub use status::{mgr_status, Fail};
pub use value::{mgr_value, mgr_value_kind};

/// Borrows a NUL-terminated UTF-8 string argument.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(Fail::null(name));
    }
    CStr::from_ptr(p).to_str().map_err(|_| {
        Fail::new(
            mgr_status::MGR_ERR_INVALID_ARGUMENT,
            format!("{name} is not valid UTF-8"),
        )
    })
}

/// Borrows `len` bytes at `p` (NULL allowed when `len` is 0).
pub(crate) unsafe fn arg_bytes<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Fail::null(name));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// Checks an out-pointer is non-NULL.
pub(crate) fn out_ptr<T>(p: *mut T, name: &str) -> Result<&'static mut T, Fail> {
    // SAFETY: the caller promises `p` is NULL or valid for writes.
    unsafe { p.as_mut() }.ok_or_else(|| Fail::null(name))
}
