//! The bytes one event-loop connection exchanges with its peer: opening it
//! (connect; for `mgrd` the handshake and the `create` of its object, through the
//! library's sans-IO layer), the frames of its calls, the check of each reply, and
//! the buffer that reassembles reply frames from reads of any size.
//!
//! Opening is blocking (it happens before the clock starts); the measured loop
//! in `evloop.rs` then drives the socket non-blocking. Nothing here polls.

use std::io::{self, Read, Write};
use std::ops::Range;

use mgr::proto::auth::{ChallengeKind, Digest, Handshake, Role, State, MAX_HANDSHAKE_MESSAGE};
use mgr::proto::codec::{native, pickle};
use mgr::proto::frame::{self, DEFAULT_MAX_FRAME};
use mgr::{Address, ObjectId, Reply, Request, Value};

use crate::scenarios::CallKind;
use crate::sock::Stream;

/// What a connection sends for call `i` and how it checks a reply: the only
/// difference between the two peers inside the loop.
pub(crate) enum Calls {
    /// `mgrd`: native request frames on this connection's own object; every reply
    /// is decoded and must be `Reply::Return`.
    Mgr(Vec<Vec<u8>>),
    /// The raw ping-pong peer: frames of the scenario's request sizes asking for
    /// its reply sizes; replies are only framed.
    Echo(Vec<Vec<u8>>),
    /// `mgrd` driven as a stock CPython client drives it (`--codec pickle`, see
    /// `pickle_client`): replies are decoded as pickles and must be `#RETURN`.
    Pickle(Vec<Vec<u8>>),
}

impl Calls {
    /// The whole frame (header and payload) of call `i`.
    pub(crate) fn frame(&self, i: u64) -> &[u8] {
        let (Calls::Mgr(f) | Calls::Echo(f) | Calls::Pickle(f)) = self;
        &f[i as usize % f.len()]
    }

    /// Checks one reply payload: decoded for `mgrd`, nothing for the echo peer.
    pub(crate) fn check(&self, payload: &[u8]) -> Result<(), String> {
        match self {
            Calls::Mgr(_) => match native::decode_reply(payload) {
                Ok(Reply::Return(_)) => Ok(()),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(format!("undecodable reply: {e}")),
            },
            Calls::Pickle(_) => match pickle::decode_reply(payload) {
                Ok(Reply::Return(_)) => Ok(()),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(format!("undecodable reply: {e}")),
            },
            Calls::Echo(_) => Ok(()),
        }
    }
}

