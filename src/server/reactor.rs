//! The single-threaded mio reactor: the listener, every connection, the Waker
//! for other threads, and timers, all driven from one `Poll`.
//!
//! Tokens: [`LISTENER`] and [`WAKER`] are reserved; a connection's token is its slab
//! key plus [`FIRST_CONN`]. After every batch of events the reactor fires due timers,
//! delivers deferred answers to their connections (which may resume their queued
//! requests) and sweeps dead objects — never closing a connection or dropping an
//! object while a callback that might use it is running.
//!
//! A turn is bounded (after sd-bus and Redis's ae): readiness events only mark a
//! connection ready; serving then takes connections from a FIFO ready queue, at
//! most [`PASS_BATCH`] requests each before the next gets its turn, until the
//! turn's [`Budget`] is spent. mio is edge-triggered, so a connection that still
//! has buffered frames or unread socket bytes goes back to the end of the queue:
//! no new event would announce them. Accepting is bounded per turn too
//! ([`ACCEPT_BATCH`]). Deferred answers, timers and sweeps are not budgeted;
//! the cycle collector does one bounded step per turn.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::conn::{Conn, Flushed, Phase, SpareBuffers, Stream};
use super::context::{Completion, ConnId, Core, Recount, Shared, TimerId, TimerTarget};
use super::dispatch::{self, Dispatched, IdStyle, Session};
use super::log::{Log, LogEvent};
use super::peer::Peer;
use super::procs;
use super::registry::Registry;
use super::ServerConfig;
use crate::address::Address;
use crate::error::TRACEBACK_HEADER;
use crate::proto::auth::{
    AuthKey, ChallengeKind, Digest, Handshake, Role, State, MAX_HANDSHAKE_MESSAGE,
};
use crate::proto::codec::{native, pickle, Serializer};
use crate::proto::frame::{self, begin_frame, finish_frame};
use crate::proto::{Reply, Value};

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
pub(crate) const FIRST_CONN: usize = 2;
/// A client process's pidfd has the token `PROCESS_TOKENS + pid` (pids are
/// below 2^22 on Linux; connection tokens stay far below this).
pub(crate) const PROCESS_TOKENS: usize = 1 << 40;

/// How long to wait before accepting again when the process is out of descriptors:
/// the backlog waits in the kernel meanwhile, and the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Input buffered per connection while it may not process requests (waiting on a
/// deferred call, or its output backed up): enough to notice EOF, bounded.
const PAUSED_INPUT: usize = 64 * 1024;

/// Requests one connection is served per pass of the ready queue before the next
/// connection's turn: a light client waits behind a flood of pipelining ones
/// for a few requests each. (Replies are not sent per pass, so a small batch
/// costs no extra `send`s.)
pub(crate) const PASS_BATCH: usize = 4;

/// Requests served in a turn between two looks for new readiness (an
/// `epoll_wait` without waiting, at the end of a round): how long a request
/// that arrives during a long turn waits to join the queue, traded against a
/// system call per so many requests.
pub(crate) const REPOLL_AFTER: u64 = 64;

/// Connections accepted per turn at most; the rest wait in the kernel's backlog
/// for the next turn (which comes at once: the listener counts as pending work).
pub(crate) const ACCEPT_BATCH: usize = 64;

/// Output a connection with more requests to serve keeps unsent until its
/// last pass of the turn; beyond this it is sent at once.
const FLUSH_EARLY: usize = 64 * 1024;

/// The listen backlog when the system's maximum cannot be read.
const FALLBACK_BACKLOG: u32 = 4096;

/// What is left of one turn's request-serving budget.
#[derive(Debug)]
pub(crate) struct Budget {
    requests: usize,
    deadline: Option<Instant>,
}

impl Budget {
    /// A turn's budget from the configuration: at least one request, so every
    /// turn makes progress.
    fn new(config: &ServerConfig, now: Instant) -> Budget {
        Budget {
            requests: config.turn_max_requests.max(1),
            deadline: now.checked_add(config.turn_max_time),
        }
    }

    /// Serves nothing: answers are delivered and sweeps run, requests wait.
    pub(crate) fn none() -> Budget {
        Budget {
            requests: 0,
            deadline: None,
        }
    }

    fn exhausted(&self) -> bool {
        self.requests == 0
    }

    /// Charges one served request; once the time is up the rest is forfeited.
    fn spend(&mut self) {
        self.requests = self.requests.saturating_sub(1);
        if let Some(d) = self.deadline {
            if self.requests > 0 && Instant::now() >= d {
                self.requests = 0;
            }
        }
    }
}

/// Why [`Reactor::serve`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// No complete frame is buffered.
    NeedInput,
    /// The connection may not be served now (waiting on a deferred call, its
    /// output backed up, or closing).
    Paused,
    /// The pass's batch or the turn's budget is spent with a frame still to serve.
    Budget,
}

