//! A blocking Rust client: [`Manager`] connects, creates shared objects and hands
//! out [`Proxy`]s; a proxy's `Drop` releases its reference. For a host's own
//! event loop, [`NbClient`] is the non-blocking client (calls complete through
//! callbacks run inside its `process`); it shares nothing with `Manager`.
//!
//! Against a libmgr server everything runs over one persistent native connection,
//! so creating, calling and releasing never opens another (unlike CPython's
//! client, which connects anew for each incref and decref). References taken over
//! the connection belong to it: if the process dies, the server releases them.
//! [`Pipeline`] sends many calls before reading any reply.
//!
//! Replies cannot be mixed up: every request has a slot in the connection's FIFO
//! of expected replies, and each caller reads its own. A call started with
//! [`Proxy::start_call`] is a ticket ([`PendingCall`]); ordinary calls made while
//! it is outstanding keep its reply for it, and dropping the ticket drops the
//! reply when it comes. A [`Pipeline`] owns its requests until
//! [`run`](Pipeline::run): dropped unrun, they are never sent.
//!
//! [`Manager::connect_cpython`] talks to a CPython manager server instead
//! (`BaseManager.start()`, `get_server().serve_forever()`): pickle, method calls
//! over one `accept_connection`ed connection, and every public request (create,
//! incref, decref …) over a connection of its own, as CPython's client does.
//!
//! [`Manager`], [`Proxy`] and [`PendingCall`] are `Send` and `Sync`: handles on
//! one connection may be used from several threads, one call at a time (a call
//! holds the connection's lock until its reply is read, so a call blocked in
//! the server holds up the others on that connection: give each thread its own
//! [`Manager`] for calls that block, or set a call timeout). A proxy dropped
//! while another thread holds the connection queues its decref, sent ahead of
//! the connection's next request. Timeouts: [`Manager::connect_with`] and
//! [`Manager::set_call_timeout`]; a call that times out breaks the connection
//! ([`Manager::is_broken`]), so no later call can read the reply it gave up on.
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use crate::address::Address;
use crate::error::{Error, Result};
use crate::proto::{ObjectId, Reply, Request, Token, Value};

mod connection;
mod nonblocking;
mod segment;
#[cfg(feature = "spawn")]
mod spawn;

pub use connection::{ConnectOptions, Connection, Seq};
pub use nonblocking::{NbCallback, NbClient, NbConfig, NbProxy, NbResult, NbReturned};
pub use segment::Segment;
#[cfg(feature = "spawn")]
pub use spawn::{SpawnOptions, SpawnedServer};

/// A connection to a manager server. Clones share the connection.
///
/// Create shared objects with [`create`](Self::create); call them through
/// the [`Proxy`] it returns.
///
/// ```
/// # let (tx, rx) = std::sync::mpsc::channel();
/// # let server = std::thread::spawn(move || -> mgr::Result<()> {
/// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
/// #     let mut s = mgr::Server::bind(config)?;
/// #     s.register_builtins();
/// #     tx.send(s.address().to_string()).unwrap();
/// #     s.run()
/// # });
/// # let address: String = rx.recv()?;
/// let m = mgr::Manager::connect(&address, b"secret")?;
/// let list = m.create("list", vec![])?;
/// list.call("append", vec![mgr::Value::Int(1)])?;
/// assert_eq!(list.call("__len__", vec![])?, mgr::Value::Int(1));
/// # m.shutdown()?;
/// # server.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Manager {
    shared: Arc<Shared>,
    /// Set when the server is CPython's: public requests go over one-shot
    /// connections to this address with this key.
    cpython: Option<Arc<(Address, Vec<u8>)>>,
}

/// The connection, and what handles dropped while another thread held it left
/// to do.
struct Shared {
    conn: Mutex<Connection>,
    /// Decrefs and abandoned tickets from drops that found the connection
    /// locked; done at the next lock. At most one entry per proxy or ticket
    /// dropped (the lock is only ever held for a moment).
    deferred: Mutex<Vec<Deferred>>,
}

enum Deferred {
    Decref(ObjectId),
    Abandon(Seq),
}

impl Shared {
    fn new(conn: Connection) -> Arc<Shared> {
        Arc::new(Shared {
            conn: Mutex::new(conn),
            deferred: Mutex::new(Vec::new()),
        })
    }

