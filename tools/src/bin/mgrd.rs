//! `mgrd`: the standalone libmgr manager server.
//!
//! It owns its loop, so it blocks in the server's own `epoll_wait` through
//! [`Server::turn`] (one syscall per wakeup; a host that polls [`Server::fd`] and
//! then calls [`Server::process`] pays two). SIGINT and SIGTERM are blocked in every
//! thread and taken by a small thread in `sigwait(2)`, which asks the server to
//! shut down through a [`ServerHandle`]. Turns are bounded (`--turn-max-requests`,
//! `--turn-max-time`); while one leaves work, the next polls without waiting, so
//! a shutdown request is never starved by a flood of requests.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mgr::server::{ObjectSpec, ServerHandle};
use mgr::{Address, Error, Server, ServerConfig};

#[path = "../systemd.rs"]
mod systemd;

const USAGE: &str = "\
usage: mgrd [--address ADDR] [--max-connections N] [--max-preauth N]
            [--backlog N] [--max-frame BYTES] [--handshake-timeout S]
            [--max-output BYTES] [--reply-grace S] [--turn-max-requests N]
            [--turn-max-time S] [--max-held-bytes BYTES]
            [--max-objects-per-conn N] [--globals default|any|none]
            [--gc-work-per-turn N] [--release-locks-of-dead]
            [--object NAME=TYPE[:ARGS]]...
            [-v] [--version] [-h]

