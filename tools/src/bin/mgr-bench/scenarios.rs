//! The scenarios: what each client connection does, how threads (and, for the
//! queue, consumer processes) are started together and measured, and the scale
//! measurement. Results come back as an [`Outcome`]; `main` prints them. The
//! call loop's single-threaded client lives in `evloop` (with `wire` opening its
//! connections); this module only chooses it.

use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mgr::proto::codec::native;
use mgr::{Address, Manager, ObjectId, Reply, Request, Value};

use crate::hist::Histogram;
use crate::{echo, evloop, pickle_client, procinfo, wire, Opts};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CallKind {
    Dict,
    Qsize,
}

impl CallKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CallKind::Dict => "dict",
            CallKind::Qsize => "qsize",
        }
    }
    /// The type of the object each connection calls.
    pub(crate) fn typeid(self) -> &'static str {
        match self {
            CallKind::Dict => "dict",
            CallKind::Qsize => "Queue",
        }
    }
    /// The request payloads a client alternates between, for object `id`.
    pub(crate) fn requests(self, id: ObjectId, size: usize) -> Vec<Vec<u8>> {
        let reqs = match self {
            CallKind::Dict => vec![
                Request::call(
                    id,
                    "__setitem__",
                    vec![Value::Str(KEY.into()), Value::Bytes(vec![b'x'; size])],
                ),
                Request::call(id, "__getitem__", vec![Value::Str(KEY.into())]),
            ],
            CallKind::Qsize => vec![Request::call(id, "qsize", vec![])],
        };
        reqs.iter()
            .map(|r| {
                let mut out = Vec::new();
                native::encode_request(r, &mut out);
                out
            })
            .collect()
    }
    /// The reply payload sizes matching [`requests`](Self::requests).
    pub(crate) fn reply_sizes(self, size: usize) -> Vec<usize> {
        let replies = match self {
            CallKind::Dict => vec![
                Reply::Return(Value::None),
                Reply::Return(Value::Bytes(vec![0; size])),
            ],
            CallKind::Qsize => vec![Reply::Return(Value::Int(0))],
        };
        replies
            .iter()
            .map(|r| {
                let mut out = Vec::new();
                native::encode_reply(r, &mut out);
                out.len()
            })
            .collect()
    }
}

pub(crate) const KEY: &str = "key:000000000000";

/// One client connection of a call-loop scenario.
enum Client {
    Mgr {
        m: Manager,
        _obj: mgr::Proxy,
        payloads: Vec<Vec<u8>>,
    },
    Echo {
        c: echo::EchoClient,
        sizes: Vec<(usize, usize)>,
    },
}

impl Client {
    fn queue(&mut self, i: u64) {
        match self {
            Client::Mgr { m, payloads, .. } => {
                let p = &payloads[i as usize % payloads.len()];
                m.connection().queue_raw(p);
            }
            Client::Echo { c, sizes } => {
                let (req, rep) = sizes[i as usize % sizes.len()];
                c.queue(req, rep);
            }
        }
    }
    fn write_out(&mut self) -> Result<(), String> {
        match self {
            Client::Mgr { m, .. } => m.connection().write_out().map_err(|e| e.to_string()),
            Client::Echo { c, .. } => c.write_out().map_err(|e| e.to_string()),
        }
    }
    fn recv(&mut self) -> Result<(), String> {
        match self {
            Client::Mgr { m, .. } => match m.connection().recv() {
                Ok(Reply::Return(_)) => Ok(()),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(e.to_string()),
            },
            Client::Echo { c, .. } => c.recv().map(drop).map_err(|e| e.to_string()),
        }
    }
}

/// Decides what a small call is: `dict` set/get when the server has `dict`.
pub(crate) fn resolve_call(o: &Opts, address: &Address) -> CallKind {
    match o.call.as_str() {
        "dict" => CallKind::Dict,
        "qsize" => CallKind::Qsize,
        _ if o.peer == "echo" => CallKind::Dict,
        _ => {
            match Manager::connect_to(address, &o.authkey).and_then(|m| m.create("dict", vec![])) {
                Ok(_) => CallKind::Dict,
                Err(_) => CallKind::Qsize,
            }
        }
    }
}