    /// The deferred list (a panic cannot leave it half-changed: recover it).
    fn deferred(&self) -> MutexGuard<'_, Vec<Deferred>> {
        self.deferred.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Does what drops deferred, on the locked connection: abandons are
    /// applied, decrefs queued (written with the next request).
    fn catch_up(&self, conn: &mut Connection) {
        let todo = std::mem::take(&mut *self.deferred());
        for d in todo {
            match d {
                Deferred::Abandon(seq) => conn.abandon(seq),
                Deferred::Decref(id) if !conn.is_broken() => {
                    conn.queue_ignoring_reply(&Request::public(
                        "decref",
                        vec![Value::Int(id.0 as i64)],
                    ));
                }
                Deferred::Decref(_) => {}
            }
        }
    }

    /// Locks the connection. A panic while it was held leaves its state
    /// unknown: it is then marked broken.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| {
            let mut c = e.into_inner();
            c.set_broken();
            c
        });
        self.catch_up(&mut conn);
        conn
    }

    /// Locks the connection if no one holds it.
    fn try_lock(&self) -> Option<MutexGuard<'_, Connection>> {
        match self.conn.try_lock() {
            Ok(c) => Some(c),
            Err(TryLockError::Poisoned(e)) => {
                let mut c = e.into_inner();
                c.set_broken();
                Some(c)
            }
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager").finish_non_exhaustive()
    }
}

/// A reference to a shared object. Dropping it releases the reference (without
/// waiting for the server's answer).
///
/// ```
/// # let (tx, rx) = std::sync::mpsc::channel();
/// # let server = std::thread::spawn(move || -> mgr::Result<()> {
/// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
/// #     let mut s = mgr::Server::bind(config)?;
/// #     s.register_builtins();
/// #     tx.send(s.address().to_string()).unwrap();
/// #     s.run()
/// # });
/// # let address: String = rx.recv()?;
/// let m = mgr::Manager::connect(&address, b"secret")?;
/// let d = m.create("dict", vec![])?;
/// d.call("__setitem__", vec![mgr::Value::from("k"), mgr::Value::Int(1)])?;
/// assert_eq!(d.call("__getitem__", vec![mgr::Value::from("k")])?, mgr::Value::Int(1));
/// let gone = d.call("__getitem__", vec![mgr::Value::from("x")]).unwrap_err();
/// assert_eq!(gone.remote_kind(), Some("KeyError"));
/// drop(d); // sends the decref; the dict goes when its last reference does
/// assert_eq!(m.number_of_objects()?, 0);
/// # m.shutdown()?;
/// # server.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Proxy {
    manager: Manager,
    token: Token,
    exposed: Arc<[String]>,
    /// The reference was given up by [`Proxy::into_token`]: no decref on drop.
    released: bool,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("typeid", &self.token.typeid)
            .field("id", &self.token.id)
            .finish()
    }
}

/// What a call returned: a value, or (for methods in the type's
/// method_to_typeid) a new shared object.
#[derive(Debug)]
pub enum Returned {
    /// A plain value (`#RETURN`).
    Value(Value),
    /// A new shared object (`#PROXY`).
    Proxy(Proxy),
}

impl Returned {
    /// The value, or a protocol error if the call returned a shared object.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if the call returned a shared object (dropped here,
    /// which releases it).
    pub fn into_value(self) -> Result<Value> {
        match self {
            Returned::Value(v) => Ok(v),
            Returned::Proxy(p) => Err(Error::Protocol(format!(
                "the call returned a shared {} object: use Proxy::invoke",
                p.token.typeid
            ))),
        }
    }

    /// The proxy, or a protocol error if the call returned a plain value.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if the call returned a plain value.
    pub fn into_proxy(self) -> Result<Proxy> {
        match self {
            Returned::Proxy(p) => Ok(p),
            Returned::Value(v) => Err(Error::Protocol(format!(
                "expected a shared object, the call returned {v}"
            ))),
        }
    }
}

/// Reads a method list (a tuple or list of str).
fn method_names(v: Value) -> Option<Vec<String>> {
    match v {
        Value::Tuple(_) | Value::List(_) => Some(
            v.into_items()
                .ok()?
                .into_iter()
                .filter_map(|m| m.into_str().ok())
                .collect(),
        ),
        _ => None,
    }
}