#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Sockets and connections.
#[derive(Debug)]
pub(crate) struct Reactor {
    pub(crate) poll: Poll,
    events: Events,
    listener: Option<Listener>,
    pub(crate) address: Address,
    /// The bound address as CPython represents it, written into pickled tokens.
    pickle_address: Value,
    pub(crate) conns: Slab<Conn>,
    generations: Vec<u32>,
    next_generation: u32,
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: ServerConfig,
    /// `config.authkey` with its HMAC key schedules, shared by every handshake.
    authkey: Arc<AuthKey>,
    /// Buffers of closed connections, for new ones.
    spare: SpareBuffers,
    /// Connections with work to do, served in turn (FIFO, a batch each).
    ready: VecDeque<ConnId>,
    /// The last accept stopped at [`ACCEPT_BATCH`]: the backlog may hold more.
    accept_pending: bool,
    /// The last poll filled the events buffer: more readiness may be waiting in
    /// the epoll set, which a host watching our fd edge-triggered (mio, tokio)
    /// would never hear of again.
    events_full: bool,
    /// Connections still authenticating, oldest first (entries that have since
    /// authenticated or closed are skipped, and pruned when they pile up).
    preauth: VecDeque<ConnId>,
    preauth_count: usize,
    /// Authenticated connections.
    authenticated: usize,
    /// The retry timer set when accept ran out of descriptors.
    accept_retry: Option<TimerId>,
    /// Readiness events taken in, timers fired and answers delivered in the
    /// current turn (what [`turn`](Self::turn) reports, with requests served).
    work: usize,
    /// The host's log hook, if any (see [`LogEvent`]).
    pub(crate) log: Log,
}

/// Hands `event` to the log hook, if one is set.
fn emit(log: &mut Log, event: LogEvent<'_>) {
    log.emit(event)
}

