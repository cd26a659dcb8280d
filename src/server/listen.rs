//! Getting the listening socket: binding an [`Address`] with errors that name
//! it (and replacing a stale Unix socket file), or adopting a socket that is
//! already listening (systemd socket activation, a parent's socket).
//!
//! A Unix socket file outlives a server that crashed; nothing accepts on it
//! then, and binding the path fails with `EADDRINUSE` until it is removed. So
//! when the path is taken, it is examined: a file that is not a socket is never
//! touched; a socket that accepts a connection belongs to a live server and is
//! refused; a socket whose connect is refused (`ECONNREFUSED`: no listener) is
//! stale and is removed and bound again. The server removes its socket file at
//! drop only while the path still names the file it created.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use mio::net::{TcpListener, UnixListener};

use super::reactor::Listener;
use crate::address::Address;

/// A listening socket and what it is bound to.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) listener: Listener,
    /// The real address (the port picked for port 0; the adopted socket's).
    pub(crate) address: Address,
    /// The socket file created here, to remove when the server goes.
    pub(crate) socket_file: Option<SocketFile>,
    /// Listening already (adopted): its backlog is left as it is unless one is
    /// configured.
    pub(crate) adopted: bool,
}

/// A Unix socket file this server created: removed at the end only if the
/// path still names that file (not a successor's). Inode numbers are reused
/// at once, so the file's change time is compared too, and a live socket is
/// never removed.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    identity: (u64, u64, i64, i64),
}

fn identity(m: &std::fs::Metadata) -> (u64, u64, i64, i64) {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

impl SocketFile {
    fn of(path: &Path) -> io::Result<SocketFile> {
        let m = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_owned(),
            identity: identity(&m),
        })
    }

    /// Removes the file if it still looks like the one created and nothing
    /// accepts on it (call after closing the listener): a successor's socket
    /// that reuses the inode within the clock's granularity is live, and stays.
    pub(crate) fn remove(self) {
        let Ok(m) = std::fs::symlink_metadata(&self.path) else {
            return;
        };
        if identity(&m) != self.identity {
            return;
        }
        match probe(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(&self.path);
            }
            _ => {}
        }
    }
}

fn named(kind: io::ErrorKind, message: String) -> io::Error {
    io::Error::new(kind, message)
}

/// Binds `address`. Errors keep their kind and name the address.
pub(crate) fn bind(address: &Address) -> io::Result<Bound> {
    let address = &address
        .resolve()
        .map_err(|e| named(e.kind(), format!("cannot listen on {address}: {e}")))?;
    match address {
        Address::Tcp(addr) => {
            let l = TcpListener::bind(*addr).map_err(|e| tcp_error(address, e))?;
            let bound = l.local_addr()?;
            Ok(Bound {
                listener: Listener::Tcp(l),
                address: Address::Tcp(bound),
                socket_file: None,
                adopted: false,
            })
        }
        Address::Unix(path) => {
            let (l, file) = bind_unix(path, address)?;
            Ok(Bound {
                listener: Listener::Unix(l),
                address: address.clone(),
                socket_file: Some(file),
                adopted: false,
            })
        }
        Address::Host { .. } => Err(io::Error::other(format!("{address} was not resolved"))),
    }
}

fn tcp_error(address: &Address, e: io::Error) -> io::Error {
    let port = match address {
        Address::Tcp(a) => a.port(),
        Address::Unix(_) | Address::Host { .. } => 0,
    };
    let message = match e.kind() {
        io::ErrorKind::AddrInUse => format!("{address} is already in use (another server?)"),
        io::ErrorKind::AddrNotAvailable => {
            format!("cannot listen on {address}: no interface of this machine has that address")
        }
        io::ErrorKind::PermissionDenied if port != 0 && port < 1024 => format!(
            "cannot listen on {address}: permission denied (ports below 1024 need privileges)"
        ),
        _ => format!("cannot listen on {address}: {e}"),
    };
    named(e.kind(), message)
}

