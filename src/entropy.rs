//! Random bytes for handshake challenges, from the kernel (`getrandom(2)`).

use std::io;

/// 40 random bytes (enough for a modern challenge).
pub(crate) fn challenge_bytes() -> [u8; 40] {
    let mut buf = [0u8; 40];
    let mut filled = 0;
    while filled < buf.len() {
        let tail = &mut buf[filled..];
        // SAFETY: the pointer and length describe the writable tail of `buf`.
        let n = unsafe { libc::getrandom(tail.as_mut_ptr().cast(), tail.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else {
            let e = io::Error::last_os_error();
            assert!(
                e.kind() == io::ErrorKind::Interrupted,
                "getrandom failed: {e}"
            );
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_differ_between_calls() {
        assert_ne!(super::challenge_bytes(), super::challenge_bytes());
    }
}
