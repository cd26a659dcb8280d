//! The length-prefix framing of `multiprocessing.connection`.
//!
//! A frame is a 4-byte big-endian *signed* length followed by the payload. A length
//! of -1 announces an 8-byte big-endian unsigned length (payloads of 2 GiB - 1 and
//! over). This module owns only the header arithmetic: it never allocates a payload,
//! so a hostile length is rejected by [`decode_header`] before anyone reserves memory
//! for it.

use std::fmt;

/// Default cap on one frame's payload: 64 MiB.
pub const DEFAULT_MAX_FRAME: u64 = 64 << 20;

/// Largest payload the short 4-byte header can describe.
const SHORT_MAX: u64 = i32::MAX as u64;

/// A decoded frame header: how many bytes the header took and how long the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes taken by the header itself (4 or 12).
    pub header_len: usize,
    /// Bytes of payload that follow the header.
    pub payload_len: usize,
}

impl FrameHeader {
    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The announced payload is larger than the configured limit.
    TooLarge {
        /// Announced payload length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// A negative 4-byte length other than the -1 escape.
    NegativeLength(i32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            FrameError::NegativeLength(n) => write!(f, "invalid negative frame length {n}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads a frame header from the front of `buf`.
///
/// Returns `Ok(None)` while the header is incomplete, the header once it is whole,
/// or an error when the length is invalid or over `max` — checked before the
/// payload is waited for, let alone allocated.
///
/// # Errors
///
/// [`FrameError`] when the announced length is negative (and not the 8-byte
/// form's marker) or over `max`.
pub fn decode_header(buf: &[u8], max: u64) -> Result<Option<FrameHeader>, FrameError> {
    let Some(short) = buf.get(..4) else {
        return Ok(None);
    };
    let n = i32::from_be_bytes([short[0], short[1], short[2], short[3]]);
    let (header_len, len) = match n {
        0.. => (4, n as u64),
        -1 => {
            let Some(long) = buf.get(4..12) else {
                return Ok(None);
            };
            let mut b = [0u8; 8];
            b.copy_from_slice(long);
            (12, u64::from_be_bytes(b))
        }
        _ => return Err(FrameError::NegativeLength(n)),
    };
    if len > max || len > usize::MAX as u64 {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(Some(FrameHeader {
        header_len,
        payload_len: len as usize,
    }))
}

/// Appends the header for a payload of `len` bytes to `out`.
pub fn encode_header(len: usize, out: &mut Vec<u8>) {
    let len = len as u64;
    if len > SHORT_MAX {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.extend_from_slice(&(len as i32).to_be_bytes());
    }
}

/// Appends a whole frame (header and payload) to `out`.
pub fn write_frame(payload: &[u8], out: &mut Vec<u8>) {
    encode_header(payload.len(), out);
    out.extend_from_slice(payload);
}

/// Reserves a 4-byte header in `out` for a payload about to be appended in place.
///
/// Pair with [`finish_frame`]: `let at = begin_frame(out); /* append payload */
/// finish_frame(out, at);`. This lets encoders write straight into an output buffer
/// with no intermediate copy.
#[must_use]
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Fills in the header reserved by [`begin_frame`] at `at`, now that the payload
/// runs to the end of `out`. A payload too long for the short form gets the long
/// header (the payload is moved up by 8 bytes; that costs a copy only past 2 GiB).
pub fn finish_frame(out: &mut Vec<u8>, at: usize) {
    let len = (out.len() - at - 4) as u64;
    if len > SHORT_MAX {
        out.splice(at + 4..at + 4, len.to_be_bytes());
        out[at..at + 4].copy_from_slice(&(-1i32).to_be_bytes());
    } else {
        out[at..at + 4].copy_from_slice(&(len as i32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_header_roundtrip() {
        let mut out = Vec::new();
        write_frame(b"hello", &mut out);
        assert_eq!(&out[..4], &[0, 0, 0, 5]);
        let h = decode_header(&out, 100).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                header_len: 4,
                payload_len: 5
            }
        );
        assert_eq!(&out[h.header_len..h.total_len()], b"hello");
    }

    #[test]
    fn incomplete_header_waits() {
        assert_eq!(decode_header(&[0, 0, 0], 100), Ok(None));
        assert_eq!(
            decode_header(&[0xff, 0xff, 0xff, 0xff, 0, 0], 100),
            Ok(None)
        );
    }

    #[test]
    fn long_header_is_read() {
        let mut buf = vec![0xff, 0xff, 0xff, 0xff];
        buf.extend_from_slice(&7u64.to_be_bytes());
        let h = decode_header(&buf, 100).unwrap().unwrap();
        assert_eq!(h.header_len, 12);
        assert_eq!(h.payload_len, 7);
    }

    #[test]
    fn oversize_rejected_before_payload() {
        // Only the header is present: the limit is enforced without the payload.
        assert_eq!(
            decode_header(&[0x7f, 0xff, 0xff, 0xff], 1024),
            Err(FrameError::TooLarge {
                len: i32::MAX as u64,
                max: 1024
            })
        );
        let mut buf = vec![0xff; 4];
        buf.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            decode_header(&buf, DEFAULT_MAX_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn negative_length_rejected() {
        assert_eq!(
            decode_header(&(-2i32).to_be_bytes(), 100),
            Err(FrameError::NegativeLength(-2))
        );
    }

    #[test]
    fn in_place_frame_matches_write_frame() {
        let mut a = b"prefix".to_vec();
        let at = begin_frame(&mut a);
        a.extend_from_slice(b"payload");
        finish_frame(&mut a, at);
        let mut b = b"prefix".to_vec();
        write_frame(b"payload", &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn header_boundary_uses_short_form_at_max() {
        let mut out = Vec::new();
        encode_header(i32::MAX as usize, &mut out);
        assert_eq!(out.len(), 4);
        out.clear();
        encode_header(i32::MAX as usize + 1, &mut out);
        assert_eq!(out.len(), 12);
        assert_eq!(&out[..4], &[0xff; 4]);
    }
}
