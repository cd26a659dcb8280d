//! The HMAC challenge/response handshake of `multiprocessing.connection`, as two
//! sans-IO state machines.
//!
//! Each side proves it knows the authkey by answering the other's challenge:
//!
//! - the **server** delivers a challenge, checks the answer, then answers the
//!   client's challenge;
//! - the **client** answers the server's challenge, then delivers its own.
//!
//! A challenge is `#CHALLENGE#` followed by a message: in the modern form (Python
//! ≥ 3.12) `{digest}` plus 40 random bytes, answered by `{digest}` plus the HMAC of
//! the whole message (prefix included); in the legacy form (Python ≤ 3.11) 20 random
//! bytes, answered by the raw 16-byte HMAC-MD5. As in CPython 3.12, a 16- or 20-byte
//! message is legacy, a deliverer accepts a raw 16-byte MD5 answer to a modern
//! challenge (that is how a 3.11 peer answers one), and an answerer picks its
//! digest from the challenge. The verdict is `#WELCOME#` or `#FAILURE#`.
//!
//! Use: build a [`Handshake`], then loop — send every frame payload
//! [`poll_transmit`](Handshake::poll_transmit) yields, stop when
//! [`state`](Handshake::state) is no longer [`State::InProgress`], otherwise feed
//! the next received payload to [`handle_message`](Handshake::handle_message).
//! A failed handshake may still have a `#FAILURE#` to send: drain
//! `poll_transmit` before closing.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};

/// Largest handshake message accepted (CPython's `recv_bytes(256)`).
pub const MAX_HANDSHAKE_MESSAGE: usize = 256;

/// Prefix of every challenge.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// The verdict for a correct answer.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// The verdict for a wrong answer.
pub const FAILURE: &[u8] = b"#FAILURE#";

/// Random bytes in a modern challenge.
pub const MODERN_CHALLENGE_LEN: usize = 40;
/// Random bytes in a legacy challenge.
pub const LEGACY_CHALLENGE_LEN: usize = 20;
/// Length of a raw HMAC-MD5 answer.
const MD5_LEN: usize = 16;
/// Longest digest name, for finding the closing brace of a prefix.
const MAX_DIGEST_NAME: usize = 8;

/// A MAC algorithm CPython allows in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// HMAC-MD5: the legacy algorithm.
    Md5,
    /// HMAC-SHA256: CPython ≥ 3.12's default.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA3-256.
    Sha3_256,
    /// HMAC-SHA3-384.
    Sha3_384,
}

// `AuthKey` indexes its cache by `digest as usize`: `ALL` lists the variants
// in their declared order.
const _: () = {
    let mut i = 0;
    while i < Digest::ALL.len() {
        assert!(Digest::ALL[i] as usize == i);
        i += 1;
    }
};

impl Digest {
    /// Every allowed digest.
    pub const ALL: [Digest; 5] = [
        Digest::Md5,
        Digest::Sha256,
        Digest::Sha384,
        Digest::Sha3_256,
        Digest::Sha3_384,
    ];

    /// The name used in `{digest}` prefixes (Python's hashlib name).
    pub fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha3_256 => "sha3_256",
            Digest::Sha3_384 => "sha3_384",
        }
    }

    /// The digest with this name, if it is allowed.
    pub fn from_name(name: &[u8]) -> Option<Digest> {
        Digest::ALL
            .into_iter()
            .find(|d| d.name().as_bytes() == name)
    }

    /// HMAC of `msg` under `key`.
    pub fn mac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        Keyed::new(self, key).finish(msg)
    }

    /// Whether `tag` is the HMAC of `msg` under `key`, compared in constant time.
    pub fn verify(self, key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
        constant_time_eq(&self.mac(key, msg), tag)
    }
}

/// An authkey with its HMAC key schedule computed once per digest and reused:
/// keying an HMAC hashes the padded key twice (the inner and outer pads), which
/// for the short messages of a handshake is half of the hashing. A server builds
/// one and hands it to every connection's [`Handshake::with_key`].
pub struct AuthKey {
    key: Vec<u8>,
    /// Per digest of [`Digest::ALL`], the HMAC state after the key, once used.
    keyed: [OnceLock<Keyed>; Digest::ALL.len()],
}

