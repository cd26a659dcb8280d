//! The embeddable manager server.
//!
//! A [`Server`] owns one listener, every client connection and every shared object,
//! and runs on its host's thread: poll [`Server::fd`] with [`Server::timeout`] in
//! the host's own loop and call [`Server::process`] when it is readable or the
//! timeout expires — or call [`Server::run`] to give it the thread. Nothing here
//! spawns a thread. Other threads reach a server only through a [`ServerHandle`]
//! (answer a deferred call, request shutdown), which wakes the fd.
//!
//! A turn is bounded: one [`Server::process`] serves at most
//! [`ServerConfig::turn_max_requests`] requests or [`ServerConfig::turn_max_time`]
//! of them, round-robin over the connections, and carries the rest to the next
//! call ([`Server::has_pending_work`]; [`Server::timeout`] is then zero). Timers,
//! deferred answers and sweeps are not held back by the budget.
//!
//! A reply whose value names shared objects (a proxy stored in a list, returned by
//! `list[0]` or `Queue.get`) keeps each of them alive for
//! [`ServerConfig::reply_ref_grace`], so the receiver can take its own reference
//! even if the last holder let go in the same call.
//!
//! # Example
//!
//! A host type, served on a thread of its own and called by a client:
//!
//! ```
//! use mgr::server::{CallArgs, CallResult, Context, SharedObject, TypeSpec};
//! use mgr::{Manager, RemoteError, Server, ServerConfig, Value};
//!
//! /// `add(n)` adds to the total and returns it; `total()`.
//! struct Tally(i64);
//!
//! impl SharedObject for Tally {
//!     fn call(&mut self, _: &mut Context<'_>, method: &str, args: CallArgs) -> CallResult {
//!         match method {
//!             "add" => {
//!                 let (n,): (i64,) = args.extract()?; // a TypeError otherwise
//!                 self.0 += n;
//!                 Ok(Value::Int(self.0).into())
//!             }
//!             "total" => Ok(Value::Int(self.0).into()),
//!             _ => Err(RemoteError::new("AttributeError", method)),
//!         }
//!     }
//! }
//!
//! let (tx, rx) = std::sync::mpsc::channel();
//! let server = std::thread::spawn(move || -> mgr::Result<()> {
//!     let config = ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
//!     let mut server = Server::bind(config)?;
//!     server.register(TypeSpec::new("Tally", &["add", "total"], |_, args| {
//!         let (start,): (Option<i64>,) = args.extract()?;
//!         Ok(Box::new(Tally(start.unwrap_or(0))))
//!     }));
//!     tx.send(server.address().clone()).unwrap();
//!     server.run() // until a client asks for shutdown
//! });
//!
//! let address = rx.recv()?;
//! let m = Manager::connect_to(&address, b"secret")?;
//! let tally = m.create("Tally", vec![Value::Int(10)])?;
//! assert_eq!(tally.call("add", vec![Value::Int(5)])?, Value::Int(15));
//! let e = tally.call("add", vec![Value::from("five")]).unwrap_err();
//! assert_eq!(e.remote_kind(), Some("TypeError"));
//! m.shutdown()?;
//! server.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::address::Address;
use crate::error::{Error, Result};
pub use crate::proto::codec::Globals;
use crate::proto::frame::DEFAULT_MAX_FRAME;
use crate::proto::{RemoteError, Value};

// The server's public items are re-exported here, from modules that stay
// private so that their internals (the object table, the registry, the
// built-in types) are not API.
mod args;
mod builtins;
mod context;
pub mod log;
mod peer;
mod registry;
mod stats;

mod conn;
mod dispatch;
mod fasthash;
mod gc;
mod guard;
mod listen;
mod loans;
mod named;
mod objects;
mod procs;
mod reactor;
mod segments;
#[cfg(feature = "tokio")]
mod tokio_serve;

pub use args::FromArgs;
pub use context::{CallId, ConnId, Context, ReplyHandle, TimerId};
pub use log::{LogEvent, LogHook};
pub use named::ObjectSpec;
pub use peer::{Peer, PeerAddr};
pub use registry::{CallArgs, CallResult, Outcome, SharedObject, TypeSpec};
pub use stats::ServerStats;
#[cfg(feature = "tokio")]
pub use tokio_serve::serve;

use context::Core;
use context::{Command, Shared};
use reactor::Reactor;

