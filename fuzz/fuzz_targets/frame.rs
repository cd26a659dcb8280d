//! The frame header decoder: any bytes, any limit; it never allocates.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mgr::proto::frame;

#[path = "counting.rs"]
mod counting;

fuzz_target!(|data: &[u8]| {
    let max = data.first().map_or(0, |&b| 1u64 << (b % 40));
    let (res, peak) = counting::measure(|| frame::decode_header(data, max));
    assert_eq!(peak, 0, "the frame header decoder allocated");
    if let Ok(Some(h)) = res {
        assert!(h.payload_len as u64 <= max);
    }
});
