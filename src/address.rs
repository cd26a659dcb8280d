//! Listening and connecting addresses: `host:port` (TCP) or `unix:/path`.
//!
//! Parsing does no I/O: a host name is kept as a name ([`Address::Host`]) and
//! resolved when a server binds or a client connects ([`Address::resolve`]), so
//! a name that does not resolve is an error of that bind or connect, naming it.

#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a server listens or a client connects.
///
/// ```
/// use mgr::Address;
/// let tcp: Address = "127.0.0.1:50000".parse()?;
/// assert!(tcp.is_local());
/// let unix: Address = "unix:/run/app/mgr.sock".parse()?;
/// assert_eq!(unix.to_string(), "unix:/run/app/mgr.sock");
/// let named: Address = "db.example:50000".parse()?; // looked up at connect time
/// assert!(matches!(named, Address::Host { port: 50000, .. }));
/// assert!("no port".parse::<Address>().is_err());
/// # Ok::<(), mgr::address::AddressError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP socket address; port 0 asks the system to pick a free port.
    Tcp(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
    /// A host name and a TCP port, not resolved yet: [`resolve`](Self::resolve)
    /// (which binding and connecting do) looks the name up.
    Host {
        /// The name, e.g. `localhost` or `db.example`.
        host: String,
        /// The TCP port.
        port: u16,
    },
}

impl Address {
    /// The address as CPython's `multiprocessing` holds it (what pickled tokens
    /// carry): a `(host, port)` tuple for TCP, the path as a str for a Unix socket.
    pub fn to_python(&self) -> crate::proto::Value {
        use crate::proto::Value;
        match self {
            Address::Tcp(a) => Value::Tuple(vec![
                Value::Str(a.ip().to_string()),
                Value::Int(i64::from(a.port())),
            ]),
            Address::Unix(p) => Value::Str(p.to_string_lossy().into_owned()),
            Address::Host { host, port } => {
                Value::Tuple(vec![Value::Str(host.clone()), Value::Int(i64::from(*port))])
            }
        }
    }

    /// Whether only this machine can reach the address (loopback TCP or Unix
    /// socket). Of host names only `localhost` counts: no name is looked up here.
    pub fn is_local(&self) -> bool {
        match self {
            Address::Tcp(a) => a.ip().is_loopback(),
            Address::Unix(_) => true,
            Address::Host { host, .. } => host.eq_ignore_ascii_case("localhost"),
        }
    }

    /// The address with a host name looked up (the first address it resolves
    /// to); other addresses are returned as they are. This is the only place
    /// an address does I/O.
    ///
    /// # Errors
    ///
    /// The lookup's error, or one of kind `NotFound` if the name resolves to no
    /// address.
    pub fn resolve(&self) -> io::Result<Address> {
        match self {
            Address::Host { host, port } => (host.as_str(), *port)
                .to_socket_addrs()?
                .next()
                .map(Address::Tcp)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("'{host}' resolves to no address"),
                    )
                }),
            other => Ok(other.clone()),
        }
    }
}

/// An address string that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(pub String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

impl FromStr for Address {
    type Err = AddressError;

    /// Parses `unix:/path`, `ip:port`, `[v6]:port` or `name:port`. No I/O: a
    /// name is kept as [`Address::Host`] and resolved at bind or connect time.
    ///
    /// # Errors
    ///
    /// [`AddressError`], naming what is wrong: an empty Unix path, a bad port
    /// or host name, or neither form.
    fn from_str(s: &str) -> Result<Address, AddressError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError("empty Unix socket path in 'unix:'".into()));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        if !s.contains(':') {
            return Err(AddressError(format!(
                "address '{s}' is neither host:port nor unix:/path"
            )));
        }
        let (host, port) = s.rsplit_once(':').expect("checked above");
        let port = port
            .parse::<u16>()
            .map_err(|_| AddressError(format!("bad port '{port}' in address '{s}'")))?;
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        if host.is_empty() || !host.chars().all(valid) {
            return Err(AddressError(format!(
                "bad host name '{host}' in address '{s}'"
            )));
        }
        Ok(Address::Host {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_roundtrip() {
        for s in [
            "127.0.0.1:0",
            "[::1]:5000",
            "unix:/tmp/x.sock",
            "0.0.0.0:80",
            "localhost:7",
            "no-such-host.invalid:9",
        ] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
        let local: Address = "localhost:7".parse().unwrap();
        assert!(local.is_local());
    }

    #[test]
    fn locality() {
        assert!("127.0.0.1:1".parse::<Address>().unwrap().is_local());
        assert!("unix:/a".parse::<Address>().unwrap().is_local());
        assert!(!"0.0.0.0:1".parse::<Address>().unwrap().is_local());
    }

    #[test]
    fn bad_addresses() {
        assert!("unix:".parse::<Address>().is_err());
        assert!("nonsense".parse::<Address>().is_err());
        assert!("127.0.0.1:notaport".parse::<Address>().is_err());
        assert!("host:70000".parse::<Address>().is_err());
        assert!(":80".parse::<Address>().is_err());
        assert!("a b:80".parse::<Address>().is_err());
    }

    #[test]
    fn names_are_kept_unresolved_until_resolve() {
        let a: Address = "no-such-host.invalid:9".parse().unwrap();
        assert_eq!(
            a,
            Address::Host {
                host: "no-such-host.invalid".into(),
                port: 9
            }
        );
        assert!(!a.is_local());
        assert!(a.resolve().is_err(), "the .invalid TLD never resolves");
        let ip: Address = "127.0.0.1:9".parse().unwrap();
        assert_eq!(ip.resolve().unwrap(), ip);
        let local = "localhost:9".parse::<Address>().unwrap().resolve().unwrap();
        assert!(matches!(local, Address::Tcp(a) if a.port() == 9 && a.ip().is_loopback()));
    }
}
