//! One client connection: its socket, input and output buffers, and phase
//! (handshake, then serving).
//!
//! This module moves bytes: it reads until WouldBlock, slices complete frames off
//! the input and flushes output. It does not decide what a frame means; the
//! [`reactor`](super::reactor) does, with the dispatcher.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::context::{CallId, TimerId};
use super::dispatch::{IdStyle, Session};
use super::stats::Io;
use crate::proto::auth::Handshake;
use crate::proto::codec::Serializer;

/// Smallest read attempted; the input buffer starts at this size.
const READ_CHUNK: usize = 4096;
/// Output written per flush at most: one `send` copies at most this much, even
/// when a client that stopped reading frees megabytes of socket buffer at once.
const FLUSH_MAX: usize = 256 * 1024;
/// Buffers larger than this are released once drained, so idle connections stay small.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Most buffers of each kind [`SpareBuffers`] keeps.
const SPARE_MAX: usize = 64;

/// Buffers of closed connections kept for new ones (at most [`SPARE_MAX`] of
/// each kind, [`READ_CHUNK`] bytes each: 512 KiB at most): a new connection's
/// first read would otherwise zero a fresh input buffer and its first reply
/// allocate. Stock CPython clients open a connection for each `create`,
/// `incref` and `decref`, so this is on their every proxy's path.
#[derive(Debug, Default)]
pub(crate) struct SpareBuffers {
    inputs: Vec<Vec<u8>>,
    outputs: Vec<Vec<u8>>,
}

impl SpareBuffers {
    /// Takes the buffers of a closing connection, if they are the small kind.
    pub(crate) fn keep(&mut self, conn: &mut Conn) {
        if conn.input.len() == READ_CHUNK && self.inputs.len() < SPARE_MAX {
            self.inputs.push(std::mem::take(&mut conn.input));
        }
        let cap = conn.output.capacity();
        if cap > 0 && cap <= READ_CHUNK && self.outputs.len() < SPARE_MAX {
            let mut out = std::mem::take(&mut conn.output);
            out.clear();
            self.outputs.push(out);
        }
    }

    /// Gives a new connection kept buffers, where there are some.
    pub(crate) fn fit(&mut self, conn: &mut Conn) {
        if let Some(input) = self.inputs.pop() {
            conn.input = input;
        }
        if let Some(output) = self.outputs.pop() {
            conn.output = output;
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        let cap = |v: &Vec<Vec<u8>>| v.iter().map(Vec::capacity).sum::<usize>();
        cap(&self.inputs) + cap(&self.outputs)
    }
}

/// A connected socket of either family.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    /// `send(2)` with `MSG_NOSIGNAL`: a peer that has gone away yields `EPIPE`, never
    /// a SIGPIPE that would kill a host which has not ignored it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` is our open socket.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Authenticating; nothing is decoded until this completes.
    Handshake(Box<Handshake>),
    /// Authenticated; the serializer is fixed by the first payload.
    Serving(Option<Serializer>),
}

