//! Starting a private `mgrd` as a child process, as CPython's `BaseManager.start()`
//! does, and stopping it the way CPython's finalizer does: a `shutdown` request,
//! then SIGTERM, then SIGKILL, each after a grace period.
//!
//! The child reports its bound address on its first line of stdout (`mgrd
//! listening on ADDR`), read through a pipe with a deadline, so port 0 and a Unix
//! socket path both work.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Manager;
use crate::address::Address;
use crate::error::{Error, Result};

/// How to start a server.
///
/// ```no_run
/// use std::time::Duration;
/// let mut options = mgr::client::SpawnOptions::new(b"secret");
/// options.args = vec!["--max-connections".into(), "100".into()];
/// options.start_timeout = Duration::from_secs(5);
/// let server = mgr::client::SpawnedServer::start(&options)?;
/// # Ok::<(), mgr::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The server program: `$MGRD` if set, else `mgrd` beside the running
    /// executable (or one directory up, as for test binaries), else `mgrd` on PATH.
    pub program: PathBuf,
    /// Where it listens (`127.0.0.1:0` by default: a free loopback port).
    pub address: String,
    /// The authkey it requires; passed in its environment, never on its command line.
    pub authkey: Vec<u8>,
    /// Extra command-line arguments (e.g. `--max-connections 100`).
    pub args: Vec<OsString>,
    /// How long to wait for the address line.
    pub start_timeout: Duration,
}

impl SpawnOptions {
    /// Defaults with `authkey`.
    #[must_use]
    pub fn new(authkey: &[u8]) -> SpawnOptions {
        SpawnOptions {
            program: default_program(),
            address: "127.0.0.1:0".to_owned(),
            authkey: authkey.to_vec(),
            args: Vec::new(),
            start_timeout: Duration::from_secs(10),
        }
    }
}

fn default_program() -> PathBuf {
    if let Some(p) = std::env::var_os("MGRD") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("mgrd");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("mgrd")
}

/// A server running as a child process. Dropping it stops it (see
/// [`SpawnedServer::stop`]).
///
/// Needs the `mgrd` program (see [`SpawnOptions::program`]).
///
/// ```no_run
/// use std::time::Duration;
/// let mut server = mgr::client::SpawnedServer::start(&mgr::client::SpawnOptions::new(b"k"))?;
/// let m = server.connect()?;
/// let d = m.create("dict", vec![])?;
/// // Share server.address() and the key with other processes ...
/// drop((d, m));
/// let status = server.stop(Duration::from_secs(1))?;
/// assert!(status.success());
/// # Ok::<(), mgr::Error>(())
/// ```
#[derive(Debug)]
pub struct SpawnedServer {
    child: Child,
    address: Address,
    authkey: Vec<u8>,
    exited: Option<ExitStatus>,
}

/// Reads one line from the child's stdout, waiting at most until `deadline`.
fn read_line(out: &mut ChildStdout, deadline: Instant) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: out.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the server did not report its address in time",
            ));
        }
        match out.read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

impl SpawnedServer {
    /// Starts the server and waits for it to report its address.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the program cannot be started (the message says where
    /// it was looked for) or does not report its address within
    /// [`SpawnOptions::start_timeout`] (kind `TimedOut`); [`Error::Protocol`] or
    /// [`Error::Address`] if its first line is not `mgrd listening on ADDR`. The
    /// child is killed and reaped in every error case.
    pub fn start(options: &SpawnOptions) -> Result<SpawnedServer> {
        use std::os::unix::ffi::OsStringExt;
        let mut child = Command::new(&options.program)
            .arg("--address")
            .arg(&options.address)
            .args(&options.args)
            .env("MGR_AUTHKEY", OsString::from_vec(options.authkey.clone()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Io(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start {}: {e} (the server program is $MGRD if set, else \
                         mgrd beside this executable, else mgrd on PATH; `make install` \
                         puts mgrd in PREFIX/bin)",
                        options.program.display()
                    ),
                ))
            })?;
        let Some(mut out) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Protocol("the server's stdout is not piped".into()));
        };
        let deadline = Instant::now() + options.start_timeout;
        let line = read_line(&mut out, deadline);
        let address = line.map_err(Error::Io).and_then(|line| {
            line.strip_prefix("mgrd listening on ")
                .ok_or_else(|| {
                    Error::Protocol(format!("unexpected first line from the server: {line:?}"))
                })
                .and_then(|a| a.trim().parse::<Address>().map_err(Error::from))
        });
        match address {
            Ok(address) => Ok(SpawnedServer {
                child,
                address,
                authkey: options.authkey.clone(),
                exited: None,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// The address the server listens on.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects a client with the server's key.
    ///
    /// # Errors
    ///
    /// As [`Manager::connect_to`].
    pub fn connect(&self) -> Result<Manager> {
        Manager::connect_to(&self.address, &self.authkey)
    }

    fn wait_for(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.exited = Some(status);
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own, not yet reaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Stops the server as CPython's manager finalizer does: asks it to shut down,
    /// waits up to `grace`; then SIGTERM and up to `grace` again; then SIGKILL.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if waiting for, or killing, the child fails.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        if let Ok(m) = self.connect() {
            let _ = m.shutdown();
        }
        if let Some(status) = self.wait_for(grace)? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_for(grace)? {
            return Ok(status);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(1));
    }
}