/// Default [`ServerConfig::turn_max_requests`].
pub const DEFAULT_TURN_MAX_REQUESTS: usize = 1024;
/// Default [`ServerConfig::turn_max_time`].
pub const DEFAULT_TURN_MAX_TIME: Duration = Duration::from_millis(1);
/// Default [`ServerConfig::gc_work_per_turn`].
pub const DEFAULT_GC_WORK_PER_TURN: usize = 1024;
/// Default [`ServerConfig::max_preauth_connections`].
pub const DEFAULT_MAX_PREAUTH: usize = 256;

/// How a server listens and what it allows.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port). A stale Unix socket
    /// file there (nothing accepts on it) is replaced; see [`Server::bind`].
    pub address: Address,
    /// The shared secret clients prove they know (CPython's `authkey`). Empty is
    /// allowed only on loopback and Unix sockets.
    pub authkey: Vec<u8>,
    /// Largest frame accepted after the handshake, checked before allocating.
    pub max_frame: u64,
    /// Authenticated connections allowed at once: a peer that completes its
    /// handshake beyond this is closed. Connections still authenticating are
    /// counted against [`max_preauth_connections`](Self::max_preauth_connections)
    /// instead, so they never take an authenticated client's place.
    pub max_connections: usize,
    /// A peer that has not authenticated within this time is dropped.
    pub handshake_timeout: Duration,
    /// Output buffered for one connection beyond which it is not served further
    /// until it reads its replies.
    pub max_output: usize,
    /// How long the objects named in a reply are kept alive for its receiver to
    /// take its own reference (see `Server` docs on replies that hold proxies).
    pub reply_ref_grace: Duration,
    /// Requests (frames, handshake messages included) one
    /// [`Server::process`] call serves at most, round-robin over the ready
    /// connections; the rest waits for the next call (see [`Server::has_pending_work`]).
    pub turn_max_requests: usize,
    /// Time one [`Server::process`] call spends serving requests at most
    /// (checked after each request); the rest waits for the next call.
    pub turn_max_time: Duration,
    /// Connections still authenticating allowed at once. A new one beyond this
    /// replaces the oldest (which is closed): idle sockets cannot lock clients
    /// out, they can only be outpaced.
    pub max_preauth_connections: usize,
    /// The listen backlog (connections the kernel queues before they are
    /// accepted); `None` asks for the system maximum (`net.core.somaxconn`,
    /// 4096 if unreadable).
    pub listen_backlog: Option<u32>,
    /// Total bytes that shared objects may hold, server-wide (`None`, the
    /// default: no cap). Counted by the built-in containers (dict, list, Queue,
    /// Namespace, Value, Array, Iterator) with a cheap estimate of each stored
    /// value; a call or `create` that would take the total past the cap fails
    /// with `MemoryError` and changes nothing.
    pub max_held_bytes: Option<usize>,
    /// Live objects one connection may have created (by `create`, or as the
    /// result of its calls) at a time (`None`, the default: no cap). Beyond it
    /// the creation fails with a `MemoryError` naming the limit. CPython's
    /// client opens a connection per `create`, so for it this bounds the
    /// objects its calls create (`iter(dict)` …); `max_held_bytes` bounds both.
    pub max_objects_per_conn: Option<usize>,
    /// Which globals values may name ([`Globals::Default`]: the standard
    /// library's value types and exceptions). The server never calls one; the
    /// policy is about what one client may hand another (see `SECURITY.md`).
    pub globals: Globals,
    /// Work the cycle collector does per turn at most (a slot looked at, a
    /// held reference followed, an object freed: one unit each; the
    /// references of the last object looked at are followed in one go). The
    /// collector frees objects that only reference one another, a few
    /// thousand units per turn until it is done. 0 turns it off.
    pub gc_work_per_turn: usize,
    /// When a process that holds a plain `Lock`, a `Semaphore` or a
    /// `BoundedSemaphore` dies, release what it held (default `false`: they
    /// stay held, as on CPython's server, where a plain lock has no owner and
    /// hand-off patterns rely on that). Only processes the server knows the
    /// pid of (Unix-socket peers) are seen to die. `RLock` and `Condition`
    /// are released when their connection closes, whatever this says.
    pub release_locks_of_dead: bool,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("address", &self.address)
            .field("authkey", &format_args!("<{} bytes>", self.authkey.len()))
            .field("max_frame", &self.max_frame)
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_output", &self.max_output)
            .field("reply_ref_grace", &self.reply_ref_grace)
            .field("turn_max_requests", &self.turn_max_requests)
            .field("turn_max_time", &self.turn_max_time)
            .field("max_preauth_connections", &self.max_preauth_connections)
            .field("listen_backlog", &self.listen_backlog)
            .field("max_held_bytes", &self.max_held_bytes)
            .field("max_objects_per_conn", &self.max_objects_per_conn)
            .field("globals", &self.globals)
            .field("gc_work_per_turn", &self.gc_work_per_turn)
            .field("release_locks_of_dead", &self.release_locks_of_dead)
            .finish()
    }
}

