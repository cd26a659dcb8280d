//! The fuzz targets' allocation bound: the counting allocator of the test suite
//! (`tests/counting/mod.rs`), and [`within_bound`], which asserts the decoders'
//! stated memory bound (`mgr::proto::codec::decode_limit`) on every input.
//! libFuzzer runs one input at a time on one thread.

#[path = "../../tests/counting/mod.rs"]
mod alloc;

pub use alloc::measure;

/// Runs the decoder `f` over `data` and panics if it used more memory than
/// `decode_limit(data.len(), per_byte)`.
#[allow(dead_code)] // the frame target only measures
pub fn within_bound<'a, T>(data: &'a [u8], per_byte: usize, f: impl FnOnce(&'a [u8]) -> T) -> T {
    let (out, peak) = measure(|| f(data));
    let limit = mgr::proto::codec::decode_limit(data.len(), per_byte);
    assert!(
        peak <= limit,
        "decoding {} bytes peaked at {peak} bytes, over the limit of {limit}",
        data.len()
    );
    out
}
