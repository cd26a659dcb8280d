//! `mgr-bench`: the load generator of DESIGN §7.
//!
//! Spawns `mgrd` (or the raw ping-pong peer, or connects to `--address`), runs one
//! scenario with N client threads, each on its own connection, and prints one JSON
//! line of results on stdout (and a readable summary on stderr). `scripts/bench.sh`
//! runs every scenario against every peer and prints the comparison table.
//! Nothing here asserts on time: benchmarks report.

mod echo;
mod hist;
mod procinfo;

use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mgr::client::{SpawnOptions, SpawnedServer};
use mgr::proto::codec::native;
use mgr::{Address, Manager, ObjectId, Reply, Request, Value};

use hist::Histogram;

const USAGE: &str = "\
usage: mgr-bench [options]
       mgr-bench echo-server --address ADDR
       mgr-bench queue-consumer ADDR QUEUE-ID   (the consumer process of scenario 5)

  --scenario S     sync | create | queue | scale  [default: sync]
  --peer P         mgr | echo (raw ping-pong of the same frame sizes)  [default: mgr]
  --transport T    tcp | unix  [default: tcp] (ignored with --address)
  --address ADDR   use a running server instead of spawning one
  --server-pid PID its process, for CPU and memory figures (with --address)
  --authkey KEY    [default: bench]
  --conns N        client connections, one thread each  [default: 1]
  --depth D        calls in flight per connection (pipelining)  [default: 1]
  --seconds T      run time  [default: 3]
  --calls M        stop after M calls per connection (whichever first)
  --call C         dict (__setitem__/__getitem__ alternately) | qsize | auto  [default: auto]
  --size B         value bytes for dict calls  [default: 16]
  --typeid T       object created by the create and scale scenarios  [default: Event]
  --idle N         scale: idle connections  [default: 10000]
  --objects N      scale: live objects  [default: 1000000]";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CallKind {
    Dict,
    Qsize,
}

impl CallKind {
    fn name(self) -> &'static str {
        match self {
            CallKind::Dict => "dict",
            CallKind::Qsize => "qsize",
        }
    }
    fn typeid(self) -> &'static str {
        match self {
            CallKind::Dict => "dict",
            CallKind::Qsize => "Queue",
        }
    }
    /// The request payloads a client alternates between, for object `id`.
    fn requests(self, id: ObjectId, size: usize) -> Vec<Vec<u8>> {
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
    fn reply_sizes(self, size: usize) -> Vec<usize> {
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

const KEY: &str = "key:000000000000";

#[derive(Clone, Debug)]
struct Opts {
    scenario: String,
    peer: String,
    transport: String,
    address: Option<String>,
    server_pid: Option<u32>,
    authkey: Vec<u8>,
    conns: usize,
    depth: usize,
    seconds: f64,
    calls: u64,
    call: String,
    size: usize,
    typeid: String,
    idle: usize,
    objects: usize,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        scenario: "sync".into(),
        peer: "mgr".into(),
        transport: "tcp".into(),
        address: None,
        server_pid: None,
        authkey: b"bench".to_vec(),
        conns: 1,
        depth: 1,
        seconds: 3.0,
        calls: u64::MAX,
        call: "auto".into(),
        size: 16,
        typeid: "Event".into(),
        idle: 10_000,
        objects: 1_000_000,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--scenario" => o.scenario = v,
            "--peer" => o.peer = v,
            "--transport" => o.transport = v,
            "--address" => o.address = Some(v),
            "--server-pid" => o.server_pid = Some(num(&v)? as u32),
            "--authkey" => o.authkey = v.into_bytes(),
            "--conns" => o.conns = num(&v)?.max(1) as usize,
            "--depth" => o.depth = num(&v)?.max(1) as usize,
            "--seconds" => o.seconds = v.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--calls" => o.calls = num(&v)?,
            "--call" => o.call = v,
            "--size" => o.size = num(&v)? as usize,
            "--typeid" => o.typeid = v,
            "--idle" => o.idle = num(&v)? as usize,
            "--objects" => o.objects = num(&v)? as usize,
            _ => return Err(format!("unknown argument '{flag}'")),
        }
    }
    Ok(o)
}

/// The server under load: spawned (and stopped on drop) or external.
enum Target {
    Mgr(SpawnedServer),
    Echo(Child, Address),
    External(Address),
}

