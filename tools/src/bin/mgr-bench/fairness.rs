//! Scenario `fairness`: one light synchronous client's latency alone, while 16
//! connections pipeline 64 calls deep, and while 4 connections write calls
//! without ever reading the replies — against an EMBEDDED server (a `Server`
//! on a thread of this process, driven the way a host drives it: poll its fd
//! with its timeout, then call `process()`), so every `process()` call can be
//! timed. It runs twice: with the default turn budget, and with the budget
//! lifted (limits too large to matter), and prints the ratios the budget is
//! for: the light client's p99 under flood against alone, the longest turn, and
//! the flood's throughput with the budget against without. Both servers run
//! side by side and their phases alternate, [`ROUNDS`] times each.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mgr::{Address, Manager, Server, ServerConfig, Value};

use crate::hist::Histogram;
use crate::scenarios::CallKind;
use crate::sock::Stream;
use crate::{evloop, wire, Opts};

/// Flooding connections and their pipelining depth.
const FLOOD_CONNS: usize = 16;
const FLOOD_DEPTH: usize = 64;
/// Connections that write without reading.
const NONREADERS: usize = 4;

/// The phases measured on each server; the server records its turns per phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle = 0,
    Alone = 1,
    Flood = 2,
    Nonreaders = 3,
}
const PHASES: usize = 4;

/// The durations of one phase's `process()` calls.
#[derive(Default, Clone)]
struct Turns {
    /// Wall time of each call.
    hist: Histogram,
    /// The server thread's CPU time in each call (wall time minus preemption).
    cpu: Histogram,
    count: u64,
    /// Calls that served no request.
    empty: u64,
    /// Requests served.
    served: u64,
    /// CPU time in `process()`, in all.
    cpu_total: u64,
    /// The requests served by the call that took the most CPU time.
    served_in_longest: u64,
}

/// This thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A server on a thread of its own, driven as a host drives one.
struct Embedded {
    address: Address,
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Turns>>,
}

impl Embedded {
    fn start(authkey: &[u8], budget: bool) -> Result<Embedded, String> {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("valid"), authkey);
        if !budget {
            config.turn_max_requests = usize::MAX;
            config.turn_max_time = Duration::from_secs(3600);
        }
        let phase = Arc::new(AtomicUsize::new(Phase::Idle as usize));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (p, s) = (phase.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut turns = vec![Turns::default(); PHASES];
            let mut server = match Server::bind(config) {
                Ok(server) => server,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return turns;
                }
            };
            server.register_builtins();
            let _ = tx.send(Ok(server.address().clone()));
            while !s.load(Ordering::Relaxed) {
                // At most 10 ms at a time, to notice `stop`.
                let wait = server
                    .timeout()
                    .map_or(10, |d| d.as_millis().min(10) as i32);
                let mut fd = libc::pollfd {
                    fd: server.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut fd, 1, wait) };
                let served = server.requests_served();
                let cpu = thread_cpu_ns();
                let t = Instant::now();
                if server.process().is_err() {
                    break;
                }
                let ns = t.elapsed().as_nanos() as u64;
                let cpu = thread_cpu_ns() - cpu;
                let served = server.requests_served() - served;
                let t = &mut turns[p.load(Ordering::Relaxed)];
                t.hist.record(ns);
                if cpu > t.cpu.quantile(1.0) {
                    t.served_in_longest = served;
                }
                t.cpu.record(cpu);
                t.count += 1;
                t.served += served;
                t.cpu_total += cpu;
                t.empty += u64::from(served == 0);
            }
            turns
        });
        let address = rx
            .recv()
            .map_err(|_| "the embedded server's thread died".to_string())??;
        Ok(Embedded {
            address,
            phase,
            stop,
            thread,
        })
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as usize, Ordering::Relaxed);
    }

    fn stop(self) -> Vec<Turns> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Synchronous `__getitem__` calls on a dict of its own for `seconds`, each
