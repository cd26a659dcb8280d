//! The native reply decoder (what the client reads from a server).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mgr::proto::codec::native;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = native::decode_reply(data) {
        let mut out = Vec::new();
        native::encode_reply(&reply, &mut out);
        assert!(native::decode_reply(&out).is_ok());
    }
});
