//! The client side of one native connection as a sans-IO state machine, after
//! quinn-proto's `Connection`: bytes in, bytes out, completions polled.
//!
//! A [`ClientSession`] owns the handshake, the requests waiting to be written,
//! the FIFO of replies expected (one slot per request: a call's, or a skipped
//! one for a decref), and the finished calls not yet taken. It never touches a
//! socket or a clock: the driver (`client::NbClient`, or a test) does the I/O.
//!
//! Order of calls, every time the driver runs:
//! 1. [`handle_input`](ClientSession::handle_input) with what the socket gave
//!    (and [`handle_eof`](ClientSession::handle_eof) /
//!    [`handle_error`](ClientSession::handle_error) when it closed or failed);
//! 2. [`handle_timeout`](ClientSession::handle_timeout) with the current instant;
//! 3. write [`poll_transmit`](ClientSession::poll_transmit)'s bytes and report
//!    how many went with [`handle_written`](ClientSession::handle_written);
//! 4. take [`poll_completion`](ClientSession::poll_completion) until `None`;
//! 5. wait until readable (writable too while
//!    [`wants_write`](ClientSession::wants_write)) or
//!    [`poll_deadline`](ClientSession::poll_deadline).
//!
//! [`start`](ClientSession::start) and
//! [`queue_decref`](ClientSession::queue_decref) may be called at any time, even
//! before the handshake is done (the requests wait for it). Every call started
//! completes exactly once: with its reply, or with an error when the connection
//! fails or closes.
//!
//! Bounds (a misbehaving server cannot make the session allocate without
//! bound): a reply frame over [`SessionConfig::max_frame`] (a handshake message
//! over [`MAX_HANDSHAKE_MESSAGE`]) is refused from its header, before its
//! payload is buffered, and closes the connection; a reply no request asked for
//! closes it too, so completions never outnumber the calls started; at most
//! [`SessionConfig::max_pending`] calls are outstanding and at most
//! [`SessionConfig::max_output`] bytes wait unsent (a new call beyond either is
//! refused with an error of kind `WouldBlock`).

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::proto::auth::{
    ChallengeKind, Digest, Handshake, Role, State, MAX_HANDSHAKE_MESSAGE, MODERN_CHALLENGE_LEN,
};
use crate::proto::codec::native;
use crate::proto::frame::{self, begin_frame, finish_frame, DEFAULT_MAX_FRAME};
use crate::proto::{ObjectId, Reply, Request, Value};

/// The bounds of one [`ClientSession`]. `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Largest reply payload accepted, in bytes (default 64 MiB, as the blocking
    /// client). A larger one closes the connection before it is buffered.
    pub max_frame: u64,
    /// Calls outstanding at once (default 4096); a call beyond is refused.
    pub max_pending: usize,
    /// Bytes of requests waiting to be written (default 16 MiB); a call that
    /// finds more is refused until the socket takes some.
    pub max_output: usize,
    /// How long the handshake may take from the session's start (default 10 s;
    /// `None`: no limit).
    pub handshake_timeout: Option<Duration>,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            max_frame: DEFAULT_MAX_FRAME,
            max_pending: 4096,
            max_output: 16 << 20,
            handshake_timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// The number of a call started on a [`ClientSession`]; its completion carries
/// it. Numbers increase in the order calls are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// A finished call: its number and its reply (or why it has none).
#[derive(Debug)]
pub struct Completion {
    /// The call.
    pub id: CallId,
    /// The server's reply; an error when the reply could not be decoded (the
    /// connection stays usable) or the connection failed or closed first.
    pub result: Result<Reply, Error>,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Authenticating; calls started now wait for it.
    Handshaking,
    /// Authenticated: calls go out as they are started.
    Ready,
    /// Failed or closed: every call has completed, new ones are refused.
    Closed,
}

/// Why the session closed, kept to fail the calls that follow.
#[derive(Debug, Clone)]
struct Closed {
    kind: io::ErrorKind,
    message: String,
    auth: Option<crate::proto::auth::AuthError>,
}

