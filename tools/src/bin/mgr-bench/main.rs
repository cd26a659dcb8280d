//! `mgr-bench`: the load generator of DESIGN §7.
//!
//! Spawns `mgrd` (or the raw ping-pong peer, or connects to `--address`), runs one
//! scenario on N client connections — for the call loop all from one event-loop
//! thread by default (as `redis-benchmark` drives its connections), otherwise one
//! thread each — and prints one JSON line of results on stdout (and a readable
//! summary on stderr); the `fairness` scenario embeds its server instead (see
//! `fairness`). `scripts/bench.sh`
//! runs every scenario against every peer and prints the comparison table.
//! Nothing here asserts on time: benchmarks report.

mod echo;
mod evloop;
mod fairness;
mod hist;
mod nb;
mod pickle_client;
mod procinfo;
mod scenarios;
mod sock;
mod wire;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use mgr::client::{SpawnOptions, SpawnedServer};
use mgr::{Address, ObjectId};

use scenarios::{
    queue_consumer, resolve_call, scenario_calls, scenario_create, scenario_queue, scenario_scale,
    Outcome,
};

const USAGE: &str = "\
usage: mgr-bench [options]
       mgr-bench echo-server --address ADDR
       mgr-bench queue-consumer ADDR QUEUE-ID [DEPTH]   (the consumer process of scenario 5)

  --scenario S     sync | create | queue | scale | fairness  [default: sync]
                   (fairness: an embedded server in this process, each phase
                   --seconds long, with and without the turn budget; --peer,
                   --transport, --address and --conns do not apply)
  --peer P         mgr | echo (raw ping-pong of the same frame sizes)  [default: mgr]
  --transport T    tcp | unix  [default: tcp] (ignored with --address)
  --address ADDR   use a running server instead of spawning one
  --server-pid PID its process, for CPU and memory figures (with --address)
  --authkey KEY    [default: bench]
  --client C       sync scenario: loop (all connections from one thread, non-blocking,
                   with epoll, like redis-benchmark) | threads (one blocking thread
                   per connection) | nb (the library's non-blocking NbClient, all
                   connections in one mio loop) | auto (threads for one connection,
                   as a program with one connection blocks on it; loop for more); the other
                   scenarios always use threads  [default: auto]
  --conns N        client connections  [default: 1]
  --codec C        sync scenario: native (the library's client) | pickle (exactly the
                   bytes of a stock CPython 3.11 client: its handshake, create,
                   accept_connection and calls; always the loop client; dict calls,
                   --size at most 255)  [default: native]
  --depth D        calls in flight per connection (pipelining)  [default: 1]
  --seconds T      run time  [default: 3]
  --calls M        stop after M calls per connection (whichever first)
  --call C         dict (__setitem__/__getitem__ alternately) | qsize | auto  [default: auto]
  --size B         value bytes for dict calls  [default: 16]
  --typeid T       object created by the create and scale scenarios  [default: Event]
  --idle N         scale: idle connections  [default: 10000]
  --objects N      scale: live objects  [default: 1000000]";

#[derive(Clone, Debug)]
struct Opts {
    scenario: String,
    peer: String,
    client: String,
    codec: String,
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
        client: "auto".into(),
        codec: "native".into(),
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
            "--client" if ["auto", "loop", "threads", "nb"].contains(&v.as_str()) => o.client = v,
            "--client" => return Err(format!("--client: '{v}' is not auto, loop, threads or nb")),
            "--codec" if ["native", "pickle"].contains(&v.as_str()) => o.codec = v,
            "--codec" => return Err(format!("--codec: '{v}' is not native or pickle")),
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
    if o.client == "auto" {
        let one = o.conns == 1 && o.codec == "native";
        o.client = if one { "threads" } else { "loop" }.into();
    }
    if o.codec == "pickle" && (o.client != "loop" || o.call == "qsize") {
        return Err("--codec pickle runs dict calls on the loop client".into());
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

/// The client model that ran: the sync scenario's choice; threads for the others.
fn client_model(o: &Opts) -> &str {
    if o.scenario == "sync" {
        &o.client
    } else {
        "threads"
    }
}

fn json_outcome(o: &Opts, call: &str, r: &Outcome) -> String {
    let cps = r.calls as f64 / r.secs.max(1e-9);
    let cpu_per_m = r
        .server_cpu
        .map(|c| format!("{:.3}", c / (r.calls.max(1) as f64) * 1e6))
        .unwrap_or_else(|| "null".into());
    format!(
        "{{\"scenario\":\"{}\",\"peer\":\"{}\",\"client\":\"{}\",\"codec\":\"{}\",\"transport\":\"{}\",\"conns\":{},\"depth\":{},\"call\":\"{}\",\"calls\":{},\"secs\":{:.3},\"calls_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"server_cpu_s\":{},\"cpu_s_per_m\":{},\"client_cpu_s_per_m\":{:.3},\"peak_rss_kib\":{}}}",
        o.scenario,
        o.peer,
        client_model(o),
        o.codec,
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
    if o.scenario == "fairness" {
        return fairness::scenario_fairness(o);
    }
    let (target, pid) = start(o)?;
    let address = target.address();
    let result = match o.scenario.as_str() {
        "sync" => scenario_calls(o, &address, pid).map(|r| {
            let call = resolve_call(o, &address);
            let line = json_outcome(o, call.name(), &r);
            // The payload sizes (without the 4-byte frame header) both peers move.
            let (req, rep) = if o.codec == "pickle" {
                let id = ObjectId::new(0, 2);
                let req = pickle_client::requests(id, o.size).unwrap_or_default();
                (req, pickle_client::reply_sizes(o.size))
            } else {
                let req = call.requests(ObjectId::new(0, 2), o.size);
                (req, call.reply_sizes(o.size))
            };
            let req: Vec<String> = req.iter().map(|p| p.len().to_string()).collect();
            let rep: Vec<String> = rep.iter().map(usize::to_string).collect();
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
        let r = match args.get(1..) {
            Some([address, id]) => queue_consumer(address, id, 1),
            Some([address, id, depth]) => match depth.parse::<usize>() {
                Ok(d) if d > 0 => queue_consumer(address, id, d),
                _ => Err(format!("queue-consumer: bad depth '{depth}'")),
            },
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