impl Reactor {
    /// Takes a listening socket from [`listen`](super::listen) (bound, or
    /// adopted) and sets up the reactor around it. An adopted socket keeps its
    /// backlog unless [`ServerConfig::listen_backlog`] names one.
    pub(crate) fn bind(
        config: ServerConfig,
        bound: super::listen::Bound,
        shared: Arc<Shared>,
    ) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let (mut listener, address) = (bound.listener, bound.address);
        if !bound.adopted || config.listen_backlog.is_some() {
            listen(&listener, config.listen_backlog)?;
        }
        match &mut listener {
            Listener::Tcp(l) => poll.registry().register(l, LISTENER, Interest::READABLE)?,
            Listener::Unix(l) => poll.registry().register(l, LISTENER, Interest::READABLE)?,
        }
        let waker = Waker::new(poll.registry(), WAKER)?;
        if shared.waker.set(waker).is_err() {
            return Err(io::Error::other("the server's mailbox has a waker already"));
        }
        Ok(Reactor {
            poll,
            events: Events::with_capacity(1024),
            listener: Some(listener),
            pickle_address: address.to_python(),
            address,
            conns: Slab::new(),
            generations: Vec::new(),
            next_generation: 0,
            shared,
            authkey: Arc::new(AuthKey::new(&config.authkey)),
            spare: SpareBuffers::default(),
            config,
            ready: VecDeque::new(),
            accept_pending: false,
            events_full: false,
            preauth: VecDeque::new(),
            preauth_count: 0,
            authenticated: 0,
            accept_retry: None,
            log: Log::default(),
            work: 0,
        })
    }

    fn conn_id(&self, key: usize) -> ConnId {
        ConnId::new(key, self.generations[key])
    }

    fn key_of(&self, id: ConnId) -> Option<usize> {
        let key = id.index();
        (self.conns.contains(key) && self.generations.get(key) == Some(&id.generation()))
            .then_some(key)
    }

    /// Waits up to `timeout` for events, then does one bounded turn of work:
    /// events mark connections ready, then the ready queue is served within the
    /// turn's budget (see the module docs). Returns the work done: readiness
    /// events taken in, timers fired, answers delivered and requests served (0:
    /// there was nothing to do).
    pub(crate) fn turn(&mut self, core: &mut Core, timeout: Option<Duration>) -> io::Result<usize> {
        self.work = 0;
        let served = core.stats.served;
        self.poll_events(core, timeout)?;
        core.now = Instant::now();
        let started = core.now;
        self.fire_timers(core);
        let mut budget = Budget::new(&self.config, core.now);
        self.settle(core, &mut budget);
        // One bounded step of the cycle collector (see `gc`); what it freed
        // may have released more, swept here.
        if core.collect_step() > 0 {
            self.settle(core, &mut Budget::none());
        }
        if !core.procs.unwatched.is_empty() {
            self.watch_processes(core);
        }
        // Accept after serving: a client whose handshake completes in this
        // batch of events counts against `max_connections` before a newcomer
        // is let in (and accepting is not held back by the budget).
        if self.accept_pending {
            self.accept(core);
        }
        let took = started.elapsed();
        core.stats.turns += 1;
        core.stats.longest_turn = core.stats.longest_turn.max(took);
        let served = usize::try_from(core.stats.served - served).unwrap_or(usize::MAX);
        Ok(self.work.saturating_add(served))
    }

    /// Waits up to `timeout` for readiness and takes it in: connections become
    /// ready (queued), writable ones are flushed, the listener is marked
    /// pending, other threads' commands are taken.
    fn poll_events(&mut self, core: &mut Core, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        // Walk the events in place (taken out of `self` while the handlers borrow
        // it) rather than collecting them into a fresh Vec on every turn.
        let events = mem::replace(&mut self.events, Events::with_capacity(0));
        let mut taken = 0;
        for e in events.iter() {
            taken += 1;
            let token = e.token();
            let read_closed = e.is_read_closed() || e.is_error();
            let readable = e.is_readable() || read_closed;
            let writable = e.is_writable();
            match token {
                LISTENER => self.accept_pending = true,
                WAKER => core.drain_commands(),
                Token(t) if t >= PROCESS_TOKENS => {
                    core.process_exited((t - PROCESS_TOKENS) as u32);
                }
                Token(t) => {
                    let key = t - FIRST_CONN;
                    if !self.conns.contains(key) {
                        continue;
                    }
                    self.conns[key].read_closed |= read_closed;
                    if writable {
                        self.flush(key);
                    }
                    if readable {
                        self.conns[key].unread = true;
                        self.enqueue(key);
                    } else {
                        self.after_io(core, key);
                    }
                }
            }
        }
        self.events_full = taken >= events.capacity();
        self.work += taken;
        self.events = events;
        Ok(())
    }

    /// Whether the last turn left work behind: ready connections, a backlog, or
    /// readiness the events buffer had no room for.
    pub(crate) fn has_pending_work(&self) -> bool {
        self.accept_pending || self.events_full || !self.ready.is_empty()
    }

    /// Puts a connection at the end of the ready queue (once).
    fn enqueue(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.queued {
            conn.queued = true;
            self.ready.push_back(conn.session.id);
        }
    }

    /// Delivers answers, serves ready connections while `budget` lasts, and
    /// sweeps, until nothing is left but requests beyond the budget.
    ///
    /// Serving goes in rounds: each connection queued when a round starts gets
    /// one pass. Between rounds, once [`REPOLL_AFTER`] requests have been
    /// served since the last look, the reactor takes in new readiness without
    /// waiting, so a client whose request arrives during a long turn waits for
    /// about that many requests and a round, not for the turn.
    pub(crate) fn settle(&mut self, core: &mut Core, budget: &mut Budget) {
        let mut round = self.ready.len();
        let mut polled_at = core.stats.served;
        loop {
            if !core.outbox.is_empty() {
                for c in mem::take(&mut core.outbox) {
                    self.deliver(core, c);
                }
            }
            if !budget.exhausted() {
                if round == 0 && !self.ready.is_empty() {
                    if core.stats.served - polled_at >= REPOLL_AFTER {
                        // An error here surfaces at the next turn's poll.
                        let _ = self.poll_events(core, Some(Duration::ZERO));
                        polled_at = core.stats.served;
                    }
                    round = self.ready.len();
                }
                if let Some(id) = self.ready.pop_front() {
                    round = round.saturating_sub(1);
                    if let Some(key) = self.key_of(id) {
                        self.conns[key].queued = false;
                        self.serve_pass(core, key, budget);
                    }
                    continue;
                }
            }
            if core.objects.needs_sweep() {
                core.sweep();
                continue;
            }
            if core.outbox.is_empty() {
                break;
            }
        }
        self.flush_queued();
    }

    /// Sends what the connections still queued have buffered, at the end of a
    /// turn: a connection with more to serve keeps its replies from pass to
    /// pass (one `send` for a pipelined batch instead of one per pass).
    fn flush_queued(&mut self) {
        let mut i = 0;
        while i < self.ready.len() {
            if let Some(key) = self.key_of(self.ready[i]) {
                // Larger output was sent (in part) by its pass already.
                let unsent = self.conns[key].unsent();
                if unsent > 0 && unsent < FLUSH_EARLY && !self.conns[key].dead {
                    self.flush(key);
                }
            }
            i += 1;
        }
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections; more stay in the backlog for
    /// the next turn.
    fn accept(&mut self, core: &mut Core) {
        self.accept_pending = false;
        for _ in 0..ACCEPT_BATCH {
            // The id this connection gets if it is let in.
            let next_generation = self.next_generation.wrapping_add(1);
            let id = ConnId::new(self.conns.vacant_key(), next_generation);
            let stream = match self.listener.as_ref() {
                Some(Listener::Tcp(l)) => l.accept().map(|(s, addr)| {
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), Peer::tcp(id, addr))
                }),
                Some(Listener::Unix(l)) => l.accept().map(|(s, addr)| {
                    let peer = Peer::unix(id, &s, &addr);
                    (Stream::Unix(s), peer)
                }),
                None => return,
            };
            let (mut stream, peer) = match stream {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                // Out of descriptors or memory: mio's readiness is edge-triggered, so
                // leave the rest in the kernel's backlog and come back on a timer
                // (neither spinning on the error nor stalling until a new peer).
                Err(_) => {
                    if self.accept_retry.is_none() {
                        self.accept_retry =
                            Some(core.add_timer(core.now + ACCEPT_RETRY, TimerTarget::Accept));
                    }
                    return;
                }
            };
            if self.authenticated >= self.config.max_connections {
                drop(stream);
                self.next_generation = next_generation;
                core.stats.accepted += 1;
                core.stats.refused += 1;
                emit(&mut self.log, LogEvent::Accepted { peer: &peer });
                emit(
                    &mut self.log,
                    LogEvent::Refused {
                        peer: &peer,
                        why: "max_connections",
                    },
                );
                continue;
            }
            if self.preauth_count >= self.config.max_preauth_connections.max(1) {
                self.evict_oldest_preauth(core);
            }
            // Evicting freed a slot: the id is taken afresh.
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if self.generations.len() <= key {
                self.generations.resize(key + 1, 0);
            }
            self.next_generation = self.next_generation.wrapping_add(1);
            self.generations[key] = self.next_generation;
            let id = ConnId::new(key, self.next_generation);
            let peer = Peer { conn: id, ..peer };
            if self
                .poll
                .registry()
                .register(&mut stream, Token(key + FIRST_CONN), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            let handshake = Handshake::with_key(
                Role::Server,
                &self.authkey,
                ChallengeKind::Modern(Digest::Sha256),
                crate::entropy::challenge_bytes(),
            );
            let mut conn = Conn::new(stream, handshake, Session::new(id, IdStyle::Int, true));
            self.spare.fit(&mut conn);
            conn.io = core.stats.io.clone();
            conn.handshake_timer = Some(core.add_timer(
                core.now + self.config.handshake_timeout,
                TimerTarget::Handshake(id),
            ));
            entry.insert(conn);
            core.stats.accepted += 1;
            self.preauth_count += 1;
            self.preauth.push_back(id);
            emit(&mut self.log, LogEvent::Accepted { peer: &peer });
            core.peers.insert(id, peer);
            self.gauges(core);
            self.transmit_handshake(key);
            self.after_io(core, key);
        }
        self.accept_pending = self.listener.is_some();
    }

    /// Closes the connection that has been authenticating longest, making room
    /// for a new one: a peer that holds sockets open without authenticating can
    /// only outpace clients, never lock them out.
    fn evict_oldest_preauth(&mut self, core: &mut Core) {
        while let Some(id) = self.preauth.pop_front() {
            if let Some(key) = self.key_of(id) {
                if matches!(self.conns[key].phase, Phase::Handshake(_)) {
                    core.stats.preauth_dropped += 1;
                    if let Some(peer) = core.peers.get(&id) {
                        emit(
                            &mut self.log,
                            LogEvent::Refused {
                                peer,
                                why: "max_preauth_connections",
                            },
                        );
                    }
                    self.close(core, key);
                    return;
                }
            }
        }
    }

    /// Drops queue entries for connections that have authenticated or closed,
    /// once they outnumber the live ones (so the queue stays proportional to
    /// the connections still authenticating).
    fn prune_preauth(&mut self) {
        if self.preauth.len() > 2 * self.preauth_count + 64 {
            let conns = &self.conns;
            let generations = &self.generations;
            self.preauth.retain(|id| {
                let key = id.index();
                conns.get(key).is_some_and(|c| {
                    generations.get(key) == Some(&id.generation())
                        && matches!(c.phase, Phase::Handshake(_))
                })
            });
        }
    }

    fn fire_timers(&mut self, core: &mut Core) {
        while let Some((timer, target)) = core.pop_due_timer(core.now) {
            self.work += 1;
            match target {
                TimerTarget::Object(id) => {
                    let _ = core.with_object(id, None, None, Recount::IfHolding, |o, cx| {
                        o.on_timer(cx, timer)
                    });
                }
                TimerTarget::Accept => {
                    self.accept_retry = None;
                    self.accept(core);
                }
                TimerTarget::Loans => core.repay_loans(),
                TimerTarget::Processes => core.poll_processes(),
                TimerTarget::Handshake(conn) => {
                    if let Some(key) = self.key_of(conn) {
                        if matches!(self.conns[key].phase, Phase::Handshake(_)) {
                            core.stats.preauth_dropped += 1;
                            if let Some(peer) = core.peers.get(&conn) {
                                emit(
                                    &mut self.log,
                                    LogEvent::Refused {
                                        peer,
                                        why: "handshake_timeout",
                                    },
                                );
                            }
                            self.conns[key].dead = true;
                            self.after_io(core, key);
                        }
                    }
                }
            }
        }
    }

    fn transmit_handshake(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if let Phase::Handshake(hs) = &mut conn.phase {
            while let Some(msg) = hs.poll_transmit() {
                frame::write_frame(&msg, &mut conn.output);
            }
        }
    }

    fn deliver(&mut self, core: &mut Core, c: Completion) {
        self.work += 1;
        let Some(key) = self.key_of(c.conn) else {
            return;
        };
        let conn = &mut self.conns[key];
        if c.handle.is_some() && conn.waiting != c.handle {
            // Not the call it waits on (a handle taken where no call waited):
            // a reply it did not ask for would put it out of step.
            return;
        }
        let reply = match (c.proxy, c.result) {
            (Some(typeid), Ok(v)) => {
                dispatch::proxy_from_value(core, &mut conn.session, &typeid, v)
            }
            (_, result) => result.into(),
        };
        if matches!(reply, Reply::Error(_) | Reply::Traceback(_)) {
            core.stats.errors += 1;
        }
        conn.waiting = None;
        encode_reply(conn, &reply, &self.pickle_address, &core.registry);
        // Send the answer now (it is not held back by the turn's budget), then
        // let the connection's buffered requests take their turn.
        self.after_io(core, key);
        if self.conns.contains(key) {
            self.enqueue(key);
        }
    }

    /// One pass of the ready queue for a connection: reads what its socket has
    /// (up to a bound), serves up to [`PASS_BATCH`] frames within `budget`,
    /// flushes, and puts it back at the end of the queue if it has more to do.
    /// A peer that has finished sending is closed once its requests are answered.
    fn serve_pass(&mut self, core: &mut Core, key: usize, budget: &mut Budget) {
        let max_output = self.config.max_output;
        let mut batch = PASS_BATCH;
        let stop = loop {
            let conn = &mut self.conns[key];
            if conn.unread && !conn.dead {
                let paused = conn.waiting.is_some() || conn.unsent() > max_output;
                let limit = if paused {
                    PAUSED_INPUT
                } else {
                    conn.need.max(PAUSED_INPUT)
                };
                conn.read(limit);
            }
            let stop = self.serve(core, key, budget, &mut batch);
            let conn = &self.conns[key];
            if stop != Stop::NeedInput || !conn.unread || conn.dead {
                break stop;
            }
        };
        let conn = &mut self.conns[key];
        if conn.eof && !conn.dead && !conn.close_after_flush {
            if conn.waiting.is_some() {
                // Gone while a call waits (a blocking `get`, say): a peer that
                // closed cannot be told from one that only shut its write half,
                // and keeping the wait would let vanished clients pin waiters.
                conn.dead = true;
            } else if stop == Stop::NeedInput {
                // Everything it sent has been answered: flush, then close.
                conn.close_after_flush = true;
            }
        }
        let more = !conn.dead
            && !conn.close_after_flush
            && match stop {
                Stop::Budget => true,
                Stop::NeedInput => conn.unread,
                Stop::Paused => false,
            };
        if more {
            // More to serve: its replies wait for its last pass (or the end
            // of the turn), unless they pile up.
            if conn.unsent() >= FLUSH_EARLY {
                self.flush(key);
            }
            self.enqueue(key);
        } else {
            self.after_io(core, key);
        }
    }

    /// Decodes and serves buffered frames until one must wait or `batch` (and
    /// `budget`) is spent; each frame served costs one of each.
    fn serve(
        &mut self,
        core: &mut Core,
        key: usize,
        budget: &mut Budget,
        batch: &mut usize,
    ) -> Stop {
        let max_frame = self.config.max_frame;
        let max_output = self.config.max_output;
        let max_connections = self.config.max_connections;
        let address = &self.pickle_address;
        let conn = &mut self.conns[key];
        loop {
            if conn.dead
                || conn.waiting.is_some()
                || conn.close_after_flush
                || conn.unsent() > max_output
            {
                return Stop::Paused;
            }

            if skip_oversized(conn, address, &core.registry) {
                return Stop::NeedInput;
            }
            let limit = match conn.phase {
                Phase::Handshake(_) => MAX_HANDSHAKE_MESSAGE as u64,
                Phase::Serving(_) => max_frame,
            };
            let header = match frame::decode_header(conn.input(), limit) {
                Ok(Some(h)) if conn.input().len() >= h.total_len() => h,
                Ok(Some(h)) => {
                    conn.need = h.total_len();
                    return Stop::NeedInput;
                }
                Ok(None) => return Stop::NeedInput,
                Err(e) => {
                    // Answer a bad first frame in the serializer the client speaks,
                    // if its first payload byte has arrived.
                    let input = conn.input();
                    let at = if input.get(..4) == Some(&[0xff; 4]) {
                        12
                    } else {
                        4
                    };
                    let first = input.get(at).copied();
                    if let (Phase::Serving(_), Some(b)) = (&conn.phase, first) {
                        conn.serializer_for(b);
                    }
                    // A request over the limit, but not absurdly so: drop its
                    // bytes as they come and answer where it ends.
                    if let (Phase::Serving(_), frame::FrameError::TooLarge { len, max }) =
                        (&conn.phase, &e)
                    {
                        if *len <= max.saturating_mul(OVERSIZED_SKIP_FACTOR) {
                            protocol_error(&mut self.log, core, conn.session.id, &e.to_string());
                            conn.consume(at);
                            conn.skip = Some((
                                *len,
                                format!(
                                    "libmgr: a request frame of {len} bytes exceeds this \
                                     server's limit of {max} bytes (max_frame; raise it with \
                                     mgrd --max-frame BYTES, ServerConfig::max_frame or \
                                     mgr_server_options.max_frame)"
                                ),
                            ));
                            continue;
                        }
                    }
                    let why = format!("bad frame: {e}");
                    protocol_error(&mut self.log, core, conn.session.id, &why);
                    fatal(conn, &why, address, &core.registry);
                    return Stop::Paused;
                }
            };
            if *batch == 0 || budget.exhausted() {
                return Stop::Budget;
            }
            conn.need = 0;
            *batch -= 1;
            budget.spend();
            core.stats.served += 1;
            let payload =
                &conn.input[conn.start + header.header_len..conn.start + header.total_len()];
            match &mut conn.phase {
                Phase::Handshake(hs) => {
                    let result = hs.handle_message(payload);
                    while let Some(msg) = hs.poll_transmit() {
                        frame::write_frame(&msg, &mut conn.output);
                    }
                    match (result, hs.state()) {
                        (Err(_), _) | (_, State::Failed(_)) => {
                            conn.close_after_flush = true;
                            core.stats.auth_failures += 1;
                            if let Some(peer) = core.peers.get(&conn.session.id) {
                                emit(&mut self.log, LogEvent::AuthFailed { peer });
                            }
                        }
                        (Ok(()), State::Done) => {
                            conn.phase = Phase::Serving(None);
                            if let Some(t) = conn.handshake_timer.take() {
                                core.cancel_timer(t);
                            }
                            self.preauth_count -= 1;
                            core.stats.preauth = self.preauth_count as u64;
                            if self.authenticated >= max_connections {
                                // Full: others authenticated meanwhile.
                                conn.close_after_flush = true;
                                core.stats.refused += 1;
                                if let Some(peer) = core.peers.get(&conn.session.id) {
                                    emit(
                                        &mut self.log,
                                        LogEvent::Refused {
                                            peer,
                                            why: "max_connections",
                                        },
                                    );
                                }
                            } else {
                                self.authenticated += 1;
                                conn.counted = true;
                            }
                        }
                        (Ok(()), State::InProgress) => {}
                    }
                }
                Phase::Serving(_) => {
                    let first = payload.first().copied().unwrap_or(0);
                    let ser = conn.serializer_for(first);
                    let payload = &conn.input
                        [conn.start + header.header_len..conn.start + header.total_len()];
                    // A request is served in place: its method name borrows the
                    // input buffer (a pickled one decoded by the general machine
                    // is kept in `pickled`).
                    let mut pickled = String::new();
                    let decoded = match ser {
                        Serializer::Native => {
                            native::decode_request_ref_with(payload, core.limits.globals)
                        }
                        Serializer::Pickle => pickle::decode_request_ref_with(
                            payload,
                            address,
                            core.limits.globals,
                            &mut pickled,
                        ),
                    };
                    match decoded {
                        Ok(req) => {
                            let done = dispatch::dispatch(core, &mut conn.session, req);
                            conn.consume(header.total_len());
                            match done {
                                Dispatched::Reply(reply) => {
                                    if matches!(reply, Reply::Error(_) | Reply::Traceback(_)) {
                                        core.stats.errors += 1;
                                    }
                                    encode_reply(conn, &reply, address, &core.registry)
                                }
                                Dispatched::Deferred(h) => conn.waiting = Some(h),
                                Dispatched::Created { ident, spec } => {
                                    match (&conn.phase, &ident) {
                                        (
                                            Phase::Serving(Some(Serializer::Pickle)),
                                            Value::Str(hex),
                                        ) => {
                                            let at = begin_frame(&mut conn.output);
                                            pickle::encode_created(
                                                hex,
                                                spec.exposed_pickle(),
                                                &mut conn.output,
                                            );
                                            finish_frame(&mut conn.output, at);
                                        }
                                        _ => encode_reply(
                                            conn,
                                            &dispatch::created_reply(ident, &spec),
                                            address,
                                            &core.registry,
                                        ),
                                    }
                                }
                            }
                            if !conn.session.persistent {
                                conn.close_after_flush = true;
                            }
                            continue;
                        }
                        Err(e) if ser == Serializer::Pickle => {
                            // A pickle we refuse (a forbidden global, a decode
                            // error, the decode budget spent): the frame was read
                            // whole and decoding it cost a bounded amount, so, as
                            // CPython's server does, answer why and keep serving.
                            // Nothing in it ran.
                            let why = format!("rejected request: {e}");
                            protocol_error(&mut self.log, core, conn.session.id, &why);
                            encode_reply(
                                conn,
                                &Reply::Traceback(format!(
                                    "{TRACEBACK_HEADER}\n  (libmgr server)\n\
                                     _pickle.UnpicklingError: libmgr: {why}\n"
                                )),
                                address,
                                &core.registry,
                            );
                            if !conn.session.persistent {
                                conn.close_after_flush = true;
                            }
                        }
                        Err(e) => {
                            let why = format!("malformed request: {e}");
                            protocol_error(&mut self.log, core, conn.session.id, &why);
                            encode_reply(
                                conn,
                                &Reply::Traceback(format!("libmgr: {why}")),
                                address,
                                &core.registry,
                            )
                        }
                    }
                }
            }
            conn.consume(header.total_len());
        }
    }

    /// Flushes, and closes the connection when it is finished or dead.
    fn after_io(&mut self, core: &mut Core, key: usize) {
        if self.conns[key].unsent() > 0 && !self.conns[key].dead {
            self.flush(key);
        }
        let conn = &self.conns[key];
        if conn.dead || (conn.close_after_flush && conn.unsent() == 0) {
            self.close(core, key);
        }
    }

    /// Writes what the socket takes, up to a bound per call. A connection whose
    /// serving was paused by its unread output resumes (it may hold buffered
    /// requests that no new input event would ever bring back) once the output
    /// drops to the limit; one that stopped at the bound is queued to go on.
    ///
    /// WRITABLE is registered only while output waits on a full socket (from
    /// the flush that found it full until the output drains), so a peer that
    /// reads its replies does not wake the server for nothing.
    fn flush(&mut self, key: usize) {
        let max_output = self.config.max_output;
        let conn = &mut self.conns[key];
        let paused = conn.unsent() > max_output;
        let flushed = conn.flush();
        let want = conn.unsent() > 0 && (flushed == Flushed::Blocked || conn.write_interest);
        if want != conn.write_interest && !conn.dead {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(key + FIRST_CONN);
            match self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, interest)
            {
                Ok(()) => conn.write_interest = want,
                Err(_) => conn.dead = true,
            }
        }
        if (flushed == Flushed::Capped || paused && conn.unsent() <= max_output) && !conn.dead {
            self.enqueue(key);
        }
    }

    /// Closes a connection: cancels its deferred call, tells watching objects,
    /// releases the references it owns.
    pub(crate) fn close(&mut self, core: &mut Core, key: usize) {
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if matches!(conn.phase, Phase::Handshake(_)) {
            self.preauth_count -= 1;
            self.prune_preauth();
        } else if conn.counted {
            self.authenticated -= 1;
        }
        let id = conn.session.id;
        if let Some(t) = conn.handshake_timer.take() {
            core.cancel_timer(t);
        }
        if let Some(h) = conn.waiting.take() {
            core.cancel(h);
        }
        for object in core.take_watchers(id) {
            let _ = core.with_object(object, None, None, Recount::IfHolding, |o, cx| {
                o.on_disconnect(cx, id)
            });
        }
        conn.session.release_all(core);
        self.spare.keep(&mut conn);
        if let Some(peer) = core.peers.remove(&id) {
            emit(&mut self.log, LogEvent::Closed { peer: &peer });
        }
        self.gauges(core);
    }

    /// Sets up the exit watch of the client processes that took their first
    /// reference (or watch) this turn: a pidfd in the `Poll`, or polling where
    /// there is none. A process gone already is released now.
    fn watch_processes(&mut self, core: &mut Core) {
        for pid in mem::take(&mut core.procs.unwatched) {
            let Some(p) = core.procs.by_pid.get_mut(&pid) else {
                continue;
            };
            match procs::pidfd_open(pid) {
                Ok(fd) => {
                    let token = Token(PROCESS_TOKENS + pid as usize);
                    let raw = fd.as_raw_fd();
                    let source = &mut mio::unix::SourceFd(&raw);
                    if self
                        .poll
                        .registry()
                        .register(source, token, Interest::READABLE)
                        .is_ok()
                    {
                        p.watch = procs::Watch::Pidfd(fd);
                    } else {
                        core.procs.poll_instead(pid);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => core.process_exited(pid),
                Err(_) => core.procs.poll_instead(pid),
            }
        }
        core.arm_process_poll();
        core.sweep();
    }

    /// Brings the connection gauges in the counters up to date.
    fn gauges(&self, core: &mut Core) {
        core.stats.open = self.conns.len() as u64;
        core.stats.preauth = self.preauth_count as u64;
    }

    /// Stops accepting, delivers the answers already given (queued by other
    /// threads or waiting in the outbox), writes what can be written without
    /// waiting long, closes all.
    pub(crate) fn shut_down(&mut self, core: &mut Core) {
        if let Some(mut l) = self.listener.take() {
            let _ = match &mut l {
                Listener::Tcp(l) => self.poll.registry().deregister(l),
                Listener::Unix(l) => self.poll.registry().deregister(l),
            };
            emit(&mut self.log, LogEvent::Shutdown);
        }
        // Answers given before the shutdown reach their callers: take the
        // queued ones in and write every delivered one into its connection's
        // output (no request is served: the budget is empty).
        core.drain_commands();
        self.settle(core, &mut Budget::none());
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline && self.conns.iter().any(|(_, c)| c.unsent() > 0 && !c.dead)
        {
            for (_, c) in self.conns.iter_mut() {
                while c.flush() == Flushed::Capped {}
            }
            let _ = self
                .poll
                .poll(&mut self.events, Some(Duration::from_millis(10)));
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(core, key);
        }
        core.repay_all_loans();
        core.sweep();
        core.segments.unlink_all();
    }

    /// Sets the listen backlog of the live listener (`None`: the system's
    /// maximum).
    pub(crate) fn set_backlog(&mut self, backlog: Option<u32>) -> io::Result<()> {
        self.config.listen_backlog = backlog;
        match &self.listener {
            Some(l) => listen(l, backlog),
            None => Ok(()),
        }
    }

    /// Whether the listener is gone (after shutdown).
    pub(crate) fn is_closed(&self) -> bool {
        self.listener.is_none()
    }

    pub(crate) fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Connections still authenticating.
    pub(crate) fn preauth_count(&self) -> usize {
        self.preauth_count
    }

    /// Memory held by every connection's input and output buffers.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.conns.iter().map(|(_, c)| c.buffered()).sum()
    }

    #[allow(dead_code)]
    pub(crate) fn conn_id_of(&self, key: usize) -> ConnId {
        self.conn_id(key)
    }
}