/// Binds a Unix socket path, replacing a stale socket file (one nothing
/// accepts on) once.
fn bind_unix(path: &Path, address: &Address) -> io::Result<(UnixListener, SocketFile)> {
    let mut replaced = false;
    loop {
        match UnixListener::bind(path) {
            Ok(l) => return Ok((l, SocketFile::of(path)?)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && !replaced => {
                remove_if_stale(path, address)?;
                replaced = true;
            }
            Err(e) => return Err(unix_error(path, address, e)),
        }
    }
}

/// Examines a taken socket path: removes it if it is a socket nothing accepts
/// on, else says why it stays.
fn remove_if_stale(path: &Path, address: &Address) -> io::Result<()> {
    let in_use = io::ErrorKind::AddrInUse;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(named(e.kind(), format!("cannot listen on {address}: {e}"))),
    };
    if !meta.file_type().is_socket() {
        return Err(named(
            in_use,
            format!(
                "cannot listen on {address}: {} exists and is not a socket (left as it is)",
                path.display()
            ),
        ));
    }
    match probe(path) {
        Ok(()) => Err(named(
            in_use,
            format!("another server is listening on {address}"),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(named(
                    e.kind(),
                    format!("cannot listen on {address}: cannot remove its stale socket file: {e}"),
                )),
            }
        }
        Err(e) => Err(named(
            in_use,
            format!(
                "cannot listen on {address}: a socket file is there and connecting to it failed ({e}); remove it if no server uses it"
            ),
        )),
    }
}