/// An HMAC state with its key absorbed, cloned for each message.
#[derive(Clone)]
enum Keyed {
    Md5(Hmac<md5::Md5>),
    Sha256(Hmac<sha2::Sha256>),
    Sha384(Hmac<sha2::Sha384>),
    Sha3_256(Hmac<sha3::Sha3_256>),
    Sha3_384(Hmac<sha3::Sha3_384>),
}

impl Keyed {
    /// `digest`'s HMAC with `key` absorbed.
    fn new(digest: Digest, key: &[u8]) -> Keyed {
        fn new<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> M {
            <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of any length")
        }
        match digest {
            Digest::Md5 => Keyed::Md5(new(key)),
            Digest::Sha256 => Keyed::Sha256(new(key)),
            Digest::Sha384 => Keyed::Sha384(new(key)),
            Digest::Sha3_256 => Keyed::Sha3_256(new(key)),
            Digest::Sha3_384 => Keyed::Sha3_384(new(key)),
        }
    }

    /// The HMAC of `msg`.
    fn finish(self, msg: &[u8]) -> Vec<u8> {
        fn run<M: Mac>(mut m: M, msg: &[u8]) -> Vec<u8> {
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Keyed::Md5(m) => run(m, msg),
            Keyed::Sha256(m) => run(m, msg),
            Keyed::Sha384(m) => run(m, msg),
            Keyed::Sha3_256(m) => run(m, msg),
            Keyed::Sha3_384(m) => run(m, msg),
        }
    }
}

impl AuthKey {
    /// The key `key`; nothing is hashed until a digest is first used.
    pub fn new(key: &[u8]) -> AuthKey {
        AuthKey {
            key: key.to_vec(),
            keyed: Default::default(),
        }
    }

    /// HMAC of `msg` under this key: what [`Digest::mac`] computes.
    ///
    /// # Panics
    ///
    /// Never: HMAC takes keys of any length (the `expect` inside states it).
    pub fn mac(&self, digest: Digest, msg: &[u8]) -> Vec<u8> {
        // `Digest`'s variants are numbered in the order of `Digest::ALL`.
        self.keyed[digest as usize]
            .get_or_init(|| Keyed::new(digest, &self.key))
            .clone()
            .finish(msg)
    }

    /// Whether `tag` is the HMAC of `msg` under this key, compared in constant
    /// time (as [`Digest::verify`]).
    pub fn verify(&self, digest: Digest, msg: &[u8], tag: &[u8]) -> bool {
        constant_time_eq(&self.mac(digest, msg), tag)
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthKey(<{} bytes>)", self.key.len())
    }
}

/// Equal length and content, without an early exit on the first difference.
fn constant_time_eq(expected: &[u8], tag: &[u8]) -> bool {
    expected.len() == tag.len()
        && expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The form of challenge a side delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 20 random bytes answered by raw HMAC-MD5 (what Python ≤ 3.11 sends).
    Legacy,
    /// `{digest}` plus 40 random bytes (what Python ≥ 3.12 sends).
    Modern(Digest),
}

/// Which side of the connection this handshake runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Delivers first, then answers (CPython's `Listener.accept`).
    Server,
    /// Answers first, then delivers (CPython's `Client`).
    Client,
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The peer's answer to our challenge was wrong: it does not know the key.
    WrongKey,
    /// The peer rejected our answer (`#FAILURE#`): we do not have its key.
    Rejected,
    /// A message over [`MAX_HANDSHAKE_MESSAGE`] bytes.
    TooLarge(usize),
    /// A message that does not follow the protocol.
    Protocol(String),
    /// A message arrived after the handshake had ended.
    Finished,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::WrongKey => f.write_str("digest received was wrong (wrong authkey)"),
            AuthError::Rejected => f.write_str("digest sent was rejected (wrong authkey)"),
            AuthError::TooLarge(n) => write!(
                f,
                "handshake message of {n} bytes exceeds {MAX_HANDSHAKE_MESSAGE} bytes"
            ),
            AuthError::Protocol(m) => write!(f, "handshake protocol error: {m}"),
            AuthError::Finished => f.write_str("message after the handshake ended"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Where a handshake stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for the peer's next message.
    InProgress,
    /// Both sides proved the key.
    Done,
    /// Failed; nothing more will be accepted.
    Failed(AuthError),
}