/// Received bytes and the frames in them: frames split across reads are kept
/// until whole, and one read may hold many.
pub(crate) struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    pub(crate) fn new() -> Input {
        Input {
            buf: vec![0; 4096],
            start: 0,
            end: 0,
        }
    }

    /// Takes the next whole frame off the front; returns its payload's range in
    /// [`bytes`](Self::bytes), or `None` until more bytes arrive.
    pub(crate) fn next_frame(&mut self, max: u64) -> Result<Option<Range<usize>>, String> {
        let have = &self.buf[self.start..self.end];
        let Some(h) = frame::decode_header(have, max).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if have.len() < h.total_len() {
            if self.buf.len() < h.total_len() {
                self.buf.resize(h.total_len(), 0);
            }
            return Ok(None);
        }
        let payload = self.start + h.header_len..self.start + h.total_len();
        self.start += h.total_len();
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(payload))
    }

    /// The buffer that [`next_frame`](Self::next_frame)'s ranges index.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// One read into the free space (moving a partial frame to the front and
    /// growing the buffer first if it is full). Returns the bytes read and
    /// whether they filled the space offered.
    pub(crate) fn read_from(&mut self, r: &mut impl Read) -> io::Result<(usize, bool)> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let room = self.buf.len() - self.end;
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok((n, n == room))
    }

    /// Reads (blocking) until a whole frame is buffered and returns its payload.
    pub(crate) fn read_frame(&mut self, r: &mut impl Read, max: u64) -> Result<Vec<u8>, String> {
        loop {
            if let Some(p) = self.next_frame(max)? {
                return Ok(self.buf[p].to_vec());
            }
            match self.read_from(r) {
                Ok((0, _)) => return Err("the server closed the connection".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// An opened connection, ready for the loop: one warm-up call has been answered.
pub(crate) struct Opened {
    /// The socket (still blocking).
    pub(crate) stream: Stream,
    /// Whatever arrived past the last reply read so far.
    pub(crate) input: Input,
    /// What it sends and how it checks the replies.
    pub(crate) calls: Calls,
}

/// Connects to `address` and prepares the calls of `call` with `size`-byte
/// values: for `mgrd` (`mgr` true) the handshake with `authkey` and the `create`
/// of the connection's own object; then one call before the clock starts, so the
/// connection is warm (as the thread client does).
pub(crate) fn open(
    address: &Address,
    mgr: bool,
    authkey: &[u8],
    call: CallKind,
    size: usize,
) -> Result<Opened, String> {
    let mut stream = Stream::connect(address).map_err(|e| e.to_string())?;
    let mut input = Input::new();
    let calls = if mgr {
        handshake(&mut stream, &mut input, authkey)?;
        let id = create(&mut stream, &mut input, call.typeid())?;
        Calls::Mgr(framed(call.requests(id, size)))
    } else {
        let requests = call.requests(ObjectId::new(0, 2), size);
        let sizes = requests.iter().map(Vec::len).zip(call.reply_sizes(size));
        Calls::Echo(sizes.map(|(req, rep)| echo_frame(req, rep)).collect())
    };
    warm_up(stream, input, calls)
}

/// Makes one call on an opened connection (before the clock starts, so the
/// connection is warm, as the thread client does) and hands it to the loop.
pub(crate) fn warm_up(
    mut stream: Stream,
    mut input: Input,
    calls: Calls,
) -> Result<Opened, String> {
    stream
        .write_all(calls.frame(0))
        .map_err(|e| e.to_string())?;
    let reply = input.read_frame(&mut stream, DEFAULT_MAX_FRAME)?;
    calls.check(&reply)?;
    Ok(Opened {
        stream,
        input,
        calls,
    })
}

/// Each payload with its frame header.
pub(crate) fn framed(payloads: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    payloads
        .iter()
        .map(|p| {
            let mut f = Vec::with_capacity(4 + p.len());
            frame::write_frame(p, &mut f);
            f
        })
        .collect()
}

/// The frame the echo peer expects (as `echo::EchoClient::queue` builds it): a
/// `request`-byte payload (at least 4) whose first four bytes, big-endian, are
/// the size of the reply payload it asks for.
pub(crate) fn echo_frame(request: usize, reply: usize) -> Vec<u8> {
    let request = request.max(4);
    let mut f = Vec::with_capacity(4 + request);
    f.extend_from_slice(&(request as i32).to_be_bytes());
    f.extend_from_slice(&(reply as u32).to_be_bytes());
    f.resize(4 + request, 0);
    f
}

/// The client side of the handshake, driven by the sans-IO state machine.
fn handshake(stream: &mut Stream, input: &mut Input, authkey: &[u8]) -> Result<(), String> {
    let hs = Handshake::new(
        Role::Client,
        authkey,
        ChallengeKind::Modern(Digest::Sha256),
        challenge_bytes()?,
    );
    run_handshake(stream, input, hs)
}

/// Runs the client side of a handshake to its end over a blocking stream.
pub(crate) fn run_handshake(
    stream: &mut Stream,
    input: &mut Input,
    mut hs: Handshake,
) -> Result<(), String> {
    let mut out = Vec::new();
    loop {
        while let Some(msg) = hs.poll_transmit() {
            frame::write_frame(&msg, &mut out);
        }
        stream.write_all(&out).map_err(|e| e.to_string())?;
        out.clear();
        match hs.state() {
            State::Done => return Ok(()),
            State::Failed(e) => return Err(format!("handshake: {e}")),
            State::InProgress => {}
        }
        let msg = input.read_frame(stream, MAX_HANDSHAKE_MESSAGE as u64)?;
        if let Err(e) = hs.handle_message(&msg) {
            // Say what the state machine still has to say (#FAILURE#) before leaving.
            while let Some(msg) = hs.poll_transmit() {
                frame::write_frame(&msg, &mut out);
            }
            let _ = stream.write_all(&out);
            return Err(format!("handshake: {e}"));
        }
    }
}

/// 40 random bytes for our challenge.
pub(crate) fn challenge_bytes() -> Result<[u8; 40], String> {
    let mut b = [0; 40];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(b)
}

/// Creates an object of `typeid` with a `create` public request on this
/// connection (which then owns the reference) and returns its id.
fn create(stream: &mut Stream, input: &mut Input, typeid: &str) -> Result<ObjectId, String> {
    let mut payload = Vec::new();
    native::encode_request(
        &Request::public("create", vec![Value::Str(typeid.into())]),
        &mut payload,
    );
    let mut out = Vec::new();
    frame::write_frame(&payload, &mut out);
    stream.write_all(&out).map_err(|e| e.to_string())?;
    let reply = input.read_frame(stream, DEFAULT_MAX_FRAME)?;
    match native::decode_reply(&reply).map_err(|e| e.to_string())? {
        Reply::Return(Value::Tuple(ref t)) if t.len() == 2 => match t[0] {
            Value::Int(id) => Ok(ObjectId(id as u64)),
            ref other => Err(format!("create({typeid}) answered the id {other:?}")),
        },
        other => Err(format!("unexpected create({typeid}) reply {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes `step` at a time.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn frames(sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            frame::write_frame(&vec![i as u8; n], &mut out);
        }
        out
    }

    /// Every frame comes out whole and in order, however the bytes are split.
    #[test]
    fn frames_split_across_reads_and_many_per_read() {
        let sizes = [3, 0, 20, 9000, 1, 70_000, 5];
        for step in [1, 2, 3, 7, 4096, 1 << 20] {
            let mut r = Trickle {
                data: frames(&sizes),
                at: 0,
                step,
            };
            let mut input = Input::new();
            for (i, &n) in sizes.iter().enumerate() {
                let p = input.read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap();
                assert_eq!(p, vec![i as u8; n], "frame {i} with reads of {step}");
            }
            assert_eq!(input.next_frame(DEFAULT_MAX_FRAME), Ok(None));
            assert_eq!(r.at, r.data.len());
        }
    }

    #[test]
    fn frame_over_the_limit_is_refused() {
        let mut input = Input::new();
        let mut r = Trickle {
            data: frames(&[100]),
            at: 0,
            step: 4096,
        };
        assert!(input.read_frame(&mut r, 99).is_err());
    }

    /// The echo frame is what `EchoClient::queue` writes.
    #[test]
    fn echo_frame_matches_the_thread_client() {
        let f = echo_frame(62, 3);
        assert_eq!(f.len(), 4 + 62);
        assert_eq!(&f[..4], &62i32.to_be_bytes());
        assert_eq!(&f[4..8], &3u32.to_be_bytes());
        assert_eq!(echo_frame(1, 20).len(), 4 + 4);
    }

    /// A reply other than `#RETURN` ends the run on the mgr peer; the echo peer
    /// does not decode.
    #[test]
    fn mgr_replies_are_decoded_and_checked() {
        let calls = Calls::Mgr(framed(vec![vec![1, 2, 3]]));
        let mut ok = Vec::new();
        native::encode_reply(&Reply::Return(Value::None), &mut ok);
        assert_eq!(calls.check(&ok), Ok(()));
        let mut err = Vec::new();
        let e = mgr::RemoteError::new("KeyError", "key:000000000000");
        native::encode_reply(&Reply::Error(e), &mut err);
        assert!(calls.check(&err).is_err());
        assert!(calls.check(b"\xff\xff").is_err());
        assert_eq!(&calls.frame(7)[..4], &3i32.to_be_bytes());
        assert_eq!(Calls::Echo(vec![vec![0; 8]]).check(b"\xff"), Ok(()));
    }
}
