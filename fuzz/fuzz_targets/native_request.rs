//! The native request decoder: never more memory than the stated bound; what
//! decodes must re-encode to the same request.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mgr::proto::codec::{native, Globals, NATIVE_BYTES_PER_INPUT_BYTE};

#[path = "counting.rs"]
mod counting;
use counting::within_bound;

fuzz_target!(|data: &[u8]| {
    let c = NATIVE_BYTES_PER_INPUT_BYTE;
    let _ = within_bound(data, c, native::decode_request_ref);
    // Opaque values under the other policies on globals.
    for globals in [Globals::Any, Globals::None] {
        let _ = within_bound(data, c, |d| native::decode_request_ref_with(d, globals));
    }
    if let Ok(req) = within_bound(data, c, native::decode_request) {
        let mut out = Vec::new();
        native::encode_request(&req, &mut out);
        let again = native::decode_request(&out).expect("re-encoded request decodes");
        assert_eq!(format!("{again:?}"), format!("{req:?}"));
    }
});