/// What the machine expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The peer's answer to our challenge.
    Response,
    /// The peer's challenge.
    Challenge,
    /// The peer's verdict on our answer.
    Verdict,
    /// Nothing: done or failed.
    Over,
}

/// One side of the handshake. See the module docs for the order of calls.
pub struct Handshake {
    role: Role,
    key: Arc<AuthKey>,
    /// The message (after `#CHALLENGE#`) we delivered, which the answer must MAC.
    ours: Vec<u8>,
    kind: ChallengeKind,
    step: Step,
    state: State,
    out: VecDeque<Vec<u8>>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("kind", &self.kind)
            .field("step", &self.step)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// A handshake for `role` with `key`, delivering a challenge of `kind` built
    /// from `random` (all 40 bytes for a modern challenge, the first 20 for a
    /// legacy one). A server's challenge is ready to send at once.
    pub fn new(
        role: Role,
        key: &[u8],
        kind: ChallengeKind,
        random: [u8; MODERN_CHALLENGE_LEN],
    ) -> Handshake {
        Handshake::with_key(role, &Arc::new(AuthKey::new(key)), kind, random)
    }

    /// [`new`](Self::new) with a shared [`AuthKey`], whose key schedule is then
    /// computed once for every handshake that uses it.
    pub fn with_key(
        role: Role,
        key: &Arc<AuthKey>,
        kind: ChallengeKind,
        random: [u8; MODERN_CHALLENGE_LEN],
    ) -> Handshake {
        let ours = match kind {
            ChallengeKind::Legacy => random[..LEGACY_CHALLENGE_LEN].to_vec(),
            ChallengeKind::Modern(d) => {
                let mut m = prefix(d, MODERN_CHALLENGE_LEN);
                m.extend_from_slice(&random);
                m
            }
        };
        let mut hs = Handshake {
            role,
            key: Arc::clone(key),
            ours,
            kind,
            step: Step::Challenge,
            state: State::InProgress,
            out: VecDeque::new(),
        };
        if role == Role::Server {
            hs.deliver();
        }
        hs
    }

    /// Where the handshake stands.
    pub fn state(&self) -> State {
        self.state.clone()
    }

    /// The next payload to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Feeds one received payload. An error also moves the state to
    /// [`State::Failed`] (after queueing `#FAILURE#` when the peer's answer was
    /// wrong).
    ///
    /// # Errors
    ///
    /// [`AuthError`] when the peer's message is not the expected step of the
    /// handshake, its digest is not one the handshake accepts, or the peer's
    /// answer (or its verdict on ours) is wrong.
    pub fn handle_message(&mut self, msg: &[u8]) -> Result<(), AuthError> {
        if self.step == Step::Over {
            return Err(AuthError::Finished);
        }
        let r = if msg.len() > MAX_HANDSHAKE_MESSAGE {
            Err(AuthError::TooLarge(msg.len()))
        } else {
            match self.step {
                Step::Response => self.handle_response(msg),
                Step::Challenge => self.handle_challenge(msg),
                Step::Verdict => self.handle_verdict(msg),
                Step::Over => unreachable!("checked above"),
            }
        };
        if let Err(e) = &r {
            if self.step == Step::Response {
                self.out.push_back(FAILURE.to_vec());
            }
            self.step = Step::Over;
            self.state = State::Failed(e.clone());
        }
        r
    }

    fn deliver(&mut self) {
        let mut m = Vec::with_capacity(CHALLENGE.len() + self.ours.len());
        m.extend_from_slice(CHALLENGE);
        m.extend_from_slice(&self.ours);
        self.out.push_back(m);
        self.step = Step::Response;
    }

