//! A non-blocking client for a host's own event loop: [`NbClient`].
//!
//! It owns one non-blocking socket and the sans-IO
//! [`ClientSession`](crate::proto::session::ClientSession) that speaks the
//! protocol over it; the host polls its descriptor ([`NbClient::fd`], or
//! register it in a `mio::Poll`) for [`NbClient::interest`] and calls
//! [`NbClient::process`] when it is ready or [`NbClient::next_deadline`] has
//! passed. Connecting, the handshake, calls and creates never block: each call
//! takes a callback that runs later, inside `process`, on the loop's thread —
//! never inside the call that started it. Many calls may be in flight on the
//! connection at once (pipelining); the server answers them in order.
//!
//! Every call started (an `Ok` from [`NbClient::call`], [`NbClient::create`] or
//! [`NbClient::public`]) completes exactly once: with its result, with a remote
//! error, or with an I/O error when the connection fails, closes or the client
//! is dropped (the callbacks of a dropped client run in its `drop`). A call
//! refused at once (`Err`) never calls its callback.
//!
//! A dropped [`NbProxy`] queues its decref without blocking: it is written at
//! the client's next call or `process` ([`NbClient::next_deadline`] is "now"
//! while one waits). A proxy may outlive its client; its drop is then a no-op
//! (the server releases a closed connection's references).
//!
//! Not `Send`: a client, its proxies and its callbacks belong to the loop's
//! thread. The blocking [`Manager`](super::Manager) is unchanged and separate.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::Interest;

use crate::address::Address;
use crate::error::{Error, Result};
use crate::proto::session::{CallId, ClientSession, Completion, Phase, SessionConfig};
use crate::proto::{ObjectId, Reply, Request, Token, Value};

/// The bounds of an [`NbClient`]: the session's (frame, pending calls, unsent
/// bytes, handshake timeout).
pub type NbConfig = SessionConfig;

/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 64 << 10;

/// What a finished call gives its callback.
pub type NbResult = Result<NbReturned>;

/// A completion callback: the client (to start further calls from it) and the
/// call's result.
pub type NbCallback = Box<dyn FnOnce(&mut NbClient, NbResult)>;

/// What a call returned: a value, or a new shared object.
#[derive(Debug)]
pub enum NbReturned {
    /// A plain value (`#RETURN`).
    Value(Value),
    /// A new shared object (`#PROXY`, or what `create` made).
    Proxy(NbProxy),
}

impl NbReturned {
    /// The value, or a protocol error if the call returned a shared object.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when the call returned a shared object.
    pub fn into_value(self) -> Result<Value> {
        match self {
            NbReturned::Value(v) => Ok(v),
            NbReturned::Proxy(p) => Err(Error::Protocol(format!(
                "the call returned a shared {} object",
                p.token.typeid
            ))),
        }
    }

    /// The proxy, or a protocol error if the call returned a plain value.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when the call returned a plain value.
    pub fn into_proxy(self) -> Result<NbProxy> {
        match self {
            NbReturned::Proxy(p) => Ok(p),
            NbReturned::Value(v) => Err(Error::Protocol(format!(
                "expected a shared object, the call returned {v}"
            ))),
        }
    }
}

/// Ids of proxies dropped whose decref is not queued yet.
type DropQueue = Rc<RefCell<Vec<ObjectId>>>;

/// A reference to a shared object, held through an [`NbClient`]. Dropping it
/// queues the release of the reference (never blocks).
pub struct NbProxy {
    token: Token,
    exposed: Rc<[String]>,
    dropped: DropQueue,
    released: bool,
}

impl fmt::Debug for NbProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NbProxy")
            .field("typeid", &self.token.typeid)
            .field("id", &self.token.id)
            .finish()
    }
}

impl NbProxy {
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

    /// Gives the proxy up without releasing its reference (the connection
    /// keeps it until it closes) and returns the token.
    pub fn into_token(mut self) -> Token {
        self.released = true;
        self.token.clone()
    }
}

impl Drop for NbProxy {
    fn drop(&mut self) {
        if !self.released {
            self.dropped.borrow_mut().push(self.token.id);
        }
    }
}

