//! The sockets every mgr-bench peer and client uses: [`Stream`], a blocking
//! connected socket of either family, and [`Sock`], the same made non-blocking
//! for a `mio::Poll`.

use std::io::{self, Read, Write};
use std::net::TcpStream as StdTcp;
use std::os::unix::net::UnixStream as StdUnix;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};

use mgr::Address;

/// A connected socket, blocking.
pub(crate) enum Stream {
    /// TCP, with `TCP_NODELAY`.
    Tcp(StdTcp),
    /// A Unix stream socket.
    Unix(StdUnix),
}

impl Stream {
    /// Connects to `address` (TCP with `TCP_NODELAY`).
    pub(crate) fn connect(address: &Address) -> io::Result<Stream> {
        Ok(match address.resolve()? {
            Address::Tcp(a) => {
                let s = StdTcp::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Address::Unix(p) => Stream::Unix(StdUnix::connect(p)?),
            other => return Err(io::Error::other(format!("'{other}' was not resolved"))),
        })
    }
}

/// A socket registered with a `mio::Poll`, non-blocking.
pub(crate) enum Sock {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix stream socket.
    Unix(UnixStream),
}

impl Sock {
    /// The non-blocking form of a connected [`Stream`].
    pub(crate) fn from_std(s: Stream) -> io::Result<Sock> {
        Ok(match s {
            Stream::Tcp(s) => {
                s.set_nonblocking(true)?;
                Sock::Tcp(TcpStream::from_std(s))
            }
            Stream::Unix(s) => {
                s.set_nonblocking(true)?;
                Sock::Unix(UnixStream::from_std(s))
            }
        })
    }

    /// What to register with the poll.
    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match self {
            Sock::Tcp(s) => s,
            Sock::Unix(s) => s,
        }
    }
}

/// Read and Write for both enums, by the socket they hold.
macro_rules! by_socket {
    ($t:ty) => {
        impl Read for $t {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self {
                    Self::Tcp(s) => s.read(buf),
                    Self::Unix(s) => s.read(buf),
                }
            }
        }

        impl Write for $t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                match self {
                    Self::Tcp(s) => s.write(buf),
                    Self::Unix(s) => s.write(buf),
                }
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
    };
}

by_socket!(Stream);
by_socket!(Sock);
