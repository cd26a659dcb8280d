//! `mgr_spawned`: a private `mgrd` started as a child process from C, as
//! CPython's `BaseManager.start()` does, over [`SpawnedServer`].

use std::ffi::{c_char, CString};
use std::path::PathBuf;
use std::time::Duration;

use super::client::mgr_client;
use super::status::{mgr_status, Fail};
use super::{arg_bytes, arg_str, out_ptr};
use crate::client::{SpawnOptions, SpawnedServer};

/// A server running as a child process (opaque). Owned: free with
/// [`mgr_spawned_free`], which stops it if it is still running.
#[derive(Debug)]
pub struct mgr_spawned {
    _private: [u8; 0],
}

struct SpawnedBox {
    server: SpawnedServer,
    address: CString,
}

unsafe fn arg_spawned<'a>(p: *mut mgr_spawned) -> Result<&'a mut SpawnedBox, Fail> {
    p.cast::<SpawnedBox>()
        .as_mut()
        .ok_or_else(|| Fail::null("spawned"))
}

/// Starts `program` (NULL: `$MGRD`, else `mgrd` beside the running executable,
/// else `mgrd` on PATH) listening on `address` (NULL: `127.0.0.1:0`, a free
/// loopback port) with the `authkey_len`-byte `authkey` (passed in its
/// environment, not its command line), and waits up to 10 s for it to report its
/// address. On success writes an owned handle to `*out`. `MGR_ERR_IO` if it cannot
/// be started or does not report in time, `MGR_ERR_PROTOCOL` if it prints
/// something else.
#[no_mangle]
pub unsafe extern "C" fn mgr_spawn(
    program: *const c_char,
    address: *const c_char,
    authkey: *const u8,
    authkey_len: usize,
    out: *mut *mut mgr_spawned,
) -> mgr_status {
    ffi_boundary! {
        let key = arg_bytes(authkey, authkey_len, "authkey")?;
        let out = out_ptr(out, "out")?;
        let mut options = SpawnOptions::new(key);
        if !program.is_null() {
            options.program = PathBuf::from(arg_str(program, "program")?);
        }
        if !address.is_null() {
            options.address = arg_str(address, "address")?.to_owned();
        }
        let server = SpawnedServer::start(&options)?;
        let address = CString::new(server.address().to_string()).unwrap_or_default();
        *out = Box::into_raw(Box::new(SpawnedBox { server, address })).cast();
        Ok(mgr_status::MGR_OK)
    }
}

/// The address the child listens on (`127.0.0.1:41234`, `unix:/path`). Owned by
/// the handle: valid until [`mgr_spawned_free`]. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_spawned_address(spawned: *mut mgr_spawned) -> *const c_char {
    ffi_boundary! { Ok(arg_spawned(spawned)?.address.as_ptr()) }
}

/// The child's process id; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_spawned_pid(spawned: *mut mgr_spawned) -> u32 {
    ffi_boundary! { Ok(arg_spawned(spawned)?.server.pid()) }
}

/// Connects a client to the child with its key. On success writes an owned
/// client to `*out` (free with `mgr_client_free`).
#[no_mangle]
pub unsafe extern "C" fn mgr_spawned_connect(
    spawned: *mut mgr_spawned,
    out: *mut *mut mgr_client,
) -> mgr_status {
    ffi_boundary! {
        let s = arg_spawned(spawned)?;
        let out = out_ptr(out, "out")?;
        let m = s.server.connect()?;
        *out = Box::into_raw(Box::new(m)).cast();
        Ok(mgr_status::MGR_OK)
    }
}

/// Stops the child as CPython's manager finalizer does: a shutdown request, up to
/// `grace_ms` to exit; then SIGTERM and up to `grace_ms` again; then SIGKILL. On
/// success writes its exit code to `*exit_code` (if not NULL): 0 for a clean
/// exit, the code it exited with, or 128 + the signal that ended it. Calling it
/// again returns the same code.
#[no_mangle]
pub unsafe extern "C" fn mgr_spawned_stop(
    spawned: *mut mgr_spawned,
    grace_ms: u32,
    exit_code: *mut i32,
) -> mgr_status {
    ffi_boundary! {
        use std::os::unix::process::ExitStatusExt;
        let s = arg_spawned(spawned)?;
        let status = s.server.stop(Duration::from_millis(grace_ms.into()))?;
        let code = status
            .code()
            .or_else(|| status.signal().map(|sig| 128 + sig))
            .unwrap_or(-1);
        if let Some(out) = exit_code.as_mut() {
            *out = code;
        }
        Ok(mgr_status::MGR_OK)
    }
}

/// Frees the handle, stopping the child first (one second of grace per step) if
/// it still runs. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn mgr_spawned_free(spawned: *mut mgr_spawned) {
    ffi_boundary! {
        if !spawned.is_null() {
            drop(Box::from_raw(spawned.cast::<SpawnedBox>()));
        }
        Ok(())
    }
}
