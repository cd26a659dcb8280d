//! Shared test fixtures: a real server on a real socket, running in its own thread
//! with the built-in types and a few test types, torn down at the end of each
//! test; and a stock CPython manager server for the client's side of interop.

#![allow(dead_code)]

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use mgr::server::{
    CallArgs, CallId, CallResult, Context, Outcome, ReplyHandle, ServerHandle, SharedObject,
    TimerId, TypeSpec,
};
use mgr::{Address, Manager, ObjectId, Proxy, RemoteError, Server, ServerConfig, Token, Value};

pub const KEY: &[u8] = b"test-secret";

/// The repository's top: these fixtures also serve the `capi/` crate's tests.
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("tests/python").is_dir())
        .expect("the repository holds tests/python")
}

/// The `mgrd` program this test run uses: `$MGRD` if set, else `mgrd` in the
/// target directory of this test executable (`target/<profile>/`), built there
/// first if `cargo test` was run on a single package that does not build it.
pub fn mgrd() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("MGRD") {
                return p.into();
            }
            let exe = std::env::current_exe().expect("test executable path");
            let dir = exe
                .parent()
                .and_then(std::path::Path::parent)
                .expect("target/<profile>/deps/<test>");
            let program = dir.join("mgrd");
            if !program.exists() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut cmd = Command::new(cargo);
                cmd.args(["build", "-p", "mgr-tools", "--bin", "mgrd"]);
                if dir.file_name().is_some_and(|n| n == "release") {
                    cmd.arg("--release");
                }
                let status = cmd.status().expect("run cargo build --bin mgrd");
                assert!(status.success(), "cargo build --bin mgrd failed");
            }
            assert!(program.exists(), "{} was not built", program.display());
            program
        })
        .clone()
}

/// A directory of its own under the system temp dir, removed with everything in
/// it when dropped, so test runs leave nothing behind.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates `<tmp>/<tag>-<pid>-<n>`, unique within this test process.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server and the means to stop it.
pub struct TestServer {
    pub address: Address,
    pub handle: ServerHandle,
    /// The server's statistics as of its last turn.
    pub stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

/// Server statistics, copied out of the server's thread after every turn.
#[derive(Debug, Default)]
pub struct Stats {
    pub objects: AtomicUsize,
    pub pending: AtomicUsize,
    pub connections: AtomicUsize,
    pub preauth: AtomicUsize,
    pub buffered: AtomicUsize,
    pub max_buffered: AtomicUsize,
}

impl Stats {
    fn update(&self, server: &Server) {
        self.objects
            .store(server.number_of_objects(), Ordering::SeqCst);
        self.pending.store(server.pending_calls(), Ordering::SeqCst);
        self.connections
            .store(server.connection_count(), Ordering::SeqCst);
        self.preauth
            .store(server.preauth_connections(), Ordering::SeqCst);
        let b = server.buffered_bytes();
        self.buffered.store(b, Ordering::SeqCst);
        self.max_buffered.fetch_max(b, Ordering::SeqCst);
    }
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 with the test types.
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    /// Starts a server on a TCP port, letting `tweak` adjust the configuration.
    pub fn start_with(tweak: impl FnOnce(&mut ServerConfig) + Send + 'static) -> TestServer {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY);
        // Objects named in replies outlive them briefly; keep tests quick.
        config.reply_ref_grace = Duration::from_millis(100);
        tweak(&mut config);
        TestServer::start_config(config)
    }

    /// Starts a server with exactly this configuration.
    pub fn start_config(config: ServerConfig) -> TestServer {
        TestServer::start_full(config, |_| {})
    }

    /// Starts a server on a TCP port: `tweak` adjusts the configuration and
    /// `register` registers types beyond the built-in and test types.
    pub fn start_registering(
        tweak: impl FnOnce(&mut ServerConfig) + Send + 'static,
        register: impl FnOnce(&mut Server) + Send + 'static,
    ) -> TestServer {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY);
        config.reply_ref_grace = Duration::from_millis(100);
        tweak(&mut config);
        TestServer::start_full(config, register)
    }

