//! `mgr_segment`: shared-memory segments created by a C client and tracked by the
//! server (CPython's `SharedMemoryManager.SharedMemory(size)`), over [`Segment`].

use std::ffi::{c_char, CString};

use super::client::{arg_client, mgr_client};
use super::status::{mgr_status, Fail};
use super::{arg_str, out_ptr};
use crate::client::Segment;

/// A mapped shared-memory segment (opaque). Owned: free with
/// [`mgr_segment_free`], which unmaps it; the segment itself lives until the
/// server releases it ([`mgr_client_release_segment`]) or shuts down.
#[derive(Debug)]
pub struct mgr_segment {
    _private: [u8; 0],
}

struct SegmentBox {
    segment: Segment,
    name: CString,
}

unsafe fn arg_segment<'a>(p: *mut mgr_segment) -> Result<&'a mut SegmentBox, Fail> {
    p.cast::<SegmentBox>()
        .as_mut()
        .ok_or_else(|| Fail::null("segment"))
}

/// Creates a zero-filled segment of `size` bytes, maps it and has the server
/// track it (unlinked when the server shuts down), in one call. On success writes
/// an owned segment to `*out`. Other processes open it by [`mgr_segment_name`]
/// (e.g. Python's `SharedMemory(name=...)`).
#[no_mangle]
pub unsafe extern "C" fn mgr_client_create_segment(
    client: *mut mgr_client,
    size: usize,
    out: *mut *mut mgr_segment,
) -> mgr_status {
    ffi_boundary! {
        let m = arg_client(client)?;
        let out = out_ptr(out, "out")?;
        let segment = m.create_segment(size)?;
        let name = CString::new(segment.name()).unwrap_or_default();
        *out = Box::into_raw(Box::new(SegmentBox { segment, name })).cast();
        Ok(mgr_status::MGR_OK)
    }
}

/// Has the server unlink the tracked segment `name` now. Mappings stay valid
/// until freed. `MGR_ERR_REMOTE` if the server does not track it.
#[no_mangle]
pub unsafe extern "C" fn mgr_client_release_segment(
    client: *mut mgr_client,
    name: *const c_char,
) -> mgr_status {
    ffi_boundary! {
        arg_client(client)?.release_segment(arg_str(name, "name")?)?;
        Ok(mgr_status::MGR_OK)
    }
}

/// The segment's name (`psm_` and 8 hex digits). Owned by the segment: valid
/// until [`mgr_segment_free`]. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_segment_name(segment: *mut mgr_segment) -> *const c_char {
    ffi_boundary! { Ok(arg_segment(segment)?.name.as_ptr()) }
}

/// The mapped bytes, [`mgr_segment_len`] of them, readable and writable until
/// [`mgr_segment_free`]. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_segment_data(segment: *mut mgr_segment) -> *mut u8 {
    ffi_boundary! { Ok(arg_segment(segment)?.segment.as_mut_slice().as_mut_ptr()) }
}

/// The segment's size in bytes; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn mgr_segment_len(segment: *mut mgr_segment) -> usize {
    ffi_boundary! { Ok(arg_segment(segment)?.segment.len()) }
}

/// Unmaps the segment and frees the handle. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn mgr_segment_free(segment: *mut mgr_segment) {
    ffi_boundary! {
        if !segment.is_null() {
            drop(Box::from_raw(segment.cast::<SegmentBox>()));
        }
        Ok(())
    }
}
