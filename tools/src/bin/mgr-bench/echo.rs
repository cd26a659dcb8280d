//! The raw ping-pong peer: a single-threaded mio server that answers every frame
//! with a frame of the size the request asks for (its first four payload bytes,
//! big-endian), and the blocking client that drives it. No handshake, no decoding:
//! the floor any framed request/response pays on the same socket.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use mgr::Address;

use crate::sock::{Sock, Stream};

struct Peer {
    sock: Sock,
    input: Vec<u8>,
    end: usize,
    output: Vec<u8>,
    sent: usize,
}

/// Serves ping-pong on `address` forever; prints `echo listening on ADDR` first.
pub fn serve(address: &Address) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let tcp;
    let unix;
    let bound = match &address.resolve()? {
        Address::Tcp(a) => {
            let mut l = TcpListener::bind(*a)?;
            poll.registry()
                .register(&mut l, Token(0), Interest::READABLE)?;
            let b = Address::Tcp(l.local_addr()?);
            tcp = Some(l);
            unix = None;
            b
        }
        Address::Unix(p) => {
            let mut l = UnixListener::bind(p)?;
            poll.registry()
                .register(&mut l, Token(0), Interest::READABLE)?;
            tcp = None;
            unix = Some(l);
            address.clone()
        }
        other => return Err(io::Error::other(format!("'{other}' was not resolved"))),
    };
    println!("echo listening on {bound}");
    io::stdout().flush()?;
    let mut peers: Slab<Peer> = Slab::new();
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == Token(0) {
                loop {
                    let sock = match (&tcp, &unix) {
                        (Some(l), _) => l.accept().map(|(s, _)| {
                            let _ = s.set_nodelay(true);
                            Sock::Tcp(s)
                        }),
                        (_, Some(l)) => l.accept().map(|(s, _)| Sock::Unix(s)),
                        _ => unreachable!(),
                    };
                    let Ok(mut sock) = sock else { break };
                    let entry = peers.vacant_entry();
                    let token = Token(entry.key() + 1);
                    let r = poll.registry().register(
                        sock.source(),
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if r.is_ok() {
                        entry.insert(Peer {
                            sock,
                            input: vec![0; 4096],
                            end: 0,
                            output: Vec::new(),
                            sent: 0,
                        });
                    }
                }
                continue;
            }
            let key = ev.token().0 - 1;
            let Some(peer) = peers.get_mut(key) else {
                continue;
            };
            if !serve_peer(peer, ev.is_read_closed() || ev.is_error()) {
                peers.remove(key);
            }
        }
    }
}

/// Reads, answers every complete frame, writes. False once the peer is gone.
/// Like mgrd, it stops at a short read (the socket is drained) unless the peer
/// has closed its end, so the floor pays the same three syscalls per call.
fn serve_peer(p: &mut Peer, closed: bool) -> bool {
    loop {
        if p.end == p.input.len() {
            let n = p.input.len() * 2;
            p.input.resize(n, 0);
        }
        let room = p.input.len() - p.end;
        match p.sock.read(&mut p.input[p.end..]) {
            Ok(0) => return false,
            Ok(n) if n < room && !closed => {
                p.end += n;
                break;
            }
            Ok(n) => p.end += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    let mut at = 0;
    while p.end - at >= 8 {
        let len = i32::from_be_bytes(p.input[at..at + 4].try_into().unwrap()) as usize;
        if p.end - at < 4 + len {
            break;
        }
        let want = u32::from_be_bytes(p.input[at + 4..at + 8].try_into().unwrap()) as usize;
        p.output.extend_from_slice(&(want as i32).to_be_bytes());
        p.output.resize(p.output.len() + want, 0);
        at += 4 + len;
    }
    p.input.copy_within(at..p.end, 0);
    p.end -= at;
    while p.sent < p.output.len() {
        match p.sock.write(&p.output[p.sent..]) {
            Ok(n) => p.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    p.output.clear();
    p.sent = 0;
    true
}

/// A blocking ping-pong client whose frames mirror a scenario's sizes.
pub struct EchoClient {
    stream: Stream,
    input: Vec<u8>,
    start: usize,
    end: usize,
    output: Vec<u8>,
}

impl EchoClient {
    /// Connects (no handshake).
    pub fn connect(address: &Address) -> io::Result<EchoClient> {
        Ok(EchoClient {
            stream: Stream::connect(address)?,
            input: vec![0; 4096],
            start: 0,
            end: 0,
            output: Vec::new(),
        })
    }

    /// Queues a frame of `request` payload bytes asking for `reply` payload bytes.
    pub fn queue(&mut self, request: usize, reply: usize) {
        let request = request.max(4);
        self.output
            .extend_from_slice(&(request as i32).to_be_bytes());
        self.output.extend_from_slice(&(reply as u32).to_be_bytes());
        self.output.resize(self.output.len() + request - 4, 0);
    }

    /// Writes what is queued.
    pub fn write_out(&mut self) -> io::Result<()> {
        let r = self.stream.write_all(&self.output);
        self.output.clear();
        r
    }

    /// Reads one reply frame and returns its payload (copied, as a client would).
    pub fn recv(&mut self) -> io::Result<Vec<u8>> {
        loop {
            let have = self.end - self.start;
            if have >= 4 {
                let len =
                    i32::from_be_bytes(self.input[self.start..self.start + 4].try_into().unwrap())
                        as usize;
                if have >= 4 + len {
                    let payload = self.input[self.start + 4..self.start + 4 + len].to_vec();
                    self.start += 4 + len;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    return Ok(payload);
                }
                if self.input.len() < 4 + len {
                    self.input.resize(4 + len, 0);
                }
            }
            if self.start > 0 {
                self.input.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.stream.read(&mut self.input[self.end..])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "echo closed"));
            }
            self.end += n;
        }
    }
}
