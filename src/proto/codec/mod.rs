//! Serializers for [`Request`](super::message::Request) and
//! [`Reply`](super::message::Reply), and how a connection's serializer is recognised.

use std::fmt;

pub mod native;
pub mod pickle;
pub mod policy;

pub use policy::Globals;

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

/// Bytes of memory a pickle decoder may hold per byte of its input (see
/// [`decode_limit`]). A one-byte opcode (`N`, `)`) can stand for a whole
/// [`Value`](crate::proto::Value), which is 48 bytes, and the pickle machine
/// keeps a 32-byte node per object until it has converted them, so no smaller
/// constant would admit every pickle CPython writes.
pub const PICKLE_BYTES_PER_INPUT_BYTE: usize = 128;

/// Bytes of memory the native decoder may hold per byte of its input (see
/// [`decode_limit`]): one [`Value`](crate::proto::Value) (48 bytes) per
/// one-byte tag at most, with room to spare.
pub const NATIVE_BYTES_PER_INPUT_BYTE: usize = 64;

/// Bytes every decode may use whatever its input's size (small inputs, fixed
/// bookkeeping).
pub const DECODE_FLOOR_BYTES: usize = 1 << 20;

/// Most bytes of memory decoding an `input_len`-byte payload may allocate, for
/// a decoder allowed `per_byte` bytes per input byte
/// ([`PICKLE_BYTES_PER_INPUT_BYTE`], [`NATIVE_BYTES_PER_INPUT_BYTE`]): every
/// allocation a decoder makes for its input — values, strings, its own stacks,
/// memo and arena — is charged to one running budget of this size, and a
/// payload that would need more is a [`CodecError`], refused before the
/// allocation is made.
pub fn decode_limit(input_len: usize, per_byte: usize) -> usize {
    input_len
        .saturating_mul(per_byte)
        .saturating_add(DECODE_FLOOR_BYTES)
}

/// Values one decoded payload may expand to, beyond
/// [`EXPANDED_VALUES_PER_INPUT_BYTE`] per input byte, when every shared part
/// ([`Value::Shared`](crate::proto::Value::Shared)) is counted at every place it
/// appears: what a full walk of the payload's values visits (`repr`, `==`,
/// hashing, a copy on write all cost this much). Sharing keeps the *memory* of
/// an aliased payload linear in its size, but a few bytes of memo references
/// can describe an exponentially large tree (`a = [a, a]` twenty times), so
/// the logical size has its own cap ([`expanded_limit`]): 2^24 (16,777,216)
/// values, sixteen times `[[[0] * 100] * 100] * 100` (1,010,101 values), and
/// about what a server walks in a fraction of a second.
pub const MAX_EXPANDED_VALUES: u64 = 1 << 24;

/// Values each input byte may add to [`expanded_limit`]: a payload without
/// sharing makes at most about two values per byte (one opcode or tag per
/// value, an opaque object's few parts from a few bytes), so a large but
/// linear payload (`[None] * 10**8` within `max_frame`) is never refused by
/// the logical cap, only an aliased one whose walk would outgrow its input.
pub const EXPANDED_VALUES_PER_INPUT_BYTE: u64 = 4;

/// Bytes of a str, bytes or big int's payload that count as one more value
/// toward [`expanded_limit`] (the size of a value): the cap bounds what a walk
/// reads, not only how many values it visits.
pub const EXPANDED_PAYLOAD_BYTES: u64 = 48;

/// Most values an `input_len`-byte payload may expand to, shared parts counted
/// at every place: [`MAX_EXPANDED_VALUES`] +
/// [`EXPANDED_VALUES_PER_INPUT_BYTE`] × `input_len`.
pub fn expanded_limit(input_len: usize) -> u64 {
    (input_len as u64)
        .saturating_mul(EXPANDED_VALUES_PER_INPUT_BYTE)
        .saturating_add(MAX_EXPANDED_VALUES)
}

/// A decode's running count of values (a str, bytes or big int also one per
/// [`EXPANDED_PAYLOAD_BYTES`] of its payload), shared parts counted at every
/// reference, refused past [`expanded_limit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expanded {
    count: u64,
    limit: u64,
}

impl Expanded {
    /// A count for decoding `input_len` bytes.
    pub(crate) fn new(input_len: usize) -> Expanded {
        Expanded {
            count: 0,
            limit: expanded_limit(input_len),
        }
    }

    /// Counts `n` more values.
    #[inline]
    pub(crate) fn add(&mut self, n: u64) -> Result<(), CodecError> {
        self.count = self.count.saturating_add(n);
        if self.count > self.limit {
            return Err(CodecError::new(format!(
                "the payload's values expand to more than {} values (MAX_EXPANDED_VALUES \
                 + {EXPANDED_VALUES_PER_INPUT_BYTE} per input byte; a str or bytes counts one \
                 more per {EXPANDED_PAYLOAD_BYTES} bytes) when shared parts are counted \
                 wherever they appear",
                self.limit
            )));
        }
        Ok(())
    }