/// Connects to a Unix socket without waiting: `Ok` (or `WouldBlock`, a
/// full backlog) means a server accepts on it, `ConnectionRefused` that none
/// does. A blocking connect would wait for a hung server's full backlog.
fn probe(path: &Path) -> io::Result<()> {
    match mio::net::UnixStream::connect(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

fn unix_error(path: &Path, address: &Address, e: io::Error) -> io::Error {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
        _ => ".".to_owned(),
    };
    let message = match e.kind() {
        io::ErrorKind::AddrInUse => format!("another server is listening on {address}"),
        io::ErrorKind::NotFound => {
            format!("cannot listen on {address}: directory {dir} does not exist")
        }
        io::ErrorKind::PermissionDenied => {
            format!("cannot listen on {address}: permission denied in directory {dir}")
        }
        _ => format!("cannot listen on {address}: {e}"),
    };
    named(e.kind(), message)
}

/// Reads an integer socket option.
fn sockopt(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid out-pointers of the right size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// The address family of a socket (`getsockname`).
fn family(fd: RawFd) -> io::Result<libc::sa_family_t> {
    // SAFETY: an all-zero sockaddr_storage is valid; getsockname fills at most
    // `len` bytes of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(storage.ss_family)
}

/// Adopts a socket that is already bound and listening: a TCP (IPv4 or IPv6)
/// or Unix path stream socket. It is made non-blocking and close-on-exec.
pub(crate) fn adopt(fd: OwnedFd) -> io::Result<Bound> {
    let raw = fd.as_raw_fd();
    let invalid = |what: String| named(io::ErrorKind::InvalidInput, format!("fd {raw} {what}"));
    let ty = sockopt(raw, libc::SO_TYPE).map_err(|e| invalid(format!("is not a socket ({e})")))?;
    if ty != libc::SOCK_STREAM {
        return Err(invalid("is not a stream socket".into()));
    }
    if sockopt(raw, libc::SO_ACCEPTCONN)? == 0 {
        return Err(invalid("is a socket that is not listening".into()));
    }
    // SAFETY: `raw` is open (owned by `fd`); only its descriptor flags change.
    if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (listener, address) = match libc::c_int::from(family(raw)?) {
        libc::AF_INET | libc::AF_INET6 => {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true)?;
            let a = l.local_addr()?;
            (Listener::Tcp(TcpListener::from_std(l)), Address::Tcp(a))
        }
        libc::AF_UNIX => {
            let l = std::os::unix::net::UnixListener::from(fd);
            let a = l.local_addr()?;
            let Some(path) = a.as_pathname().map(Path::to_owned) else {
                return Err(invalid(
                    "is an unnamed or abstract Unix socket; only path sockets are served".into(),
                ));
            };
            l.set_nonblocking(true)?;
            (
                Listener::Unix(UnixListener::from_std(l)),
                Address::Unix(path),
            )
        }
        f => {
            return Err(invalid(format!(
                "is a socket of family {f}, neither TCP nor Unix"
            )))
        }
    };
    Ok(Bound {
        listener,
        address,
        socket_file: None,
        adopted: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener as StdUnix;

    /// A directory of its own, removed when dropped (a failing test too).
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    fn temp_dir(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("mgr-listen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn unix(path: &Path) -> Address {
        Address::Unix(path.to_owned())
    }

    #[test]
    fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = temp_dir("stale");
        let path = dir.join("s.sock");
        drop(StdUnix::bind(&path).unwrap()); // the file stays, nothing listens
        assert!(path.exists());
        let bound = bind(&unix(&path)).expect("stale socket replaced");
        let e = bind(&unix(&path)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            e.to_string(),
            format!("another server is listening on unix:{}", path.display())
        );
        drop(bound);
    }

    #[test]
    fn a_live_server_with_a_full_backlog_is_refused_without_waiting() {
        use std::os::fd::AsRawFd;
        let dir = temp_dir("full");
        let path = dir.join("s.sock");
        let hung = StdUnix::bind(&path).unwrap(); // never accepts
                                                  // SAFETY: `hung` is a listening socket; a new backlog is set.
        assert_eq!(unsafe { libc::listen(hung.as_raw_fd(), 0) }, 0);
        let mut queued = Vec::new();
        let full = (0..64).any(|_| match mio::net::UnixStream::connect(&path) {
            Ok(s) => {
                queued.push(s);
                false
            }
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        });
        assert!(full, "the backlog filled up");
        // A blocking connect would wait here for ever.
        let e = bind(&unix(&path)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("another server is listening on unix:{}", path.display())
        );
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = temp_dir("file");
        let path = dir.join("data");
        std::fs::write(&path, b"keep me").unwrap();
        let e = bind(&unix(&path)).unwrap_err();
        assert!(e.to_string().contains("exists and is not a socket"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = temp_dir("missing");
        let path = dir.join("nope").join("s.sock");
        let e = bind(&unix(&path)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string().ends_with(&format!(
                "directory {} does not exist",
                dir.join("nope").display()
            )),
            "{e}"
        );
    }

    #[test]
    fn taken_port_is_named() {
        let first = bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let e = bind(&first.address).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            e.to_string(),
            format!("{} is already in use (another server?)", first.address)
        );
    }

    #[test]
    fn socket_file_is_removed_only_while_it_is_ours() {
        let dir = temp_dir("ours");
        let path = dir.join("s.sock");
        let first = bind(&unix(&path)).unwrap();
        // A successor replaced the file: the first server's removal spares it.
        drop(first.listener);
        let second = bind(&unix(&path)).unwrap();
        first.socket_file.unwrap().remove();
        assert!(path.exists());
        // Not while it listens; once closed, it is removed.
        let file = second.socket_file.unwrap();
        let listener = second.listener;
        SocketFile {
            path: path.clone(),
            identity: file.identity,
        }
        .remove();
        assert!(path.exists());
        drop(listener);
        file.remove();
        assert!(!path.exists());
    }

    #[test]
    fn adopts_listening_sockets_and_refuses_others() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = tcp.local_addr().unwrap();
        let b = adopt(OwnedFd::from(tcp)).unwrap();
        assert_eq!(b.address, Address::Tcp(at));
        assert!(b.adopted && b.socket_file.is_none());

        let dir = temp_dir("adopt");
        let path = dir.join("a.sock");
        let b = adopt(OwnedFd::from(StdUnix::bind(&path).unwrap())).unwrap();
        assert_eq!(b.address, unix(&path));

        let file = std::fs::File::open(path.parent().unwrap()).unwrap();
        let e = adopt(OwnedFd::from(file)).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = adopt(OwnedFd::from(udp)).unwrap_err();
        assert!(e.to_string().ends_with("is not a stream socket"), "{e}");
        let (s, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = adopt(OwnedFd::from(s)).unwrap_err();
        assert!(e.to_string().ends_with("is not listening"), "{e}");
    }
}