impl Manager {
    /// Connects to `address` (`host:port` or `unix:/path`) with `authkey`.
    ///
    /// # Errors
    ///
    /// [`Error::Address`] if `address` does not parse, [`Error::Connect`] if it
    /// cannot be reached, [`Error::Auth`] if the handshake fails (a wrong key),
    /// [`Error::Io`] if the connection fails during it.
    ///
    /// ```
    /// # let (tx, rx) = std::sync::mpsc::channel();
    /// # let server = std::thread::spawn(move || -> mgr::Result<()> {
    /// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
    /// #     let mut s = mgr::Server::bind(config)?;
    /// #     s.register_builtins();
    /// #     tx.send(s.address().to_string()).unwrap();
    /// #     s.run()
    /// # });
    /// # let address: String = rx.recv()?;
    /// let m = mgr::Manager::connect(&address, b"secret")?;
    /// assert_eq!(m.number_of_objects()?, 0);
    /// let wrong = mgr::Manager::connect(&address, b"not the key").unwrap_err();
    /// assert!(matches!(wrong, mgr::Error::Auth(_)));
    /// # m.shutdown()?;
    /// # server.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(address: &str, authkey: &[u8]) -> Result<Manager> {
        Manager::connect_to(&address.parse::<Address>()?, authkey)
    }

    /// Connects to a parsed address.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] if it cannot be reached, [`Error::Auth`] if the handshake fails (a wrong key),
    /// [`Error::Io`] if the connection fails during it.
    pub fn connect_to(address: &Address, authkey: &[u8]) -> Result<Manager> {
        Manager::connect_with(address, authkey, ConnectOptions::default())
    }

    /// Connects to a parsed address with timeouts: `options.connect_timeout`
    /// covers the TCP connect and the handshake, `options.call_timeout` every
    /// later call (see [`set_call_timeout`](Self::set_call_timeout)). A timeout
    /// is an error for which [`Error::is_timeout`] holds.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and an error for which
    /// [`Error::is_timeout`] holds if the connect timeout runs out.
    ///
    /// ```no_run
    /// # fn main() -> mgr::Result<()> {
    /// use std::time::Duration;
    /// let options = mgr::ConnectOptions {
    ///     connect_timeout: Some(Duration::from_secs(5)),
    ///     call_timeout: Some(Duration::from_secs(30)),
    /// };
    /// let m = mgr::Manager::connect_with(&"127.0.0.1:50000".parse()?, b"secret", options)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect_with(
        address: &Address,
        authkey: &[u8],
        options: ConnectOptions,
    ) -> Result<Manager> {
        Ok(Manager {
            shared: Shared::new(Connection::connect_with(address, authkey, &options)?),
            cpython: None,
        })
    }

    /// Sets how long each later call may take (`None`, the default: wait for
    /// ever): sending it and reading its reply; for a [`Pipeline`], each reply
    /// in turn; for [`PendingCall::finish`], the wait for the reply. A call that
    /// times out returns an error for which [`Error::is_timeout`] holds, and
    /// breaks the connection: its reply may still come, so every later call on
    /// it fails ([`is_broken`](Self::is_broken)) rather than risk reading it.
    pub fn set_call_timeout(&self, timeout: Option<Duration>) {
        self.shared.lock().set_call_timeout(timeout);
    }

    /// Whether the connection has failed or timed out: every call on it fails.
    pub fn is_broken(&self) -> bool {
        self.shared.lock().is_broken()
    }

    /// Connects to a CPython manager server (`host:port` or `unix:/path`) and
    /// speaks its protocol: pickle, a persistent `accept_connection` connection
    /// for method calls, a new connection for each public request. References
    /// are global there, as for CPython's own clients: a proxy dropped releases
    /// its reference, a process that dies without dropping leaks it.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and [`Error::Protocol`] if the server
    /// refuses `accept_connection`.
    ///
    /// ```no_run
    /// // Python: m = BaseManager(('127.0.0.1', 50000), b'secret'); m.start()
    /// let m = mgr::Manager::connect_cpython("127.0.0.1:50000", b"secret")?;
    /// let d = m.create("dict", vec![])?;
    /// # Ok::<(), mgr::Error>(())
    /// ```
    pub fn connect_cpython(address: &str, authkey: &[u8]) -> Result<Manager> {
        let address = address.parse::<Address>()?;
        let mut conn = Connection::connect_pickle(&address, authkey)?;
        let accept = Request::public("accept_connection", vec![Value::Str("libmgr-rust".into())]);
        match conn.call(&accept)? {
            Reply::Return(_) => {}
            other => {
                return Err(Error::Protocol(format!(
                    "accept_connection was refused: {other:?}"
                )))
            }
        }
        Ok(Manager {
            shared: Shared::new(conn),
            cpython: Some(Arc::new((address, authkey.to_vec()))),
        })
    }

    /// An object id as the server expects it in public requests: an int on the
    /// native path, CPython's hex string otherwise.
    fn id_value(&self, id: ObjectId) -> Value {
        match self.cpython {
            Some(_) => Value::Str(id.to_string()),
            None => Value::Int(id.0 as i64),
        }
    }

    /// Sends a public request: over the persistent connection natively, over a
    /// connection of its own to a CPython server.
    fn public_request(&self, req: &Request) -> Result<Reply> {
        match &self.cpython {
            Some(target) => Connection::connect_pickle(&target.0, &target.1)?.call(req),
            None => self.shared.lock().call(req),
        }
    }

    fn returned(&self, reply: Reply) -> Result<Returned> {
        match reply {
            Reply::Return(v) => Ok(Returned::Value(v)),
            Reply::Proxy { exposed, token } => Ok(Returned::Proxy(Proxy {
                manager: self.clone(),
                token,
                exposed: exposed.into(),
                released: false,
            })),
            Reply::Error(e) => Err(Error::Remote(e)),
            Reply::Traceback(t) | Reply::Unserializable(t) => {
                Err(Error::Remote(traceback_error(t)))
            }
        }
    }

    /// Calls one of the server's public methods and returns its value.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn public(&self, method: &str, args: Vec<Value>) -> Result<Value> {
        let reply = self.public_request(&Request::public(method, args))?;
        self.returned(reply)?.into_value()
    }

    /// Creates a shared object of `typeid`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    ///
    /// ```
    /// # let (tx, rx) = std::sync::mpsc::channel();
    /// # let server = std::thread::spawn(move || -> mgr::Result<()> {
    /// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
    /// #     let mut s = mgr::Server::bind(config)?;
    /// #     s.register_builtins();
    /// #     tx.send(s.address().to_string()).unwrap();
    /// #     s.run()
    /// # });
    /// # let address: String = rx.recv()?;
    /// let m = mgr::Manager::connect(&address, b"secret")?;
    /// let q = m.create("Queue", vec![])?;
    /// q.call("put", vec![mgr::Value::from("job")])?;
    /// assert_eq!(q.call("get", vec![])?, mgr::Value::from("job"));
    /// let e = m.create("NoSuchType", vec![]).unwrap_err();
    /// assert!(e.remote().is_some(), "{e}");
    /// # m.shutdown()?;
    /// # server.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create(&self, typeid: &str, args: Vec<Value>) -> Result<Proxy> {
        self.create_with(typeid, args, Vec::new())
    }

    /// Creates a shared object of `typeid` with keyword arguments too.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn create_with(
        &self,
        typeid: &str,
        mut args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Proxy> {
        args.insert(0, Value::Str(typeid.to_owned()));
        let req = Request {
            target: None,
            method: "create".into(),
            args,
            kwargs,
        };
        let reply = self.public_request(&req)?;
        let v = self.returned(reply)?.into_value()?;
        let (id, exposed) = create_reply(v)?;
        Ok(Proxy {
            manager: self.clone(),
            token: Token {
                typeid: typeid.to_owned(),
                id,
            },
            exposed: exposed.into(),
            released: false,
        })
    }

    /// Takes a new reference to the object `token` names (e.g. a token found inside
    /// a value) and returns a proxy for it.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    ///
    /// ```
    /// # let (tx, rx) = std::sync::mpsc::channel();
    /// # let server = std::thread::spawn(move || -> mgr::Result<()> {
    /// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
    /// #     let mut s = mgr::Server::bind(config)?;
    /// #     s.register_builtins();
    /// #     tx.send(s.address().to_string()).unwrap();
    /// #     s.run()
    /// # });
    /// # let address: String = rx.recv()?;
    /// let m = mgr::Manager::connect(&address, b"secret")?;
    /// let ns = m.create("Namespace", vec![])?;
    /// // Another connection (another process, say) gets a token and takes a reference.
    /// let other = mgr::Manager::connect(&address, b"secret")?;
    /// let same = other.proxy(ns.token().clone())?;
    /// assert_eq!(same.id(), ns.id());
    /// # m.shutdown()?;
    /// # server.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn proxy(&self, token: Token) -> Result<Proxy> {
        self.public("incref", vec![self.id_value(token.id)])?;
        let exposed = self
            .public("get_methods", vec![self.id_value(token.id)])
            .ok()
            .and_then(method_names)
            .unwrap_or_default();
        Ok(Proxy {
            manager: self.clone(),
            token,
            exposed: exposed.into(),
            released: false,
        })
    }

    /// Number of live shared objects on the server.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn number_of_objects(&self) -> Result<usize> {
        match self.public("number_of_objects", vec![])? {
            Value::Int(n) if n >= 0 => Ok(n as usize),
            other => Err(Error::Protocol(format!("unexpected count {other}"))),
        }
    }

    /// The server's description of its objects.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn debug_info(&self) -> Result<String> {
        self.public("debug_info", vec![])?
            .into_str()
            .map_err(|other| Error::Protocol(format!("unexpected debug_info {other}")))
    }

    /// The methods the object `id` exposes.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn get_methods(&self, id: ObjectId) -> Result<Vec<String>> {
        method_names(self.public("get_methods", vec![self.id_value(id)])?)
            .ok_or_else(|| Error::Protocol("get_methods() answered no method list".into()))
    }

    /// Creates a shared-memory segment of `size` bytes, maps it and has the server
    /// track it (CPython's `SharedMemoryManager.SharedMemory(size)`): the server
    /// unlinks it at shutdown. Other processes open it by [`Segment::name`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `size` is 0, [`Error::Io`] if the segment cannot
    /// be created or mapped; as [`public`](Self::public) if the server does
    /// not track it (the segment is then unlinked).
    ///
    /// ```
    /// # let (tx, rx) = std::sync::mpsc::channel();
    /// # let server = std::thread::spawn(move || -> mgr::Result<()> {
    /// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
    /// #     let mut s = mgr::Server::bind(config)?;
    /// #     s.register_builtins();
    /// #     tx.send(s.address().to_string()).unwrap();
    /// #     s.run()
    /// # });
    /// # let address: String = rx.recv()?;
    /// let m = mgr::Manager::connect(&address, b"secret")?;
    /// let mut seg = m.create_segment(64)?;
    /// seg.as_mut_slice()[..5].copy_from_slice(b"hello");
    /// assert!(m.list_segments()?.contains(&seg.name().to_owned()));
    /// m.release_segment(seg.name())?;
    /// # m.shutdown()?;
    /// # server.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_segment(&self, size: usize) -> Result<Segment> {
        let segment = Segment::create(size)?;
        let name = Value::Str(segment.name().to_owned());
        if let Err(e) = self.public("track_segment", vec![name]) {
            segment.unlink();
            return Err(e);
        }
        Ok(segment)
    }

    /// Has the server unlink a tracked segment now.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn release_segment(&self, name: &str) -> Result<()> {
        self.public("release_segment", vec![Value::Str(name.to_owned())])
            .map(drop)
    }

    /// Names of the segments the server tracks.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn list_segments(&self) -> Result<Vec<String>> {
        match &self.public("list_segments", vec![])? {
            Value::List(v) => Ok(v
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect()),
            other => Err(Error::Protocol(format!("unexpected segment list {other}"))),
        }
    }

    /// Asks the server to shut down.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn shutdown(&self) -> Result<()> {
        self.public("shutdown", vec![]).map(drop)
    }

    /// Reads the reply of a call started with [`Proxy::start_call`] (waiting for
    /// it if the server has not answered yet); the same as [`PendingCall::finish`].
    /// An error if the call was started on another connection.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if `call` was started on another connection; else
    /// as [`PendingCall::finish`].
    pub fn finish_call(&self, call: PendingCall) -> Result<Returned> {
        if !Arc::ptr_eq(&self.shared, &call.manager.shared) {
            return Err(Error::Protocol(
                "finish_call: the call was started on another connection".into(),
            ));
        }
        call.finish()
    }

    /// Starts a batch of calls sent together.
    ///
    /// ```
    /// # let (tx, rx) = std::sync::mpsc::channel();
    /// # let server = std::thread::spawn(move || -> mgr::Result<()> {
    /// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
    /// #     let mut s = mgr::Server::bind(config)?;
    /// #     s.register_builtins();
    /// #     tx.send(s.address().to_string()).unwrap();
    /// #     s.run()
    /// # });
    /// # let address: String = rx.recv()?;
    /// let m = mgr::Manager::connect(&address, b"secret")?;
    /// let list = m.create("list", vec![])?;
    /// let mut p = m.pipeline();
    /// for i in 0..3 {
    ///     p.call(&list, "append", vec![mgr::Value::Int(i)]);
    /// }
    /// p.call(&list, "__len__", vec![]);
    /// let results = p.run()?; // one write, then four replies
    /// let len = results.into_iter().last().unwrap()?.into_value()?;
    /// assert_eq!(len, mgr::Value::Int(3));
    /// # m.shutdown()?;
    /// # server.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline {
            manager: self,
            frames: Vec::new(),
            count: 0,
        }
    }

    /// The underlying connection (for raw frames in tests and tools).
    /// Holding it holds up every other handle on the connection.
    pub fn connection(&self) -> MutexGuard<'_, Connection> {
        self.shared.lock()
    }
}