    fn finish(&mut self) {
        self.step = Step::Over;
        self.state = State::Done;
    }

    fn handle_response(&mut self, msg: &[u8]) -> Result<(), AuthError> {
        let (digest, mac) = split_digest(msg)?;
        if !self
            .key
            .verify(digest.unwrap_or(Digest::Md5), &self.ours, mac)
        {
            return Err(AuthError::WrongKey);
        }
        self.out.push_back(WELCOME.to_vec());
        match self.role {
            Role::Server => self.step = Step::Challenge,
            Role::Client => self.finish(),
        }
        Ok(())
    }

    fn handle_challenge(&mut self, msg: &[u8]) -> Result<(), AuthError> {
        let Some(message) = msg.strip_prefix(CHALLENGE) else {
            return Err(AuthError::Protocol("expected a #CHALLENGE# message".into()));
        };
        if message.len() < LEGACY_CHALLENGE_LEN {
            return Err(AuthError::Protocol(format!(
                "challenge too short: {} bytes",
                message.len()
            )));
        }
        let answer = match split_digest(message)? {
            (None, _) => self.key.mac(Digest::Md5, message),
            (Some(d), _) => {
                let mut a = prefix(d, 48);
                a.extend_from_slice(&self.key.mac(d, message));
                a
            }
        };
        self.out.push_back(answer);
        self.step = Step::Verdict;
        Ok(())
    }

    fn handle_verdict(&mut self, msg: &[u8]) -> Result<(), AuthError> {
        if msg != WELCOME {
            return Err(AuthError::Rejected);
        }
        match self.role {
            Role::Server => self.finish(),
            Role::Client => self.deliver(),
        }
        Ok(())
    }
}

/// `{name}` of `d`, with room for `more` bytes after it.
fn prefix(d: Digest, more: usize) -> Vec<u8> {
    let name = d.name().as_bytes();
    let mut m = Vec::with_capacity(name.len() + 2 + more);
    m.push(b'{');
    m.extend_from_slice(name);
    m.push(b'}');
    m
}

