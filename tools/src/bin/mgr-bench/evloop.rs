//! The event-driven client of the call-loop scenarios (`--client loop`): one
//! thread, one `mio::Poll`, N non-blocking connections, each keeping `--depth`
//! calls in flight the way `redis-benchmark -P` does — D requests in one write,
//! wait for all D replies, record each reply's latency from the batch's send
//! time, then the next D. It charges the run the same figures as the thread
//! client (`scenarios::run_threads`), so the two are read the same way.
//!
//! Opening the connections (`wire::open`) happens before the clock starts; this
//! module owns only the measured, non-blocking part.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token};

use mgr::proto::frame::DEFAULT_MAX_FRAME;

use crate::hist::Histogram;
use crate::scenarios::{Meter, Outcome};
use crate::sock::Sock;
use crate::wire::{Calls, Input, Opened};

/// How long each connection runs: whichever of the two ends first.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    /// Calls in flight per connection (one batch).
    pub(crate) depth: usize,
    /// Calls per connection; a batch that starts below it is finished.
    pub(crate) calls: u64,
    /// Run time; a batch that starts before it is finished.
    pub(crate) seconds: f64,
}

/// One connection of the loop.
struct Conn {
    sock: Sock,
    token: Token,
    calls: Calls,
    input: Input,
    /// Bytes to send; `out[sent..]` is what a short write left.
    out: Vec<u8>,
    sent: usize,
    /// WRITABLE interest is registered (only while output is left over).
    writing: bool,
    /// Calls sent so far (the index of the next one).
    issued: u64,
    /// Replies still due in the current batch.
    due: usize,
    /// When the current batch was written.
    batch_t: Instant,
    done: bool,
}

impl Conn {
    /// Queues the next batch of `depth` calls and tries to write it at once.
    fn send_batch(&mut self, depth: usize, registry: &Registry) -> Result<(), String> {
        self.batch_t = Instant::now();
        for _ in 0..depth {
            self.out.extend_from_slice(self.calls.frame(self.issued));
            self.issued += 1;
        }
        self.due = depth;
        self.flush(registry)
    }

    /// Writes what is left; registers WRITABLE interest while some remains and
    /// drops it once drained.
    fn flush(&mut self, registry: &Registry) -> Result<(), String> {
        while self.sent < self.out.len() {
            match self.sock.write(&self.out[self.sent..]) {
                Ok(0) => return Err("the server stopped reading".into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.interest(registry, true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        self.out.clear();
        self.sent = 0;
        self.interest(registry, false)
    }

    fn interest(&mut self, registry: &Registry, writing: bool) -> Result<(), String> {
        if self.writing == writing {
            return Ok(());
        }
        let interest = if writing {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        registry
            .reregister(self.sock.source(), self.token, interest)
            .map_err(|e| format!("reregister: {e}"))?;
        self.writing = writing;
        Ok(())
    }

    /// Reads until WouldBlock, checks and times every whole reply, and sends the
    /// next batch as soon as the current one is complete (unless the connection
    /// has reached its limits, then it is done).
    fn on_readable(
        &mut self,
        lim: Limits,
        deadline: Instant,
        registry: &Registry,
        hist: &mut Histogram,
    ) -> Result<(), String> {
        while !self.done {
            match self.input.read_from(&mut self.sock) {
                Ok((0, _)) => return Err("the server closed the connection".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            }
            let now = Instant::now();
            while let Some(p) = self.input.next_frame(DEFAULT_MAX_FRAME)? {
                if self.due == 0 {
                    return Err("a reply nobody asked for".into());
                }
                self.calls.check(&self.input.bytes()[p])?;
                hist.record(now.duration_since(self.batch_t).as_nanos() as u64);
                self.due -= 1;
            }
            if self.due == 0 {
                if self.issued >= lim.calls || now >= deadline {
                    self.done = true;
                } else {
                    self.send_batch(lim.depth, registry)?;
                }
            }
        }
        Ok(())
    }
}

/// Runs the opened connections in one event loop until each has reached
/// `lim`, and measures the run as `scenarios::run_threads` does (server CPU
/// from `pid`).
pub(crate) fn run(opened: Vec<Opened>, lim: Limits, pid: Option<u32>) -> Result<Outcome, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let registry = poll.registry();
    let mut conns = Vec::with_capacity(opened.len());
    for (i, o) in opened.into_iter().enumerate() {
        let mut sock = Sock::from_std(o.stream).map_err(|e| e.to_string())?;
        registry
            .register(sock.source(), Token(i), Interest::READABLE)
            .map_err(|e| format!("register: {e}"))?;
        conns.push(Conn {
            sock,
            token: Token(i),
            calls: o.calls,
            input: o.input,
            out: Vec::new(),
            sent: 0,
            writing: false,
            issued: 0,
            due: 0,
            batch_t: Instant::now(),
            done: false,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut hist = Histogram::default();
    let mut out = Outcome::default();
    let meter = Meter::start(pid);
    let deadline = Instant::now() + Duration::from_secs_f64(lim.seconds);
    let mut live = 0;
    for c in conns.iter_mut() {
        if lim.calls == 0 {
            c.done = true;
            continue;
        }
        c.send_batch(lim.depth, registry)?;
        live += 1;
    }
    while live > 0 {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        let registry = poll.registry();
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if c.done {
                continue;
            }
            if ev.is_writable() {
                c.flush(registry)?;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                c.on_readable(lim, deadline, registry, &mut hist)?;
                if c.done {
                    live -= 1;
                }
            }
        }
    }
    out.calls = conns.iter().map(|c| c.issued).sum();
    out.hist = hist;
    meter.stop(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::CallKind;
    use crate::{echo, wire};
    use mgr::Address;

    /// An echo peer on a fresh Unix socket, served by a thread that outlives the test.
    fn echo_peer(name: &str) -> Address {
        let path =
            std::env::temp_dir().join(format!("mgr-bench-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let address = Address::Unix(path.clone());
        let a = address.clone();
        std::thread::spawn(move || echo::serve(&a));
        // The socket file appears at bind(), before listen(): wait until a
        // connection is actually accepted (the probe is then closed).
        while std::os::unix::net::UnixStream::connect(&path).is_err() {
            std::thread::yield_now();
        }
        address
    }

    fn run_echo(name: &str, conns: usize, size: usize, lim: Limits) -> Outcome {
        let address = echo_peer(name);
        let opened = (0..conns)
            .map(|_| wire::open(&address, false, b"", CallKind::Dict, size))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let out = run(opened, lim, None).unwrap();
        if let Address::Unix(p) = address {
            let _ = std::fs::remove_file(p);
        }
        out
    }

    /// Each connection stops at its call limit, rounded up to whole batches,
    /// and every reply is counted once.
    #[test]
    fn stops_at_the_call_limit_in_whole_batches() {
        let lim = Limits {
            depth: 7,
            calls: 100,
            seconds: 3600.0,
        };
        let out = run_echo("limit", 5, 16, lim);
        assert_eq!(out.calls, 5 * 105);
        assert!(out.hist.quantile(1.0) > 0);
    }

    /// Batches far larger than the socket buffers: partial writes (WRITABLE
    /// interest) and frames split across many reads.
    #[test]
    fn large_batches_need_partial_writes_and_reads() {
        let lim = Limits {
            depth: 4,
            calls: 8,
            seconds: 3600.0,
        };
        let out = run_echo("large", 3, 1 << 20, lim);
        assert_eq!(out.calls, 3 * 8);
    }
}