impl Proxy {
    /// The object's token.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.token.id
    }

    /// The methods the object exposes.
    pub fn exposed(&self) -> &[String] {
        &self.exposed
    }

    /// Gives the proxy up without releasing its reference and returns the token.
    /// The reference stays owned by the connection, which releases it when it
    /// closes (or when `decref` is sent for the id).
    #[must_use = "the reference stays taken until the connection closes or the token is decref'd"]
    pub fn into_token(mut self) -> Token {
        self.released = true;
        self.token.clone()
    }

    /// Calls `method` and returns its value.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn call(&self, method: &str, args: Vec<Value>) -> Result<Value> {
        self.invoke(method, args, Vec::new())?.into_value()
    }

    /// Calls `method` with keyword arguments; the result may be a new proxy.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    ///
    /// ```
    /// # let (tx, rx) = std::sync::mpsc::channel();
    /// # let server = std::thread::spawn(move || -> mgr::Result<()> {
    /// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
    /// #     let mut s = mgr::Server::bind(config)?;
    /// #     s.register_builtins();
    /// #     tx.send(s.address().to_string()).unwrap();
    /// #     s.run()
    /// # });
    /// # let address: String = rx.recv()?;
    /// use mgr::client::Returned;
    /// let m = mgr::Manager::connect(&address, b"secret")?;
    /// let d = m.create("dict", vec![])?;
    /// let got = d.invoke("get", vec![mgr::Value::from("k")], vec![])?;
    /// assert!(matches!(got, Returned::Value(mgr::Value::None)));
    /// let e = d.invoke("pop", vec![], vec![("nope".into(), mgr::Value::Int(1))]);
    /// assert_eq!(e.unwrap_err().remote_kind(), Some("TypeError"));
    /// # m.shutdown()?;
    /// # server.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn invoke(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Returned> {
        let req = Request {
            target: Some(self.token.id),
            method: method.to_owned(),
            args,
            kwargs,
        };
        let reply = self.manager.shared.lock().call(&req)?;
        self.manager.returned(reply)
    }

    /// Sends a call of `method` without reading its reply, so a call that blocks
    /// in the server (`Queue.get`, `Lock.acquire`) does not block this thread.
    /// Read the reply with [`PendingCall::finish`]. The server answers calls in
    /// the order they were sent on this connection: a later call waits behind
    /// this one, and reads and keeps this one's reply for the ticket first.
    /// Dropping the ticket gives the reply up (the call still runs).
    ///
    /// ```
    /// # let (tx, rx) = std::sync::mpsc::channel();
    /// # let server = std::thread::spawn(move || -> mgr::Result<()> {
    /// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
    /// #     let mut s = mgr::Server::bind(config)?;
    /// #     s.register_builtins();
    /// #     tx.send(s.address().to_string()).unwrap();
    /// #     s.run()
    /// # });
    /// # let address: String = rx.recv()?;
    /// let m = mgr::Manager::connect(&address, b"secret")?;
    /// let q = m.create("Queue", vec![])?;
    /// let get = q.start_call("get", vec![])?; // waits in the server, not here
    /// // Another connection puts; this one's later calls would wait behind `get`.
    /// let other = mgr::Manager::connect(&address, b"secret")?;
    /// other.proxy(q.token().clone())?.call("put", vec![mgr::Value::Int(7)])?;
    /// assert_eq!(get.finish()?.into_value()?, mgr::Value::Int(7));
    /// # other.shutdown()?;
    /// # server.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the call cannot be sent (the connection failed, or
    /// is broken).
    pub fn start_call(&self, method: &str, args: Vec<Value>) -> Result<PendingCall> {
        let mut conn = self.manager.shared.lock();
        let seq = conn.queue(&Request::call(self.token.id, method, args));
        if let Err(e) = conn.write_out() {
            conn.abandon(seq);
            return Err(e);
        }
        Ok(PendingCall {
            manager: self.manager.clone(),
            seq: Some(seq),
        })
    }

    /// A manager handle on the same connection.
    pub fn manager(&self) -> Manager {
        self.manager.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let decref = Request::public("decref", vec![self.manager.id_value(self.token.id)]);
        if self.manager.cpython.is_some() {
            // CPython serves public requests on connections of their own.
            let _ = self.manager.public_request(&decref);
        } else if let Some(mut c) = self.manager.shared.try_lock() {
            if !c.is_broken() {
                let _ = c.send_ignoring_reply(&decref);
            }
        } else {
            // Another thread is in a call: its lock is not waited for here.
            let id = self.token.id;
            self.manager.shared.deferred().push(Deferred::Decref(id));
        }
    }
}

