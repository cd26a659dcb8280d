//! A blocking, authenticated, framed connection to a manager server.
//!
//! It speaks the client side of the handshake and then moves native frames.
//! Requests may be queued and written together (pipelining); replies come back in
//! request order.
//!
//! Every request queued gets a sequence number ([`Seq`]) and a slot in a FIFO of
//! expected replies, so a reply always goes to the request it answers, whatever
//! order the caller reads them in: reading the reply of a later request first
//! reads and keeps the earlier ones for their own readers
//! ([`recv_for`](Connection::recv_for)). Replies nobody wants (a proxy's decref on
//! drop, a started call whose ticket was dropped) are skipped when they arrive,
//! so dropping a proxy never waits for a round trip.
//!
//! Timeouts ([`ConnectOptions`]): the connect timeout covers opening the socket
//! and the handshake; the call timeout covers one blocking operation (sending a
//! call and reading its reply, or reading a started call's reply). A timeout
//! marks the connection broken: the reply it gave up on may still arrive, and
//! reading on would hand it to the wrong request, so every later call fails
//! with an error instead ([`is_broken`](Connection::is_broken)).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::error::{Error, Result};
use crate::proto::auth::{ChallengeKind, Digest, Handshake, Role, State, MAX_HANDSHAKE_MESSAGE};
use crate::proto::codec::{native, pickle};
use crate::proto::frame::{self, begin_frame, finish_frame, DEFAULT_MAX_FRAME};
use crate::proto::{Reply, Request, Value};

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    /// Sets the socket's read and write timeouts (`None`: block).
    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
}

/// Timeouts for [`Connection::connect_with`] and
/// [`Manager::connect_with`](super::Manager::connect_with). `None` waits for
/// ever (the default for both).
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
/// use std::time::Duration;
/// let options = mgr::ConnectOptions {
///     connect_timeout: Some(Duration::from_secs(5)),
///     call_timeout: Some(Duration::from_secs(30)),
/// };
/// let m = mgr::Manager::connect_with(&address.parse()?, b"secret", options)?;
/// let q = m.create("Queue", vec![])?;
/// m.set_call_timeout(Some(Duration::from_millis(50)));
/// let e = q.call("get", vec![]).unwrap_err(); // nothing to get: it waits
/// assert!(e.is_timeout());
/// assert!(m.is_broken()); // its reply may still come: no later call reads it
/// # let m = mgr::Manager::connect(&address, b"secret")?;
/// # m.shutdown()?;
/// # server.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// How long opening the socket (each address a host name resolves to in
    /// turn; the name lookup itself is not covered) and the handshake may take
    /// together.
    pub connect_timeout: Option<Duration>,
    /// How long one call may wait: sending it and reading its reply (for
    /// [`Pipeline::run`](super::Pipeline::run), each reply in turn). A call
    /// that times out fails with an error for which
    /// [`Error::is_timeout`] holds and breaks the connection.
    pub call_timeout: Option<Duration>,
}

/// The error a timeout gives.
fn timed_out(what: &str) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} timed out; the connection is closed to later calls"),
    ))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The sequence number of a request queued on a [`Connection`]: its reply is
/// read with [`Connection::recv_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(u64);

impl Seq {
    /// The request `n` places after this one.
    pub fn offset(self, n: usize) -> Seq {
        Seq(self.0 + n as u64)
    }
}

/// What is expected of a reply still to be read off the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Someone will read it.
    Wanted,
    /// Nobody will: skip it when it arrives.
    Discard,
}

/// One authenticated connection.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    input: Vec<u8>,
    start: usize,
    end: usize,
    output: Vec<u8>,
    /// A slot per request queued whose reply has not been read off the socket,
    /// oldest first; the front is request `first`.
    expected: VecDeque<Slot>,
    /// The sequence number of `expected`'s front.
    first: u64,
    /// Replies read off the socket (to reach a later one) whose readers have not
    /// taken them yet, by sequence number. Holds at most one per outstanding
    /// ticket or pipeline entry of the caller's.
    kept: BTreeMap<u64, Result<Reply>>,
    max_frame: u64,
    broken: bool,
    /// Pickle instead of the native codec (talking to a CPython server): the
    /// server's address in CPython's form, which pickled tokens carry.
    pickle: Option<Value>,
    /// The timeout each blocking operation gets.
    call_timeout: Option<Duration>,
    /// When the operation under way must be done by.
    deadline: Option<Instant>,
    /// Whether the socket has timeouts set (cleared when no deadline runs).
    timeouts_set: bool,
}

