//! `mgrd`: the standalone libmgr manager server.
//!
//! It embeds a [`Server`] in its own `poll(2)` loop, exactly as a C host would,
//! next to a self-pipe that SIGINT and SIGTERM write to.

use std::io::Write;
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use mgr::{Address, Server, ServerConfig};

const USAGE: &str = "\
usage: mgrd [--address ADDR] [--max-connections N] [--max-frame BYTES]
            [--handshake-timeout S] [--max-output BYTES] [-v] [--version]

Serves shared objects to libmgr clients and to Python's multiprocessing.managers.

  --address ADDR         host:port (port 0 picks a free one) or unix:/path
                         [default: 127.0.0.1:0]
  --max-connections N    refuse connections beyond N [default: 10000]
  --max-frame BYTES      largest request accepted [default: 67108864]
  --handshake-timeout S  drop peers that have not authenticated in S seconds [default: 10]
  --max-output BYTES     stop serving a connection while this much of its output
                         is unread [default: 4194304]
  -v, --verbose          log connections and shutdown to stderr
  --version              print the version
  -h, --help             print this help

The authkey is read from the environment variable MGR_AUTHKEY (its bytes). Without
one, mgrd listens only on loopback or a Unix socket. The first line on stdout is
`mgrd listening on <address>`. SIGINT or SIGTERM shut it down cleanly.";

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid byte.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

fn signal_pipe() -> std::io::Result<RawFd> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs an async-signal-safe handler with an empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    Ok(fds[0])
}

struct Options {
    config: ServerConfig,
    verbose: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut address = "127.0.0.1:0".to_owned();
    let mut max_connections = None;
    let mut max_frame = None;
    let mut handshake = None;
    let mut max_output = None;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--version" => {
                println!("mgrd {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "-v" | "--verbose" => verbose = true,
            "--address" => address = value("--address")?,
            "--max-connections" => {
                max_connections = Some(
                    value("--max-connections")?
                        .parse::<usize>()
                        .map_err(|e| format!("--max-connections: {e}"))?,
                )
            }
            "--max-frame" => {
                max_frame = Some(
                    value("--max-frame")?
                        .parse::<u64>()
                        .map_err(|e| format!("--max-frame: {e}"))?,
                )
            }
            "--handshake-timeout" => {
                handshake = Some(
                    value("--handshake-timeout")?
                        .parse::<f64>()
                        .map_err(|e| format!("--handshake-timeout: {e}"))?,
                )
            }
            "--max-output" => {
                max_output = Some(
                    value("--max-output")?
                        .parse::<usize>()
                        .map_err(|e| format!("--max-output: {e}"))?,
                )
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    let address: Address = address.parse().map_err(|e| format!("--address: {e}"))?;
    let key = std::env::var_os("MGR_AUTHKEY")
        .map(std::os::unix::ffi::OsStringExt::into_vec)
        .unwrap_or_default();
    let mut config = ServerConfig::new(address, &key);
    if let Some(n) = max_connections {
        config.max_connections = n;
    }
    if let Some(n) = max_frame {
        config.max_frame = n;
    }
    if let Some(n) = max_output {
        config.max_output = n;
    }
    if let Some(s) = handshake {
        if !(s.is_finite() && s > 0.0) {
            return Err("--handshake-timeout must be a positive number of seconds".into());
        }
        config.handshake_timeout = Duration::from_secs_f64(s);
    }
    Ok(Options { config, verbose })
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mgrd: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut server = match Server::bind(opts.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mgrd: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.register_builtins();
    let sig = match signal_pipe() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("mgrd: cannot set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "mgrd listening on {}", server.address());
    let _ = stdout.flush();

    let mut fds = [
        libc::pollfd {
            fd: server.fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: sig,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let mut reason = "shutdown requested by a client";
    while !server.is_shut_down() {
        let timeout = server
            .timeout()
            .map(|d| d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32)
            .unwrap_or(-1);
        // SAFETY: `fds` is a valid array of two pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            eprintln!("mgrd: poll failed: {}", std::io::Error::last_os_error());
            break;
        }
        if fds[1].revents != 0 {
            reason = "signal received";
            break;
        }
        if let Err(e) = server.process() {
            eprintln!("mgrd: {e}");
            reason = "error";
            break;
        }
    }
    if opts.verbose {
        eprintln!(
            "mgrd: {reason}; served {} connections, {} objects live at exit",
            server.connections_accepted(),
            server.number_of_objects()
        );
    }
    server.shutdown();
    drop(server);
    ExitCode::SUCCESS
}
