//! A blocking, authenticated, framed connection to a manager server.
//!
//! It speaks the client side of the handshake and then moves native frames.
//! Requests may be queued and written together (pipelining); replies come back in
//! request order. Replies to fire-and-forget requests (a proxy's decref on drop)
//! are counted and skipped when the next reply is read, so dropping a proxy never
//! waits for a round trip.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

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
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// One authenticated connection.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    input: Vec<u8>,
    start: usize,
    end: usize,
    output: Vec<u8>,
    /// Replies still to come for requests whose answers nobody wants.
    discard: usize,
    /// Requests written whose replies have not been read (including discarded ones).
    in_flight: usize,
    max_frame: u64,
    broken: bool,
    /// Pickle instead of the native codec (talking to a CPython server): the
    /// server's address in CPython's form, which pickled tokens carry.
    pickle: Option<Value>,
}

impl Connection {
    /// Connects and authenticates with `authkey` (the Python ≥ 3.12 handshake,
    /// which also works against 3.11-style legacy servers).
    pub fn connect(address: &Address, authkey: &[u8]) -> Result<Connection> {
        let stream = match address {
            Address::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Address::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
        };
        let mut c = Connection {
            stream,
            input: vec![0; 4096],
            start: 0,
            end: 0,
            output: Vec::new(),
            discard: 0,
            in_flight: 0,
            max_frame: DEFAULT_MAX_FRAME,
            broken: false,
            pickle: None,
        };
        c.handshake(authkey)?;
        Ok(c)
    }

    /// Connects like [`connect`](Self::connect), then speaks pickle, as CPython's
    /// own clients do, so it can talk to a CPython manager server.
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

    /// Queues a request without writing it.
    pub fn queue(&mut self, req: &Request) {
        let at = begin_frame(&mut self.output);
        match &self.pickle {
            Some(address) => {
                pickle::encode_request(req, &pickle::Origin::new(address), &mut self.output)
            }
            None => native::encode_request(req, &mut self.output),
        }
        finish_frame(&mut self.output, at);
        self.in_flight += 1;
    }

    /// Queues a raw payload as one frame (for tests and tools).
    pub fn queue_raw(&mut self, payload: &[u8]) {
        frame::write_frame(payload, &mut self.output);
        self.in_flight += 1;
    }

    /// Queues raw bytes, not framed (for tests of framing itself).
    pub fn queue_bytes(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Writes everything queued.
    pub fn write_out(&mut self) -> Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let r = self.stream.io().write_all(&self.output);
        self.output.clear();
        r.map_err(|e| self.fail(e))
    }

    /// Sends a request now and reads its reply.
    pub fn call(&mut self, req: &Request) -> Result<Reply> {
        self.queue(req);
        self.write_out()?;
        self.recv()
    }

    /// Sends a request whose reply will be skipped unread.
    pub fn send_ignoring_reply(&mut self, req: &Request) -> Result<()> {
        self.queue(req);
        self.discard += 1;
        self.write_out()
    }

    /// Reads the next reply that someone is waiting for.
    pub fn recv(&mut self) -> Result<Reply> {
        loop {
            let at = self.next_frame(self.max_frame)?;
            self.in_flight = self.in_flight.saturating_sub(1);
            if self.discard > 0 {
                self.discard -= 1;
                continue;
            }
            // Decoded where it lies in the input buffer: no copy of the payload.
            let payload = &self.input[at];
            let reply = match self.pickle {
                Some(_) => pickle::decode_reply(payload),
                None => native::decode_reply(payload),
            };
            return reply.map_err(Error::Codec);
        }
    }

    /// Reads one frame's payload.
    pub fn read_frame(&mut self, max: u64) -> Result<Vec<u8>> {
        let at = self.next_frame(max)?;
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
        Error::Io(e)
    }

    /// Whether the connection has failed (every later call fails too).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Requests written whose replies have not been read yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Shuts the sending half (the server sees EOF).
    pub fn shutdown_write(&mut self) -> Result<()> {
        match &self.stream {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write)?,
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write)?,
        }
        Ok(())
    }
}
