//! The client side of the handshake fed a sequence of peer messages (split on
//! 0xff bytes): it must never panic and never authenticate without the key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mgr::proto::auth::{ChallengeKind, Digest, Handshake, Role, State};

fuzz_target!(|data: &[u8]| {
    let mut hs = Handshake::new(Role::Client, b"key", ChallengeKind::Modern(Digest::Sha256), [3; 40]);
    while hs.poll_transmit().is_some() {}
    for msg in data.split(|&b| b == 0xff) {
        let _ = hs.handle_message(msg);
        while hs.poll_transmit().is_some() {}
    }
    assert_ne!(hs.state(), State::Done);
});