/// One connection's state.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) phase: Phase,
    pub(crate) session: Session,
    /// Input bytes; `input[start..end]` is unread.
    pub(crate) input: Vec<u8>,
    pub(crate) start: usize,
    end: usize,
    /// Output bytes; `output[sent..]` is still to be written.
    pub(crate) output: Vec<u8>,
    sent: usize,
    /// The deferred call this connection waits on; its later requests wait too.
    pub(crate) waiting: Option<CallId>,
    /// Close once the output is flushed (after a one-shot request, a failed
    /// handshake or a fatal protocol error).
    pub(crate) close_after_flush: bool,
    /// The socket failed (or the peer vanished while a call waited): close now.
    pub(crate) dead: bool,
    /// The peer has finished sending (end of stream, perhaps only its write
    /// half: `shutdown(SHUT_WR)`). The requests it sent before are still
    /// answered; then the connection closes once its output is flushed.
    pub(crate) eof: bool,
    /// Bytes the next frame needs buffered before it can be decoded.
    pub(crate) need: usize,
    /// Bytes of an oversized request frame still to read and drop, and the
    /// error to answer once it is all read (see `Reactor::serve`): the client
    /// gets its reply where its frame ends, and the connection keeps serving.
    pub(crate) skip: Option<(u64, String)>,
    pub(crate) handshake_timer: Option<TimerId>,
    /// The last readiness event reported the peer's end closed (or an error): read
    /// to the end instead of stopping at a short read.
    pub(crate) read_closed: bool,
    /// The socket may hold bytes not read yet: a readiness event said so and
    /// they have not all been read, or the last read stopped at its limit (no
    /// new edge will say so then).
    pub(crate) unread: bool,
    /// WRITABLE is registered: only while output waits on a full socket, so
    /// a peer reading its replies does not wake the server (on a Unix socket
    /// every read would).
    pub(crate) write_interest: bool,
    /// In the reactor's ready queue.
    pub(crate) queued: bool,
    /// Counted among the authenticated connections (`max_connections`).
    pub(crate) counted: bool,
    /// Where the bytes it reads and writes are counted (the server's totals).
    pub(crate) io: std::rc::Rc<Io>,
}

impl Conn {
    pub(crate) fn new(stream: Stream, handshake: Handshake, session: Session) -> Conn {
        Conn {
            stream,
            phase: Phase::Handshake(Box::new(handshake)),
            session,
            input: Vec::new(),
            start: 0,
            end: 0,
            output: Vec::new(),
            sent: 0,
            waiting: None,
            close_after_flush: false,
            dead: false,
            eof: false,
            need: 0,
            skip: None,
            handshake_timer: None,
            read_closed: false,
            unread: false,
            write_interest: false,
            queued: false,
            counted: false,
            io: Default::default(),
        }
    }

    /// The connection's serializer, fixed by the first payload byte it sends
    /// after the handshake. A pickle connection is served CPython's way: hex ids,
    /// global references, one public request unless `accept_connection` makes
    /// it persistent.
    pub(crate) fn serializer_for(&mut self, first_byte: u8) -> Serializer {
        match &mut self.phase {
            Phase::Serving(Some(ser)) => *ser,
            Phase::Serving(ser @ None) => {
                let detected = Serializer::detect(first_byte);
                *ser = Some(detected);
                if detected == Serializer::Pickle {
                    self.session = Session::new(self.session.id, IdStyle::Hex, false);
                }
                detected
            }
            Phase::Handshake(_) => unreachable!("no payload is decoded before the handshake"),
        }
    }

    /// Unread input.
    pub(crate) fn input(&self) -> &[u8] {
        &self.input[self.start..self.end]
    }