Serves shared objects to libmgr clients and to Python's multiprocessing.managers.

  --address ADDR         host:port (port 0 picks a free one) or unix:/path
                         [default: 127.0.0.1:0]
  --max-connections N    authenticated connections beyond N are closed [default: 10000]
  --max-preauth N        connections still authenticating beyond N replace the
                         oldest of them [default: 256]
  --backlog N            listen backlog [default: the system maximum, somaxconn]
  --max-frame BYTES      largest request accepted [default: 67108864]
  --handshake-timeout S  drop peers that have not authenticated in S seconds [default: 10]
  --max-output BYTES     stop serving a connection while this much of its output
                         is unread [default: 4194304]
  --reply-grace S        keep objects named in a reply alive S seconds for its
                         receiver to take its own reference [default: 5]
  --turn-max-requests N  serve at most N requests per turn of the loop, a few
                         from each ready connection in turn [default: 1024]
  --turn-max-time S      spend at most S seconds serving requests per turn
                         [default: 0.001]
  --max-held-bytes BYTES refuse (MemoryError) what would take the bytes all shared
                         objects hold past BYTES [default: 0, no cap]
  --max-objects-per-conn N
                         refuse (MemoryError) creating objects beyond N live ones
                         per connection [default: 0, no cap]
  --globals POLICY       which classes values may name (the server never calls
                         them; another client's pickle.loads does): default
                         (the standard library's value types and exceptions),
                         any (every class, as CPython's manager), none
                         [default: default]
  --gc-work-per-turn N   work units the cycle collector does per turn (slots
                         looked at, references followed, objects freed); 0 turns
                         it off [default: 1024]
  --release-locks-of-dead
                         release a Lock, Semaphore or BoundedSemaphore a process
                         acquired when that process dies (Unix-socket clients,
                         whose pid the server knows) [default: off: they stay
                         held, as on CPython's server]
  --object NAME=TYPE[:ARGS]
                         serve one TYPE object (built with ARGS) that every
                         create of typeid NAME returns, as Python's
                         register('NAME', callable=lambda: obj) does; ARGS are
                         comma-separated literals: 10, 2.5, None, True, 'a,b'
                         or bare words (strings). Repeatable. E.g.
                         --object get_queue=Queue --object jobs=Queue:10
  -v, --verbose          log to stderr, one timestamped line per connection
                         accepted, refused or closed, failed handshake,
                         protocol error, and the shutdown (never a key)
  --version              print the version
  -h, --help             print this help

The authkey is read from the environment variable MGR_AUTHKEY (its bytes). Without
one, mgrd listens only on loopback or a Unix socket, and clients must pass
authkey=b\"\". The first line on stdout is `mgrd listening on <address>`. SIGINT or
SIGTERM shut it down cleanly.

A Unix socket file left by a crashed server (nothing accepts on it) is replaced;
one a live server accepts on, or a path that is not a socket, is refused.

Under systemd (or a supervisor that follows its conventions): with LISTEN_PID
and LISTEN_FDS=1, mgrd serves the listening socket passed as fd 3 instead of
binding (no --address then); with NOTIFY_SOCKET it sends READY=1 once it
listens and STOPPING=1 when it shuts down (Type=notify). See contrib/systemd/.";

/// Set once a signal asked for the shutdown (for the verbose exit message).
static SIGNALLED: AtomicBool = AtomicBool::new(false);

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread it starts).
fn block_shutdown_signals() -> std::io::Result<()> {
    let set = shutdown_signals();
    // SAFETY: `set` is an initialised signal set; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM on a thread of its own, then asks for shutdown.
fn watch_signals(handle: ServerHandle) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("mgrd-signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let set = shutdown_signals();
            let mut sig = 0;
            // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            SIGNALLED.store(true, Ordering::Relaxed);
            handle.shutdown();
        })
        .map(drop)
}

struct Options {
    config: ServerConfig,
    verbose: bool,
    /// `--object`: published objects.
    objects: Vec<ObjectSpec>,
    /// `--address` was given (it conflicts with an inherited socket).
    address_given: bool,
    /// `MGR_AUTHKEY` is set (possibly to nothing).
    key_set: bool,
}

/// Parses a flag's value as `T`, naming the flag in the error.
fn number<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(|e| format!("{flag}: {e}"))
}

/// Parses a positive number of seconds.
fn seconds(flag: &str, v: String) -> Result<Duration, String> {
    let s: f64 = number(flag, v)?;
    if !(s.is_finite() && s > 0.0) {
        return Err(format!("{flag} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Parses an optional cap: 0 means none.
fn cap(flag: &str, v: String) -> Result<Option<usize>, String> {
    let n: usize = number(flag, v)?;
    Ok((n > 0).then_some(n))
}

fn parse_args() -> Result<Options, String> {
    let key_var = std::env::var_os("MGR_AUTHKEY");
    let key_set = key_var.is_some();
    let key = key_var
        .map(std::os::unix::ffi::OsStringExt::into_vec)
        .unwrap_or_default();
    let default: Address = "127.0.0.1:0".parse().expect("a valid address");
    let mut config = ServerConfig::new(default, &key);
    let mut verbose = false;
    let mut objects = Vec::new();
    let mut address_given = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
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
            "--address" => {
                config.address = value()?.parse().map_err(|e| format!("--address: {e}"))?;
                address_given = true;
            }
            "--max-connections" => config.max_connections = number(&flag, value()?)?,
            "--max-frame" => config.max_frame = number(&flag, value()?)?,
            "--max-output" => config.max_output = number(&flag, value()?)?,
            "--handshake-timeout" => config.handshake_timeout = seconds(&flag, value()?)?,
            "--reply-grace" => config.reply_ref_grace = seconds(&flag, value()?)?,
            "--max-preauth" => config.max_preauth_connections = number(&flag, value()?)?,
            "--backlog" => config.listen_backlog = Some(number(&flag, value()?)?),
            "--turn-max-requests" => config.turn_max_requests = number(&flag, value()?)?,
            "--turn-max-time" => config.turn_max_time = seconds(&flag, value()?)?,
            "--max-held-bytes" => config.max_held_bytes = cap(&flag, value()?)?,
            "--max-objects-per-conn" => config.max_objects_per_conn = cap(&flag, value()?)?,
            "--globals" => {
                config.globals = value()?.parse().map_err(|e| format!("--globals: {e}"))?
            }
            "--gc-work-per-turn" => config.gc_work_per_turn = number(&flag, value()?)?,
            "--release-locks-of-dead" => config.release_locks_of_dead = true,
            "--object" => objects.push(value()?.parse().map_err(|e| format!("--object {e}"))?),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Options {
        config,
        verbose,
        objects,
        address_given,
        key_set,
    })
}

/// Raises the soft descriptor limit toward `max_connections` plus
/// `max_preauth` plus some spare (as Redis does for maxclients), never above the
/// hard limit, so a connection flood meets the connection caps (refused at once)
/// before the process runs out of descriptors (where the backlog has to wait).
fn raise_fd_limit(max_connections: usize, max_preauth: usize, verbose: bool) {
    let want = max_connections
        .saturating_add(max_preauth)
        .saturating_add(64) as libc::rlim_t;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: a valid rlimit, lowering nothing.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
    if verbose && (!ok || raised.rlim_cur < want) {
        eprintln!(
            "mgrd: descriptor limit {} is below --max-connections {max_connections} + --max-preauth {max_preauth} + 64",
            if ok { raised.rlim_cur } else { lim.rlim_cur }
        );
    }
}

/// Takes the service manager's variables, then binds `config.address` or
/// serves the socket passed by socket activation; says why not on stderr.
/// Notes an empty authkey on stderr.
fn start(
    config: ServerConfig,
    address_given: bool,
    key_set: bool,
) -> Option<(Server, Option<systemd::Notifier>)> {
    let fail = |e: String| {
        eprintln!("mgrd: {e}");
        None
    };
    let inherited = match systemd::listen_fd() {
        Ok(fd) => fd,
        Err(e) => return fail(e),
    };
    // A notification socket that cannot be used is reported, not fatal.
    let notifier = systemd::Notifier::from_env().unwrap_or_else(|e| {
        eprintln!("mgrd: {e}");
        None
    });
    let key_empty = config.authkey.is_empty();
    let bound = match inherited {
        Some(_) if address_given => {
            return fail(format!(
                "--address {} conflicts with the socket passed by socket activation (LISTEN_FDS): drop one",
                config.address
            ))
        }
        Some(fd) => Server::from_listener(fd, config),
        None => Server::bind(config),
    };
    let server = match bound {
        Ok(s) => s,
        // The message names the address; the kind adds nothing.
        Err(Error::Io(e)) => return fail(e.to_string()),
        Err(e @ Error::Config(_)) if key_empty => {
            return fail(format!("{e} (mgrd reads the authkey from MGR_AUTHKEY)"))
        }
        Err(e) => return fail(e.to_string()),
    };
    if key_empty {
        eprintln!(
            "mgrd: MGR_AUTHKEY is {}: the authkey is empty, so clients must pass authkey=b\"\"",
            if key_set { "empty" } else { "not set" }
        );
    }
    Some((server, notifier))
}

/// Sends a notification if the service manager asked for them; a failure is
/// reported and otherwise ignored (serving matters more).
fn notify(notifier: &Option<systemd::Notifier>, message: &str) {
    if let Some(Err(e)) = notifier.as_ref().map(|n| n.send(message)) {
        eprintln!("mgrd: {e}");
    }
}

fn main() -> ExitCode {
    if let Err(e) = block_shutdown_signals() {
        eprintln!("mgrd: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mgrd: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit(
        opts.config.max_connections,
        opts.config.max_preauth_connections,
        opts.verbose,
    );
    let Some((mut server, notifier)) = start(opts.config, opts.address_given, opts.key_set) else {
        return ExitCode::FAILURE;
    };
    server.register_builtins();
    for spec in &opts.objects {
        if let Err(e) = spec.expose(&mut server) {
            eprintln!("mgrd: --object {spec}: {e}");
            return ExitCode::from(2);
        }
    }
    if opts.verbose {
        // One line per connection event and the shutdown, timestamped; the
        // events name peers, never keys.
        server.set_log_hook(Some(Box::new(|e: &mgr::server::LogEvent<'_>| {
            let now = mgr::server::log::rfc3339_utc(std::time::SystemTime::now());
            eprintln!("{now} mgrd: {e}");
        })));
    }
    if let Err(e) = watch_signals(server.handle()) {
        eprintln!("mgrd: cannot set up signal handling: {e}");
        return ExitCode::FAILURE;
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "mgrd listening on {}", server.address());
    let _ = stdout.flush();
    notify(
        &notifier,
        &format!("READY=1\nSTATUS=listening on {}", server.address()),
    );

    let mut reason = "shutdown requested by a client";
    while !server.is_shut_down() {
        if let Err(e) = server.turn(None) {
            eprintln!("mgrd: {e}");
            reason = "error";
            break;
        }
    }
    if SIGNALLED.load(Ordering::Relaxed) {
        reason = "signal received";
    }
    if opts.verbose {
        eprintln!(
            "mgrd: {reason}; served {} connections, {} objects live at exit",
            server.connections_accepted(),
            server.number_of_objects()
        );
    }
    notify(&notifier, &format!("STOPPING=1\nSTATUS={reason}"));
    server.shutdown();
    drop(server);
    ExitCode::SUCCESS
}