/// Listens on `listener` with `backlog` (`None`: the system's maximum). mio
/// listens with a backlog of 128 (TCP); listening again on a listening socket
/// sets the new backlog (Linux clamps it to `somaxconn`).
fn listen(listener: &Listener, backlog: Option<u32>) -> io::Result<()> {
    let backlog = backlog.unwrap_or_else(system_backlog).min(i32::MAX as u32) as i32;
    let fd = match listener {
        Listener::Tcp(l) => l.as_raw_fd(),
        Listener::Unix(l) => l.as_raw_fd(),
    };
    // SAFETY: `fd` is the listening socket owned by `listener`.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The system's largest listen backlog (`net.core.somaxconn`), or
/// [`FALLBACK_BACKLOG`] when it cannot be read.
fn system_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &u32| n > 0)
        .unwrap_or(FALLBACK_BACKLOG)
}

/// Writes one reply frame in the connection's serializer; `address` (CPython's
/// form of the server address) and the registered types' exposed methods go
/// into pickled tokens and proxies.
fn encode_reply(conn: &mut Conn, reply: &Reply, address: &Value, registry: &Registry) {
    let at = begin_frame(&mut conn.output);
    match conn.phase {
        Phase::Serving(Some(Serializer::Pickle)) => {
            let exposed = |typeid: &str| registry.exposed_of(typeid);
            let origin = pickle::Origin {
                address,
                exposed: &exposed,
            };
            pickle::encode_reply(reply, &origin, &mut conn.output)
        }
        _ => native::encode_reply(reply, &mut conn.output),
    }
    finish_frame(&mut conn.output, at);
}

