//! Limits over real sockets: a peer that dribbles its handshake is dropped at the
//! deadline, a client that pipelines and never reads cannot grow the server's
//! buffers past a bound, and a host that did not ignore SIGPIPE survives a
//! client that vanishes in the middle of a large reply.

mod common;
#[path = "common/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestServer;
use common::{register_test_types, KEY};
use harness::{authenticate, raw_client};
use mgr::proto::codec::native;
use mgr::proto::frame;
use mgr::{Manager, Request, Server, ServerConfig, Value};

#[test]
fn a_dribbling_peer_is_dropped_at_the_handshake_deadline() {
    let h =
        TestServer::start_registering(|c| c.handshake_timeout = Duration::from_millis(500), |_| {});
    let m = h.connect();
    let mut s = std::net::TcpStream::connect(h.tcp()).unwrap();
    // Pace: wait up to 100 ms for the server between bytes.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A 200-byte answer (under the 256-byte cap), one byte at a time.
    let message: Vec<u8> = 200i32
        .to_be_bytes()
        .into_iter()
        .chain(std::iter::repeat_n(b'x', 200))
        .collect();
    let mut sent = 0;
    let mut buf = [0u8; 512];
    let dropped = loop {
        if sent == message.len() {
            break false;
        }
        if s.write_all(&message[sent..sent + 1]).is_err() {
            break true;
        }
        sent += 1;
        match s.read(&mut buf) {
            Ok(0) => break true, // EOF: the server closed it
            Ok(_) => {}          // the challenge
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break true, // reset
        }
    };
    assert!(dropped, "the dribbling peer was never dropped");
    // 500 ms at ~10 bytes a second: it still had most of its message to send.
    assert!(sent < 100, "dropped only after {sent} bytes");
    assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
    assert!(common::eventually(10, || h.connections() == 1));
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_servers_buffers() {
    const MAX_OUTPUT: usize = 64 * 1024;
    const REPLY: usize = 32 * 1024;
    let h = TestServer::start_registering(|c| c.max_output = MAX_OUTPUT, |_| {});
    let m = h.connect();
    let holder = m
        .create("Holder", vec![Value::Bytes(vec![7; REPLY])])
        .unwrap();
    let counter = m.create("Counter", vec![]).unwrap();
    let baseline = m.number_of_objects().unwrap();

    let mut flood = raw_client(h.tcp(), KEY);
    flood
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut batch = Vec::new();
    for _ in 0..64 {
        let at = frame::begin_frame(&mut batch);
        native::encode_request(&Request::call(holder.id(), "get", vec![]), &mut batch);
        frame::finish_frame(&mut batch, at);
    }
    // Pipeline requests, never reading, until the server stops taking them.
    let mut requests = 0usize;
    let blocked = loop {
        match flood.write_all(&batch) {
            Ok(()) => requests += 64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true
            }
            Err(e) => panic!("flood write failed: {e}"),
        }
        if requests > 2_000_000 {
            break false;
        }
        // Meanwhile everyone else is served.
        if requests % 4096 == 0 {
            assert_eq!(counter.call("incr", vec![]).unwrap(), Value::Int(1));
            counter.call("incr", vec![Value::Int(-1)]).unwrap();
        }
    };
    assert!(blocked, "the server kept reading a client that never reads");
    // Replies owed: gigabytes; buffered: a bound.
    let owed = requests * REPLY;
    let bound = MAX_OUTPUT + 2 * REPLY + 256 * 1024 * h.connections().max(1);
    assert!(
        owed > 10 * bound,
        "the flood was big enough ({owed} bytes owed)"
    );
    assert!(
        h.max_buffered() <= bound,
        "buffers peaked at {} bytes (bound {bound})",
        h.max_buffered()
    );
    assert!(
        h.max_buffered() >= MAX_OUTPUT,
        "output did back up to the limit"
    );
    assert_eq!(counter.call("incr", vec![]).unwrap(), Value::Int(1));
    drop(flood);
    assert!(common::eventually(10, || h.connections() == 1));
    assert_eq!(m.number_of_objects().unwrap(), baseline);
}

/// Run only as a child process by `sigpipe_does_not_kill_a_host_that_kept_it`:
/// a host that restores SIGPIPE's default action (terminate) and serves on the
/// Unix socket `MGR_SIGPIPE_SOCKET` (where writing to a vanished peer is EPIPE).
#[test]
#[ignore = "a child process of the SIGPIPE test, not a test of its own"]
fn child_host_with_default_sigpipe() {
    // SAFETY: resetting a signal's disposition to its default.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let path = std::env::var("MGR_SIGPIPE_SOCKET").unwrap();
    let config = ServerConfig::new(format!("unix:{path}").parse().unwrap(), KEY);
    let mut server = Server::bind(config).unwrap();
    register_test_types(&mut server);
    println!("listening");
    server.run().unwrap();
    println!("clean exit");
}

#[test]
fn sigpipe_does_not_kill_a_host_that_kept_it() {
    let path = std::env::temp_dir().join(format!("mgr-sigpipe-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "child_host_with_default_sigpipe",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MGR_SIGPIPE_SOCKET", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.map(|l| l.contains("listening")).unwrap_or(false)));
    let address = format!("unix:{}", path.display());
    let m = Manager::connect(&address, KEY).unwrap();
    let big = m
        .create("Holder", vec![Value::Bytes(vec![1; 8 << 20])])
        .unwrap();
    for _ in 0..3 {
        // Ask for 8 MiB twice, read a little, vanish while it is being written.
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        authenticate(&mut s, KEY);
        let mut out = Vec::new();
        for _ in 0..2 {
            let at = frame::begin_frame(&mut out);
            native::encode_request(&Request::call(big.id(), "get", vec![]), &mut out);
            frame::finish_frame(&mut out, at);
        }
        s.write_all(&out).unwrap();
        let mut some = [0u8; 1024];
        s.read_exact(&mut some).unwrap();
        drop(s);
        assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
    }
    assert!(child.try_wait().unwrap().is_none(), "the host is alive");
    drop(big);
    assert_eq!(m.number_of_objects().unwrap(), 0);
    m.shutdown().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the host exited cleanly: {status:?}");
    assert!(lines.any(|l| l.map(|l| l.contains("clean exit")).unwrap_or(false)));
}

#[test]
fn a_frame_header_alone_allocates_little() {
    const MAX_FRAME: u64 = 16 << 20;
    let h = TestServer::start_registering(|c| c.max_frame = MAX_FRAME, |_| {});
    let m = h.connect();
    // Authenticated peers that announce the largest frame allowed, send a few
    // bytes of it and stall.
    let stalled: Vec<_> = (0..4)
        .map(|_| {
            let mut s = raw_client(h.tcp(), KEY);
            s.write_all(&(MAX_FRAME as i32 - 1000).to_be_bytes())
                .unwrap();
            s.write_all(&[native::NATIVE_VERSION; 100]).unwrap();
            s
        })
        .collect();
    assert!(common::eventually(10, || h.connections() == 5));
    assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
    // A little more, once the server knows the size announced.
    for mut s in &stalled {
        s.write_all(&[0; 100]).unwrap();
    }
    assert_eq!(m.public("dummy", vec![]).unwrap(), Value::None);
    std::thread::sleep(Duration::from_millis(100));
    // Memory follows the bytes that arrived, not the sizes announced.
    assert!(
        h.max_buffered() < 2 << 20,
        "buffers peaked at {} bytes for 4 announced {MAX_FRAME}-byte frames",
        h.max_buffered()
    );
    drop(stalled);
    assert!(common::eventually(10, || h.connections() == 1));
}
