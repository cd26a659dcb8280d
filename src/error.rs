//! The crate's error type, shared by the server and the client.

use std::fmt;
use std::io;

use crate::address::AddressError;
use crate::proto::auth::AuthError;
use crate::proto::codec::CodecError;
use crate::proto::frame::FrameError;
use crate::proto::RemoteError;

/// Everything that can go wrong in libmgr.
#[derive(Debug)]
pub enum Error {
    /// A socket or system call failed.
    Io(io::Error),
    /// An address could not be parsed or resolved.
    Address(AddressError),
    /// The handshake failed (wrong key, or a peer that does not speak the protocol).
    Auth(AuthError),
    /// A frame header was invalid or over the size limit.
    Frame(FrameError),
    /// A payload could not be decoded.
    Codec(CodecError),
    /// The remote method raised: `kind` is the Python exception kind.
    Remote(RemoteError),
    /// The peer broke the protocol, or the call was used wrongly.
    Protocol(String),
    /// The operation was refused by configuration (e.g. no key on a public address).
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Address(e) => write!(f, "bad address: {e}"),
            Error::Auth(e) => write!(f, "authentication failed: {e}"),
            Error::Frame(e) => write!(f, "bad frame: {e}"),
            Error::Codec(e) => write!(f, "bad payload: {e}"),
            Error::Remote(e) => write!(f, "remote error: {e}"),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Config(e) => write!(f, "configuration error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Auth(e) => Some(e),
            Error::Frame(e) => Some(e),
            Error::Codec(e) => Some(e),
            Error::Remote(e) => Some(e),
            Error::Address(e) => Some(e),
            Error::Protocol(_) | Error::Config(_) => None,
        }
    }
}

macro_rules! from_error {
    ($($ty:ty => $variant:ident),*) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Error {
                Error::$variant(e)
            }
        }
    )*};
}

from_error!(io::Error => Io, AddressError => Address, AuthError => Auth, FrameError => Frame,
    CodecError => Codec, RemoteError => Remote);

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