fn connect_client(o: &Opts, address: &Address, call: CallKind) -> Result<Client, String> {
    if o.peer == "echo" {
        let c = echo::EchoClient::connect(address).map_err(|e| e.to_string())?;
        let mut payloads = call.requests(ObjectId::new(0, 2), o.size);
        let sizes = payloads
            .drain(..)
            .map(|p| p.len())
            .zip(call.reply_sizes(o.size))
            .collect();
        return Ok(Client::Echo { c, sizes });
    }
    let m = Manager::connect_to(address, &o.authkey).map_err(|e| e.to_string())?;
    let obj = m.create(call.typeid(), vec![]).map_err(|e| e.to_string())?;
    let payloads = call.requests(obj.id(), o.size);
    Ok(Client::Mgr {
        m,
        _obj: obj,
        payloads,
    })
}

/// What one run measured.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) calls: u64,
    pub(crate) secs: f64,
    pub(crate) hist: Histogram,
    pub(crate) server_cpu: Option<f64>,
    pub(crate) client_cpu: f64,
    pub(crate) peak_rss_kib: Option<u64>,
}

/// What a run is charged from its start: wall time, the server's CPU (`pid`),
/// this process's CPU, and at the end the server's peak RSS.
pub(crate) struct Meter {
    pid: Option<u32>,
    t0: Instant,
    cpu0: Option<f64>,
    own0: f64,
}

impl Meter {
    /// Starts the clocks.
    pub(crate) fn start(pid: Option<u32>) -> Meter {
        let cpu0 = pid.and_then(procinfo::cpu_seconds);
        let own0 = procinfo::own_cpu_seconds();
        Meter {
            pid,
            t0: Instant::now(),
            cpu0,
            own0,
        }
    }

    /// Stops them and writes secs, client and server CPU and peak RSS into `out`.
    pub(crate) fn stop(self, out: &mut Outcome) {
        out.secs = self.t0.elapsed().as_secs_f64();
        out.client_cpu = procinfo::own_cpu_seconds() - self.own0;
        let cpu1 = self.pid.and_then(procinfo::cpu_seconds);
        out.server_cpu = self.cpu0.zip(cpu1).map(|(a, b)| b - a);
        out.peak_rss_kib = self.pid.and_then(procinfo::peak_rss_kib);
    }
}

/// Runs `body` on `n` threads released together; measures wall time and the
/// server's CPU across the run.
fn run_threads<F>(n: usize, pid: Option<u32>, body: F) -> Result<Outcome, String>
where
    F: Fn(usize, &Barrier) -> Result<(u64, Histogram), String> + Send + Sync + 'static,
{
    let barrier = Arc::new(Barrier::new(n + 1));
    let body = Arc::new(body);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let b = barrier.clone();
            let body = body.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let r = body(i, &b);
                    if r.is_err() {
                        // Never leave the others waiting on a barrier we skipped.
                        b.wait();
                    }
                    r
                })
                .expect("spawn a client thread")
        })
        .collect();
    barrier.wait();
    let meter = Meter::start(pid);
    let mut out = Outcome::default();
    let mut err = None;
    for h in handles {
        match h.join().map_err(|_| "a client thread panicked".to_string()) {
            Ok(Ok((calls, hist))) => {
                out.calls += calls;
                out.hist.merge(&hist);
            }
            Ok(Err(e)) | Err(e) => err = Some(e),
        }
    }
    meter.stop(&mut out);
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Scenarios 1–3: each connection loops synchronous (or D-deep pipelined) calls,
/// all from one event loop (`--client loop`) or each from a thread of its own.
pub(crate) fn scenario_calls(
    o: &Opts,
    address: &Address,
    pid: Option<u32>,
) -> Result<Outcome, String> {
    let call = resolve_call(o, address);
    eprintln!("mgr-bench: small call = {}", call.name());
    match o.client.as_str() {
        "loop" => calls_loop(o, address, pid, call),
        "threads" => calls_threads(o, address, pid, call),
        "nb" if o.peer == "echo" => Err("--client nb needs --peer mgr".into()),
        "nb" => crate::nb::run(
            address, &o.authkey, o.conns, call, o.size, o.depth, o.calls, o.seconds, pid,
        ),
        other => Err(format!("unknown client '{other}'")),
    }
}