    fn start_full(
        config: ServerConfig,
        register: impl FnOnce(&mut Server) + Send + 'static,
    ) -> TestServer {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let seen = stats.clone();
        let thread = std::thread::spawn(move || {
            let mut server = Server::bind(config).expect("bind");
            server.register_builtins();
            register_test_types(&mut server);
            register(&mut server);
            tx.send((server.address().clone(), server.handle()))
                .unwrap();
            while !server.is_shut_down() {
                server.turn(Some(Duration::from_millis(5))).expect("turn");
                seen.update(&server);
            }
        });
        let (address, handle) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started");
        TestServer {
            address,
            handle,
            stats,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Manager {
        Manager::connect_to(&self.address, KEY).expect("connect")
    }

    /// Waits until exactly `n` calls are blocked in the server.
    pub fn await_blocked(&self, n: usize) {
        assert!(
            eventually(10, || self.pending() == n),
            "expected {n} blocked calls, have {}",
            self.pending()
        );
    }

    /// Deferred calls waiting in the server.
    pub fn pending(&self) -> usize {
        self.stats.pending.load(Ordering::SeqCst)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Connections still authenticating.
    pub fn preauth(&self) -> usize {
        self.stats.preauth.load(Ordering::SeqCst)
    }

    /// The most output the server has held unsent at once.
    pub fn max_buffered(&self) -> usize {
        self.stats.max_buffered.load(Ordering::SeqCst)
    }

    /// The TCP address.
    pub fn tcp(&self) -> std::net::SocketAddr {
        match &self.address {
            Address::Tcp(a) => *a,
            other => unreachable!("this server listens on {other}, not a TCP port"),
        }
    }

    /// Runs `f` in a thread with its own connection and a proxy for `token`.
    pub fn spawn<R: Send + 'static>(
        &self,
        token: &Token,
        f: impl FnOnce(&Proxy) -> R + Send + 'static,
    ) -> JoinHandle<R> {
        let (address, token) = (self.address.clone(), token.clone());
        std::thread::spawn(move || {
            let m = Manager::connect_to(&address, KEY).expect("connect");
            let p = m.proxy(token).expect("proxy");
            f(&p)
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Registers Counter, Mailbox, Holder, Answers and Maker.
pub fn register_test_types(server: &mut Server) {
    server.register(TypeSpec::new(
        "Counter",
        &["incr", "get", "fail"],
        |_, mut a| {
            let start = a.take(0, "start").and_then(|v| v.as_int()).unwrap_or(0);
            Ok(Box::new(Counter(start)))
        },
    ));
    server.register(TypeSpec::new(
        "Mailbox",
        &["wait", "post", "waiters"],
        |_, _| Ok(Box::new(Mailbox::default())),
    ));
    server.register(TypeSpec::new("Holder", &["set", "get"], |_, mut a| {
        Ok(Box::new(Holder(a.take(0, "value").unwrap_or(Value::None))))
    }));
    server.register(TypeSpec::new(
        "Answers",
        &[
            "reply_then_return",
            "keep",
            "drop_unanswered",
            "defer_twice",
            "from_thread",
            "reply_then_defer",
            "answer_all",
        ],
        |_, _| Ok(Box::new(Answers::default())),
    ));
    server.register(
        TypeSpec::new("Maker", &[], |_, _| Ok(Box::new(Maker)))
            .method_to_typeid("counter", "Counter")
            .method_to_typeid("wrap", "Holder"),
    );
}

/// incr(n=1) → new value; get(); fail() raises ValueError.
pub struct Counter(pub i64);

impl SharedObject for Counter {
    fn call(&mut self, _cx: &mut Context<'_>, method: &str, mut args: CallArgs) -> CallResult {
        match method {
            "incr" => {
                self.0 += args.take(0, "n").and_then(|v| v.as_int()).unwrap_or(1);
                Ok(Value::Int(self.0).into())
            }
            "get" => Ok(Value::Int(self.0).into()),
            "fail" => Err(RemoteError::value_error("asked to fail")),
            _ => unreachable!("exposed list checked by the server"),
        }
    }
    fn repr(&self) -> Option<String> {
        Some(format!("Counter({})", self.0))
    }
    fn get_value(&self) -> Result<Value, RemoteError> {
        Ok(Value::Int(self.0))
    }
}

/// wait(timeout=None) blocks until post(v); a timeout raises TimeoutError.
#[derive(Default)]
pub struct Mailbox {
    waiters: Vec<(ReplyHandle, Option<TimerId>)>,
}

impl SharedObject for Mailbox {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, mut args: CallArgs) -> CallResult {
        match method {
            "wait" => {
                let timeout = args.take(0, "timeout").and_then(|v| v.as_float());
                let h = cx.defer();
                let timer = timeout.map(|t| cx.set_timer(Duration::from_secs_f64(t)));
                self.waiters.push((h, timer));
                Ok(Outcome::Deferred)
            }
            "post" => {
                let v = args.take(0, "value").unwrap_or(Value::None);
                let mut woken = 0;
                for (h, timer) in self.waiters.drain(..) {
                    if let Some(t) = timer {
                        cx.cancel_timer(t);
                    }
                    if cx.reply(h, Ok(v.clone())) {
                        woken += 1;
                    }
                }
                Ok(Value::Int(woken).into())
            }
            "waiters" => Ok(Value::Int(self.waiters.len() as i64).into()),
            _ => unreachable!(),
        }
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if let Some(i) = self.waiters.iter().position(|(_, t)| *t == Some(timer)) {
            let (h, _) = self.waiters.remove(i);
            cx.reply(h, Err(RemoteError::new("TimeoutError", "wait timed out")));
        }
    }
    fn on_cancel(&mut self, cx: &mut Context<'_>, call: CallId) {
        if let Some(i) = self.waiters.iter().position(|(h, _)| h.id() == call) {
            if let Some(t) = self.waiters.remove(i).1 {
                cx.cancel_timer(t);
            }
        }
    }
}

/// Tries to answer one call twice, or not at all, as a buggy host type might:
/// reply_then_return() answers 1 through its handle, then returns 2;
/// reply_then_defer() answers 3 through its handle and returns Deferred;
/// keep() defers and keeps the handle; drop_unanswered() defers and drops it;
/// defer_twice() asks for a second handle (a panic);
/// from_thread(v) hands its handle to a thread that answers v (or, with v
/// None, drops it there);
/// answer_all(v) answers every kept handle with v, v+1, …, and returns how many
/// answers were accepted.
#[derive(Default)]
pub struct Answers {
    kept: Vec<ReplyHandle>,
}

impl SharedObject for Answers {
    fn call(&mut self, cx: &mut Context<'_>, method: &str, mut args: CallArgs) -> CallResult {
        match method {
            "reply_then_return" => {
                let h = cx.defer();
                cx.reply(h, Ok(Value::Int(1)));
                Ok(Value::Int(2).into())
            }
            "keep" => {
                self.kept.push(cx.defer());
                Ok(Outcome::Deferred)
            }
            "drop_unanswered" => {
                drop(cx.defer());
                Ok(Outcome::Deferred)
            }
            "defer_twice" => {
                self.kept.push(cx.defer());
                self.kept.push(cx.defer());
                Ok(Outcome::Deferred)
            }
            "from_thread" => {
                let h = cx.defer();
                let v = args.take(0, "v").unwrap_or(Value::None);
                std::thread::spawn(move || match v {
                    Value::None => drop(h),
                    v => h.answer(Ok(v)),
                });
                Ok(Outcome::Deferred)
            }
            "reply_then_defer" => {
                let h = cx.defer();
                cx.reply(h, Ok(Value::Int(3)));
                Ok(Outcome::Deferred)
            }
            "answer_all" => {
                let v = args.take(0, "v").and_then(|v| v.as_int()).unwrap_or(0);
                let mut accepted = 0;
                for (i, h) in self.kept.drain(..).enumerate() {
                    if cx.reply(h, Ok(Value::Int(v + i as i64))) {
                        accepted += 1;
                    }
                }
                Ok(Value::Int(accepted).into())
            }
            _ => unreachable!(),
        }
    }
}

/// Holds one value, which may contain proxies: set(v), get().
pub struct Holder(pub Value);

impl SharedObject for Holder {
    fn call(&mut self, _cx: &mut Context<'_>, method: &str, mut args: CallArgs) -> CallResult {
        match method {
            "set" => {
                self.0 = args.take(0, "value").unwrap_or(Value::None);
                Ok(Value::None.into())
            }
            "get" => Ok(self.0.clone().into()),
            _ => unreachable!(),
        }
    }
    fn visit_refs(&self, f: &mut dyn FnMut(ObjectId)) {
        self.0.visit_refs(&mut |t| f(t.id));
    }
    fn get_value(&self) -> Result<Value, RemoteError> {
        Ok(self.0.clone())
    }
}

/// counter(start) returns a new Counter object; wrap(v) makes v a new Holder.
pub struct Maker;

impl SharedObject for Maker {
    fn call(&mut self, _cx: &mut Context<'_>, method: &str, mut args: CallArgs) -> CallResult {
        match method {
            "counter" => {
                let start = args.take(0, "start").and_then(|v| v.as_int()).unwrap_or(0);
                Ok(Outcome::Object(Box::new(Counter(start))))
            }
            "wrap" => Ok(args.take(0, "value").unwrap_or(Value::None).into()),
            _ => unreachable!(),
        }
    }
}

/// Polls `f` until it returns true, for at most `secs` seconds.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A stock CPython `SyncManager` server (`tests/python/pickle/serve.py`) with
/// `key`, killed on drop.
pub struct CpythonServer {
    child: Child,
    /// Its address, `host:port`.
    pub address: String,
}

impl CpythonServer {
    pub fn start(key: &[u8]) -> CpythonServer {
        let script = repo_root().join("tests/python/pickle/serve.py");
        let mut child = Command::new("python3")
            .arg(script)
            .env("MGR_AUTHKEY", std::str::from_utf8(key).unwrap())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        CpythonServer {
            child,
            address: line.trim().to_owned(),
        }
    }
}

impl CpythonServer {
    /// Waits for the server to exit (after a `shutdown` request) and returns how.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for the CPython server")
    }
}

impl Drop for CpythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
