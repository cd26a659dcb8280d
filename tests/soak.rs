//! Soak: many connections doing mixed creates, calls (some blocking, with
//! timers) and releases against a real `mgrd`, then checks that the number of
//! objects is back at its baseline and that the server's RSS stayed flat after
//! warm-up.
//!
//! `soak_short` (a few seconds) runs in the ordinary suite; `soak_long` is
//! ignored and run by `scripts/soak.sh [SECONDS]`. With `MGR_SOAK_ADDR` set, the
//! soak drives that already running server instead of spawning one (the script
//! does so to run mgrd under valgrind) and skips the RSS check.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mgr::client::{SpawnOptions, SpawnedServer};
use mgr::{Manager, Proxy, Value};

const KEY: &[u8] = b"soak-key";

/// A small deterministic generator (xorshift), one per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The server's resident set in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// One client's mixed workload until `until`; returns the calls it made.
fn client(address: &str, seed: u64, until: Instant, shared: &[mgr::Token]) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut m = Manager::connect(address, KEY).unwrap();
    let mut held: Vec<Proxy> = Vec::new();
    let mut calls = 0u64;
    while Instant::now() < until {
        calls += 1;
        match rng.below(100) {
            // Steady state: at most 32 objects per client.
            0..=14 if held.len() < 32 => {
                let typeid =
                    ["dict", "list", "Queue", "Lock", "Event", "Namespace"][rng.below(6) as usize];
                held.push(m.create(typeid, vec![]).unwrap());
            }
            0..=22 => {
                if !held.is_empty() {
                    let i = rng.below(held.len() as u64) as usize;
                    held.swap_remove(i);
                }
            }
            23..=24 => {
                // Reconnect: the references this connection owned are released.
                held.clear();
                m = Manager::connect(address, KEY).unwrap();
            }
            25..=29 => {
                // A proxy to a long-lived object, used and dropped.
                let t = &shared[rng.below(shared.len() as u64) as usize];
                let p = m.proxy(t.clone()).unwrap();
                let _ = p.call("__len__", vec![]);
            }
            _ => {
                let Some(p) = held.get(rng.below(held.len().max(1) as u64) as usize) else {
                    continue;
                };
                let n = Value::Int(rng.below(50) as i64);
                let r = match p.token().typeid.as_str() {
                    "dict" => p
                        .call("__setitem__", vec![n.clone(), Value::Bytes(vec![1; 100])])
                        .and_then(|_| p.call("get", vec![n])),
                    "list" => {
                        // Sometimes a reference to another held object (never a
                        // list, so no cycles): the list keeps it alive until popped
                        // or until the list goes.
                        let other = held
                            .iter()
                            .filter(|o| o.token().typeid != "list")
                            .nth(rng.below(4) as usize);
                        let item = match other {
                            Some(o) if rng.below(4) == 0 => Value::Ref(o.token().clone()),
                            _ => Value::Str("x".repeat(50)),
                        };
                        p.call("append", vec![item])
                            .and_then(|_| p.call("__len__", vec![]))
                            .and_then(|len| match len {
                                Value::Int(n) if n > 50 => p.call("pop", vec![Value::Int(0)]),
                                other => Ok(other),
                            })
                    }
                    "Queue" => {
                        if rng.below(3) == 0 {
                            p.call("put", vec![n])
                        } else {
                            // Empty queues block until a timer answers.
                            p.call("get", vec![Value::Bool(true), Value::Float(0.005)])
                        }
                    }
                    "Lock" => p
                        .call("acquire", vec![Value::Bool(true), Value::Float(0.005)])
                        .and_then(|_| p.call("release", vec![])),
                    "Event" => p.call("wait", vec![Value::Float(0.002)]),
                    _ => p.call("__setattr__", vec![Value::Str("a".into()), n]),
                };
                // Timeouts and "release unlocked lock" are fine; the connection
                // must still work.
                if let Err(mgr::Error::Io(e)) = r {
                    panic!("client {seed}: connection failed: {e}");
                }
            }
        }
    }
    calls
}

/// What a soak run measured.
#[derive(Debug)]
struct Report {
    calls: u64,
    baseline_objects: usize,
    objects_at_end: usize,
    rss_after_warmup_kib: Option<u64>,
    rss_at_end_kib: Option<u64>,
}

fn soak(duration: Duration, clients: u64) -> Report {
    let external = std::env::var("MGR_SOAK_ADDR").ok();
    let mut spawned = None;
    let address = match &external {
        Some(a) => a.clone(),
        None => {
            let mut o = SpawnOptions::new(KEY);
            o.program = common::mgrd();
            let s = SpawnedServer::start(&o).unwrap();
            let a = s.address().to_string();
            spawned = Some(s);
            a
        }
    };
    let pid = spawned.as_ref().map(|s| s.pid());
    let observer = Manager::connect(&address, KEY).unwrap();
    let baseline = observer.number_of_objects().unwrap();
    // A few long-lived objects every client touches.
    let long_lived: Vec<Proxy> = (0..4)
        .map(|_| observer.create("list", vec![]).unwrap())
        .collect();
    let tokens: Arc<Vec<mgr::Token>> =
        Arc::new(long_lived.iter().map(|p| p.token().clone()).collect());

    let start = Instant::now();
    let until = start + duration;
    let total = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (address, tokens, total) = (address.clone(), tokens.clone(), total.clone());
            std::thread::spawn(move || {
                let n = client(&address, 0x9e37_79b9 * (i + 1), until, &tokens);
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    // Warm-up: the first quarter of the run.
    std::thread::sleep(duration / 4);
    let rss_after_warmup_kib = pid.map(rss_kib);
    for t in threads {
        t.join().unwrap();
    }
    drop(long_lived);
    // Released references are swept by the server's next turn.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut objects_at_end = observer.number_of_objects().unwrap();
    while objects_at_end != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        objects_at_end = observer.number_of_objects().unwrap();
    }
    let rss_at_end_kib = pid.map(rss_kib);
    drop(observer);
    if let Some(mut s) = spawned {
        s.stop(Duration::from_secs(10)).unwrap();
    }
    let report = Report {
        calls: total.load(Ordering::Relaxed),
        baseline_objects: baseline,
        objects_at_end,
        rss_after_warmup_kib,
        rss_at_end_kib,
    };
    println!("soak {duration:?} x {clients} clients: {report:?}");
    report
}

fn check(r: &Report, max_growth_kib: u64) {
    assert!(r.calls > 0, "the clients did work");
    assert_eq!(
        r.objects_at_end, r.baseline_objects,
        "objects back to baseline"
    );
    if let (Some(a), Some(b)) = (r.rss_after_warmup_kib, r.rss_at_end_kib) {
        assert!(
            b <= a + max_growth_kib,
            "RSS grew from {a} KiB to {b} KiB after warm-up"
        );
    }
}

#[test]
fn soak_short() {
    let r = soak(Duration::from_secs(6), 6);
    check(&r, 32 * 1024);
}

#[test]
#[ignore = "minutes long: run by scripts/soak.sh [SECONDS]"]
fn soak_long() {
    let secs = std::env::var("MGR_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let clients = std::env::var("MGR_SOAK_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let r = soak(Duration::from_secs(secs), clients);
    check(&r, 16 * 1024);
}
