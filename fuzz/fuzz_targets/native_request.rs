//! The native request decoder; what decodes must re-encode to the same request.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mgr::proto::codec::native;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = native::decode_request(data) {
        let mut out = Vec::new();
        native::encode_request(&req, &mut out);
        let again = native::decode_request(&out).expect("re-encoded request decodes");
        assert_eq!(format!("{again:?}"), format!("{req:?}"));
    }
});