#[derive(Debug)]
enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// `Ok(true)` once a TCP connect has finished, `Ok(false)` while it is in
    /// progress, the error when it failed.
    fn connected(&self) -> io::Result<bool> {
        let Stream::Tcp(s) = self else {
            return Ok(true);
        };
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        match s.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

enum Kind {
    /// A method call or public request: the reply as it is.
    Call,
    /// A create of this typeid: the `(id, exposed)` reply becomes a proxy.
    Create(String),
}

struct Waiting {
    id: CallId,
    kind: Kind,
    done: NbCallback,
}

/// Where the client is registered in a `mio::Poll` (see its `Source` impl):
/// a handle on that poll's registry, to add and remove `WRITABLE` as output
/// waits or drains.
#[derive(Debug)]
struct Registered {
    registry: mio::Registry,
    token: mio::Token,
    /// What it is registered for now.
    interest: Interest,
}

/// A non-blocking connection to a manager server, driven by the host's loop
/// (see the module docs).
///
/// ```no_run
/// # fn main() -> mgr::Result<()> {
/// use mgr::client::{NbClient, NbConfig};
/// let mut c = NbClient::connect(&"127.0.0.1:50000".parse()?, b"secret", NbConfig::default())?;
/// c.create("Queue", vec![], vec![], |c, r| {
///     let q = r.and_then(|r| r.into_proxy()).expect("a queue");
///     c.call(&q, "put", vec![mgr::Value::Int(1)], vec![], |_, r| {
///         println!("put: {r:?}");
///     })
///     .expect("started");
/// })?;
/// while c.pending() > 0 {
///     // poll(c.fd(), c.interest(), c.timeout()) in the host's loop, then:
///     c.process();
/// }
/// # Ok(())
/// # }
/// ```
pub struct NbClient {
    stream: Stream,
    session: ClientSession,
    waiting: VecDeque<Waiting>,
    dropped: DropQueue,
    connecting: bool,
    processing: bool,
    buf: Box<[u8]>,
    registered: Option<Registered>,
}

impl fmt::Debug for NbClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NbClient")
            .field("phase", &self.phase())
            .field("pending", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

impl NbClient {
    /// Starts connecting to `address` with `authkey`, without waiting: the
    /// connect and the handshake proceed in [`process`](Self::process), and
    /// calls may be started at once (they are sent after the handshake; if it
    /// fails, they complete with its error). Fails now only when the socket
    /// cannot be made or a Unix socket refuses at once. A host name is looked
    /// up here (that lookup blocks; pass an IP address to avoid it) and its
    /// first address is used.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] (naming the address) when the socket cannot be made,
    /// the host name does not resolve, or a Unix socket refuses at once. Later
    /// failures (refused TCP connect, wrong key, handshake timeout) arrive as
    /// the completions of the calls started meanwhile.
    pub fn connect(address: &Address, authkey: &[u8], config: NbConfig) -> Result<NbClient> {
        let stream = match address {
            Address::Unix(p) => Stream::Unix(
                mio::net::UnixStream::connect(p).map_err(|e| Error::connect(address, e))?,
            ),
            Address::Tcp(_) | Address::Host { .. } => {
                let a = match address {
                    Address::Tcp(a) => *a,
                    Address::Host { host, port } => {
                        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))
                            .map_err(|e| Error::connect(address, e))?
                            .next()
                            .ok_or_else(|| {
                                Error::connect(
                                    address,
                                    io::Error::new(io::ErrorKind::NotFound, "no address"),
                                )
                            })?
                    }
                    Address::Unix(_) => unreachable!("matched above"),
                };
                let s = mio::net::TcpStream::connect(a).map_err(|e| Error::connect(address, e))?;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
        };
        let connecting = matches!(stream, Stream::Tcp(_));
        Ok(NbClient {
            stream,
            session: ClientSession::new(
                authkey,
                crate::entropy::challenge_bytes(),
                config,
                Instant::now(),
            ),
            waiting: VecDeque::new(),
            dropped: Rc::new(RefCell::new(Vec::new())),
            connecting,
            processing: false,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            registered: None,
        })
    }

    /// Where the connection stands: handshaking, ready, or closed.
    pub fn phase(&self) -> Phase {
        self.session.phase()
    }

    /// Why the connection closed (the error its calls completed with), `None`
    /// while it is open.
    pub fn close_reason(&self) -> Option<Error> {
        self.session.close_reason()
    }

    /// Calls started whose callbacks have not run yet.
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }

    /// The sans-IO session (for its counters: buffered and unsent bytes).
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// The socket's descriptor, to poll. Owned by the client: never close it.
    pub fn fd(&self) -> RawFd {
        self.stream.raw_fd()
    }

    /// Whether the client wants to write (poll for writability too): bytes wait
    /// unsent, or a TCP connect is in progress.
    pub fn wants_write(&self) -> bool {
        self.session.phase() != Phase::Closed && (self.connecting || self.session.wants_write())
    }

    /// The readiness to poll for: always readable, writable while
    /// [`wants_write`](Self::wants_write).
    pub fn interest(&self) -> Interest {
        if self.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// When [`process`](Self::process) must run even if the socket stays
    /// quiet: now while a dropped proxy's decref or a completion waits, else
    /// the handshake's deadline, `None` when no timer runs.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.dropped.borrow().is_empty() || self.session.has_completions() {
            return Some(Instant::now());
        }
        self.session.poll_deadline()
    }

    /// How long the loop may wait before calling [`process`](Self::process)
    /// (the relative form of [`next_deadline`](Self::next_deadline)).
    pub fn timeout(&self) -> Option<Duration> {
        self.next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether a callback of this client is running (inside
    /// [`process`](Self::process) or the client's drop).
    pub fn is_processing(&self) -> bool {
        self.processing
    }

    /// Closes the connection: every call not yet completed completes with an
    /// error (in the next [`process`](Self::process), or in this call when
    /// not inside one).
    pub fn close(&mut self) {
        self.session.close();
        if !self.processing {
            self.run_completions();
        }
    }

    /// Starts a call of `method` on `proxy`'s object; `done` runs with its
    /// result inside a later [`process`](Self::process). `Err` (and `done`
    /// never runs) when the connection is closed, when `proxy` was made by
    /// another client, or, with an error of kind `WouldBlock`, when its
    /// pending-call table or output buffer is full.
    ///
    /// # Errors
    ///
    /// When the call is not started (its callback never runs): `proxy` was
    /// made by another client ([`Error::Protocol`]), the connection has
    /// closed (the close reason), or an error of kind `WouldBlock` when the
    /// pending-call table (`max_pending`) or the unsent output
    /// (`max_output`) is full.
    pub fn call(
        &mut self,
        proxy: &NbProxy,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        done: impl FnOnce(&mut NbClient, NbResult) + 'static,
    ) -> Result<CallId> {
        if !Rc::ptr_eq(&proxy.dropped, &self.dropped) {
            return Err(Error::Protocol(
                "the proxy belongs to another client (its id means nothing on this connection)"
                    .into(),
            ));
        }
        self.call_id(proxy.id(), method, args, kwargs, done)
    }

    /// [`call`](Self::call) by object id (an object the connection holds a
    /// reference to).
    ///
    /// # Errors
    ///
    /// When the call is not started (its callback never runs): the
    /// connection has closed (the close reason), or an error of kind
    /// `WouldBlock` when the pending-call table (`max_pending`) or the unsent
    /// output (`max_output`) is full.
    pub fn call_id(
        &mut self,
        id: ObjectId,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        done: impl FnOnce(&mut NbClient, NbResult) + 'static,
    ) -> Result<CallId> {
        let req = Request {
            target: Some(id),
            method: method.to_owned(),
            args,
            kwargs,
        };
        self.start(&req, Kind::Call, Box::new(done))
    }

    /// Starts creating a shared object of `typeid`; `done` gets an
    /// [`NbReturned::Proxy`] for it (or the constructor's error).
    ///
    /// # Errors
    ///
    /// When the call is not started (its callback never runs): the
    /// connection has closed (the close reason), or an error of kind
    /// `WouldBlock` when the pending-call table (`max_pending`) or the unsent
    /// output (`max_output`) is full.
    pub fn create(
        &mut self,
        typeid: &str,
        mut args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        done: impl FnOnce(&mut NbClient, NbResult) + 'static,
    ) -> Result<CallId> {
        args.insert(0, Value::Str(typeid.to_owned()));
        let req = Request {
            target: None,
            method: "create".into(),
            args,
            kwargs,
        };
        self.start(&req, Kind::Create(typeid.to_owned()), Box::new(done))
    }

    /// Starts a call of one of the server's public methods (`number_of_objects`,
    /// `debug_info`, `dummy` …).
    ///
    /// # Errors
    ///
    /// When the call is not started (its callback never runs): the
    /// connection has closed (the close reason), or an error of kind
    /// `WouldBlock` when the pending-call table (`max_pending`) or the unsent
    /// output (`max_output`) is full.
    pub fn public(
        &mut self,
        method: &str,
        args: Vec<Value>,
        done: impl FnOnce(&mut NbClient, NbResult) + 'static,
    ) -> Result<CallId> {
        self.start(&Request::public(method, args), Kind::Call, Box::new(done))
    }

    fn start(&mut self, req: &Request, kind: Kind, done: NbCallback) -> Result<CallId> {
        self.queue_dropped();
        let id = self.session.start(req)?;
        self.waiting.push_back(Waiting { id, kind, done });
        // Try the write now, before the loop polls again: one syscall, and no
        // wakeup to wait for while the socket has room.
        self.flush();
        self.sync_interest();
        Ok(id)
    }

    /// In a `mio::Poll`: registers `WRITABLE` while output waits unsent (or
    /// the connect runs) and drops it once drained, so the loop is not woken
    /// for room it has no bytes for (on a Unix socket, every request the
    /// server reads would raise a writable edge). One `epoll_ctl` per change;
    /// none while every write goes out at once. If the registry refuses, the
    /// loop could never learn of room to write: the connection closes.
    fn sync_interest(&mut self) {
        let interest = self.interest();
        let Some(reg) = self.registered.as_mut() else {
            return;
        };
        if reg.interest == interest {
            return;
        }
        match self
            .stream
            .source()
            .reregister(&reg.registry, reg.token, interest)
        {
            Ok(()) => reg.interest = interest,
            Err(e) => {
                self.registered = None;
                self.session.handle_error(e);
            }
        }
    }

    fn queue_dropped(&mut self) {
        let ids = std::mem::take(&mut *self.dropped.borrow_mut());
        for id in ids {
            self.session.queue_decref(id);
        }
    }

    /// Does the ready work without blocking: finishes connecting, reads until
    /// the socket would block, fires the handshake deadline, writes what it can
    /// and runs the callbacks of finished calls (which may start more calls).
    /// Returns whether it did anything (bytes moved, callbacks run): like
    /// `sd_bus_process`, a loop may call it until it returns false. Spurious
    /// calls are harmless. A connection that fails completes its calls with the
    /// error here; [`phase`](Self::phase) then says `Closed`.
    pub fn process(&mut self) -> bool {
        if self.processing {
            return false;
        }
        let mut did = false;
        if self.connecting && self.session.phase() != Phase::Closed {
            match self.stream.connected() {
                Ok(true) => {
                    self.connecting = false;
                    did = true;
                }
                Ok(false) => {}
                Err(e) => self.session.handle_error(e),
            }
        }
        if !self.connecting {
            did |= self.read();
        }
        if self.session.poll_deadline().is_some() {
            self.session.handle_timeout(Instant::now());
        }
        self.queue_dropped();
        did |= self.flush();
        did |= self.run_completions();
        // Callbacks may have started calls or dropped proxies.
        self.queue_dropped();
        did |= self.flush();
        self.sync_interest();
        did
    }

    /// Reads until the socket would block or a read comes back short (replies
    /// are bounded by the calls outstanding: one no call asked for closes the
    /// connection).
    fn read(&mut self) -> bool {
        let mut did = false;
        while self.session.phase() != Phase::Closed {
            match self.stream.io().read(&mut self.buf) {
                Ok(0) => {
                    self.session.handle_eof();
                    return true;
                }
                Ok(n) => {
                    did = true;
                    self.session.handle_input(&self.buf[..n]);
                    if n < self.buf.len() {
                        // The socket is drained: bytes arriving later raise a
                        // new readiness event (edge- or level-triggered), so
                        // the read that would say WouldBlock is saved.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.session.handle_error(e);
                    return true;
                }
            }
        }
        did
    }

    /// Writes until the output is drained or the socket would block.
    fn flush(&mut self) -> bool {
        let mut did = false;
        while !self.connecting && self.session.wants_write() {
            match self.stream.io().write(self.session.poll_transmit()) {
                Ok(0) => {
                    self.session.handle_error(io::ErrorKind::WriteZero.into());
                    return true;
                }
                Ok(n) => {
                    did = true;
                    self.session.handle_written(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.session.handle_error(e);
                    return true;
                }
            }
        }
        did
    }

    /// Runs the callbacks of finished calls, in order.
    fn run_completions(&mut self) -> bool {
        let was = std::mem::replace(&mut self.processing, true);
        let mut did = false;
        while let Some(Completion { id, result }) = self.session.poll_completion() {
            let w = self
                .waiting
                .pop_front()
                .expect("every completion has its waiting call");
            debug_assert_eq!(w.id, id, "completions come in the order calls started");
            let r = self.returned(w.kind, result);
            // A panicking callback leaves the client usable: the flag is
            // restored before the panic goes on.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (w.done)(self, r)));
            if let Err(p) = run {
                self.processing = was;
                std::panic::resume_unwind(p);
            }
            did = true;
        }
        self.processing = was;
        did
    }

    fn returned(&self, kind: Kind, result: Result<Reply>) -> NbResult {
        let proxy = |token: Token, exposed: Vec<String>| NbProxy {
            token,
            exposed: exposed.into(),
            dropped: self.dropped.clone(),
            released: false,
        };
        match (kind, result?) {
            (Kind::Call, Reply::Return(v)) => Ok(NbReturned::Value(v)),
            (Kind::Create(typeid), Reply::Return(v)) => {
                let (id, exposed) = super::create_reply(v)?;
                Ok(NbReturned::Proxy(proxy(Token { typeid, id }, exposed)))
            }
            (_, Reply::Proxy { exposed, token }) => Ok(NbReturned::Proxy(proxy(token, exposed))),
            (_, Reply::Error(e)) => Err(Error::Remote(e)),
            (_, Reply::Traceback(t) | Reply::Unserializable(t)) => {
                Err(Error::Remote(super::traceback_error(t)))
            }
        }
    }
}

impl Drop for NbClient {
    /// Closes the connection and runs every callback not yet run, with an
    /// error (calls they start are refused).
    fn drop(&mut self) {
        self.session.close();
        self.run_completions();
    }
}

/// The socket's descriptor, for loops that take an `AsFd` source (tokio's
/// `AsyncFd`, …). Poll it for [`NbClient::interest`].
impl AsRawFd for NbClient {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

impl AsFd for NbClient {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the socket is closed only when the client is dropped; the
        // borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(self.fd()) }
    }
}

impl NbClient {
    /// `register` (or, `again`, `reregister`) the socket with the interest
    /// the client wants now, keeping a handle on the registry for its own
    /// re-registrations.
    fn attach(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        again: bool,
    ) -> io::Result<()> {
        let handle = registry.try_clone()?;
        let interest = self.interest();
        let source = self.stream.source();
        if again {
            source.reregister(registry, token, interest)?;
        } else {
            source.register(registry, token, interest)?;
        }
        self.registered = Some(Registered {
            registry: handle,
            token,
            interest,
        });
        Ok(())
    }
}

/// Registers the client's socket in a host's `mio::Poll` (edge-triggered):
/// register it once and call [`NbClient::process`] on every event, and when
/// [`NbClient::next_deadline`] passes. The client manages its interest
/// itself: whatever `interests` are passed, it asks for `READABLE`, and for
/// `WRITABLE` only while [`NbClient::wants_write`] (re-registering itself on
/// a change, through a handle on the registry it keeps), so the loop gets no
/// wakeup for room to write it has no bytes for. `register` and `reregister`
/// take a handle on the registry (`Registry::try_clone`, one descriptor,
/// released by `deregister` or the client's drop).
impl mio::event::Source for NbClient {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        _interests: Interest,
    ) -> io::Result<()> {
        self.attach(registry, token, false)
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        _interests: Interest,
    ) -> io::Result<()> {
        self.attach(registry, token, true)
    }
    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.registered = None;
        self.stream.source().deregister(registry)
    }
}