/// The call loop on one thread: every connection opened (blocking), then driven
/// non-blocking by `evloop`.
fn calls_loop(
    o: &Opts,
    address: &Address,
    pid: Option<u32>,
    call: CallKind,
) -> Result<Outcome, String> {
    let mgr = o.peer != "echo";
    let opened = (0..o.conns)
        .map(|_| match o.codec.as_str() {
            "pickle" => pickle_client::open(address, mgr, &o.authkey, o.size),
            _ => wire::open(address, mgr, &o.authkey, call, o.size),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let lim = evloop::Limits {
        depth: o.depth,
        calls: o.calls,
        seconds: o.seconds,
    };
    evloop::run(opened, lim, pid)
}

/// The call loop with one blocking client thread per connection.
fn calls_threads(
    o: &Opts,
    address: &Address,
    pid: Option<u32>,
    call: CallKind,
) -> Result<Outcome, String> {
    let o2 = o.clone();
    let addr = address.clone();
    let out = run_threads(o.conns, pid, move |_, barrier| {
        let mut c = connect_client(&o2, &addr, call)?;
        // One call before the clock starts: the connection is warm.
        c.queue(0);
        c.write_out()?;
        c.recv()?;
        barrier.wait();
        let deadline = Instant::now() + Duration::from_secs_f64(o2.seconds);
        let mut hist = Histogram::default();
        let mut i = 0u64;
        while i < o2.calls && Instant::now() < deadline {
            let t = Instant::now();
            for j in 0..o2.depth as u64 {
                c.queue(i + j);
            }
            c.write_out()?;
            for _ in 0..o2.depth {
                c.recv()?;
                hist.record(t.elapsed().as_nanos() as u64);
            }
            i += o2.depth as u64;
        }
        Ok((i, hist))
    })?;
    Ok(out)
}

/// Scenario 4: create + release of a shared object on one connection, synchronously.
pub(crate) fn scenario_create(
    o: &Opts,
    address: &Address,
    pid: Option<u32>,
) -> Result<Outcome, String> {
    let o2 = o.clone();
    let addr = address.clone();
    run_threads(o.conns, pid, move |_, barrier| {
        let m = Manager::connect_to(&addr, &o2.authkey).map_err(|e| e.to_string())?;
        drop(m.create(&o2.typeid, vec![]).map_err(|e| e.to_string())?);
        barrier.wait();
        let deadline = Instant::now() + Duration::from_secs_f64(o2.seconds);
        let mut hist = Histogram::default();
        let mut i = 0u64;
        if o2.depth == 1 {
            while i < o2.calls && Instant::now() < deadline {
                let t = Instant::now();
                let p = m.create(&o2.typeid, vec![]).map_err(|e| e.to_string())?;
                drop(p); // sends decref; its reply is skipped on the next read
                hist.record(t.elapsed().as_nanos() as u64);
                i += 1;
            }
            return Ok((i, hist));
        }
        // Pipelined: D creates in one write, then their D decrefs in the next.
        let mut create = Vec::new();
        let req = Request::public("create", vec![Value::Str(o2.typeid.clone())]);
        native::encode_request(&req, &mut create);
        let mut c = m.connection();
        let mut ids = Vec::with_capacity(o2.depth);
        while i < o2.calls && Instant::now() < deadline {
            let t = Instant::now();
            for _ in 0..o2.depth {
                c.queue_raw(&create);
            }
            c.write_out().map_err(|e| e.to_string())?;
            for _ in 0..o2.depth {
                match c.recv().map_err(|e| e.to_string())? {
                    Reply::Return(Value::Tuple(ref t))
                        if matches!(t.first(), Some(Value::Int(_))) =>
                    {
                        ids.push(t[0].clone())
                    }
                    other => return Err(format!("unexpected create reply {other:?}")),
                }
            }
            for id in ids.drain(..) {
                c.queue(&Request::public("decref", vec![id]));
            }
            c.write_out().map_err(|e| e.to_string())?;
            for _ in 0..o2.depth {
                c.recv().map_err(|e| e.to_string())?;
            }
            hist.record(t.elapsed().as_nanos() as u64);
            i += o2.depth as u64;
        }
        Ok((i, hist))
    })
}

/// Scenario 5: a producer puts, a consumer blocks in get, in separate processes:
/// producers are threads of this process, each consumer is a child
/// (`mgr-bench queue-consumer`) on its own connection. `--conns` pairs them up.
/// With `--depth D` both sides pipeline: the producer writes D puts at once and
/// then reads their D replies, the consumer keeps D gets in flight (the server
/// answers them in order as items arrive, parking the ones the queue cannot
/// serve yet); at the end the producer puts D `None`s so every get in flight
/// is answered.
pub(crate) fn scenario_queue(
    o: &Opts,
    address: &Address,
    pid: Option<u32>,
) -> Result<Outcome, String> {
    let pairs = (o.conns / 2).max(1);
    let m = Manager::connect_to(address, &o.authkey).map_err(|e| e.to_string())?;
    let queues: Vec<_> = (0..pairs)
        .map(|_| m.create("Queue", vec![Value::Int(1024)]))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut consumers = Vec::new();
    for q in &queues {
        let mut child = Command::new(&exe)
            .args([
                "queue-consumer",
                &address.to_string(),
                &q.id().0.to_string(),
                &o.depth.to_string(),
            ])
            .env("MGR_AUTHKEY", std::ffi::OsStr::from_bytes(&o.authkey))
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!("queue consumer said {line:?}"));
        }
        consumers.push((child, out));
    }
    let ids: Arc<Vec<ObjectId>> = Arc::new(queues.iter().map(|q| q.id()).collect());
    let o2 = o.clone();
    let addr = address.clone();
    let meter = Meter::start(pid);
    let producers = run_threads(pairs, None, move |i, barrier| {
        let m = Manager::connect_to(&addr, &o2.authkey).map_err(|e| e.to_string())?;
        let mut put = Vec::new();
        native::encode_request(
            &Request::call(ids[i], "put", vec![Value::Bytes(vec![b'x'; o2.size])]),
            &mut put,
        );
        let mut stop = Vec::new();
        native::encode_request(&Request::call(ids[i], "put", vec![Value::None]), &mut stop);
        let mut c = m.connection();
        let depth = o2.depth;
        // D copies of one request in one write, then their D replies.
        let mut batch = |payload: &[u8]| -> Result<(), String> {
            for _ in 0..depth {
                c.queue_raw(payload);
            }
            c.write_out().map_err(|e| e.to_string())?;
            for _ in 0..depth {
                match c.recv().map_err(|e| e.to_string())? {
                    Reply::Return(_) => {}
                    other => return Err(format!("unexpected reply {other:?}")),
                }
            }
            Ok(())
        };
        barrier.wait();
        let deadline = Instant::now() + Duration::from_secs_f64(o2.seconds);
        let mut n = 0u64;
        while n < o2.calls && Instant::now() < deadline {
            batch(&put)?;
            n += depth as u64;
        }
        batch(&stop)?;
        Ok((n, Histogram::default()))
    });
    let mut out = Outcome::default();
    for (mut child, mut stdout) in consumers {
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let _ = child.wait();
        let mut it = line.split_whitespace();
        out.calls += it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        for v in it.filter_map(|v| v.parse::<u64>().ok()) {
            out.hist.record(v);
        }
    }
    meter.stop(&mut out);
    producers?;
    drop(queues);
    Ok(out)
}