impl Closed {
    fn error(&self) -> Error {
        match &self.auth {
            Some(a) => Error::Auth(a.clone()),
            None => Error::Io(io::Error::new(self.kind, self.message.clone())),
        }
    }
}

/// The client side of one connection (see the module docs for the order of
/// calls).
#[derive(Debug)]
pub struct ClientSession {
    config: SessionConfig,
    handshake: Option<Handshake>,
    /// Received bytes not yet consumed: `input[start..]`.
    input: Vec<u8>,
    start: usize,
    /// Bytes to write: `output[sent..]`.
    output: Vec<u8>,
    sent: usize,
    /// Requests started before the handshake finished, written after it.
    early: Vec<u8>,
    /// One slot per request written or waiting, oldest first: the call it
    /// answers, or `None` for a reply to skip (a decref).
    expected: VecDeque<Option<CallId>>,
    /// Calls outstanding (the `Some` slots of `expected`).
    pending: usize,
    next_id: u64,
    completions: VecDeque<Completion>,
    closed: Option<Closed>,
    deadline: Option<Instant>,
}

impl ClientSession {
    /// A session that authenticates with `authkey`, started at `now`;
    /// `random` makes its own challenge (40 bytes from a good source).
    pub fn new(
        authkey: &[u8],
        random: [u8; MODERN_CHALLENGE_LEN],
        config: SessionConfig,
        now: Instant,
    ) -> ClientSession {
        ClientSession {
            config,
            handshake: Some(Handshake::new(
                Role::Client,
                authkey,
                ChallengeKind::Modern(Digest::Sha256),
                random,
            )),
            input: Vec::new(),
            start: 0,
            output: Vec::new(),
            sent: 0,
            early: Vec::new(),
            expected: VecDeque::new(),
            pending: 0,
            next_id: 0,
            completions: VecDeque::new(),
            closed: None,
            deadline: config.handshake_timeout.map(|t| now + t),
        }
    }

    /// Where the session stands.
    pub fn phase(&self) -> Phase {
        if self.closed.is_some() {
            Phase::Closed
        } else if self.handshake.is_some() {
            Phase::Handshaking
        } else {
            Phase::Ready
        }
    }

    /// The session's bounds.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Calls outstanding (started, not yet completed).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Bytes received and buffered, not yet consumed (at most one partial
    /// frame's worth once [`handle_input`](Self::handle_input) returns).
    pub fn buffered(&self) -> usize {
        self.input.len() - self.start
    }

    /// Bytes of requests not yet written (including those waiting for the
    /// handshake).
    pub fn unsent(&self) -> usize {
        self.output.len() - self.sent + self.early.len()
    }

    /// Starts a call of `req` and returns its number; its completion comes from
    /// [`poll_completion`](Self::poll_completion). Refused (nothing queued) on a
    /// closed session, or with an error of kind `WouldBlock` when
    /// [`SessionConfig::max_pending`] calls are outstanding or
    /// [`SessionConfig::max_output`] bytes wait unsent.
    ///
    /// # Errors
    ///
    /// The close reason on a closed session; an error of kind `WouldBlock`
    /// when the pending table or the output is full (nothing is queued).
    pub fn start(&mut self, req: &Request) -> Result<CallId, Error> {
        if let Some(c) = &self.closed {
            return Err(c.error());
        }
        if self.pending >= self.config.max_pending {
            return Err(would_block(format!(
                "{} calls are outstanding (the limit): take completions first",
                self.pending
            )));
        }
        if self.unsent() >= self.config.max_output {
            return Err(would_block(format!(
                "{} bytes of requests wait unsent (the limit is {}): let the socket take them first",
                self.unsent(),
                self.config.max_output
            )));
        }
        let id = CallId(self.next_id);
        self.next_id += 1;
        self.encode(req);
        self.expected.push_back(Some(id));
        self.pending += 1;
        Ok(id)
    }

