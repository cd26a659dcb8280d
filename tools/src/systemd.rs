//! mgrd's side of the service manager's conventions (systemd's, which other
//! supervisors copy): socket activation (`LISTEN_PID`, `LISTEN_FDS`, the
//! listening socket at fd 3) and readiness notification (`NOTIFY_SOCKET`).
//! Both read their variables once and remove them from the environment, so a
//! child process would not take them for its own.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: libc::c_int = 3;

/// The listening socket the service manager passed, if this process was
/// socket-activated: `LISTEN_PID` is this process and `LISTEN_FDS` is 1.
/// More than one socket is refused (mgrd serves one). `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES` are removed from the environment.
pub fn listen_fd() -> Result<Option<OwnedFd>, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (a parent that exec'd this one without
        // passing them on): not ours.
        return Ok(None);
    }
    let n: u32 = fds
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={fds:?} is not a number"))?;
    match n {
        0 => Ok(None),
        1 => {
            // SAFETY: F_GETFD only reads the descriptor's flags.
            if unsafe { libc::fcntl(LISTEN_FDS_START, libc::F_GETFD) } < 0 {
                return Err(format!(
                    "LISTEN_FDS=1 but fd {LISTEN_FDS_START} is not open: {}",
                    io::Error::last_os_error()
                ));
            }
            // SAFETY: fd 3 is open and was passed to this process to own.
            Ok(Some(unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) }))
        }
        n => Err(format!(
            "LISTEN_FDS={n}: mgrd serves one socket; give its .socket unit one Listen line"
        )),
    }
}

/// Where to send readiness notifications (`NOTIFY_SOCKET`: a Unix datagram
/// socket path, or `@name` in the abstract namespace).
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    shown: String,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, which is removed from the environment; `None`
    /// when it is unset or empty.
    pub fn from_env() -> Result<Option<Notifier>, String> {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        std::env::remove_var("NOTIFY_SOCKET");
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str());
        if bytes.is_empty() {
            return Ok(None);
        }
        let shown = value.to_string_lossy().into_owned();
        let bad = |e: io::Error| format!("NOTIFY_SOCKET={shown}: {e}");
        let to = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name).map_err(bad)?
            }
            None if bytes.starts_with(b"/") => SocketAddr::from_pathname(&value).map_err(bad)?,
            None => {
                return Err(format!(
                    "NOTIFY_SOCKET={shown}: neither an absolute path nor @abstract"
                ))
            }
        };
        let socket = UnixDatagram::unbound().map_err(bad)?;
        Ok(Some(Notifier { socket, to, shown }))
    }

    /// Sends one notification (`READY=1\nSTATUS=…`).
    pub fn send(&self, message: &str) -> Result<(), String> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.to)
            .map(drop)
            .map_err(|e| format!("cannot notify NOTIFY_SOCKET={}: {e}", self.shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_taken_once_and_checked() {
        // One test: the environment is the process's.
        let gone = |names: &[&str]| names.iter().all(|n| std::env::var_os(n).is_none());
        let listen = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];
        std::env::set_var("LISTEN_PID", "1");
        std::env::set_var("LISTEN_FDS", "1");
        std::env::set_var("LISTEN_FDNAMES", "mgrd");
        assert!(listen_fd().unwrap().is_none(), "meant for another process");
        assert!(gone(&listen));

        let me = std::process::id().to_string();
        std::env::set_var("LISTEN_PID", &me);
        std::env::set_var("LISTEN_FDS", "2");
        assert!(listen_fd().unwrap_err().contains("mgrd serves one socket"));
        assert!(gone(&listen));
        std::env::set_var("LISTEN_PID", &me);
        std::env::set_var("LISTEN_FDS", "many");
        assert!(listen_fd().unwrap_err().contains("is not a number"));
        std::env::set_var("LISTEN_PID", &me);
        std::env::set_var("LISTEN_FDS", "0");
        assert!(listen_fd().unwrap().is_none());
        assert!(listen_fd().unwrap().is_none(), "nothing left");

        std::env::set_var("NOTIFY_SOCKET", "relative/path");
        let e = Notifier::from_env().err().unwrap();
        assert!(e.contains("neither an absolute path nor @abstract"), "{e}");
        assert!(gone(&["NOTIFY_SOCKET"]));
        std::env::set_var("NOTIFY_SOCKET", "");
        assert!(Notifier::from_env().unwrap().is_none());
        std::env::set_var("NOTIFY_SOCKET", "@mgrd-test-nobody-listens");
        let n = Notifier::from_env().unwrap().expect("a notifier");
        assert!(n.send("READY=1").unwrap_err().contains("cannot notify"));
        assert!(gone(&["NOTIFY_SOCKET"]));
    }
}