/// A call sent by [`Proxy::start_call`] whose reply has not been read: a ticket
/// for that reply. Other calls on the same connection keep the reply for it if
/// they read past it; dropping the ticket unfinished gives the reply up.
#[must_use = "a started call's reply is read with PendingCall::finish; dropping it gives the reply up"]
pub struct PendingCall {
    manager: Manager,
    /// `None` once finished.
    seq: Option<Seq>,
}

impl fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCall")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl PendingCall {
    /// Reads the call's reply, waiting for it if the server has not answered yet.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server raised (its Python kind in
    /// [`Error::remote_kind`]); [`Error::Io`], [`Error::Frame`] or
    /// [`Error::Codec`] if the connection failed, timed out ([`Error::is_timeout`])
    /// or answered something unreadable; [`Error::Protocol`] if the reply is not
    /// the kind this call expects.
    pub fn finish(mut self) -> Result<Returned> {
        let Some(seq) = self.seq.take() else {
            // `finish` takes the ticket: its seq is only ever taken here.
            return Err(Error::Protocol("the call was finished already".into()));
        };
        let reply = self.manager.shared.lock().recv_for(seq)?;
        self.manager.returned(reply)
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            match self.manager.shared.try_lock() {
                Some(mut c) => c.abandon(seq),
                None => self.manager.shared.deferred().push(Deferred::Abandon(seq)),
            }
        }
    }
}