    /// Queues the release of a reference to object `id` (a proxy dropped); its
    /// reply is skipped. Never refused: a no-op once closed (the server
    /// releases a closed connection's references itself).
    pub fn queue_decref(&mut self, id: ObjectId) {
        if self.closed.is_some() {
            return;
        }
        self.encode(&Request::public("decref", vec![Value::Int(id.0 as i64)]));
        self.expected.push_back(None);
    }

    fn encode(&mut self, req: &Request) {
        let out = if self.handshake.is_some() {
            &mut self.early
        } else {
            &mut self.output
        };
        let at = begin_frame(out);
        native::encode_request(req, out);
        finish_frame(out, at);
    }

    /// Feeds bytes read from the socket: finishes the handshake, decodes
    /// replies, queues completions. A frame over the limit, a reply nobody
    /// asked for or a failed handshake closes the session (every outstanding
    /// call completes with the error).
    pub fn handle_input(&mut self, data: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        self.input.extend_from_slice(data);
        while self.closed.is_none() {
            let max = if self.handshake.is_some() {
                MAX_HANDSHAKE_MESSAGE as u64
            } else {
                self.config.max_frame
            };
            let h = match frame::decode_header(&self.input[self.start..], max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    self.close_with(Err(Error::Frame(e)));
                    break;
                }
            };
            if self.input.len() - self.start < h.total_len() {
                // The header was checked: the rest may be waited for.
                break;
            }
            let at = self.start + h.header_len..self.start + h.total_len();
            self.start += h.total_len();
            let payload = std::mem::take(&mut self.input);
            self.handle_frame(&payload[at]);
            if self.closed.is_none() {
                self.input = payload;
            }
        }
        if self.closed.is_some() {
            return;
        }
        // Keep only the unconsumed tail, at the front.
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
        } else if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        if self.input.capacity() > 64 << 10 && self.input.len() < self.input.capacity() / 4 {
            self.input.shrink_to(self.input.len().max(4096));
        }
    }

    fn handle_frame(&mut self, payload: &[u8]) {
        if let Some(hs) = self.handshake.as_mut() {
            let r = hs.handle_message(payload);
            while let Some(msg) = hs.poll_transmit() {
                frame::write_frame(&msg, &mut self.output);
            }
            match (r, hs.state()) {
                (Err(e), _) | (_, State::Failed(e)) => {
                    self.close_with(Err(Error::Auth(e)));
                }
                (Ok(()), State::Done) => {
                    self.handshake = None;
                    self.deadline = None;
                    let early = std::mem::take(&mut self.early);
                    self.output.extend_from_slice(&early);
                }
                (Ok(()), State::InProgress) => {}
            }
            return;
        }
        let Some(slot) = self.expected.pop_front() else {
            self.close_with(Err(Error::Protocol(
                "the server sent a reply no request asked for".into(),
            )));
            return;
        };
        if let Some(id) = slot {
            self.pending -= 1;
            let result = native::decode_reply(payload).map_err(Error::Codec);
            self.completions.push_back(Completion { id, result });
        }
    }

    /// The socket reached end of file: every outstanding call completes with
    /// an error.
    pub fn handle_eof(&mut self) {
        self.close_with(Err(Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ))));
    }

    /// The socket failed: every outstanding call completes with `e`'s kind
    /// and message.
    pub fn handle_error(&mut self, e: io::Error) {
        self.close_with(Err(Error::Io(e)));
    }

    /// Closes the session from this side: every outstanding call completes
    /// with an error of kind `NotConnected`.
    pub fn close(&mut self) {
        self.close_with(Err(Error::Io(io::Error::new(
            io::ErrorKind::NotConnected,
            "the client was closed",
        ))));
    }

    /// Fires the handshake deadline if it has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) && self.closed.is_none() {
            self.close_with(Err(Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake timed out",
            ))));
        }
    }

    fn close_with(&mut self, why: Result<(), Error>) {
        if self.closed.is_some() {
            return;
        }
        if !matches!(why, Err(Error::Auth(_))) {
            // Nothing more goes out (a failed handshake's #FAILURE# may).
            self.output = Vec::new();
            self.sent = 0;
        }
        let closed = match why {
            Err(Error::Auth(a)) => Closed {
                kind: io::ErrorKind::PermissionDenied,
                message: a.to_string(),
                auth: Some(a),
            },
            Err(Error::Io(e)) => Closed {
                kind: e.kind(),
                message: e.to_string(),
                auth: None,
            },
            Err(other) => Closed {
                kind: io::ErrorKind::InvalidData,
                message: other.to_string(),
                auth: None,
            },
            Ok(()) => Closed {
                kind: io::ErrorKind::NotConnected,
                message: "closed".into(),
                auth: None,
            },
        };
        for id in std::mem::take(&mut self.expected).into_iter().flatten() {
            self.completions.push_back(Completion {
                id,
                result: Err(closed.error()),
            });
        }
        self.pending = 0;
        self.handshake = None;
        self.deadline = None;
        self.early = Vec::new();
        self.input = Vec::new();
        self.start = 0;
        self.closed = Some(closed);
    }

    /// Bytes to write now (empty when there are none).
    #[must_use]
    pub fn poll_transmit(&self) -> &[u8] {
        &self.output[self.sent..]
    }

    /// `n` bytes of [`poll_transmit`](Self::poll_transmit) were written.
    pub fn handle_written(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.output.len());
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
        }
    }

    /// Whether bytes wait to be written (ask the loop for writability).
    pub fn wants_write(&self) -> bool {
        self.sent < self.output.len()
    }

    /// The next finished call, in the order the calls were started.
    #[must_use]
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// Whether completions wait to be taken.
    pub fn has_completions(&self) -> bool {
        !self.completions.is_empty()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run (the
    /// handshake's deadline), `None` when no timer runs.
    #[must_use]
    pub fn poll_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The error new calls get once closed.
    pub fn close_reason(&self) -> Option<Error> {
        self.closed.as_ref().map(Closed::error)
    }
}

fn would_block(message: String) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::WouldBlock, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::auth::AuthError;

    const KEY: &[u8] = b"key";

    /// A client session and a server handshake wired in memory: the server's
    /// answers are frames built here. Returns the session, ready.
    fn ready(config: SessionConfig) -> ClientSession {
        let now = Instant::now();
        let mut c = ClientSession::new(KEY, [7; 40], config, now);
        let mut s = Handshake::new(
            Role::Server,
            KEY,
            ChallengeKind::Modern(Digest::Sha256),
            [9; 40],
        );
        // Server → client → server … until both are done.
        for _ in 0..4 {
            let mut to_client = Vec::new();
            while let Some(m) = s.poll_transmit() {
                frame::write_frame(&m, &mut to_client);
            }
            c.handle_input(&to_client);
            let out = c.poll_transmit().to_vec();
            c.handle_written(out.len());
            let mut rest = &out[..];
            while let Some(h) = frame::decode_header(rest, 1 << 20).unwrap() {
                if s.state() == State::InProgress {
                    s.handle_message(&rest[h.header_len..h.total_len()])
                        .unwrap();
                }
                rest = &rest[h.total_len()..];
            }
        }
        assert_eq!(c.phase(), Phase::Ready);
        assert_eq!(s.state(), State::Done);
        c
    }

    fn reply(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let at = begin_frame(&mut out);
        native::encode_reply(&Reply::Return(Value::Int(v)), &mut out);
        finish_frame(&mut out, at);
        out
    }

    fn int(c: Completion) -> (u64, i64) {
        match c.result {
            Ok(Reply::Return(Value::Int(i))) => (c.id.0, i),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn calls_started_early_go_out_after_the_handshake_and_complete_in_order() {
        let mut c = ClientSession::new(KEY, [1; 40], SessionConfig::default(), Instant::now());
        let a = c.start(&Request::public("dummy", vec![])).unwrap();
        assert!(c.poll_transmit().is_empty(), "nothing before the challenge");
        assert!(c.unsent() > 0);
        drop(c);
        let mut c = ready(SessionConfig::default());
        let a2 = c.start(&Request::public("dummy", vec![])).unwrap();
        c.queue_decref(ObjectId(5));
        let b = c.start(&Request::public("dummy", vec![])).unwrap();
        assert_eq!((a.0, a2.0, b.0), (0, 0, 1));
        assert_eq!(c.pending(), 2);
        // Three replies, fed a byte at a time: the decref's is skipped.
        let mut all = reply(10);
        all.extend(reply(11));
        all.extend(reply(12));
        for byte in all {
            c.handle_input(&[byte]);
        }
        assert_eq!(int(c.poll_completion().unwrap()), (0, 10));
        assert_eq!(int(c.poll_completion().unwrap()), (1, 12));
        assert!(c.poll_completion().is_none());
        assert_eq!((c.pending(), c.buffered()), (0, 0));
    }

    #[test]
    fn a_closed_connection_completes_every_call_once_and_refuses_new_ones() {
        let mut c = ready(SessionConfig::default());
        let ids: Vec<CallId> = (0..3)
            .map(|_| c.start(&Request::public("dummy", vec![])).unwrap())
            .collect();
        c.handle_input(&reply(1));
        c.handle_eof();
        c.handle_eof();
        let done: Vec<Completion> = std::iter::from_fn(|| c.poll_completion()).collect();
        assert_eq!(done.len(), 3);
        assert_eq!(done.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
        assert!(done[0].result.is_ok());
        assert!(done[1..].iter().all(
            |d| matches!(&d.result, Err(Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof)
        ));
        assert_eq!(c.phase(), Phase::Closed);
        assert!(c.start(&Request::public("dummy", vec![])).is_err());
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn an_oversized_or_unasked_reply_closes_before_anything_is_buffered() {
        let config = SessionConfig {
            max_frame: 1024,
            ..SessionConfig::default()
        };
        let mut c = ready(config);
        let id = c.start(&Request::public("dummy", vec![])).unwrap();
        // A header announcing 1 GiB: refused from the header alone.
        c.handle_input(&(1i32 << 30).to_be_bytes());
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!(c.buffered(), 0);
        let done = c.poll_completion().unwrap();
        assert_eq!(done.id, id);
        assert!(done.result.is_err());
        // A reply with no request: a protocol error, not a completion.
        let mut c = ready(config);
        c.handle_input(&reply(1));
        assert_eq!(c.phase(), Phase::Closed);
        assert!(c.poll_completion().is_none());
    }

    #[test]
    fn a_bad_reply_fails_its_call_only() {
        let mut c = ready(SessionConfig::default());
        c.start(&Request::public("dummy", vec![])).unwrap();
        c.start(&Request::public("dummy", vec![])).unwrap();
        let mut junk = Vec::new();
        frame::write_frame(&[native::NATIVE_VERSION, 99, 1, 2], &mut junk);
        c.handle_input(&junk);
        c.handle_input(&reply(2));
        assert!(matches!(
            c.poll_completion().unwrap().result,
            Err(Error::Codec(_))
        ));
        assert_eq!(int(c.poll_completion().unwrap()), (1, 2));
        assert_eq!(c.phase(), Phase::Ready);
    }

    #[test]
    fn the_pending_table_and_output_are_bounded() {
        let mut c = ready(SessionConfig {
            max_pending: 2,
            max_output: 1 << 20,
            ..SessionConfig::default()
        });
        c.start(&Request::public("dummy", vec![])).unwrap();
        c.start(&Request::public("dummy", vec![])).unwrap();
        let e = c.start(&Request::public("dummy", vec![])).unwrap_err();
        assert!(
            matches!(&e, Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock),
            "{e}"
        );
        c.handle_input(&reply(1));
        let _ = c.poll_completion();
        c.start(&Request::public("dummy", vec![])).unwrap();
        let mut c = ready(SessionConfig {
            max_output: 100,
            ..SessionConfig::default()
        });
        let big = Request::public("dummy", vec![Value::Bytes(vec![0; 200])]);
        c.start(&big).unwrap();
        assert!(c.start(&big).is_err(), "the output is over its bound");
        let n = c.poll_transmit().len();
        c.handle_written(n);
        c.start(&big).unwrap();
    }

    #[test]
    fn a_wrong_key_or_a_slow_handshake_fails_the_calls() {
        let now = Instant::now();
        let mut c = ClientSession::new(KEY, [1; 40], SessionConfig::default(), now);
        let id = c.start(&Request::public("dummy", vec![])).unwrap();
        let mut s = Handshake::new(
            Role::Server,
            b"other",
            ChallengeKind::Modern(Digest::Sha256),
            [2; 40],
        );
        let mut msg = Vec::new();
        frame::write_frame(&s.poll_transmit().unwrap(), &mut msg);
        c.handle_input(&msg);
        // The server checks the answer and says #FAILURE#.
        let out = c.poll_transmit().to_vec();
        let h = frame::decode_header(&out, 1024).unwrap().unwrap();
        assert!(s.handle_message(&out[h.header_len..h.total_len()]).is_err());
        let mut msg = Vec::new();
        frame::write_frame(&s.poll_transmit().unwrap(), &mut msg);
        c.handle_input(&msg);
        let done = c.poll_completion().unwrap();
        assert_eq!(done.id, id);
        assert!(matches!(done.result, Err(Error::Auth(AuthError::Rejected))));
        // Nothing from the server at all: the deadline fails the session.
        let mut c = ClientSession::new(KEY, [1; 40], SessionConfig::default(), now);
        c.start(&Request::public("dummy", vec![])).unwrap();
        let d = c.poll_deadline().unwrap();
        c.handle_timeout(d - Duration::from_millis(1));
        assert_eq!(c.phase(), Phase::Handshaking);
        c.handle_timeout(d);
        assert_eq!(c.phase(), Phase::Closed);
        assert!(c
            .poll_completion()
            .unwrap()
            .result
            .unwrap_err()
            .is_timeout());
        // A handshake message over 256 bytes is refused from its header.
        let mut c = ClientSession::new(KEY, [1; 40], SessionConfig::default(), now);
        c.handle_input(&1000i32.to_be_bytes());
        assert_eq!((c.phase(), c.buffered()), (Phase::Closed, 0));
    }

    proptest::proptest! {
        /// Whatever a server sends, in whatever chunks: no panic, every call
        /// completes at most once (exactly once after a close), and what stays
        /// buffered is at most one frame under the limit.
        #[test]
        fn arbitrary_server_bytes_never_panic_nor_overflow_the_bounds(
            calls in 0usize..8,
            frames in proptest::collection::vec(
                (proptest::prelude::any::<bool>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
                0..12,
            ),
            cut in 1usize..40,
        ) {
            let config = SessionConfig { max_frame: 256, ..SessionConfig::default() };
            let mut c = ready(config);
            for _ in 0..calls {
                c.start(&Request::public("dummy", vec![])).unwrap();
            }
            // Well-framed payloads (valid replies or junk) and raw junk.
            let mut bytes = Vec::new();
            for (framed, body) in frames {
                if framed {
                    frame::write_frame(&body, &mut bytes);
                } else {
                    bytes.extend_from_slice(&body);
                }
            }
            let mut seen = Vec::new();
            for chunk in bytes.chunks(cut) {
                c.handle_input(chunk);
                proptest::prop_assert!(c.buffered() <= 256 + 12);
                while let Some(done) = c.poll_completion() {
                    seen.push(done.id);
                }
            }
            c.handle_eof();
            while let Some(done) = c.poll_completion() {
                seen.push(done.id);
            }
            let all: Vec<CallId> = (0..calls as u64).map(CallId).collect();
            proptest::prop_assert_eq!(seen, all);
            proptest::prop_assert_eq!(c.pending(), 0);
        }
    }
}
