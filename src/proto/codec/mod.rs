//! Serializers for [`Request`](super::message::Request) and
//! [`Reply`](super::message::Reply), and how a connection's serializer is recognised.

use std::fmt;

pub mod native;
pub mod pickle;

/// The first byte of every pickle of protocol 2 or later (the PROTO opcode).
pub const PICKLE_PROTO: u8 = 0x80;

/// Which serializer a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serializer {
    /// bincode over `Value` ([`native`]).
    Native,
    /// Python's pickle, as stock CPython clients send.
    Pickle,
}

impl Serializer {
    /// Recognises the serializer from the first byte of a connection's first
    /// payload after the handshake: pickles start with 0x80, native payloads with a
    /// version byte below 0x80.
    pub fn detect(first_byte: u8) -> Serializer {
        if first_byte >= PICKLE_PROTO {
            Serializer::Pickle
        } else {
            Serializer::Native
        }
    }
}

/// A payload that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(String);

impl CodecError {
    /// An error with the given message.
    pub fn new(msg: impl Into<String>) -> CodecError {
        CodecError(msg.into())
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_by_first_byte() {
        assert_eq!(Serializer::detect(0x80), Serializer::Pickle);
        assert_eq!(
            Serializer::detect(native::NATIVE_VERSION),
            Serializer::Native
        );
        assert_eq!(Serializer::detect(0x7f), Serializer::Native);
    }
}
