//! The native reply decoder (what the client reads from a server): never more
//! memory than the stated bound; what decodes re-encodes to a reply that decodes
//! to the same reply, shared values (definitions and back-references) included.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mgr::proto::codec::{native, NATIVE_BYTES_PER_INPUT_BYTE};

#[path = "counting.rs"]
mod counting;
use counting::within_bound;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = within_bound(data, NATIVE_BYTES_PER_INPUT_BYTE, native::decode_reply) {
        let mut out = Vec::new();
        native::encode_reply(&reply, &mut out);
        let again = native::decode_reply(&out).expect("re-encoded reply decodes");
        assert_eq!(format!("{again:?}"), format!("{reply:?}"));
    }
});