impl ServerConfig {
    /// Defaults: 64 MiB frames, 10,000 authenticated connections and 256 still
    /// authenticating, a 10 s handshake deadline, 4 MiB of output per connection,
    /// 5 s of grace for objects named in replies, turns of at most 1024 requests
    /// or 1 ms of serving (sized for a host running a 60 Hz frame), the system's
    /// maximum listen backlog, no cap on held bytes or objects per connection,
    /// 1024 units of cycle-collector work per turn, locks of dead processes
    /// kept held.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use mgr::ServerConfig;
    ///
    /// let mut config = ServerConfig::new("unix:/tmp/mgr-example.sock".parse()?, b"secret");
    /// config.max_frame = 1 << 20; // 1 MiB requests at most
    /// config.turn_max_time = Duration::from_micros(500);
    /// config.max_held_bytes = Some(256 << 20);
    /// # Ok::<(), mgr::address::AddressError>(())
    /// ```
    pub fn new(address: Address, authkey: &[u8]) -> ServerConfig {
        ServerConfig {
            address,
            authkey: authkey.to_vec(),
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            max_output: 4 << 20,
            reply_ref_grace: loans::DEFAULT_GRACE,
            turn_max_requests: DEFAULT_TURN_MAX_REQUESTS,
            turn_max_time: DEFAULT_TURN_MAX_TIME,
            max_preauth_connections: DEFAULT_MAX_PREAUTH,
            listen_backlog: None,
            max_held_bytes: None,
            max_objects_per_conn: None,
            globals: Globals::Default,
            gc_work_per_turn: DEFAULT_GC_WORK_PER_TURN,
            release_locks_of_dead: false,
        }
    }
}

