//! The pickle client mode (`--codec pickle`): each event-loop connection speaks
//! exactly the bytes a stock CPython 3.11 client sends, so the loop measures the
//! server's pickle path the way `multiprocessing.managers` users drive it.
//!
//! Per connection, as `m.dict()` and the proxy's first call do: a short
//! connection with the legacy handshake (`answer_challenge` then
//! `deliver_challenge`, HMAC-MD5) sends `create('dict')` and is closed; the
//! proxy's own connection does the same handshake and `accept_connection`, then
//! carries the calls `d['k'] = v` / `d['k']`. The payloads are CPython's own,
//! captured by `scripts/pickle_capture.py` (the constants in [`captured`]), with
//! the object's hex ident and the value's length spliced in. Replies are decoded
//! with the library's pickle decoder and must be `#RETURN`.
//!
//! With `--peer echo` the raw ping-pong peer gets frames of these sizes and
//! answers with frames of CPython's reply sizes.

use std::io::Write;

use mgr::proto::auth::{ChallengeKind, Handshake, Role};
use mgr::proto::codec::pickle;
use mgr::proto::frame::{self, DEFAULT_MAX_FRAME};
use mgr::{Address, ObjectId, Reply, Value};

use crate::sock::Stream;
use crate::wire::{self, Calls, Input, Opened};

/// The payloads of a stock CPython client and server.
#[rustfmt::skip]
mod captured {
    // Captured by scripts/pickle_capture.py from CPython 3.11.7.
    pub(crate) const CREATE: &[u8] = b"\x80\x04\x95\x19\x00\x00\x00\x00\x00\x00\x00(N\x8c\x06create\x94\x8c\x04dict\x94\x85\x94}\x94t\x94.";
    pub(crate) const ACCEPT: &[u8] = b"\x80\x04\x95+\x00\x00\x00\x00\x00\x00\x00(N\x8c\x11accept_connection\x94\x8c\x0bMainProcess\x94\x85\x94}\x94t\x94.";
    pub(crate) const SETITEM: &[u8] = b"\x80\x04\x955\x00\x00\x00\x00\x00\x00\x00(\x8c\x05IDENT\x94\x8c\x0b__setitem__\x94\x8c\x01k\x94C\x10xxxxxxxxxxxxxxxx\x94\x86\x94}\x94t\x94.";
    pub(crate) const GETITEM: &[u8] = b"\x80\x04\x95\x22\x00\x00\x00\x00\x00\x00\x00(\x8c\x05IDENT\x94\x8c\x0b__getitem__\x94\x8c\x01k\x94\x85\x94}\x94t\x94.";
    pub(crate) const REPLY_NONE: &[u8] = b"\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00\x8c\x07#RETURN\x94N\x86\x94.";
    pub(crate) const REPLY_VALUE: &[u8] = b"\x80\x04\x95 \x00\x00\x00\x00\x00\x00\x00\x8c\x07#RETURN\x94C\x10xxxxxxxxxxxxxxxx\x94\x86\x94.";
    // The same with the ident '2a' and a 40-byte value: the splice's check.
    #[cfg(test)]
    pub(crate) const CHECK_SETITEM: &[u8] = b"\x80\x04\x95J\x00\x00\x00\x00\x00\x00\x00(\x8c\x022a\x94\x8c\x0b__setitem__\x94\x8c\x01k\x94C(xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x94\x86\x94}\x94t\x94.";
    #[cfg(test)]
    pub(crate) const CHECK_GETITEM: &[u8] = b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00(\x8c\x022a\x94\x8c\x0b__getitem__\x94\x8c\x01k\x94\x85\x94}\x94t\x94.";
}

/// The placeholder ident and value of the captured requests.
const IDENT: &[u8] = b"\x8c\x05IDENT";
const VALUE: &[u8] = b"C\x10xxxxxxxxxxxxxxxx";

/// Values this mode can send: a `SHORT_BINBYTES` (one length byte), as CPython
/// pickles them below 256 bytes.
pub(crate) const MAX_SIZE: usize = 255;

