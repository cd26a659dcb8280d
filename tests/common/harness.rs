//! A server in its own thread whose statistics (objects, deferred calls,
//! connections, buffered bytes and their peak) are copied out after every turn,
//! and a raw authenticated socket for clients that misbehave on purpose.
//!
//! Included with `#[path = "common/harness.rs"] mod harness;` next to `mod common;`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use mgr::proto::auth::{ChallengeKind, Digest, Handshake, Role, State};
use mgr::proto::frame;
use mgr::server::ServerHandle;
use mgr::{Address, Manager, Server, ServerConfig};

use crate::common::{register_test_types, KEY};

/// Server statistics, copied out of the server's thread after every turn.
#[derive(Debug, Default)]
pub struct Stats {
    pub objects: AtomicUsize,
    pub pending: AtomicUsize,
    pub connections: AtomicUsize,
    pub buffered: AtomicUsize,
    pub max_buffered: AtomicUsize,
}

/// A server running the test types (and whatever `register` adds).
pub struct Harness {
    pub address: Address,
    pub handle: ServerHandle,
    pub stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

impl Harness {
    /// Starts a server on 127.0.0.1:0; `tweak` adjusts the configuration and
    /// `register` registers types beyond the test types.
    pub fn start(
        tweak: impl FnOnce(&mut ServerConfig) + Send + 'static,
        register: impl FnOnce(&mut Server) + Send + 'static,
    ) -> Harness {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let s = stats.clone();
        let thread = std::thread::spawn(move || {
            let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY);
            tweak(&mut config);
            let mut server = Server::bind(config).expect("bind");
            register_test_types(&mut server);
            register(&mut server);
            tx.send((server.address().clone(), server.handle()))
                .unwrap();
            while !server.is_shut_down() {
                server.turn(Some(Duration::from_millis(20))).expect("turn");
                s.objects
                    .store(server.number_of_objects(), Ordering::SeqCst);
                s.pending.store(server.pending_calls(), Ordering::SeqCst);
                s.connections
                    .store(server.connection_count(), Ordering::SeqCst);
                let b = server.buffered_bytes();
                s.buffered.store(b, Ordering::SeqCst);
                s.max_buffered.fetch_max(b, Ordering::SeqCst);
            }
        });
        let (address, handle) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Harness {
            address,
            handle,
            stats,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Manager {
        Manager::connect_to(&self.address, KEY).expect("connect")
    }

    pub fn pending(&self) -> usize {
        self.stats.pending.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    pub fn max_buffered(&self) -> usize {
        self.stats.max_buffered.load(Ordering::SeqCst)
    }

    pub fn tcp(&self) -> std::net::SocketAddr {
        match &self.address {
            Address::Tcp(a) => *a,
            Address::Unix(_) => unreachable!("the harness listens on TCP"),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

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