impl Connection {
    /// Connects and authenticates with `authkey` (the Python ≥ 3.12 handshake,
    /// which also works against 3.11-style legacy servers).
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] if the address cannot be reached, [`Error::Auth`] if
    /// the handshake fails (a wrong key), [`Error::Io`] if the connection fails
    /// during it.
    pub fn connect(address: &Address, authkey: &[u8]) -> Result<Connection> {
        Connection::connect_with(address, authkey, &ConnectOptions::default())
    }

    /// Connects like [`connect`](Self::connect) with timeouts: the connect
    /// timeout covers opening the socket and the handshake; the call timeout
    /// then applies to every blocking operation.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and an error for which
    /// [`Error::is_timeout`] holds if the connect timeout runs out.
    pub fn connect_with(
        address: &Address,
        authkey: &[u8],
        options: &ConnectOptions,
    ) -> Result<Connection> {
        let deadline = options.connect_timeout.map(|t| Instant::now() + t);
        let stream = Connection::open(address, deadline).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out("connecting"),
            _ => Error::connect(address, e),
        })?;
        let mut c = Connection::over(stream);
        c.deadline = deadline;
        let r = c.handshake(authkey);
        c.deadline = None;
        match r {
            Err(e) if e.is_timeout() => return Err(timed_out("the handshake")),
            r => r?,
        }
        c.call_timeout = options.call_timeout;
        c.disarm()?;
        Ok(c)
    }

    /// A connection over `stream`, before the handshake.
    fn over(stream: Stream) -> Connection {
        Connection {
            stream,
            input: vec![0; 4096],
            start: 0,
            end: 0,
            output: Vec::new(),
            expected: VecDeque::new(),
            first: 0,
            kept: BTreeMap::new(),
            max_frame: DEFAULT_MAX_FRAME,
            broken: false,
            pickle: None,
            call_timeout: None,
            deadline: None,
            timeouts_set: false,
        }
    }

    /// Opens the socket (a host name is looked up here, and each address it
    /// resolves to is tried in turn), each TCP attempt by `deadline`.
    fn open(address: &Address, deadline: Option<Instant>) -> io::Result<Stream> {
        let Some(deadline) = deadline else {
            let tcp = match address {
                Address::Unix(p) => return Ok(Stream::Unix(UnixStream::connect(p)?)),
                Address::Tcp(a) => TcpStream::connect(a)?,
                Address::Host { host, port } => TcpStream::connect((host.as_str(), *port))?,
            };
            tcp.set_nodelay(true)?;
            return Ok(Stream::Tcp(tcp));
        };
        let addrs: Vec<std::net::SocketAddr> = match address {
            // A local connect does not wait for a peer.
            Address::Unix(p) => return Ok(Stream::Unix(UnixStream::connect(p)?)),
            Address::Tcp(a) => vec![*a],
            Address::Host { host, port } => {
                std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))?.collect()
            }
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
        for a in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            match TcpStream::connect_timeout(&a, left) {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    return Ok(Stream::Tcp(tcp));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sets the timeout each blocking operation gets from now on (`None`: wait
    /// for ever).
    pub fn set_call_timeout(&mut self, timeout: Option<Duration>) {
        self.call_timeout = timeout;
    }

    /// The timeout each blocking operation gets.
    pub fn call_timeout(&self) -> Option<Duration> {
        self.call_timeout
    }

    /// Runs `f` under one call timeout (unless a deadline already runs).
    fn timed<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let Some(t) = self.call_timeout.filter(|_| self.deadline.is_none()) else {
            return f(self);
        };
        self.deadline = Some(Instant::now() + t);
        let r = f(self);
        self.deadline = None;
        r
    }

    /// Sets the socket's timeouts to what is left before the deadline, before a
    /// read or write (a timeout error when nothing is left).
    fn arm(&mut self) -> Result<()> {
        match self.deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.broken = true;
                    return Err(timed_out("the call"));
                }
                self.stream.set_timeouts(Some(left))?;
                self.timeouts_set = true;
                Ok(())
            }
            None => self.disarm(),
        }
    }

    /// Clears the socket's timeouts if they are set.
    fn disarm(&mut self) -> Result<()> {
        if self.timeouts_set {
            self.stream.set_timeouts(None)?;
            self.timeouts_set = false;
        }
        Ok(())
    }

    /// Connects like [`connect`](Self::connect), then speaks pickle, as CPython's
    /// own clients do, so it can talk to a CPython manager server.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_pickle(address: &Address, authkey: &[u8]) -> Result<Connection> {
        let mut c = Connection::connect(address, authkey)?;
        c.pickle = Some(address.to_python());
        Ok(c)
    }

    /// Whether this connection speaks pickle.
    pub fn is_pickle(&self) -> bool {
        self.pickle.is_some()
    }

    fn handshake(&mut self, authkey: &[u8]) -> Result<()> {
        let mut hs = Handshake::new(
            Role::Client,
            authkey,
            ChallengeKind::Modern(Digest::Sha256),
            crate::entropy::challenge_bytes(),
        );
        loop {
            while let Some(msg) = hs.poll_transmit() {
                frame::write_frame(&msg, &mut self.output);
            }
            self.write_out()?;
            match hs.state() {
                State::Done => return Ok(()),
                State::Failed(e) => return Err(Error::Auth(e)),
                State::InProgress => {}
            }
            let msg = self.read_frame(MAX_HANDSHAKE_MESSAGE as u64)?;
            if let Err(e) = hs.handle_message(&msg) {
                // Send what the state machine still has to say (e.g. #FAILURE#).
                while let Some(msg) = hs.poll_transmit() {
                    frame::write_frame(&msg, &mut self.output);
                }
                let _ = self.write_out();
                return Err(Error::Auth(e));
            }
        }
    }

    /// Sets the largest reply frame accepted (default 64 MiB).
    pub fn set_max_frame(&mut self, max: u64) {
        self.max_frame = max;
    }

    /// Encodes `req` as one frame at the end of `out`, in this connection's
    /// codec, without queueing it (a [`Pipeline`](super::Pipeline) keeps its
    /// frames until it runs).
    pub fn encode(&self, req: &Request, out: &mut Vec<u8>) {
        let at = begin_frame(out);
        match &self.pickle {
            Some(address) => pickle::encode_request(req, &pickle::Origin::new(address), out),
            None => native::encode_request(req, out),
        }
        finish_frame(out, at);
    }

    /// Takes a slot for a request just queued.
    fn expect(&mut self, slot: Slot) -> Seq {
        let seq = Seq(self.first + self.expected.len() as u64);
        self.expected.push_back(slot);
        seq
    }

    /// Queues a request without writing it; its reply is read with
    /// [`recv_for`](Self::recv_for) (or [`recv`](Self::recv) in request order).
    pub fn queue(&mut self, req: &Request) -> Seq {
        let mut out = std::mem::take(&mut self.output);
        self.encode(req, &mut out);
        self.output = out;
        self.expect(Slot::Wanted)
    }

    /// Queues `count` requests already encoded by [`encode`](Self::encode) as
    /// whole frames, and returns the first one's sequence number (the others
    /// follow it).
    pub fn queue_encoded(&mut self, frames: &[u8], count: usize) -> Seq {
        self.output.extend_from_slice(frames);
        let first = Seq(self.first + self.expected.len() as u64);
        self.expected
            .extend(std::iter::repeat_n(Slot::Wanted, count));
        first
    }

    /// Queues a raw payload as one frame (for tests and tools).
    pub fn queue_raw(&mut self, payload: &[u8]) -> Seq {
        frame::write_frame(payload, &mut self.output);
        self.expect(Slot::Wanted)
    }

    /// Queues raw bytes, not framed (for tests of framing itself: not API).
    #[doc(hidden)]
    pub fn queue_bytes(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Writes everything queued.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the write fails or times out (the connection is then
    /// broken), or if it was broken already.
    pub fn write_out(&mut self) -> Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        self.timed(|c| {
            if let Err(e) = c.arm() {
                c.output.clear();
                return Err(e);
            }
            let r = c.stream.io().write_all(&c.output);
            c.output.clear();
            r.map_err(|e| c.fail(e))
        })
    }

    /// Sends a request now and reads its reply (keeping the replies of earlier
    /// requests that arrive first for their readers), within one call timeout.
    ///
    /// # Errors
    ///
    /// As [`write_out`](Self::write_out) and [`recv_for`](Self::recv_for).
    pub fn call(&mut self, req: &Request) -> Result<Reply> {
        self.timed(|c| {
            let seq = c.queue(req);
            if let Err(e) = c.write_out() {
                c.abandon(seq);
                return Err(e);
            }
            c.recv_for(seq)
        })
    }

    /// Sends a request whose reply will be skipped unread.
    ///
    /// # Errors
    ///
    /// As [`write_out`](Self::write_out).
    pub fn send_ignoring_reply(&mut self, req: &Request) -> Result<()> {
        self.queue_ignoring_reply(req);
        self.write_out()
    }

    /// Queues a request whose reply will be skipped unread, without writing it.
    pub fn queue_ignoring_reply(&mut self, req: &Request) {
        let mut out = std::mem::take(&mut self.output);
        self.encode(req, &mut out);
        self.output = out;
        self.expect(Slot::Discard);
    }

    /// Reads the reply of the oldest request whose reply is still wanted (an
    /// error, not a wait, when no reply is expected).
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if no reply is expected; else as
    /// [`recv_for`](Self::recv_for).
    pub fn recv(&mut self) -> Result<Reply> {
        let oldest = match self.kept.keys().next() {
            Some(&seq) => seq,
            None => match self.expected.iter().position(|s| *s == Slot::Wanted) {
                Some(i) => self.first + i as u64,
                None => {
                    return Err(Error::Protocol(
                        "no reply is expected: every request sent has been answered".into(),
                    ))
                }
            },
        };
        self.recv_for(Seq(oldest))
    }

    /// Reads the reply of request `seq`. Replies of earlier requests that are
    /// still wanted are read and kept for their own readers; unwanted ones are
    /// skipped. An error, not a wait, when `seq`'s reply was read already, was
    /// given up ([`abandon`](Self::abandon)) or was never asked for.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if `seq`'s reply is not to be read (see above);
    /// [`Error::Io`] or [`Error::Frame`] if reading fails or times out (the
    /// connection is then broken); [`Error::Codec`] if the reply does not
    /// decode (the connection stays usable).
    pub fn recv_for(&mut self, seq: Seq) -> Result<Reply> {
        self.timed(|c| c.recv_for_now(seq))
    }

    fn recv_for_now(&mut self, seq: Seq) -> Result<Reply> {
        if let Some(reply) = self.kept.remove(&seq.0) {
            return reply;
        }
        let at = seq.0.checked_sub(self.first).map(|i| i as usize);
        if at.and_then(|i| self.expected.get(i)) != Some(&Slot::Wanted) {
            return Err(Error::Protocol(format!(
                "no reply is expected for request #{}: it was read already, given up, or never sent",
                seq.0
            )));
        }
        loop {
            let slot = *self.expected.front().expect("seq's slot is still queued");
            let this = self.first;
            let reply = self.read_reply();
            if matches!(&reply, Err(e) if !matches!(e, Error::Codec(_))) {
                // The connection failed (or the frame was bad): nothing more
                // will be read in step, so every later read fails too.
                self.broken = true;
                return reply;
            }
            self.expected.pop_front();
            self.first += 1;
            match slot {
                Slot::Discard => {}
                Slot::Wanted if this == seq.0 => return reply,
                Slot::Wanted => {
                    self.kept.insert(this, reply);
                }
            }
        }
    }

    /// Gives up the reply of request `seq`: it is dropped if it has been read, and
    /// skipped when it arrives otherwise.
    pub fn abandon(&mut self, seq: Seq) {
        if self.kept.remove(&seq.0).is_some() {
            return;
        }
        if let Some(i) = seq.0.checked_sub(self.first) {
            if let Some(slot) = self.expected.get_mut(i as usize) {
                *slot = Slot::Discard;
            }
        }
    }

    /// Reads and decodes one reply frame.
    fn read_reply(&mut self) -> Result<Reply> {
        if self.broken {
            return Err(not_connected());
        }
        let at = self.next_frame(self.max_frame)?;
        // Decoded where it lies in the input buffer: no copy of the payload.
        let payload = &self.input[at];
        let reply = match self.pickle {
            Some(_) => pickle::decode_reply(payload),
            None => native::decode_reply(payload),
        };
        reply.map_err(Error::Codec)
    }

    /// Reads one frame's payload, undecoded (for the handshake, tests and
    /// tools): the reply of the oldest request whose reply has not been read,
    /// whether it was wanted or not.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if reading fails or times out, [`Error::Frame`] if the
    /// frame is over `max` (the connection is then broken).
    pub fn read_frame(&mut self, max: u64) -> Result<Vec<u8>> {
        let at = self.next_frame(max)?;
        if self.expected.pop_front().is_some() {
            self.first += 1;
        }
        Ok(self.input[at].to_vec())
    }

    /// Reads until one whole frame is buffered, consumes it and returns where its
    /// payload lies in `input` (valid until the next read).
    fn next_frame(&mut self, max: u64) -> Result<std::ops::Range<usize>> {
        loop {
            let buffered = &self.input[self.start..self.end];
            if let Some(h) = frame::decode_header(buffered, max)? {
                if buffered.len() >= h.total_len() {
                    let payload = self.start + h.header_len..self.start + h.total_len();
                    self.start += h.total_len();
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    return Ok(payload);
                }
                self.fill(h.total_len())?;
            } else {
                self.fill(12)?;
            }
        }
    }

    /// Reads until at least `want` bytes are buffered (or more arrive).
    fn fill(&mut self, want: usize) -> Result<()> {
        if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.input.len() < want.max(self.end + 1024) {
            let len = want.max(self.input.len() * 2);
            self.input.resize(len, 0);
        }
        self.arm()?;
        loop {
            match self.stream.io().read(&mut self.input[self.end..]) {
                Ok(0) => {
                    self.broken = true;
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )));
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> Error {
        self.broken = true;
        let timeout = matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        );
        if timeout && self.deadline.is_some() {
            return timed_out("the call");
        }
        Error::Io(e)
    }

    /// Marks the connection broken (e.g. its state is unknown after a panic).
    pub(crate) fn set_broken(&mut self) {
        self.broken = true;
    }

    /// Whether the connection has failed (every later call fails too).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Requests queued whose replies have not been read off the socket yet
    /// (wanted or not).
    pub fn in_flight(&self) -> usize {
        self.expected.len()
    }

    /// Replies read off the socket and kept for readers that have not asked yet.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// Shuts the sending half (the server sees EOF).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket refuses.
    pub fn shutdown_write(&mut self) -> Result<()> {
        match &self.stream {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write)?,
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write)?,
        }
        Ok(())
    }
}

