//! Listening and connecting addresses: `host:port` (TCP) or `unix:/path`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a server listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP socket address; port 0 asks the system to pick a free port.
    Tcp(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
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
        }
    }

    /// Whether only this machine can reach the address (loopback TCP or Unix socket).
    pub fn is_local(&self) -> bool {
        match self {
            Address::Tcp(a) => a.ip().is_loopback(),
            Address::Unix(_) => true,
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

    /// Parses `unix:/path`, `host:port`, `[v6]:port`; host names are resolved and
    /// the first address is used.
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
        s.to_socket_addrs()
            .map_err(|e| AddressError(format!("cannot resolve '{s}': {e}")))?
            .next()
            .map(Address::Tcp)
            .ok_or_else(|| AddressError(format!("'{s}' resolves to no address")))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
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
    }
}