    /// Counts the payload of a str, bytes or big int of `bytes` bytes: one
    /// more value per [`EXPANDED_PAYLOAD_BYTES`], so a walk's cost is capped
    /// in bytes too (a 1 MiB string referenced 2^24 times is refused, not a
    /// 16 TiB `repr`).
    #[inline]
    pub(crate) fn add_payload(&mut self, bytes: usize) -> Result<(), CodecError> {
        self.add(bytes as u64 / EXPANDED_PAYLOAD_BYTES)
    }

    /// Values counted so far.
    #[inline]
    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}

/// Part of the floor the budget keeps back from its charges: room for a
/// decoder's small fixed bookkeeping that is not charged (error text, a
/// global's name, a few words of state), so the measured peak stays within
/// [`decode_limit`] and not merely the charges.
const UNCHARGED_RESERVE: usize = 64 << 10;

/// The running byte budget of one decode (see [`decode_limit`]).
#[derive(Debug)]
pub(crate) struct Budget {
    left: usize,
    limit: usize,
    input_len: usize,
    per_byte: usize,
}

impl Budget {
    /// The budget for decoding `input_len` bytes at `per_byte` bytes a byte.
    pub(crate) fn new(input_len: usize, per_byte: usize) -> Budget {
        let limit = decode_limit(input_len, per_byte);
        Budget {
            left: limit - UNCHARGED_RESERVE,
            limit,
            input_len,
            per_byte,
        }
    }

    /// Charges `bytes`, or refuses once the budget is spent.
    pub(crate) fn spend(&mut self, bytes: usize) -> Result<(), CodecError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(CodecError::new(format!(
                "a {}-byte payload expands beyond {} bytes when decoded \
                 ({} bytes per input byte + {DECODE_FLOOR_BYTES}); refused",
                self.input_len, self.limit, self.per_byte
            ))),
        }
    }

    /// Charges room for `n` items of type `T`.
    pub(crate) fn spend_items<T>(&mut self, n: usize) -> Result<(), CodecError> {
        self.spend(n.saturating_mul(std::mem::size_of::<T>()))
    }

    /// Bytes still available.
    pub(crate) fn left(&self) -> usize {
        self.left
    }

    /// Makes room in `v` for `extra` more items, growing it by a quarter at a
    /// time (not doubling, so unused capacity stays a small fraction) and
    /// charging every byte of new capacity before it is allocated.
    pub(crate) fn reserve<T>(&mut self, v: &mut Vec<T>, extra: usize) -> Result<(), CodecError> {
        let need = v.len().saturating_add(extra);
        let cap = v.capacity();
        if need <= cap {
            return Ok(());
        }
        let want = need.max(cap + cap / 4).max(4);
        self.spend_items::<T>(want - cap)?;
        v.reserve_exact(want - v.len());
        // reserve_exact may round up; charge whatever it really took.
        self.spend_items::<T>(v.capacity().saturating_sub(want))
    }

    /// Charges and allocates an empty vector with room for exactly `n` items.
    pub(crate) fn vec<T>(&mut self, n: usize) -> Result<Vec<T>, CodecError> {
        self.spend_items::<T>(n)?;
        Ok(Vec::with_capacity(n))
    }
}

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

    #[test]
    fn budget_charges_capacity_and_refuses_past_its_limit() {
        assert_eq!(decode_limit(10, 64), 640 + DECODE_FLOOR_BYTES);
        assert_eq!(decode_limit(usize::MAX, 64), usize::MAX);
        let mut b = Budget::new(1000, 8);
        let mut v: Vec<u64> = Vec::new();
        b.reserve(&mut v, 100).unwrap();
        let full = 8000 + DECODE_FLOOR_BYTES - UNCHARGED_RESERVE;
        assert_eq!(b.left(), full - v.capacity() * 8);
        // Growing a full vector adds a quarter, not a doubling.
        v.resize(v.capacity(), 0);
        let cap = v.capacity();
        b.reserve(&mut v, 1).unwrap();
        assert_eq!(v.capacity(), cap + cap / 4);
        assert_eq!(b.left(), full - v.capacity() * 8);
        // Past the limit: refused, and nothing allocated for it.
        let e = b.vec::<u64>(b.left()).unwrap_err().to_string();
        assert!(e.contains("a 1000-byte payload expands beyond"), "{e}");
        assert!(b.spend(b.left()).is_ok());
        assert!(b.spend(1).is_err());
    }

    #[test]
    fn the_logical_cap_is_a_constant_plus_four_values_per_input_byte() {
        // 2**24 values for a small payload; a 64 MiB one of a value per byte
        // (`[None] * n`, linear) is far within its 2**24 + 2**28.
        for n in [0usize, 1000, 64 << 20] {
            let limit = expanded_limit(n);
            assert_eq!(limit, MAX_EXPANDED_VALUES + 4 * n as u64);
            let mut e = Expanded::new(n);
            assert!(e.add(n as u64).is_ok() && e.add(limit - n as u64).is_ok());
            let err = e.add(1).unwrap_err().to_string();
            assert!(err.contains("MAX_EXPANDED_VALUES") && err.contains(&limit.to_string()));
        }
        assert_eq!(expanded_limit(usize::MAX), u64::MAX);
    }
}