/// CPython's `_get_digest_name_and_payload`: a 16- or 20-byte message is legacy
/// (no digest, MD5); anything else must start with `{name}` of an allowed digest.
fn split_digest(msg: &[u8]) -> Result<(Option<Digest>, &[u8]), AuthError> {
    if msg.len() == MD5_LEN || msg.len() == LEGACY_CHALLENGE_LEN {
        return Ok((None, msg));
    }
    if let Some(rest) = msg.strip_prefix(b"{") {
        let window = &rest[..rest.len().min(MAX_DIGEST_NAME + 1)];
        if let Some(close) = window.iter().position(|&b| b == b'}') {
            if let Some(d) = Digest::from_name(&rest[..close]) {
                return Ok((Some(d), &rest[close + 1..]));
            }
        }
    }
    Err(AuthError::Protocol(format!(
        "unsupported message length ({} bytes), missing digest prefix, or unsupported digest",
        msg.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs two machines against each other in memory until neither has anything
    /// to say; returns their final states.
    fn converse(server: &mut Handshake, client: &mut Handshake) -> (State, State) {
        for _ in 0..10 {
            let mut moved = false;
            while let Some(m) = server.poll_transmit() {
                moved = true;
                let _ = client.handle_message(&m);
            }
            while let Some(m) = client.poll_transmit() {
                moved = true;
                let _ = server.handle_message(&m);
            }
            if !moved {
                break;
            }
        }
        (server.state(), client.state())
    }

    fn pair(skey: &[u8], sk: ChallengeKind, ckey: &[u8], ck: ChallengeKind) -> (State, State) {
        let mut s = Handshake::new(Role::Server, skey, sk, [7; 40]);
        let mut c = Handshake::new(Role::Client, ckey, ck, [9; 40]);
        converse(&mut s, &mut c)
    }

    #[test]
    fn every_digest_and_both_forms_authenticate() {
        let mut kinds = vec![ChallengeKind::Legacy];
        kinds.extend(Digest::ALL.map(ChallengeKind::Modern));
        for &sk in &kinds {
            for &ck in &kinds {
                assert_eq!(
                    pair(b"key", sk, b"key", ck),
                    (State::Done, State::Done),
                    "{sk:?} / {ck:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let (s, c) = pair(
            b"right",
            ChallengeKind::Modern(Digest::Sha256),
            b"wrong",
            ChallengeKind::Modern(Digest::Sha256),
        );
        assert_eq!(s, State::Failed(AuthError::WrongKey));
        assert_eq!(c, State::Failed(AuthError::Rejected));
    }

    #[test]
    fn impostor_server_that_welcomes_anyone_is_caught_by_the_client() {
        // A server without the key can say #WELCOME# to any answer, but it cannot
        // answer the client's own challenge.
        let mut c = Handshake::new(
            Role::Client,
            b"a",
            ChallengeKind::Modern(Digest::Sha256),
            [2; 40],
        );
        let mut impostor = Handshake::new(Role::Server, b"b", ChallengeKind::Legacy, [1; 40]);
        c.handle_message(&impostor.poll_transmit().unwrap())
            .unwrap();
        let _answer = c.poll_transmit().unwrap();
        c.handle_message(WELCOME).unwrap();
        let challenge = c.poll_transmit().unwrap();
        impostor.step = Step::Challenge;
        impostor.handle_message(&challenge).unwrap();
        let forged = impostor.poll_transmit().unwrap();
        assert_eq!(c.handle_message(&forged), Err(AuthError::WrongKey));
        assert_eq!(c.poll_transmit().unwrap(), FAILURE);
        assert_eq!(c.state(), State::Failed(AuthError::WrongKey));
    }

    #[test]
    fn exact_wire_messages_of_the_legacy_form() {
        let mut s = Handshake::new(Role::Server, b"k", ChallengeKind::Legacy, [5; 40]);
        let ch = s.poll_transmit().unwrap();
        assert_eq!(&ch[..11], CHALLENGE);
        assert_eq!(&ch[11..], &[5; 20]);
        // A 3.11 client answers with the raw HMAC-MD5 of the 20 bytes.
        let answer = Digest::Md5.mac(b"k", &[5; 20]);
        assert_eq!(answer.len(), 16);
        s.handle_message(&answer).unwrap();
        assert_eq!(s.poll_transmit().unwrap(), WELCOME);
    }

    #[test]
    fn modern_challenge_accepts_a_raw_md5_answer() {
        let mut s = Handshake::new(
            Role::Server,
            b"k",
            ChallengeKind::Modern(Digest::Sha256),
            [3; 40],
        );
        let ch = s.poll_transmit().unwrap();
        assert!(ch.starts_with(b"#CHALLENGE#{sha256}"));
        let message = &ch[CHALLENGE.len()..];
        // What CPython 3.11 sends: HMAC-MD5 over the whole message, prefix included.
        s.handle_message(&Digest::Md5.mac(b"k", message)).unwrap();
        assert_eq!(s.poll_transmit().unwrap(), WELCOME);
        assert_eq!(s.state(), State::InProgress, "the server answers next");
    }

    #[test]
    fn modern_answer_is_prefixed_and_covers_the_prefix() {
        let mut c = Handshake::new(Role::Client, b"k", ChallengeKind::Legacy, [0; 40]);
        let mut ch = CHALLENGE.to_vec();
        ch.extend_from_slice(b"{sha3_384}");
        ch.extend_from_slice(&[1; 40]);
        c.handle_message(&ch).unwrap();
        let answer = c.poll_transmit().unwrap();
        let mut expected = b"{sha3_384}".to_vec();
        expected.extend_from_slice(&Digest::Sha3_384.mac(b"k", &ch[CHALLENGE.len()..]));
        assert_eq!(answer, expected);
    }

    #[test]
    fn oversize_and_malformed_messages_fail() {
        let mut s = Handshake::new(
            Role::Server,
            b"k",
            ChallengeKind::Modern(Digest::Sha256),
            [0; 40],
        );
        let _ = s.poll_transmit();
        assert_eq!(s.handle_message(&[0; 300]), Err(AuthError::TooLarge(300)));
        assert_eq!(s.poll_transmit().unwrap(), FAILURE);
        assert_eq!(s.handle_message(b"x"), Err(AuthError::Finished));

        let mut c = Handshake::new(Role::Client, b"k", ChallengeKind::Legacy, [0; 40]);
        assert!(matches!(
            c.handle_message(b"hello"),
            Err(AuthError::Protocol(_))
        ));
        let mut c = Handshake::new(Role::Client, b"k", ChallengeKind::Legacy, [0; 40]);
        assert!(matches!(
            c.handle_message(b"#CHALLENGE#short"),
            Err(AuthError::Protocol(_))
        ));
        let mut c = Handshake::new(Role::Client, b"k", ChallengeKind::Legacy, [0; 40]);
        let mut ch = CHALLENGE.to_vec();
        ch.extend_from_slice(b"{sha1}");
        ch.extend_from_slice(&[0; 40]);
        assert!(matches!(c.handle_message(&ch), Err(AuthError::Protocol(_))));
        assert_eq!(c.poll_transmit(), None, "no #FAILURE# for a bad challenge");
    }

    #[test]
    fn response_naming_a_digest_uses_it() {
        let mut s = Handshake::new(
            Role::Server,
            b"k",
            ChallengeKind::Modern(Digest::Sha256),
            [4; 40],
        );
        let ch = s.poll_transmit().unwrap();
        let mut answer = b"{sha384}".to_vec();
        answer.extend_from_slice(&Digest::Sha384.mac(b"k", &ch[CHALLENGE.len()..]));
        s.handle_message(&answer).unwrap();
        let mut bad = b"{sha384}".to_vec();
        bad.extend_from_slice(&[0; 48]);
        let mut s = Handshake::new(
            Role::Server,
            b"k",
            ChallengeKind::Modern(Digest::Sha256),
            [4; 40],
        );
        let _ = s.poll_transmit();
        assert_eq!(s.handle_message(&bad), Err(AuthError::WrongKey));
    }

    #[test]
    fn constant_time_verify_checks_length_and_content() {
        let tag = Digest::Sha256.mac(b"k", b"m");
        assert!(Digest::Sha256.verify(b"k", b"m", &tag));
        assert!(!Digest::Sha256.verify(b"k", b"m", &tag[..31]));
        let mut flipped = tag.clone();
        flipped[31] ^= 1;
        assert!(!Digest::Sha256.verify(b"k", b"m", &flipped));
    }

    /// A shared key's cached key schedule gives the same MACs as keying afresh,
    /// for every digest, keys shorter and longer than a block, and repeated use.
    #[test]
    fn shared_key_macs_match_fresh_ones() {
        for key in [&b""[..], b"k", &[7u8; 200]] {
            let shared = AuthKey::new(key);
            for d in Digest::ALL {
                for msg in [&b""[..], b"#CHALLENGE#", &[1u8; 100]] {
                    let fresh = d.mac(key, msg);
                    assert_eq!(shared.mac(d, msg), fresh, "{d:?}");
                    assert_eq!(shared.mac(d, msg), fresh, "{d:?}, again");
                    assert!(shared.verify(d, msg, &fresh));
                    assert!(!shared.verify(d, msg, &fresh[1..]));
                }
            }
        }
        let shared = Arc::new(AuthKey::new(b"secret"));
        let mut server = Handshake::with_key(
            Role::Server,
            &shared,
            ChallengeKind::Modern(Digest::Sha256),
            [3; 40],
        );
        let mut client = Handshake::new(Role::Client, b"secret", ChallengeKind::Legacy, [4; 40]);
        assert_eq!(
            converse(&mut server, &mut client),
            (State::Done, State::Done)
        );
        assert!(format!("{shared:?}").contains("6 bytes"));
    }
}
