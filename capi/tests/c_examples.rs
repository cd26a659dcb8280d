//! The C artifacts, end to end: builds `c-examples/` with make against the
//! `libmgr.so` cargo built for this test run, runs the C host daemon with the C
//! and C++ clients and the non-blocking loop host (`loop_host`) against it
//! (then again, all under valgrind), and checks the shared library's SONAME
//! and exported symbols and that `mgr.h` compiles as C99 (-pedantic) and as
//! C++.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The repository's top (this crate is `capi/` in it).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("capi/ is in the repository")
}

/// `target/<profile>`: the test executable lives in its `deps/`. `cargo test`
/// on the workspace builds `libmgr.so` with everything else; when it has not
/// (a single test target asked for), it is built here first (same profile, same
/// target directory).
fn lib_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps/<test>")
                .to_path_buf();
            if !dir.join("libmgr.so").exists() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut cmd = Command::new(cargo);
                cmd.args(["build", "-p", "libmgr-capi", "--lib"])
                    .current_dir(root());
                if dir.file_name().is_some_and(|n| n == "release") {
                    cmd.arg("--release");
                }
                let status = cmd.status().expect("run cargo build --lib");
                assert!(status.success(), "cargo build --lib failed");
            }
            assert!(
                dir.join("libmgr.so").exists(),
                "{} has no libmgr.so",
                dir.display()
            );
            dir
        })
        .clone()
}

/// Runs make in c-examples once per test run; returns the examples directory.
fn examples() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    BUILT.get_or_init(|| {
        let dir = root().join("c-examples");
        let out = Command::new("make")
            .arg("-C")
            .arg(&dir)
            .arg(format!("LIBDIR={}", lib_dir().display()))
            .arg(format!("INCDIR={}", root().join("include").display()))
            .output()
            .expect("run make");
        assert!(
            out.status.success(),
            "make failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A child process killed if the test fails before it exits.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the daemon (optionally under `wrapper`) and reads its address.
fn start_daemon(wrapper: &[&str]) -> (Guard, String, mpsc::Receiver<String>) {
    let exe = examples().join("host_daemon");
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let mut child = cmd
        .env("MGR_AUTHKEY", "c-examples-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host_daemon");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = addr_tx.send(line.trim().to_owned());
    });
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = err_tx.send(s);
    });
    let address = addr_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("host_daemon printed its address");
    assert!(
        address.starts_with("127.0.0.1:"),
        "first line is the address: {address:?}"
    );
    (Guard(Some(child)), address, err_rx)
}

fn run_client(wrapper: &[&str], name: &str, address: &str, extra: &[&str]) -> Output {
    let exe = examples().join(name);
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.arg(address)
        .args(extra)
        .env("MGR_AUTHKEY", "c-examples-key")
        .output()
        .expect("run client")
}

/// `tests/python/c_daemon_client.py`: a stock CPython client of the daemon.
fn run_python_client(address: &str) -> Output {
    Command::new("python3")
        .arg(root().join("tests/python/c_daemon_client.py"))
        .arg(address)
        .env("MGR_AUTHKEY", "c-examples-key")
        .output()
        .expect("run python3")
}

fn assert_passed(out: &Output, name: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("{name}: all checks passed")),
        "{name} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for the daemon to exit (a generous guard, not a timing assertion).
fn wait_exit(guard: &mut Guard) -> std::process::ExitStatus {
    let child = guard.0.as_mut().expect("child");
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            guard.0 = None;
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("host_daemon did not exit");
}

/// `tests/python/c_daemon_pipeline.py`: `n` calls pipelined on one
/// connection, more than the daemon's 16-request turn, so its loop must take
/// the turns `mgr_server_pending` asks for.
fn run_python_pipeline(address: &str, n: usize) -> Output {
    Command::new("python3")
        .arg(root().join("tests/python/c_daemon_pipeline.py"))
        .arg(address)
        .arg(n.to_string())
        .env("MGR_AUTHKEY", "c-examples-key")
        .output()
        .expect("run python3")
}

