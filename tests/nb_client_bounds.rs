//! A misbehaving server cannot make the non-blocking client allocate without
//! bound: a hostile peer (a thread here, speaking the handshake correctly)
//! announces a huge reply, or floods replies nobody asked for, and the
//! client's heap peak — counted by the counting global allocator — stays
//! within a fixed budget while the connection is closed and every call
//! completes with an error.

mod counting;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;

use counting::measure;
use mgr::client::{NbClient, NbConfig};
use mgr::proto::auth::{ChallengeKind, Digest, Handshake, Role, State};
use mgr::proto::codec::native;
use mgr::proto::frame::{self, begin_frame, finish_frame};
use mgr::proto::session::Phase;
use mgr::{Address, Reply, Value};

const KEY: &[u8] = b"bounds";

/// One test at a time, so a peak belongs to the test that measures it.
static SERIAL: Mutex<()> = Mutex::new(());

/// Reads one frame's payload (blocking).
fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let mut p = vec![0; i32::from_be_bytes(h) as usize];
    s.read_exact(&mut p).unwrap();
    p
}

/// A server that authenticates the client, reads its first request, then
/// sends `evil` and keeps the socket open until the client goes.
fn hostile(evil: Vec<u8>) -> Address {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut hs = Handshake::new(
            Role::Server,
            KEY,
            ChallengeKind::Modern(Digest::Sha256),
            [3; 40],
        );
        while hs.state() == State::InProgress {
            let mut out = Vec::new();
            while let Some(m) = hs.poll_transmit() {
                frame::write_frame(&m, &mut out);
            }
            s.write_all(&out).unwrap();
            if hs.state() != State::InProgress {
                break;
            }
            hs.handle_message(&read_frame(&mut s)).unwrap();
        }
        let mut out = Vec::new();
        while let Some(m) = hs.poll_transmit() {
            frame::write_frame(&m, &mut out);
        }
        s.write_all(&out).unwrap();
        let _ = read_frame(&mut s);
        let _ = s.write_all(&evil);
        let mut sink = [0u8; 1024];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    Address::Tcp(a)
}

/// Connects, starts one call, and processes until it completes; returns the
/// call's error and the client's heap peak over the whole run.
fn run_against(evil: Vec<u8>) -> (mgr::client::NbResult, usize, NbClient) {
    let address = hostile(evil);
    let ((err, client), peak) = measure(|| {
        let mut c = NbClient::connect(&address, KEY, NbConfig::default()).unwrap();
        let out = std::rc::Rc::new(std::cell::RefCell::new(None));
        let o = out.clone();
        c.public("dummy", vec![], move |_, r| *o.borrow_mut() = Some(r))
            .unwrap();
        for _ in 0..20_000 {
            if c.pending() == 0 {
                break;
            }
            let mut fd = libc::pollfd {
                fd: c.fd(),
                events: libc::POLLIN | if c.wants_write() { libc::POLLOUT } else { 0 },
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut fd, 1, 10) };
            c.process();
        }
        let r = out.borrow_mut().take().expect("the call completed");
        (r, c)
    });
    (err, peak, client)
}

fn reply_frame(out: &mut Vec<u8>) {
    let at = begin_frame(out);
    native::encode_reply(&Reply::Return(Value::None), out);
    finish_frame(out, at);
}

#[test]
fn a_huge_announced_reply_is_refused_from_its_header() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 1 GiB announced (over the 64 MiB default), 64 KiB actually sent.
    let mut evil = (1i32 << 30).to_be_bytes().to_vec();
    evil.extend(vec![0u8; 64 << 10]);
    let (r, peak, c) = run_against(evil);
    let e = r.expect_err("the call failed");
    assert!(matches!(e, mgr::Error::Io(_)), "{e}");
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    assert_eq!(c.phase(), Phase::Closed);
    assert_eq!(c.session().buffered(), 0);
    assert!(peak < 512 << 10, "peak {peak} bytes");
}

#[test]
fn a_flood_of_unasked_replies_closes_the_connection() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The one reply asked for, then 200 000 more (about 1.2 MB).
    let mut evil = Vec::new();
    for _ in 0..200_001 {
        reply_frame(&mut evil);
    }
    let (r, peak, c) = run_against(evil);
    // The first reply completed the call; the second closed the connection.
    assert_eq!(r.unwrap().into_value().unwrap(), Value::None);
    assert_eq!(c.phase(), Phase::Closed);
    assert!(c
        .close_reason()
        .is_some_and(|r| r.to_string().contains("no request asked for")));
    assert!(peak < 512 << 10, "peak {peak} bytes");
}