impl Target {
    fn address(&self) -> Address {
        match self {
            Target::Mgr(s) => s.address().clone(),
            Target::Echo(_, a) | Target::External(a) => a.clone(),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Target::Echo(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn listen_address(o: &Opts) -> String {
    if o.transport == "unix" {
        let path = std::env::temp_dir().join(format!("mgr-bench-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        format!("unix:{}", path.display())
    } else {
        "127.0.0.1:0".into()
    }
}

fn start(o: &Opts) -> Result<(Target, Option<u32>), String> {
    if let Some(a) = &o.address {
        let addr = a.parse::<Address>().map_err(|e| e.to_string())?;
        return Ok((Target::External(addr), o.server_pid));
    }
    let listen = listen_address(o);
    if o.peer == "echo" {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["echo-server", "--address", &listen])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("echo listening on ")
            .ok_or_else(|| format!("echo server said {line:?}"))?
            .parse::<Address>()
            .map_err(|e| e.to_string())?;
        let pid = child.id();
        return Ok((Target::Echo(child, addr), Some(pid)));
    }
    let mut so = SpawnOptions::new(&o.authkey);
    so.address = listen;
    so.args = vec![
        "--max-connections".into(),
        (o.idle + 1000).to_string().into(),
    ];
    let s = SpawnedServer::start(&so).map_err(|e| format!("cannot start mgrd: {e}"))?;
    let pid = s.pid();
    Ok((Target::Mgr(s), Some(pid)))
}

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
fn resolve_call(o: &Opts, address: &Address) -> CallKind {
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
struct Outcome {
    calls: u64,
    secs: f64,
    hist: Histogram,
    server_cpu: Option<f64>,
    client_cpu: f64,
    peak_rss_kib: Option<u64>,
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
    let cpu0 = pid.and_then(procinfo::cpu_seconds);
    let own0 = procinfo::own_cpu_seconds();
    let t0 = Instant::now();
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
    out.secs = t0.elapsed().as_secs_f64();
    out.client_cpu = procinfo::own_cpu_seconds() - own0;
    let cpu1 = pid.and_then(procinfo::cpu_seconds);
    out.server_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    out.peak_rss_kib = pid.and_then(procinfo::peak_rss_kib);
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Scenarios 1–3: each connection loops synchronous (or D-deep pipelined) calls.
fn scenario_calls(o: &Opts, address: &Address, pid: Option<u32>) -> Result<Outcome, String> {
    let call = resolve_call(o, address);
    eprintln!("mgr-bench: small call = {}", call.name());
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
fn scenario_create(o: &Opts, address: &Address, pid: Option<u32>) -> Result<Outcome, String> {
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
                    Reply::Return(Value::Tuple(t)) if matches!(t.first(), Some(Value::Int(_))) => {
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
fn scenario_queue(o: &Opts, address: &Address, pid: Option<u32>) -> Result<Outcome, String> {
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
    let cpu0 = pid.and_then(procinfo::cpu_seconds);
    let own0 = procinfo::own_cpu_seconds();
    let t0 = Instant::now();
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
        let mut call = |payload: &[u8]| -> Result<(), String> {
            c.queue_raw(payload);
            c.write_out().map_err(|e| e.to_string())?;
            match c.recv().map_err(|e| e.to_string())? {
                Reply::Return(_) => Ok(()),
                other => Err(format!("unexpected reply {other:?}")),
            }
        };
        barrier.wait();
        let deadline = Instant::now() + Duration::from_secs_f64(o2.seconds);
        let mut n = 0u64;
        while n < o2.calls && Instant::now() < deadline {
            call(&put)?;
            n += 1;
        }
        call(&stop)?;
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
    out.secs = t0.elapsed().as_secs_f64();
    out.client_cpu = procinfo::own_cpu_seconds() - own0;
    out.server_cpu = cpu0
        .zip(pid.and_then(procinfo::cpu_seconds))
        .map(|(a, b)| b - a);
    out.peak_rss_kib = pid.and_then(procinfo::peak_rss_kib);
    producers?;
    drop(queues);
    Ok(out)
}

/// The consumer process of scenario 5: gets from queue `id` until it gets None,
/// then prints the count and a sample of get latencies (ns) on one line.
fn queue_consumer(address: &str, id: &str) -> Result<(), String> {
    let key = std::env::var_os("MGR_AUTHKEY").unwrap_or_default();
    let m = Manager::connect(address, key.as_bytes()).map_err(|e| e.to_string())?;
    let id = ObjectId(id.parse().map_err(|e| format!("queue id: {e}"))?);
    let mut get = Vec::new();
    native::encode_request(&Request::call(id, "get", vec![]), &mut get);
    println!("ready");
    let mut hist = Vec::new();
    let mut n = 0u64;
    let mut c = m.connection();
    loop {
        let t = Instant::now();
        c.queue_raw(&get);
        c.write_out().map_err(|e| e.to_string())?;
        let v = match c.recv().map_err(|e| e.to_string())? {
            Reply::Return(v) => v,
            other => return Err(format!("unexpected reply {other:?}")),
        };
        // Every 8th latency is plenty for p50/p99 and keeps the line short.
        if n % 8 == 0 {
            hist.push(t.elapsed().as_nanos() as u64);
        }
        if v == Value::None {
            break;
        }
        n += 1;
    }
    let sample: Vec<String> = hist.iter().map(u64::to_string).collect();
    println!("{n} {}", sample.join(" "));
    Ok(())
}

/// Scale: server memory per live object (pipelined creates held by one
/// connection), then per idle authenticated connection.
fn scenario_scale(o: &Opts, address: &Address, pid: Option<u32>) -> Result<String, String> {
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

fn json_outcome(o: &Opts, call: &str, r: &Outcome) -> String {
    let cps = r.calls as f64 / r.secs.max(1e-9);
    let cpu_per_m = r
        .server_cpu
        .map(|c| format!("{:.3}", c / (r.calls.max(1) as f64) * 1e6))
        .unwrap_or_else(|| "null".into());
    format!(
        "{{\"scenario\":\"{}\",\"peer\":\"{}\",\"transport\":\"{}\",\"conns\":{},\"depth\":{},\"call\":\"{}\",\"calls\":{},\"secs\":{:.3},\"calls_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"server_cpu_s\":{},\"cpu_s_per_m\":{},\"client_cpu_s_per_m\":{:.3},\"peak_rss_kib\":{}}}",
        o.scenario,
        o.peer,
        if o.address.is_some() { "external" } else { &o.transport },
        o.conns,
        o.depth,
        call,
        r.calls,
        r.secs,
        cps,
        r.hist.quantile(0.5) as f64 / 1000.0,
        r.hist.quantile(0.99) as f64 / 1000.0,
        r.hist.quantile(1.0) as f64 / 1000.0,
        r.server_cpu.map(|c| format!("{c:.3}")).unwrap_or_else(|| "null".into()),
        cpu_per_m,
        r.client_cpu / (r.calls.max(1) as f64) * 1e6,
        r.peak_rss_kib.map(|k| k.to_string()).unwrap_or_else(|| "null".into()),
    )
}

fn run(o: &Opts) -> Result<String, String> {
    let (target, pid) = start(o)?;
    let address = target.address();
    let result = match o.scenario.as_str() {
        "sync" => scenario_calls(o, &address, pid).map(|r| {
            let call = resolve_call(o, &address);
            let line = json_outcome(o, call.name(), &r);
            // The payload sizes (without the 4-byte frame header) both peers move.
            let req: Vec<String> = call
                .requests(ObjectId::new(0, 2), o.size)
                .iter()
                .map(|p| p.len().to_string())
                .collect();
            let rep: Vec<String> = call
                .reply_sizes(o.size)
                .iter()
                .map(usize::to_string)
                .collect();
            format!(
                "{},\"request_bytes\":[{}],\"reply_bytes\":[{}]}}",
                line.trim_end_matches('}'),
                req.join(","),
                rep.join(",")
            )
        }),
        "create" => scenario_create(o, &address, pid).map(|r| json_outcome(o, &o.typeid, &r)),
        "queue" => scenario_queue(o, &address, pid).map(|r| json_outcome(o, "Queue put/get", &r)),
        "scale" => scenario_scale(o, &address, pid),
        other => Err(format!("unknown scenario '{other}'")),
    };
    drop(target);
    if let Address::Unix(p) = &address {
        if o.address.is_none() {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("queue-consumer") {
        let r = match args.get(1..3) {
            Some([address, id]) => queue_consumer(address, id),
            _ => Err(USAGE.to_string()),
        };
        if let Err(e) = r {
            eprintln!("mgr-bench queue-consumer: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("echo-server") {
        let addr = match args.get(1..3) {
            Some([flag, a]) if flag == "--address" => a.parse::<Address>(),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        };
        let r = addr
            .map_err(|e| e.to_string())
            .and_then(|a| echo::serve(&a).map_err(|e| e.to_string()));
        if let Err(e) = r {
            eprintln!("mgr-bench echo-server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let o = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mgr-bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    procinfo::raise_nofile();
    match run(&o) {
        Ok(line) => {
            eprintln!("mgr-bench: {line}");
            println!("{line}");
        }
        Err(e) => {
            eprintln!("mgr-bench: {e}");
            std::process::exit(1);
        }
    }
}