/// The daemon's count of turns that left work pending, from its exit line.
fn pending_turns(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("turns left work pending"))
        .unwrap_or_else(|| panic!("no exit line:\n{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "turns").expect("count");
    words[at - 1].parse().expect("a number")
}

#[test]
fn c_and_cpp_clients_use_the_c_daemon() {
    let (mut daemon, address, stderr) = start_daemon(&[]);
    assert_passed(&run_python_pipeline(&address, 200), "pipeline");
    assert_passed(&run_client(&[], "client", &address, &[]), "client");
    // One poll() loop serving its own type and calling the daemon through the
    // non-blocking client: it checks every reply itself.
    assert_passed(&run_client(&[], "loop_host", &address, &[]), "loop_host");
    // A stock CPython client uses the C-defined types through BaseManager.
    assert_passed(&run_python_client(&address), "python");
    assert_passed(
        &run_client(&[], "cpp_client", &address, &["--shutdown"]),
        "cpp_client",
    );
    let status = wait_exit(&mut daemon);
    let err = stderr
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_default();
    assert!(status.success(), "host_daemon exited with {status}:\n{err}");
    assert!(err.contains("exiting on shutdown request"), "{err}");
    // 200 pipelined calls at 16 a turn: some turns left work pending, and the
    // loop took them without waiting on the fd (no new event would have come for
    // requests already buffered: every call was answered above). How many turns
    // were pending depends on how the calls arrived, so only their presence is
    // checked.
    assert!(pending_turns(&err) >= 1, "{err}");
}

#[test]
fn examples_are_clean_under_valgrind() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("SKIPPED: valgrind is not installed");
        return;
    }
    let vg = ["valgrind", "-q", "--leak-check=full", "--error-exitcode=99"];
    let (mut daemon, address, stderr) = start_daemon(&vg);
    assert_passed(&run_client(&vg, "client", &address, &[]), "client");
    assert_passed(&run_client(&vg, "cpp_client", &address, &[]), "cpp_client");
    assert_passed(&run_client(&vg, "loop_host", &address, &[]), "loop_host");
    // The Python client also parks getters whose connections then close: the
    // daemon's cancel callback frees their replies, under valgrind too.
    assert_passed(&run_python_client(&address), "python");
    let pid = daemon.0.as_ref().expect("daemon").id();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut daemon);
    let err = stderr
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_default();
    assert!(
        status.success(),
        "host_daemon under valgrind exited with {status}:\n{err}"
    );
    assert!(err.contains("exiting on signal"), "{err}");
}

#[test]
fn shared_library_has_soname_and_exports_only_the_api() {
    let so = lib_dir().join("libmgr.so");
    let out = Command::new("readelf")
        .arg("-d")
        .arg(&so)
        .output()
        .expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Library soname: [libmgr.so.0]"),
        "no SONAME:\n{text}"
    );
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("nm");
    assert!(out.status.success());
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    let foreign: Vec<&String> = names.iter().filter(|n| !n.starts_with("mgr_")).collect();
    assert!(foreign.is_empty(), "exports beyond mgr_*: {foreign:?}");
    for required in ["mgr_server_new", "mgr_create", "mgr_call", "mgr_last_error"] {
        assert!(
            names.iter().any(|n| n == required),
            "{required} not exported"
        );
    }
}

#[test]
fn header_compiles_as_c99_and_cxx() {
    let dir = std::env::temp_dir().join(format!("mgr-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("use_header.c");
    std::fs::write(
        &src,
        "#include \"mgr.h\"\nint main(void) { mgr_value *v = mgr_value_none(); mgr_value_free(v); return MGR_OK; }\n",
    )
    .expect("write");
    let include = root().join("include");
    for (compiler, std_flag, lang) in [("cc", "-std=c99", "c"), ("c++", "-std=c++11", "c++")] {
        let out = Command::new(compiler)
            .args([
                std_flag,
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-x",
                lang,
            ])
            .arg("-I")
            .arg(&include)
            .args(["-fsyntax-only"])
            .arg(&src)
            .output()
            .expect("run the compiler");
        assert!(
            out.status.success(),
            "mgr.h does not compile with {compiler} {std_flag}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