/// The consumer process of scenario 5: gets from queue `id` until it gets None,
/// then prints the count and a sample of get latencies (ns) on one line. With
/// `depth` > 1 it writes `depth` gets at once and reads their replies, batch
/// after batch, until a batch brings a `None`.
pub(crate) fn queue_consumer(address: &str, id: &str, depth: usize) -> Result<(), String> {
    let key = std::env::var_os("MGR_AUTHKEY").unwrap_or_default();
    let m = Manager::connect(address, key.as_bytes()).map_err(|e| e.to_string())?;
    let id = ObjectId(id.parse().map_err(|e| format!("queue id: {e}"))?);
    let mut get = Vec::new();
    native::encode_request(&Request::call(id, "get", vec![]), &mut get);
    println!("ready");
    let mut hist = Vec::new();
    let mut n = 0u64;
    let mut c = m.connection();
    let mut done = false;
    while !done {
        let t = Instant::now();
        for _ in 0..depth {
            c.queue_raw(&get);
        }
        c.write_out().map_err(|e| e.to_string())?;
        for _ in 0..depth {
            let v = match c.recv().map_err(|e| e.to_string())? {
                Reply::Return(v) => v,
                other => return Err(format!("unexpected reply {other:?}")),
            };
            // Every 8th latency is plenty for p50/p99 and keeps the line short.
            if n % 8 == 0 {
                hist.push(t.elapsed().as_nanos() as u64);
            }
            if v == Value::None {
                done = true;
            } else if !done {
                n += 1;
            }
        }
    }
    let sample: Vec<String> = hist.iter().map(u64::to_string).collect();
    println!("{n} {}", sample.join(" "));
    Ok(())
}

