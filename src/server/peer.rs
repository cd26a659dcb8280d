//! Who is at the other end of a connection: read once when it is accepted
//! (the peer's credentials from `SO_PEERCRED` on a Unix socket, its address on
//! TCP) and kept for the connection's life, so callbacks and log lines read it
//! for free.
//!
//! This module only asks the kernel about a socket; it never reads or writes one.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use super::context::ConnId;

/// Where a peer connected from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer's address and port.
    Tcp(SocketAddr),
    /// A Unix-socket peer: the path it bound, if any (clients usually bind none).
    Unix(Option<std::path::PathBuf>),
}

impl fmt::Display for PeerAddr {
    /// `host:port` (IPv6 in brackets) for TCP, `unix:` plus the peer's path (if
    /// it bound one) for a Unix socket.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::Unix(Some(p)) => {
                // The peer chose the path: no control characters in a log line.
                f.write_str("unix:")?;
                super::log::write_clean(f, &p.to_string_lossy(), usize::MAX)
            }
            PeerAddr::Unix(None) => f.write_str("unix:"),
        }
    }
}

/// The identity of a connection's peer, as the kernel told it at accept.
///
/// `pid`, `uid` and `gid` come from `SO_PEERCRED` and are known on Unix
/// sockets only (`None` on TCP, where the kernel cannot say who the peer is).
/// They are the credentials of the process that connected, taken when it
/// connected: a process that passed the socket on is still the one named.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// The connection (stable for its life, never reused for a later one).
    pub conn: ConnId,
    /// Where it connected from.
    pub addr: PeerAddr,
    /// The peer process's id (Unix sockets).
    pub pid: Option<u32>,
    /// The peer process's user id (Unix sockets).
    pub uid: Option<u32>,
    /// The peer process's group id (Unix sockets).
    pub gid: Option<u32>,
}

impl Peer {
    /// A TCP peer at `addr`.
    pub(crate) fn tcp(conn: ConnId, addr: SocketAddr) -> Peer {
        Peer {
            conn,
            addr: PeerAddr::Tcp(addr),
            pid: None,
            uid: None,
            gid: None,
        }
    }

    /// A Unix-socket peer: its credentials are asked of the kernel (one
    /// `getsockopt`); if that fails they stay unknown.
    pub(crate) fn unix(
        conn: ConnId,
        socket: &impl AsRawFd,
        addr: &std::os::unix::net::SocketAddr,
    ) -> Peer {
        let cred = peer_cred(socket.as_raw_fd());
        Peer {
            conn,
            addr: PeerAddr::Unix(addr.as_pathname().map(|p| p.to_path_buf())),
            pid: cred.map(|c| c.pid as u32),
            uid: cred.map(|c| c.uid),
            gid: cred.map(|c| c.gid),
        }
    }
}

impl fmt::Display for Peer {
    /// `conn 0x… from ADDR` plus `pid N uid N` when known: what log lines name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn {:#x} from {}", self.conn.to_raw(), self.addr)?;
        if let (Some(pid), Some(uid)) = (self.pid, self.uid) {
            write!(f, " (pid {pid}, uid {uid})")?;
        }
        Ok(())
    }
}

/// `SO_PEERCRED` of a connected Unix socket.
fn peer_cred(fd: std::os::fd::RawFd) -> Option<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid ucred of `len` bytes; `fd` is a socket we own.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_names_this_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let addr = a.local_addr().unwrap();
        let p = Peer::unix(ConnId::new(3, 7), &a, &addr);
        assert_eq!(p.pid, Some(std::process::id()));
        // SAFETY: getuid/getgid cannot fail.
        assert_eq!(p.uid, Some(unsafe { libc::getuid() }));
        assert_eq!(p.gid, Some(unsafe { libc::getgid() }));
        assert_eq!(p.addr.to_string(), "unix:");
        let text = p.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        let t = Peer::tcp(ConnId::new(1, 1), "127.0.0.1:9".parse().unwrap());
        assert_eq!((t.pid, t.uid, t.gid), (None, None, None));
        assert_eq!(t.to_string(), "conn 0x100000001 from 127.0.0.1:9");
    }
}
