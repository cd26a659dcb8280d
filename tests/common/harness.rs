//! Raw authenticated sockets for clients that misbehave on purpose (the server
//! side is `common::TestServer`).
//!
//! Included with `#[path = "common/harness.rs"] mod harness;` next to `mod common;`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mgr::proto::auth::{ChallengeKind, Digest, Handshake, Role, State};
use mgr::proto::frame;

/// A plain blocking socket that has done the client's handshake with `key`.
pub fn raw_client(addr: std::net::SocketAddr, key: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    authenticate(&mut s, key);
    s
}

/// Does the client's side of the handshake with `key` on any blocking stream.
pub fn authenticate<S: Read + Write>(s: &mut S, key: &[u8]) {
    let mut hs = Handshake::new(
        Role::Client,
        key,
        ChallengeKind::Modern(Digest::Sha256),
        [7; 40],
    );
    loop {
        while let Some(msg) = hs.poll_transmit() {
            let mut out = Vec::new();
            frame::write_frame(&msg, &mut out);
            s.write_all(&out).unwrap();
        }
        match hs.state() {
            State::Done => return,
            State::Failed(e) => panic!("handshake failed: {e}"),
            State::InProgress => {}
        }
        let mut header = [0u8; 4];
        s.read_exact(&mut header).unwrap();
        let mut msg = vec![0u8; i32::from_be_bytes(header) as usize];
        s.read_exact(&mut msg).unwrap();
        let _ = hs.handle_message(&msg);
    }
}