/// A manager server embedded in the calling thread.
pub struct Server {
    reactor: Reactor,
    core: Core,
    remove_socket: Option<listen::SocketFile>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.reactor.address)
            .field("connections", &self.reactor.conn_count())
            .field("objects", &self.core.objects.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the listener at [`ServerConfig::address`]. Refuses an empty authkey
    /// on an address other machines can reach.
    ///
    /// A Unix socket path that is taken is examined, not blindly replaced: a
    /// socket file nothing accepts on (a crashed server's: connecting is
    /// refused) is removed and bound again; a socket some server accepts on is
    /// refused ("another server is listening on unix:/…"); a path that is not a
    /// socket is refused and never removed. The socket file is removed when
    /// the server is dropped, if the path still names the file it created.
    ///
    /// # Errors
    ///
    /// `Error::Config` for an empty authkey on an address other machines can
    /// reach. Other errors name the address: `Error::Io` keeps the system
    /// error's kind (`AddrInUse` for a taken port or a live socket, `NotFound`
    /// for a missing directory) with a message such as "127.0.0.1:50000 is
    /// already in use (another server?)" or "cannot listen on
    /// unix:/run/x/mgr.sock: directory /run/x does not exist".
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::{Address, Server, ServerConfig};
    ///
    /// let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse()?, b"secret"))?;
    /// server.register_builtins(); // Queue, dict, Lock … as SyncManager serves them
    /// let Address::Tcp(bound) = server.address() else { unreachable!() };
    /// assert_ne!(bound.port(), 0, "the port it was given");
    ///
    /// let open = ServerConfig::new("0.0.0.0:0".parse()?, b"");
    /// assert!(Server::bind(open).is_err(), "no authkey on a reachable address");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind(config: ServerConfig) -> Result<Server> {
        Self::check_key(&config, &config.address)?;
        let bound = listen::bind(&config.address)?;
        Self::with_listener(config, bound)
    }

    /// Serves on a socket that is already bound and listening, as systemd's
    /// socket activation or a parent process hands one over: a TCP (IPv4 or
    /// IPv6) or Unix path stream socket, checked with `getsockopt` and
    /// `getsockname`. It is made non-blocking and close-on-exec.
    /// [`ServerConfig::address`] is replaced by the socket's own address (the
    /// empty-authkey rule applies to it); the listen backlog is left as the
    /// socket has it unless [`ServerConfig::listen_backlog`] is set. The
    /// socket's file (for a Unix socket) is not removed at the end: whoever
    /// created it owns it.
    ///
    /// # Errors
    ///
    /// Anything but a listening stream socket (a datagram socket, one that is
    /// not listening, not a socket at all) is an `Error::Io` of kind
    /// `InvalidInput` naming the descriptor; the descriptor is closed. An
    /// empty authkey on an address other machines can reach is an
    /// `Error::Config`, as for [`bind`](Self::bind).
    pub fn from_listener(
        listener: std::os::fd::OwnedFd,
        mut config: ServerConfig,
    ) -> Result<Server> {
        let bound = listen::adopt(listener)?;
        Self::check_key(&config, &bound.address)?;
        config.address = bound.address.clone();
        Self::with_listener(config, bound)
    }

    fn check_key(config: &ServerConfig, address: &Address) -> Result<()> {
        if config.authkey.is_empty() && !address.is_local() {
            return Err(Error::Config(format!(
                "refusing to listen on {address} without an authkey: set one, or listen on loopback or a Unix socket"
            )));
        }
        Ok(())
    }

    fn with_listener(config: ServerConfig, mut bound: listen::Bound) -> Result<Server> {
        let remove_socket = bound.socket_file.take();
        let mut core = Core::new();
        core.loans.grace = config.reply_ref_grace;
        core.limits = context::Limits::of(&config);
        core.objects.gc.work_per_turn = config.gc_work_per_turn;
        core.procs.release_locks = config.release_locks_of_dead;
        let reactor = Reactor::bind(config, bound, core.shared.clone())?;
        Ok(Server {
            reactor,
            core,
            remove_socket,
        })
    }

    /// Registers (or replaces) a shared type: clients `create` its objects
    /// by its typeid.
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::server::{CallArgs, CallResult, Context, SharedObject, TypeSpec};
    /// use mgr::{Server, ServerConfig, Value};
    ///
    /// struct Hello;
    /// impl SharedObject for Hello {
    ///     fn call(&mut self, _: &mut Context<'_>, _: &str, args: CallArgs) -> CallResult {
    ///         let (name,): (String,) = args.extract()?;
    ///         Ok(Value::from(format!("hello, {name}")).into())
    ///     }
    /// }
    ///
    /// let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse()?, b"k"))?;
    /// server.register(TypeSpec::new("Hello", &["greet"], |_, _| Ok(Box::new(Hello))));
    /// assert_eq!(server.typeids(), ["Hello"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register(&mut self, spec: TypeSpec) {
        self.core.registry.insert(spec);
    }

    /// Registers the SyncManager set of built-in types (Queue, Lock, dict, list …),
    /// as `mgrd` serves them.
    pub fn register_builtins(&mut self) {
        builtins::register_builtins(self);
    }

    /// Registered typeids, sorted.
    pub fn typeids(&self) -> Vec<&str> {
        self.core.registry.typeids()
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn address(&self) -> &Address {
        &self.reactor.address
    }

    /// One pollable descriptor (readable when [`process`](Self::process) has work).
    pub fn fd(&self) -> RawFd {
        self.reactor.poll.as_raw_fd()
    }

    /// How long a host may wait on [`fd`](Self::fd) before calling
    /// [`process`](Self::process): zero while work is left over from a turn
    /// (see [`has_pending_work`](Self::has_pending_work)), else the time until
    /// the next timer, `None` if there is none.
    pub fn timeout(&mut self) -> Option<Duration> {
        if self.has_pending_work() {
            return Some(Duration::ZERO);
        }
        self.core
            .next_deadline()
            .map(|d| d.saturating_duration_since(std::time::Instant::now()))
    }

    /// When [`process`](Self::process) should next run even if the fd stays
    /// quiet: now while work is pending, else the next timer's deadline (`None`:
    /// only when the fd is readable). The absolute form of
    /// [`timeout`](Self::timeout), for loops that keep deadlines.
    pub fn next_deadline(&mut self) -> Option<std::time::Instant> {
        if self.has_pending_work() {
            return Some(std::time::Instant::now());
        }
        self.core.next_deadline()
    }

    /// Whether the last turn left work for the next: requests already received
    /// (buffered, or still in a socket no new readiness event will announce),
    /// connections waiting to be accepted, answers to deliver. Its fd need not be
    /// readable then: call [`process`](Self::process) again (poll with timeout 0
    /// meanwhile, as [`timeout`](Self::timeout) says).
    pub fn has_pending_work(&self) -> bool {
        !self.reactor.is_closed()
            && (self.reactor.has_pending_work()
                || !self.core.outbox.is_empty()
                || self.core.objects.gc.busy())
    }

    /// Does one bounded turn of ready work without blocking: accepts, reads,
    /// fires due timers, delivers deferred answers, sweeps, and serves at most
    /// [`ServerConfig::turn_max_requests`] requests or
    /// [`ServerConfig::turn_max_time`] of them, round-robin over the ready
    /// connections (a few requests from each per pass). What is left is carried
    /// to the next call: [`has_pending_work`](Self::has_pending_work) says so
    /// and [`timeout`](Self::timeout) returns zero. Like `sd_bus_process`, the
    /// host decides how many turns to give in its frame.
    ///
    /// Returns how much work the turn did: readiness events taken in (a
    /// connection readable or writable, a new connection, an answer sent from
    /// another thread), timers fired, deferred answers delivered and requests
    /// served. 0 means it found nothing to do; it is a measure for a host's
    /// own bookkeeping (an idle loop, a frame's statistics), not a promise
    /// that nothing is left — that is
    /// [`has_pending_work`](Self::has_pending_work).
    ///
    /// # Errors
    ///
    /// `Error::Io` when polling the server's descriptor fails (other than
    /// `EINTR`, which is retried on the next call). Errors of one connection
    /// close that connection and are not reported here.
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::{Server, ServerConfig};
    ///
    /// let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse()?, b"secret"))?;
    /// server.register_builtins();
    /// // Nothing has happened yet: the turn finds nothing to do.
    /// assert_eq!(server.process()?, 0);
    /// // A host loop: wait on `server.fd()` for `server.timeout()`, then
    /// while server.has_pending_work() {
    ///     server.process()?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn process(&mut self) -> Result<usize> {
        self.turn(Some(Duration::ZERO))
    }

    /// Waits up to `timeout` (forever with `None`) for work — not at all while
    /// work is pending — then does one bounded turn, as [`process`](Self::process),
    /// and returns the work it did (0 after a shutdown).
    ///
    /// # Errors
    ///
    /// As [`process`](Self::process).
    pub fn turn(&mut self, timeout: Option<Duration>) -> Result<usize> {
        if self.reactor.is_closed() {
            return Ok(0);
        }
        let timeout = match (timeout, self.timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let work = self.reactor.turn(&mut self.core, timeout)?;
        if self.core.shutdown_requested {
            self.reactor.shut_down(&mut self.core);
        }
        Ok(work)
    }

    /// Serves until a client or a [`ServerHandle`] asks for shutdown: bounded
    /// turns, polling without waiting while work is pending. See the
    /// [module example](self#example).
    ///
    /// # Errors
    ///
    /// As [`process`](Self::process): only a failure to poll the server's own
    /// descriptor ends it early.
    pub fn run(&mut self) -> Result<()> {
        while !self.is_shut_down() {
            self.turn(None)?;
        }
        Ok(())
    }

    /// Whether the server has shut down (it serves no one any more).
    pub fn is_shut_down(&self) -> bool {
        self.reactor.is_closed()
    }

    /// Shuts down now: stops listening, delivers the answers already given
    /// (by [`complete`](Self::complete), a [`ServerHandle`] or an object),
    /// flushes what it can for about half a second at most, closes every
    /// connection and releases their references. Dropping a server does the
    /// same.
    pub fn shutdown(&mut self) {
        self.core.shutdown_requested = true;
        self.reactor.shut_down(&mut self.core);
    }

    /// Answers a deferred call from the server's thread, consuming its handle,
    /// and writes the answer now. False when the answer goes nowhere (its
    /// client went away, or the object broke or was destroyed meanwhile); a
    /// handle of another server is answered through that server, and false
    /// returned.
    ///
    /// # Examples
    ///
    /// A host that answers calls from its own loop: the object parks the
    /// handle where the host can reach it.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use mgr::server::{CallArgs, CallResult, Context, Outcome, ReplyHandle, SharedObject, TypeSpec};
    /// use mgr::{Server, ServerConfig, Value};
    ///
    /// type Parked = Rc<RefCell<Vec<ReplyHandle>>>;
    /// struct Ask(Parked);
    /// impl SharedObject for Ask {
    ///     fn call(&mut self, cx: &mut Context<'_>, _: &str, _: CallArgs) -> CallResult {
    ///         self.0.borrow_mut().push(cx.defer());
    ///         Ok(Outcome::Deferred)
    ///     }
    /// }
    ///
    /// let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse()?, b"k"))?;
    /// let parked = Parked::default();
    /// let for_objects = parked.clone();
    /// server.register(TypeSpec::new("Ask", &["question"], move |_, _| {
    ///     Ok(Box::new(Ask(for_objects.clone())))
    /// }));
    /// // In the host's loop, after `server.process()`:
    /// for h in parked.borrow_mut().drain(..) {
    ///     server.complete(h, Ok(Value::from("42")));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn complete(&mut self, handle: ReplyHandle, result: Result<Value, RemoteError>) -> bool {
        let ok = self.core.answer(handle, result);
        // Deliver (and send) the answer now; requests behind it wait for the
        // next `process`, which `has_pending_work` asks for.
        self.reactor
            .settle(&mut self.core, &mut reactor::Budget::none());
        ok
    }

    /// A handle for other threads: shut the server down (and answer
    /// deferred calls, as [`ReplyHandle::answer`] does) from anywhere.
    ///
    /// # Examples
    ///
    /// ```
    /// use mgr::{Server, ServerConfig};
    ///
    /// let mut server = Server::bind(ServerConfig::new("127.0.0.1:0".parse()?, b"k"))?;
    /// let handle = server.handle();
    /// std::thread::spawn(move || handle.shutdown());
    /// server.run()?; // returns once the handle's shutdown arrives
    /// assert!(server.is_shut_down());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.reactor.shared.clone(),
        }
    }

    /// Live shared objects, as the public `number_of_objects` reports them: an
    /// object kept alive only by a reply's grace (see the module docs) is on its
    /// way out and not counted.
    pub fn number_of_objects(&self) -> usize {
        self.core.held_objects()
    }

    /// Open client connections.
    pub fn connection_count(&self) -> usize {
        self.reactor.conn_count()
    }

    /// Deferred calls still waiting for an answer.
    pub fn pending_calls(&self) -> usize {
        self.core.pending_len()
    }

    /// Bytes held by all connections' input and output buffers: bounded by
    /// about `max_output` plus one reply and a small input cap per connection,
    /// whatever clients send or fail to read.
    pub fn buffered_bytes(&self) -> usize {
        self.reactor.buffered_bytes()
    }

    /// Connections accepted since the server started.
    pub fn connections_accepted(&self) -> u64 {
        self.core.stats.accepted
    }

    /// Frames (requests and handshake messages) served since the server
    /// started: the unit of [`ServerConfig::turn_max_requests`].
    pub fn requests_served(&self) -> u64 {
        self.core.stats.served
    }

    /// A snapshot of the server's counters: connections, requests, errors,
    /// bytes, deferred calls, objects (by typeid too), loans, timers and the
    /// longest turn. Cheap but for the by-typeid counts (one pass over the
    /// objects). Clients get the same through the public method `stats`
    /// (`mgrctl stats`).
    pub fn stats(&self) -> ServerStats {
        self.core.snapshot()
    }

    /// Live shared objects of `typeid` (one pass over the objects; 0 for a
    /// typeid with none, registered or not).
    pub fn objects_of_type(&self, typeid: &str) -> usize {
        self.core
            .objects
            .iter()
            .filter(|(_, slot)| slot.spec.typeid() == typeid)
            .count()
    }

    /// Sets (or, with `None`, removes) the hook that receives a
    /// [`LogEvent`] for each connection accepted, refused or closed, each
    /// failed handshake, each protocol error, and the shutdown. Off by
    /// default, and then free. The hook runs on the server's thread, inside
    /// the call that saw the event; a panic in it is caught and ignored.
    pub fn set_log_hook(&mut self, hook: Option<LogHook>) {
        self.reactor.log = log::Log(hook);
    }

    /// Connections still authenticating (bounded by
    /// [`ServerConfig::max_preauth_connections`]).
    pub fn preauth_connections(&self) -> usize {
        self.reactor.preauth_count()
    }

    /// Bytes the shared objects hold, as the `max_held_bytes` accounting
    /// estimates them (built-in containers; host types count nothing).
    pub fn held_bytes(&self) -> usize {
        self.core.objects.held_bytes()
    }

    /// Changes the turn budget ([`ServerConfig::turn_max_requests`],
    /// [`ServerConfig::turn_max_time`]) while serving; it applies from the next
    /// turn. The host decides how much of its frame to give.
    pub fn set_turn_budget(&mut self, max_requests: usize, max_time: Duration) {
        self.reactor.config.turn_max_requests = max_requests;
        self.reactor.config.turn_max_time = max_time;
    }

    /// Changes [`ServerConfig::max_preauth_connections`] while serving.
    /// Connections already authenticating stay; new ones replace the oldest
    /// while there are more than this.
    pub fn set_max_preauth_connections(&mut self, max: usize) {
        self.reactor.config.max_preauth_connections = max;
    }

    /// Changes the listen backlog ([`ServerConfig::listen_backlog`]) of the
    /// live listener (`None`: the system's maximum).
    ///
    /// # Errors
    ///
    /// `Error::Io` when `listen(2)` refuses. (After a shutdown there is no
    /// listener, and nothing to change.)
    pub fn set_listen_backlog(&mut self, backlog: Option<u32>) -> Result<()> {
        Ok(self.reactor.set_backlog(backlog)?)
    }

    /// Changes [`ServerConfig::max_held_bytes`] while serving (`None`: no
    /// cap). Lowering it below what is held refuses growth from then on and
    /// takes nothing away.
    pub fn set_max_held_bytes(&mut self, max: Option<usize>) {
        self.core.limits.max_held_bytes = max;
    }

    /// Changes [`ServerConfig::max_objects_per_conn`] while serving (`None`:
    /// no cap). Objects already created stay.
    pub fn set_max_objects_per_conn(&mut self, max: Option<usize>) {
        self.core.limits.max_objects_per_conn = max;
    }

    /// Changes [`ServerConfig::globals`] while serving: requests decoded from
    /// then on follow it; values already stored stay.
    pub fn set_globals(&mut self, globals: Globals) {
        self.core.limits.globals = globals;
    }

    /// Changes [`ServerConfig::release_locks_of_dead`] while serving: it
    /// applies to acquisitions from then on.
    pub fn set_release_locks_of_dead(&mut self, on: bool) {
        self.core.procs.release_locks = on;
    }

    /// Changes [`ServerConfig::gc_work_per_turn`] while serving (0 turns the
    /// cycle collector off; a collection under way waits until it is on again).
    pub fn set_gc_work_per_turn(&mut self, work: usize) {
        self.core.objects.gc.work_per_turn = work;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.reactor.is_closed() {
            self.reactor.shut_down(&mut self.core);
        }
        if let Some(file) = self.remove_socket.take() {
            file.remove();
        }
    }
}