    /// Marks `n` input bytes as consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.input.len() > KEEP_CAPACITY {
                self.input = Vec::new();
            }
        }
    }

    /// Bytes of output not yet written.
    pub(crate) fn unsent(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Memory held by this connection's buffers (input and output capacity).
    pub(crate) fn buffered(&self) -> usize {
        self.input.capacity() + self.output.capacity()
    }

    /// Makes room for at least `READ_CHUNK` more bytes, and toward the frame in
    /// progress — but never more than the bytes that have arrived (or
    /// `KEEP_CAPACITY`): a header announcing a large frame costs memory only
    /// as its payload comes in, doubling at most, so stalled peers that
    /// announce `max_frame` cannot make the server allocate it.
    fn reserve(&mut self) {
        let have = self.end - self.start;
        let missing = self.need.saturating_sub(have);
        let want = READ_CHUNK.max(missing.min(have.max(KEEP_CAPACITY)));
        if self.input.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.input.len() - self.end < want {
            let new_len = (self.end + want).max(self.input.len() * 2).max(READ_CHUNK);
            self.input.resize(new_len, 0);
        }
    }

    /// Reads until the socket would block or `limit` bytes are buffered. Returns
    /// whether reading stopped at the limit (so more may be waiting in the socket).
    /// End of stream sets `eof`; an error marks the connection dead.
    ///
    /// A read that does not fill the buffer has drained the socket: stream sockets
    /// hand over everything queued, and any later arrival raises a new edge. So it
    /// stops there rather than paying another `recv` for `EAGAIN` (one syscall of
    /// the four a request used to cost), unless the peer has closed its end.
    pub(crate) fn read(&mut self, limit: usize) -> bool {
        self.unread = !self.eof && self.read_socket(limit);
        self.unread
    }

    fn read_socket(&mut self, limit: usize) -> bool {
        loop {
            if self.end - self.start >= limit {
                return true;
            }
            self.reserve();
            let room = self.input.len() - self.end;
            match self.stream.read(&mut self.input[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return false;
                }
                Ok(n) if n < room && !self.read_closed => {
                    self.end += n;
                    self.io.add_in(n);
                    return false;
                }
                Ok(n) => {
                    self.end += n;
                    self.io.add_in(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = true;
                    return false;
                }
            }
        }
    }

    /// Writes as much output as the socket takes, up to [`FLUSH_MAX`] bytes,
    /// and says where it stopped. A write error marks the connection dead.
    pub(crate) fn flush(&mut self) -> Flushed {
        let stop = self.sent.saturating_add(FLUSH_MAX).min(self.output.len());
        let mut blocked = false;
        while self.sent < stop {
            match self.stream.write(&self.output[self.sent..stop]) {
                Ok(0) => {
                    self.dead = true;
                    return Flushed::Done;
                }
                Ok(n) => {
                    self.sent += n;
                    self.io.add_out(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = true;
                    return Flushed::Done;
                }
            }
        }
        if self.sent < self.output.len() {
            // A peer that reads, but never all, would otherwise keep every byte
            // it ever read in the buffer: drop the written prefix once it is as
            // large as what is left (a copy of at most that much, amortized).
            if self.sent >= KEEP_CAPACITY && 2 * self.sent >= self.output.len() {
                self.output.drain(..self.sent);
                self.sent = 0;
            }
            return if blocked {
                Flushed::Blocked
            } else {
                Flushed::Capped
            };
        }
        self.output.clear();
        self.sent = 0;
        if self.output.capacity() > KEEP_CAPACITY {
            self.output = Vec::new();
        }
        Flushed::Done
    }
}

/// Where a [`Conn::flush`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything is written (or the connection died).
    Done,
    /// At [`FLUSH_MAX`], with output left and the socket perhaps still
    /// writable: no new edge will say so, so the caller must come back.
    Capped,
    /// At a full socket, with output left: only a writable edge says when to
    /// go on.
    Blocked,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::auth::{ChallengeKind, Digest, Role};
    use crate::server::context::ConnId;

    /// A connection on one end of a socket pair whose send buffer takes more
    /// than [`FLUSH_MAX`]; the other end is returned for reading.
    fn pair() -> (Conn, std::os::unix::net::UnixStream) {
        pair_with(4 << 20)
    }

    /// A connection whose socket's send buffer is `size` bytes.
    fn pair_with(size: libc::c_int) -> (Conn, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        // SAFETY: setting an int socket option on our own socket.
        unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let hs = Handshake::new(
            Role::Server,
            b"",
            ChallengeKind::Modern(Digest::Sha256),
            [0; 40],
        );
        let session = Session::new(ConnId::new(0, 1), IdStyle::Int, true);
        let conn = Conn::new(Stream::Unix(UnixStream::from_std(a)), hs, session);
        (conn, b)
    }

    /// Closed connections' small buffers are kept, at most [`SPARE_MAX`] of
    /// each kind; large ones are not; a new connection gets a kept input buffer
    /// (no zeroing) and an empty output one.
    #[test]
    fn spare_buffers_are_bounded_and_reused() {
        let mut spare = SpareBuffers::default();
        for _ in 0..SPARE_MAX + 10 {
            let (mut conn, _peer) = pair();
            conn.input = vec![1; READ_CHUNK];
            conn.output = Vec::with_capacity(READ_CHUNK);
            conn.output.extend_from_slice(b"reply");
            spare.keep(&mut conn);
        }
        assert_eq!(spare.held(), 2 * SPARE_MAX * READ_CHUNK);
        let (mut big, _peer) = pair();
        big.input = vec![0; 2 * READ_CHUNK];
        big.output = Vec::with_capacity(8 * READ_CHUNK);
        let mut fresh = SpareBuffers::default();
        fresh.keep(&mut big);
        assert_eq!(fresh.held(), 0);
        let (mut conn, mut peer) = pair();
        spare.fit(&mut conn);
        assert_eq!(conn.input.len(), READ_CHUNK);
        assert!(conn.output.is_empty() && conn.output.capacity() >= READ_CHUNK);
        // The kept bytes are never read as input: only what arrives is.
        peer.write_all(b"abc").unwrap();
        conn.read(READ_CHUNK);
        assert_eq!(conn.input(), b"abc");
    }

    #[test]
    fn one_flush_writes_at_most_flush_max() {
        let (mut conn, mut peer) = pair();
        conn.output = vec![7; 3 * FLUSH_MAX + 10];
        let mut got = 0;
        let mut calls = 0;
        let mut capped_calls = 0;
        let mut buf = vec![0u8; 1 << 20];
        while conn.unsent() > 0 {
            let before = conn.unsent();
            let flushed = conn.flush();
            let capped = flushed == Flushed::Capped;
            calls += 1;
            let kept = conn.output.len() - conn.unsent();
            assert!(
                kept < KEEP_CAPACITY || 2 * kept < conn.output.len(),
                "{kept} written bytes kept of {}",
                conn.output.len()
            );
            let wrote = before - conn.unsent();
            assert!(wrote <= FLUSH_MAX, "one flush wrote {wrote}");
            assert_eq!(capped, conn.unsent() > 0 && wrote == FLUSH_MAX);
            // Stopped at the bound or at a full socket (never both: one
            // `Flushed`); a flush that sent everything is neither.
            assert!(conn.unsent() > 0 || flushed == Flushed::Done);
            capped_calls += usize::from(capped);
            while got < 3 * FLUSH_MAX + 10 - conn.unsent() {
                got += peer.read(&mut buf).unwrap();
            }
        }
        assert_eq!(got, 3 * FLUSH_MAX + 10);
        assert!(calls >= 4, "{calls} flushes");
        assert!(
            capped_calls >= 1,
            "the socket took more than one flush's worth"
        );
        assert!(!conn.dead);
    }

    #[test]
    fn a_peer_that_never_reads_everything_does_not_grow_the_output() {
        // A backlog larger than the socket takes, then the peer reads what
        // each new reply adds: every flush is partial and the output never
        // drains, yet the buffer holds about what is unsent, not all that was
        // ever sent.
        let (mut conn, mut peer) = pair_with(16 * 1024);
        conn.output = vec![1; 256 * 1024];
        conn.flush();
        let mut buf = vec![0u8; 8 * 1024];
        for _ in 0..200 {
            conn.output.extend_from_slice(&[1; 8 * 1024]);
            peer.read_exact(&mut buf).unwrap();
            let flushed = conn.flush();
            assert!(conn.unsent() > 0, "the output never drains");
            assert_eq!(
                flushed,
                Flushed::Blocked,
                "a full socket is what stopped it"
            );
            assert!(
                conn.output.len() <= 2 * conn.unsent().max(KEEP_CAPACITY),
                "{} bytes buffered for {} unsent",
                conn.output.len(),
                conn.unsent()
            );
        }
    }
}