/// Counts a protocol error and logs it, naming the peer.
fn protocol_error(log: &mut Log, core: &mut Core, conn: ConnId, why: &str) {
    core.stats.protocol_errors += 1;
    if let Some(peer) = core.peers.get(&conn) {
        emit(log, LogEvent::ProtocolError { peer, message: why });
    }
}

/// An oversized request frame up to this many times `max_frame` is read and
/// dropped, then answered with an error naming the limit, and the connection
/// keeps serving; a larger one is answered at once and the connection closed.
const OVERSIZED_SKIP_FACTOR: u64 = 16;

/// Drops the buffered bytes of an oversized frame being skipped; once all of
/// it is read, queues its error reply. Whether bytes are still to come.
fn skip_oversized(conn: &mut Conn, address: &Value, registry: &Registry) -> bool {
    let have = conn.input().len();
    let Some((left, _)) = &mut conn.skip else {
        return false;
    };
    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(have);
    *left -= n as u64;
    let done = *left == 0;
    // The reply speaks the client's serializer, known from the payload's
    // first byte.
    if let (Phase::Serving(None), Some(&b)) = (&conn.phase, conn.input().first()) {
        conn.serializer_for(b);
    }
    conn.consume(n);
    if !done {
        return true;
    }
    let (_, why) = conn.skip.take().expect("skipping");
    encode_reply(conn, &Reply::Traceback(why), address, registry);
    false
}