/// timed.
fn light_client(address: &Address, authkey: &[u8], seconds: f64) -> Result<Histogram, String> {
    let m = Manager::connect_to(address, authkey).map_err(|e| e.to_string())?;
    let d = m.create("dict", vec![]).map_err(|e| e.to_string())?;
    d.call("__setitem__", vec![Value::Str("k".into()), Value::Int(1)])
        .map_err(|e| e.to_string())?;
    let mut hist = Histogram::default();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        let t = Instant::now();
        d.call("__getitem__", vec![Value::Str("k".into())])
            .map_err(|e| e.to_string())?;
        hist.record(t.elapsed().as_nanos() as u64);
    }
    Ok(hist)
}

/// Writes calls on every connection (never reading a reply) until `seconds`
/// pass, as fast as the sockets take them. Returns the calls written.
fn write_without_reading(opened: Vec<wire::Opened>, seconds: f64) -> Result<u64, String> {
    let mut socks = Vec::new();
    for o in opened {
        let mut batch = Vec::new();
        for i in 0..256 {
            batch.extend_from_slice(o.calls.frame(i));
        }
        match &o.stream {
            Stream::Tcp(s) => s.set_nonblocking(true),
            Stream::Unix(s) => s.set_nonblocking(true),
        }
        .map_err(|e| e.to_string())?;
        socks.push((o.stream, batch, 0usize));
    }
    let frames_per_batch = 256u64;
    let mut calls = 0u64;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        let mut wrote = false;
        for (s, batch, at) in socks.iter_mut() {
            match s.write(&batch[*at..]) {
                Ok(n) => {
                    wrote = true;
                    *at += n;
                    if *at == batch.len() {
                        *at = 0;
                        calls += frames_per_batch;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("non-reader write: {e}")),
            }
        }
        if !wrote {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(calls)
}

/// What one server (with or without the budget) measured, over every round.
#[derive(Default)]
struct Run {
    alone: Histogram,
    flood_light: Histogram,
    nonreaders_light: Histogram,
    flood_calls: u64,
    flood_secs: f64,
    nonreader_calls: u64,
    turns: Vec<Turns>,
}

impl Run {
    fn flood_calls_per_s(&self) -> f64 {
        self.flood_calls as f64 / self.flood_secs.max(1e-9)
    }

    /// Flood requests served per second of the server's CPU time in
    /// `process()`: its efficiency, which the machine's other load disturbs
    /// less than calls per wall second.
    fn flood_calls_per_cpu_s(&self) -> f64 {
        let t = &self.turns[Phase::Flood as usize];
        t.served as f64 / (t.cpu_total as f64 / 1e9).max(1e-9)
    }
}

/// Each server's phases run this many times, the two servers alternating, so
/// that a change in the machine's background load falls on both alike.
const ROUNDS: usize = 3;

/// One round of the three phases on `server`, added to `run`.
fn phases(o: &Opts, server: &Embedded, run: &mut Run) -> Result<(), String> {
    let address = server.address.clone();
    let secs = o.seconds;

    server.set_phase(Phase::Alone);
    run.alone.merge(&light_client(&address, &o.authkey, secs)?);
    server.set_phase(Phase::Idle);

    let opened = (0..FLOOD_CONNS)
        .map(|_| wire::open(&address, true, &o.authkey, CallKind::Dict, o.size))
        .collect::<Result<Vec<_>, _>>()?;
    server.set_phase(Phase::Flood);
    let lim = evloop::Limits {
        depth: FLOOD_DEPTH,
        calls: u64::MAX,
        seconds: secs,
    };
    let flood = std::thread::spawn(move || evloop::run(opened, lim, None));
    let light = light_client(&address, &o.authkey, secs)?;
    let flood = flood
        .join()
        .map_err(|_| "the flood thread panicked".to_string())??;
    server.set_phase(Phase::Idle);
    run.flood_light.merge(&light);
    run.flood_calls += flood.calls;
    run.flood_secs += flood.secs;

    let opened = (0..NONREADERS)
        .map(|_| wire::open(&address, true, &o.authkey, CallKind::Dict, o.size))
        .collect::<Result<Vec<_>, _>>()?;
    server.set_phase(Phase::Nonreaders);
    let writers = std::thread::spawn(move || write_without_reading(opened, secs));
    let light = light_client(&address, &o.authkey, secs)?;
    run.nonreader_calls += writers
        .join()
        .map_err(|_| "the writers' thread panicked".to_string())??;
    server.set_phase(Phase::Idle);
    run.nonreaders_light.merge(&light);
    Ok(())
}

/// Both servers, [`ROUNDS`] rounds each, alternating.
fn run_both(o: &Opts) -> Result<(Run, Run), String> {
    let servers = [
        Embedded::start(&o.authkey, true)?,
        Embedded::start(&o.authkey, false)?,
    ];
    let mut runs = [Run::default(), Run::default()];
    for round in 0..ROUNDS {
        for (server, run) in servers.iter().zip(runs.iter_mut()) {
            eprintln!(
                "mgr-bench: fairness round {}/{ROUNDS}, {} budget",
                round + 1,
                if std::ptr::eq(server, &servers[0]) {
                    "with the"
                } else {
                    "without a"
                }
            );
            phases(o, server, run)?;
        }
    }
    let [with, without] = servers;
    let [mut a, mut b] = runs;
    a.turns = with.stop();
    b.turns = without.stop();
    Ok((a, b))
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Turns {
    fn text(&self) -> String {
        format!(
            "{} turns ({} empty, {:.0} requests per busy turn), wall p99/max {:.1}/{:.1} us, \
             cpu p99/max {:.1}/{:.1} us (that turn served {} requests)",
            self.count,
            self.empty,
            self.served as f64 / (self.count - self.empty).max(1) as f64,
            us(self.hist.quantile(0.99)),
            us(self.hist.quantile(1.0)),
            us(self.cpu.quantile(0.99)),
            us(self.cpu.quantile(1.0)),
            self.served_in_longest,
        )
    }

    fn json(&self) -> String {
        format!(
            "{{\"count\":{},\"empty\":{},\"served\":{},\"wall_p99_us\":{:.1},\
             \"wall_max_us\":{:.1},\"cpu_p99_us\":{:.1},\"cpu_max_us\":{:.1}}}",
            self.count,
            self.empty,
            self.served,
            us(self.hist.quantile(0.99)),
            us(self.hist.quantile(1.0)),
            us(self.cpu.quantile(0.99)),
            us(self.cpu.quantile(1.0)),
        )
    }
}

/// Runs the scenario with and without the budget; returns the JSON line (the
/// readable summary goes to stderr).
pub(crate) fn scenario_fairness(o: &Opts) -> Result<String, String> {
    let (with, without) = run_both(o)?;
    let flood = Phase::Flood as usize;
    let nonreaders = Phase::Nonreaders as usize;
    let longest = |r: &Run, h: fn(&Turns) -> &Histogram| {
        h(&r.turns[flood])
            .quantile(1.0)
            .max(h(&r.turns[nonreaders]).quantile(1.0))
    };
    fn wall(t: &Turns) -> &Histogram {
        &t.hist
    }
    fn cpu(t: &Turns) -> &Histogram {
        &t.cpu
    }
    let p99 = |h: &Histogram| h.quantile(0.99);
    let ratio_flood = p99(&with.flood_light) as f64 / p99(&with.alone).max(1) as f64;
    let ratio_nonreaders = p99(&with.nonreaders_light) as f64 / p99(&with.alone).max(1) as f64;
    let throughput = with.flood_calls_per_s() / without.flood_calls_per_s().max(1e-9);
    let efficiency = with.flood_calls_per_cpu_s() / without.flood_calls_per_cpu_s().max(1e-9);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for (name, r) in [("budget", &with), ("no budget", &without)] {
        eprintln!(
            "mgr-bench: fairness [{name}]: light client p50/p99 alone {:.1}/{:.1} us, \
             under the {FLOOD_CONNS}x{FLOOD_DEPTH} flood {:.1}/{:.1} us, \
             with {NONREADERS} non-readers {:.1}/{:.1} us; flood {:.0} calls/s \
             ({:.0} per server CPU second); \
             non-readers wrote {} calls\n  turns under the flood: {}\n  turns with \
             non-readers: {}",
            us(r.alone.quantile(0.5)),
            us(p99(&r.alone)),
            us(r.flood_light.quantile(0.5)),
            us(p99(&r.flood_light)),
            us(r.nonreaders_light.quantile(0.5)),
            us(p99(&r.nonreaders_light)),
            r.flood_calls_per_s(),
            r.flood_calls_per_cpu_s(),
            r.nonreader_calls,
            r.turns[flood].text(),
            r.turns[nonreaders].text(),
        );
    }
    eprintln!(
        "mgr-bench: fairness targets: light p99 under flood / alone = {ratio_flood:.2} (<= 5: {}), \
         with non-readers / alone = {ratio_nonreaders:.2} (<= 5: {}); longest turn with the \
         budget {:.1} us wall, {:.1} us cpu (<= 2000: {} wall, {} cpu), without {:.1} us wall; \
         flood throughput with / without budget = {throughput:.2} (>= 0.9: {}), per server \
         CPU second {efficiency:.2}",
        verdict(ratio_flood <= 5.0),
        verdict(ratio_nonreaders <= 5.0),
        us(longest(&with, wall)),
        us(longest(&with, cpu)),
        verdict(longest(&with, wall) <= 2_000_000),
        verdict(longest(&with, cpu) <= 2_000_000),
        us(longest(&without, wall)),
        verdict(throughput >= 0.9),
    );
    let side = |r: &Run| {
        format!(
            "{{\"light_alone_p50_us\":{:.1},\"light_alone_p99_us\":{:.1},\
             \"light_flood_p50_us\":{:.1},\"light_flood_p99_us\":{:.1},\
             \"light_nonreaders_p50_us\":{:.1},\"light_nonreaders_p99_us\":{:.1},\
             \"flood_calls_per_s\":{:.0},\"flood_calls_per_cpu_s\":{:.0},\"nonreader_calls\":{},\
             \"turns_flood\":{},\"turns_nonreaders\":{}}}",
            us(r.alone.quantile(0.5)),
            us(p99(&r.alone)),
            us(r.flood_light.quantile(0.5)),
            us(p99(&r.flood_light)),
            us(r.nonreaders_light.quantile(0.5)),
            us(p99(&r.nonreaders_light)),
            r.flood_calls_per_s(),
            r.flood_calls_per_cpu_s(),
            r.nonreader_calls,
            r.turns[flood].json(),
            r.turns[nonreaders].json(),
        )
    };
    Ok(format!(
        "{{\"scenario\":\"fairness\",\"seconds\":{},\"flood_conns\":{FLOOD_CONNS},\
         \"flood_depth\":{FLOOD_DEPTH},\"nonreaders\":{NONREADERS},\"budget\":{},\
         \"no_budget\":{},\"light_p99_flood_over_alone\":{ratio_flood:.2},\
         \"light_p99_nonreaders_over_alone\":{ratio_nonreaders:.2},\
         \"longest_turn_us\":{:.1},\"longest_turn_cpu_us\":{:.1},\
         \"longest_turn_no_budget_us\":{:.1},\
         \"flood_throughput_budget_over_none\":{throughput:.3},\
         \"flood_cpu_efficiency_budget_over_none\":{efficiency:.3}}}",
        o.seconds,
        side(&with),
        side(&without),
        us(longest(&with, wall)),
        us(longest(&with, cpu)),
        us(longest(&without, wall)),
    ))
}