/// Calls queued to be sent together; [`run`](Pipeline::run) writes them in one go
/// and reads every reply in order. The pipeline owns its requests until then:
/// dropped without `run`, it sends nothing.
#[derive(Debug)]
#[must_use = "a pipeline sends nothing until run() is called"]
pub struct Pipeline<'a> {
    manager: &'a Manager,
    /// The queued calls, encoded as frames.
    frames: Vec<u8>,
    count: usize,
}

impl Pipeline<'_> {
    /// Queues a call of `method` on `proxy`.
    pub fn call(&mut self, proxy: &Proxy, method: &str, args: Vec<Value>) -> &mut Self {
        self.manager.shared.lock().encode(
            &Request::call(proxy.token.id, method, args),
            &mut self.frames,
        );
        self.count += 1;
        self
    }

    /// Number of calls queued.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no call is queued.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sends the queued calls and returns their results in order. A failed
    /// connection fails the whole run; an error in one reply is that call's.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Frame`] if the connection fails or times out
    /// (no result is returned: the replies not read are given up); each
    /// call's own error (a remote exception, a reply that does not decode) is
    /// its entry in the list.
    pub fn run(self) -> Result<Vec<Result<Returned>>> {
        let first = {
            let mut conn = self.manager.shared.lock();
            let first = conn.queue_encoded(&self.frames, self.count);
            if let Err(e) = conn.write_out() {
                (0..self.count).for_each(|i| conn.abandon(first.offset(i)));
                return Err(e);
            }
            first
        };
        let mut out = Vec::with_capacity(self.count);
        for i in 0..self.count {
            let reply = self.manager.shared.lock().recv_for(first.offset(i));
            match reply {
                Ok(reply) => out.push(self.manager.returned(reply)),
                Err(e @ Error::Codec(_)) => out.push(Err(e)),
                Err(e) => {
                    let mut conn = self.manager.shared.lock();
                    (i + 1..self.count).for_each(|j| conn.abandon(first.offset(j)));
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}

/// Reads a `create` reply: `(id, exposed)`, the id an int (native) or hex
/// string (CPython).
pub(crate) fn create_reply(v: Value) -> Result<(ObjectId, Vec<String>)> {
    let (id, exposed) = match v {
        Value::Tuple(ref t) if t.len() == 2 => {
            let mut t = v.into_items().expect("a tuple");
            let exposed = t.pop().expect("two items");
            (t.pop().expect("two items"), exposed)
        }
        other => {
            return Err(Error::Protocol(format!(
                "unexpected create() reply {other}"
            )))
        }
    };
    let id = match &id {
        Value::Int(i) => Some(ObjectId(*i as u64)),
        Value::Str(hex) => ObjectId::from_hex(hex),
        _ => None,
    }
    .ok_or_else(|| Error::Protocol("create() answered no object id".into()))?;
    let exposed = method_names(exposed)
        .ok_or_else(|| Error::Protocol("create() answered no method list".into()))?;
    Ok((id, exposed))
}

/// The error a `#TRACEBACK` (or `#UNSERIALIZABLE`) reply stands for. A CPython
/// traceback ends with the exception's line, `Kind: message`; that kind is the
/// error's, the message its message, and the whole text its only arg (as
/// CPython's `RemoteError` carries it). Text that is no traceback is a
/// `RemoteError` with the text as its message.
pub(crate) fn traceback_error(text: String) -> crate::proto::RemoteError {
    use crate::error::TRACEBACK_HEADER;
    use crate::proto::RemoteError;
    let last = text.trim_end().lines().last().unwrap_or("");
    let (kind, message) = last.split_once(": ").unwrap_or((last, ""));
    let is_name = !kind.is_empty()
        && kind.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        });
    // Without the header, only a name that reads as an exception's counts.
    let looks_raised = ["Error", "Exception", "Exit", "Interrupt", "Warning"]
        .iter()
        .any(|end| kind.ends_with(end));
    if is_name && (text.starts_with(TRACEBACK_HEADER) || looks_raised) {
        let mut e = RemoteError::new(kind, message);
        if text.starts_with(TRACEBACK_HEADER) {
            e.args = vec![Value::Str(text)];
        }
        return e;
    }
    RemoteError::new("RemoteError", text)
}

#[cfg(test)]
mod tests {
    use super::traceback_error;

    #[test]
    fn traceback_kinds_are_parsed_from_the_last_line() {
        let t = "Traceback (most recent call last):\n  File \"x\", line 1\nAttributeError: 'Foo' has no attribute 'bar'\n";
        let e = traceback_error(t.into());
        assert_eq!(e.kind, "AttributeError");
        assert_eq!(e.message, "'Foo' has no attribute 'bar'");
        assert_eq!(e.args, vec![crate::Value::Str(t.into())]);
        let e = traceback_error("Traceback (most recent call last):\nqueue.Empty".into());
        assert_eq!((e.kind.as_str(), e.message.as_str()), ("queue.Empty", ""));
        let e = traceback_error("TypeError: f() returned a shared object".into());
        assert_eq!(e.kind, "TypeError");
        for other in [
            "libmgr: rejected request: x",
            "",
            "no kind here",
            "Traceback (most recent call last):\n  odd line: x y",
        ] {
            let e = traceback_error(other.into());
            assert_eq!(e.kind, "RemoteError", "{other:?}");
            assert_eq!(e.message, other);
        }
    }
}