/// A frame we cannot get past: say why (in the connection's serializer, once it
/// has authenticated) and close.
fn fatal(conn: &mut Conn, why: &str, address: &Value, registry: &Registry) {
    if matches!(conn.phase, Phase::Serving(_)) {
        encode_reply(
            conn,
            &Reply::Traceback(format!("libmgr: {why}; closing connection")),
            address,
            registry,
        );
    }
    conn.close_after_flush = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backlog a listening TCP socket was given (Linux reports it in
    /// `tcpi_sacked` for a socket in LISTEN state).
    fn backlog_of(reactor: &Reactor) -> u32 {
        let Some(Listener::Tcp(l)) = &reactor.listener else {
            panic!("a TCP listener")
        };
        // SAFETY: a zeroed tcp_info is valid; getsockopt fills at most `len` bytes.
        unsafe {
            let mut info: libc::tcp_info = mem::zeroed();
            let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            info.tcpi_sacked
        }
    }

    fn config(backlog: Option<u32>) -> ServerConfig {
        let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap(), b"");
        c.listen_backlog = backlog;
        c
    }

    #[test]
    fn the_listen_backlog_is_configurable_and_defaults_to_the_system_maximum() {
        let bound = |c: &ServerConfig| super::super::listen::bind(&c.address).unwrap();
        let c = config(Some(77));
        let r = Reactor::bind(c.clone(), bound(&c), Default::default()).unwrap();
        assert_eq!(backlog_of(&r), 77);
        let c = config(None);
        let mut r = Reactor::bind(c.clone(), bound(&c), Default::default()).unwrap();
        assert_eq!(backlog_of(&r), system_backlog());
        assert!(system_backlog() > 128, "more than mio's own 128");
        // Changed while listening (what `Server::set_listen_backlog` does).
        r.set_backlog(Some(300)).unwrap();
        assert_eq!(backlog_of(&r), 300);
    }

    #[test]
    fn an_adopted_listener_keeps_its_backlog_unless_one_is_configured() {
        let adopted = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            // SAFETY: `l` is a listening socket; listen again sets its backlog.
            assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 50) }, 0);
            super::super::listen::adopt(l.into()).unwrap()
        };
        let r = Reactor::bind(config(None), adopted(), Default::default()).unwrap();
        assert_eq!(backlog_of(&r), 50);
        let r = Reactor::bind(config(Some(77)), adopted(), Default::default()).unwrap();
        assert_eq!(backlog_of(&r), 77);
    }

    #[test]
    fn a_budget_charges_requests_and_time() {
        let now = Instant::now();
        let mut c = config(None);
        c.turn_max_requests = 2;
        c.turn_max_time = Duration::from_secs(3600);
        let mut b = Budget::new(&c, now);
        b.spend();
        assert!(!b.exhausted());
        b.spend();
        assert!(b.exhausted());
        c.turn_max_requests = 0;
        assert!(!Budget::new(&c, now).exhausted(), "at least one request");
        c.turn_max_requests = 100;
        c.turn_max_time = Duration::ZERO;
        let mut b = Budget::new(&c, now);
        b.spend();
        assert!(b.exhausted(), "the time is up after the first request");
        assert!(Budget::none().exhausted());
    }
}
