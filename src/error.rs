//! The crate's error type, shared by the server and the client.
//!
//! Every [`Error`]'s `Display` is a complete one-line message, and
//! [`source`](std::error::Error::source) returns only what that message does not
//! already say, so a report that walks the chain (`anyhow`'s `{:#}`, say) never
//! prints the same text twice: a variant that wraps another error shows that
//! error's own message and passes on that error's source.

#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

use std::fmt;
use std::io;

use crate::address::{Address, AddressError};
use crate::proto::auth::AuthError;
use crate::proto::codec::CodecError;
use crate::proto::frame::FrameError;
use crate::proto::RemoteError;

/// Everything that can go wrong in libmgr. More kinds may be added: match with
/// a wildcard arm.
///
/// A remote Python exception is [`Error::Remote`]; match on its kind:
///
/// ```
/// # let (tx, rx) = std::sync::mpsc::channel();
/// # let server = std::thread::spawn(move || -> mgr::Result<()> {
/// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
/// #     let mut s = mgr::Server::bind(config)?;
/// #     s.register_builtins();
/// #     tx.send(s.address().to_string()).unwrap();
/// #     s.run()
/// # });
/// # let address: String = rx.recv()?;
/// let m = mgr::Manager::connect(&address, b"secret")?;
/// let d = m.create("dict", vec![])?;
/// match d.call("__getitem__", vec![mgr::Value::from("missing")]) {
///     Ok(v) => println!("found {v}"),
///     Err(e) if e.remote_kind() == Some("KeyError") => println!("no such key"),
///     Err(mgr::Error::Remote(other)) => panic!("the server raised {other}"),
///     Err(e) => return Err(e.into()), // the connection failed, timed out …
/// }
/// let e = d.call("no_such_method", vec![]).unwrap_err();
/// assert!(e.traceback().is_some()); // raised outside the method: a traceback
/// # m.shutdown()?;
/// # server.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket or system call failed.
    Io(io::Error),
    /// Connecting to (or resolving) an address failed: the address and why.
    Connect {
        /// Where the connection was going.
        address: Address,
        /// Why it failed.
        error: io::Error,
    },
    /// An address could not be parsed.
    Address(AddressError),
    /// The handshake failed (wrong key, or a peer that does not speak the protocol).
    Auth(AuthError),
    /// A frame header was invalid or over the size limit.
    Frame(FrameError),
    /// A payload could not be decoded.
    Codec(CodecError),
    /// The remote method raised: `kind` is the Python exception kind (parsed out
    /// of a traceback reply too, whose full text is then the error's only arg).
    Remote(RemoteError),
    /// The peer broke the protocol, or the call was used wrongly.
    Protocol(String),
    /// The operation was refused by configuration (e.g. no key on a public address).
    Config(String),
}

impl Error {
    /// The remote exception, when the server answered with one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            Error::Remote(e) => Some(e),
            _ => None,
        }
    }

    /// The Python exception kind of a remote error (`"KeyError"`,
    /// `"queue.Empty"` …), `None` for other errors.
    pub fn remote_kind(&self) -> Option<&str> {
        self.remote().map(|e| e.kind.as_str())
    }

    /// The full traceback text, when the server answered with a traceback
    /// (`#TRACEBACK`: an error raised outside a method, such as an unknown
    /// typeid or a method not exposed).
    pub fn traceback(&self) -> Option<&str> {
        match self.remote()?.args.as_slice() {
            [crate::proto::Value::Str(t)] if t.starts_with(TRACEBACK_HEADER) => Some(t),
            _ => None,
        }
    }

    /// Whether this is a client timeout: a connect, handshake or call that did
    /// not finish within its [`ConnectOptions`](crate::ConnectOptions) timeout
    /// (an [`Error::Io`] of kind [`TimedOut`](io::ErrorKind::TimedOut)).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Io(e) | Error::Connect { error: e, .. } => e.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }

    /// Wraps a failure to reach `address`.
    #[cfg(feature = "client")]
    pub(crate) fn connect(address: &Address, error: io::Error) -> Error {
        Error::Connect {
            address: address.clone(),
            error,
        }
    }
}

/// How a CPython traceback starts.
pub(crate) const TRACEBACK_HEADER: &str = "Traceback (most recent call last):";

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => e.fmt(f),
            Error::Connect { address, error } => write!(f, "connecting to {address}: {error}"),
            Error::Address(e) => e.fmt(f),
            Error::Auth(e) => write!(f, "authentication failed: {e}"),
            Error::Frame(e) => e.fmt(f),
            Error::Codec(e) => e.fmt(f),
            Error::Remote(e) => e.fmt(f),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Config(e) => write!(f, "configuration error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    /// The source of the wrapped error (whose own text `Display` already shows).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) | Error::Connect { error: e, .. } => e.source(),
            Error::Auth(e) => e.source(),
            Error::Frame(e) => e.source(),
            Error::Codec(e) => e.source(),
            Error::Remote(e) => e.source(),
            Error::Address(e) => e.source(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Display of each error followed by the Display of every source below it.
    fn chain(e: &Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            out.push(s.to_string());
            next = s.source();
        }
        out
    }

    #[test]
    fn no_text_is_shown_twice_down_the_chain() {
        let address: Address = "unix:/x".parse().unwrap();
        let errors = [
            Error::connect(&address, io::Error::from(io::ErrorKind::NotFound)),
            Error::Io(io::Error::other("disk on fire")),
            Error::Io(io::Error::other(Error::Protocol("inner".into()))),
            Error::Remote(RemoteError::new("KeyError", "'k'")),
            Error::Address(AddressError("bad".into())),
            Error::Protocol("odd".into()),
        ];
        for e in &errors {
            let links = chain(e);
            for (i, a) in links.iter().enumerate() {
                for b in &links[i + 1..] {
                    assert!(!a.contains(b.as_str()), "{a:?} repeats {b:?}");
                }
            }
        }
        assert!(errors[0].to_string().starts_with("connecting to unix:/x: "));
        assert_eq!(errors[3].remote_kind(), Some("KeyError"));
        assert_eq!(errors[0].remote_kind(), None);
    }
}