/// Scale: server memory per live object (pipelined creates held by one
/// connection), then per idle authenticated connection.
pub(crate) fn scenario_scale(
    o: &Opts,
    address: &Address,
    pid: Option<u32>,
) -> Result<String, String> {
    let pid = pid.ok_or("the scale scenario needs the server's pid")?;
    let rss = || procinfo::rss_kib(pid).unwrap_or(0);
    let m = Manager::connect_to(address, &o.authkey).map_err(|e| e.to_string())?;
    drop(m.create(&o.typeid, vec![]).map_err(|e| e.to_string())?);
    let rss0 = rss();
    let create = Request::public("create", vec![Value::Str(o.typeid.clone())]);
    let mut payload = Vec::new();
    native::encode_request(&create, &mut payload);
    let t = Instant::now();
    let mut made = 0;
    while made < o.objects {
        let batch = (o.objects - made).min(1000);
        let mut c = m.connection();
        for _ in 0..batch {
            c.queue_raw(&payload);
        }
        c.write_out().map_err(|e| e.to_string())?;
        for _ in 0..batch {
            match c.recv().map_err(|e| e.to_string())? {
                Reply::Return(_) => {}
                other => return Err(format!("create failed: {other:?}")),
            }
        }
        made += batch;
    }
    let create_secs = t.elapsed().as_secs_f64();
    let rss1 = rss();
    let per_object = (rss1.saturating_sub(rss0) * 1024) as f64 / o.objects.max(1) as f64;
    eprintln!(
        "mgr-bench: {} {} objects in {:.2} s ({:.0}/s pipelined), RSS {} -> {} KiB: {:.0} B/object",
        o.objects,
        o.typeid,
        create_secs,
        o.objects as f64 / create_secs,
        rss0,
        rss1,
        per_object
    );
    let mut idle = Vec::with_capacity(o.idle);
    let t = Instant::now();
    for _ in 0..o.idle {
        idle.push(Manager::connect_to(address, &o.authkey).map_err(|e| e.to_string())?);
    }
    let connect_secs = t.elapsed().as_secs_f64();
    // Every handshake has been answered; one more round trip lets the server
    // settle its accept loop.
    m.number_of_objects().map_err(|e| e.to_string())?;
    let rss2 = rss();
    let per_conn = (rss2.saturating_sub(rss1) * 1024) as f64 / o.idle.max(1) as f64;
    eprintln!(
        "mgr-bench: {} idle connections in {:.2} s, RSS {} -> {} KiB: {:.0} B/connection",
        o.idle, connect_secs, rss1, rss2, per_conn
    );
    Ok(format!(
        "{{\"scenario\":\"scale\",\"peer\":\"{}\",\"transport\":\"{}\",\"typeid\":\"{}\",\"objects\":{},\"bytes_per_object\":{:.1},\"creates_per_s_pipelined\":{:.0},\"idle\":{},\"bytes_per_conn\":{:.1},\"connects_per_s\":{:.0},\"peak_rss_kib\":{}}}",
        o.peer, o.transport, o.typeid, o.objects, per_object, o.objects as f64 / create_secs,
        o.idle, per_conn, o.idle as f64 / connect_secs, procinfo::peak_rss_kib(pid).unwrap_or(0)
    ))
}