/// The error every operation on a broken connection gives.
fn not_connected() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection failed (or timed out) earlier",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection over one end of a socket pair, and the other end, which
    /// plays the server: no handshake.
    fn pair() -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Connection::over(Stream::Unix(a)), b)
    }

    fn answer(peer: &mut UnixStream, values: &[i64]) {
        let mut out = Vec::new();
        for v in values {
            let at = begin_frame(&mut out);
            native::encode_reply(&Reply::Return(Value::Int(*v)), &mut out);
            finish_frame(&mut out, at);
        }
        peer.write_all(&out).unwrap();
    }

    fn int(r: Result<Reply>) -> i64 {
        match r.unwrap() {
            Reply::Return(Value::Int(i)) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_go_to_their_requests_whatever_the_order_of_reads() {
        let (mut c, mut peer) = pair();
        let req = Request::public("dummy", vec![]);
        let a = c.queue(&req);
        c.send_ignoring_reply(&req).unwrap();
        let b = c.queue(&req);
        let d = c.queue(&req);
        c.write_out().unwrap();
        assert_eq!(c.in_flight(), 4);
        answer(&mut peer, &[1, 2, 3, 4]);
        // Reading the last one first keeps the wanted ones before it.
        assert_eq!(int(c.recv_for(d)), 4);
        assert_eq!((c.in_flight(), c.kept()), (0, 2));
        c.abandon(a);
        assert_eq!(c.kept(), 1, "an abandoned reply is dropped");
        assert!(matches!(c.recv_for(a), Err(Error::Protocol(_))));
        assert_eq!(int(c.recv()), 3, "the oldest wanted one");
        assert!(
            matches!(c.recv_for(b), Err(Error::Protocol(_))),
            "read already"
        );
        // Nothing expected: an error, not a wait.
        assert!(matches!(c.recv(), Err(Error::Protocol(_))));
        // A request abandoned before its reply arrives: the reply is skipped.
        let e = c.queue(&req);
        let f = c.queue(&req);
        c.write_out().unwrap();
        c.abandon(e);
        answer(&mut peer, &[5, 6]);
        assert_eq!(int(c.recv_for(f)), 6);
        assert_eq!((c.in_flight(), c.kept()), (0, 0));
    }
}
