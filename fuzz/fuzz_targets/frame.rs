//! The frame header decoder: any bytes, any limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mgr::proto::frame;

fuzz_target!(|data: &[u8]| {
    let max = data.first().map_or(0, |&b| 1u64 << (b % 40));
    if let Ok(Some(h)) = frame::decode_header(data, max) {
        assert!(h.payload_len as u64 <= max);
    }
});