/// `template` with `from` replaced by `to` (each found once) and its protocol-4
/// FRAME length fixed: the payloads are one frame, as CPython writes small ones.
fn splice(template: &[u8], edits: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut out = template.to_vec();
    for (from, to) in edits {
        let at = out
            .windows(from.len())
            .position(|w| w == *from)
            .expect("the captured template holds the placeholder");
        out.splice(at..at + from.len(), to.iter().copied());
    }
    // PROTO 4, FRAME, then the frame's length as 8 bytes little-endian.
    let len = (out.len() - 11) as u64;
    out[3..11].copy_from_slice(&len.to_le_bytes());
    out
}

/// The `__setitem__` and `__getitem__` payloads CPython 3.11 sends for
/// `d['k'] = b'x' * size` and `d['k']` on the object `id`.
pub(crate) fn requests(id: ObjectId, size: usize) -> Result<Vec<Vec<u8>>, String> {
    if size > MAX_SIZE {
        return Err(format!("--codec pickle: --size is at most {MAX_SIZE}"));
    }
    let hex = id.to_string();
    let mut ident = vec![0x8c, hex.len() as u8];
    ident.extend_from_slice(hex.as_bytes());
    let mut value = vec![b'C', size as u8];
    value.resize(2 + size, b'x');
    Ok(vec![
        splice(captured::SETITEM, &[(IDENT, ident.clone()), (VALUE, value)]),
        splice(captured::GETITEM, &[(IDENT, ident)]),
    ])
}

/// The payload sizes of CPython's replies to [`requests`]: `('#RETURN', None)`
/// and `('#RETURN', b'x' * size)`.
pub(crate) fn reply_sizes(size: usize) -> Vec<usize> {
    vec![
        captured::REPLY_NONE.len(),
        captured::REPLY_VALUE.len() - 16 + size,
    ]
}

/// Opens one connection of the loop: for `mgrd` (`mgr` true) as a stock client
/// does (see the module docs), for the echo peer with frames of the same
/// sizes; then one call before the clock starts.
pub(crate) fn open(
    address: &Address,
    mgr: bool,
    authkey: &[u8],
    size: usize,
) -> Result<Opened, String> {
    if size > MAX_SIZE {
        return Err(format!("--codec pickle: --size is at most {MAX_SIZE}"));
    }
    let (stream, input, calls) = if mgr {
        let id = create(address, authkey)?;
        let (mut stream, mut input) = connect(address, authkey)?;
        match exchange(&mut stream, &mut input, captured::ACCEPT)? {
            Reply::Return(Value::None) => {}
            other => return Err(format!("accept_connection answered {other:?}")),
        }
        (
            stream,
            input,
            Calls::Pickle(wire::framed(requests(id, size)?)),
        )
    } else {
        let stream = Stream::connect(address).map_err(|e| e.to_string())?;
        let requests = requests(ObjectId::new(0, 2), size)?;
        let sizes = requests.iter().map(Vec::len).zip(reply_sizes(size));
        let frames = sizes.map(|(req, rep)| wire::echo_frame(req, rep)).collect();
        (stream, Input::new(), Calls::Echo(frames))
    };
    wire::warm_up(stream, input, calls)
}

/// A connection with the stock client's handshake done.
fn connect(address: &Address, authkey: &[u8]) -> Result<(Stream, Input), String> {
    let mut stream = Stream::connect(address).map_err(|e| e.to_string())?;
    let mut input = Input::new();
    let hs = Handshake::new(
        Role::Client,
        authkey,
        ChallengeKind::Legacy,
        wire::challenge_bytes()?,
    );
    wire::run_handshake(&mut stream, &mut input, hs)?;
    Ok((stream, input))
}

/// Sends one request payload and decodes its reply.
fn exchange(stream: &mut Stream, input: &mut Input, payload: &[u8]) -> Result<Reply, String> {
    let mut out = Vec::with_capacity(4 + payload.len());
    frame::write_frame(payload, &mut out);
    stream.write_all(&out).map_err(|e| e.to_string())?;
    let reply = input.read_frame(stream, DEFAULT_MAX_FRAME)?;
    pickle::decode_reply(&reply).map_err(|e| format!("undecodable reply: {e}"))
}