/// The server's pollable descriptor (its epoll fd), for event loops that take
/// an `AsFd` / `AsRawFd` source, such as tokio's `AsyncFd`. Readable when
/// [`Server::process`] has work; it stays open as long as the server.
impl AsRawFd for Server {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

impl AsFd for Server {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to the server's `Poll` and is closed only
        // when the server is dropped; the borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(self.fd()) }
    }
}

/// Registers the server's descriptor in a host's own `mio::Poll`, so a mio
/// program drives it like any socket: on its event (or when
/// [`Server::next_deadline`] passes, or while [`Server::has_pending_work`]),
/// call [`Server::process`]. Register it readable; the descriptor is
/// level-triggered for new work, but work already taken in is announced only by
/// `has_pending_work`.
impl mio::event::Source for Server {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.fd()).register(registry, token, interests)
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.fd()).reregister(registry, token, interests)
    }
    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.fd()).deregister(registry)
    }
}

/// What other threads may do to a server: answer deferred calls and ask it to shut
/// down. Cheap to clone, `Send` and `Sync`; every call wakes the server's fd
/// (see [`Server::handle`] for an example).
#[derive(Debug, Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// Answers a deferred call; the server writes it on its next turn (an
    /// answer whose caller has gone is dropped there). The same as
    /// [`ReplyHandle::answer`].
    pub fn complete(&self, handle: ReplyHandle, result: Result<Value, RemoteError>) {
        handle.answer(result);
    }

    /// Asks the server to shut down on its next turn.
    pub fn shutdown(&self) {
        self.shared.send(Command::Shutdown);
    }
}