/// `m.dict()`'s `create` on a connection of its own (closed after), as
/// `BaseManager._create` does; returns the new object's id.
fn create(address: &Address, authkey: &[u8]) -> Result<ObjectId, String> {
    let (mut stream, mut input) = connect(address, authkey)?;
    match exchange(&mut stream, &mut input, captured::CREATE)? {
        // `(ident, exposed)`: the client builds the Token from the hex ident.
        Reply::Return(Value::Tuple(ref t)) if t.len() == 2 => match t[0] {
            Value::Str(ref ident) => ObjectId::from_hex(ident)
                .ok_or_else(|| format!("create('dict') answered the ident {ident:?}")),
            ref other => Err(format!("create('dict') answered the ident {other:?}")),
        },
        other => Err(format!("unexpected create('dict') reply {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The splice rebuilds CPython's own bytes: the placeholder values give the
    /// template back, and another ident and value length give what CPython
    /// writes for them.
    #[test]
    fn spliced_requests_are_cpythons_bytes() {
        let [set, get] = <[Vec<u8>; 2]>::try_from(requests(ObjectId(0x2a), 40).unwrap()).unwrap();
        assert_eq!(set, captured::CHECK_SETITEM);
        assert_eq!(get, captured::CHECK_GETITEM);
        let same = splice(captured::SETITEM, &[(IDENT, IDENT.to_vec())]);
        assert_eq!(same, captured::SETITEM);
        assert!(requests(ObjectId(1), MAX_SIZE + 1).is_err());
    }

    /// What the library's decoder makes of the captured requests: the calls
    /// they stand for (so a server reads them as CPython's would).
    #[test]
    fn captured_requests_decode_as_the_calls_they_are() {
        let id = ObjectId::new(3, 7);
        let reqs = requests(id, 16).unwrap();
        let set = pickle::decode_request(&reqs[0]).unwrap();
        assert_eq!((set.target, set.method.as_str()), (Some(id), "__setitem__"));
        assert_eq!(
            set.args,
            vec![Value::Str("k".into()), Value::Bytes(vec![b'x'; 16])]
        );
        let get = pickle::decode_request(&reqs[1]).unwrap();
        assert_eq!((get.target, get.method.as_str()), (Some(id), "__getitem__"));
        let create = pickle::decode_request(captured::CREATE).unwrap();
        assert_eq!(create.method, "create");
        assert_eq!(create.args, vec![Value::Str("dict".into())]);
        let accept = pickle::decode_request(captured::ACCEPT).unwrap();
        assert_eq!(accept.method, "accept_connection");
    }

    /// Against a real server: each connection is opened the stock client's way
    /// and the loop gets `#RETURN` for every captured call (a reply of any other
    /// kind, or an undecodable one, fails the run); the echo peer of the same
    /// sizes also runs.
    #[test]
    fn stock_bytes_are_served_by_a_real_server() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let config = mgr::ServerConfig::new("127.0.0.1:0".parse().unwrap(), b"k");
            let mut server = mgr::Server::bind(config).unwrap();
            server.register_builtins();
            tx.send(server.address().clone()).unwrap();
            let _ = server.run();
        });
        let address = rx.recv().unwrap();
        let opened = (0..3)
            .map(|_| open(&address, true, b"k", 16))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let lim = crate::evloop::Limits {
            depth: 2,
            calls: 10,
            seconds: 3600.0,
        };
        let out = crate::evloop::run(opened, lim, None).unwrap();
        assert_eq!(out.calls, 3 * 10);
        assert!(open(&address, true, b"wrong key", 16).is_err());
        assert!(open(&address, true, b"k", MAX_SIZE + 1).is_err());
    }

    /// The echo peer's reply sizes are CPython's, for any value size.
    #[test]
    fn reply_sizes_follow_the_value() {
        assert_eq!(
            reply_sizes(16),
            vec![captured::REPLY_NONE.len(), captured::REPLY_VALUE.len()]
        );
        assert_eq!(reply_sizes(40)[1], captured::REPLY_VALUE.len() + 24);
        let r = pickle::decode_reply(captured::REPLY_VALUE).unwrap();
        assert_eq!(r, Reply::Return(Value::Bytes(vec![b'x'; 16])));
    }
}
