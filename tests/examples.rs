//! The programs in `examples/`, run as their users would: `mio_host` embeds the
//! server in its own mio loop, `tokio_host` serves it on a current-thread tokio
//! runtime (feature `tokio`), and in both a stock CPython client blocks on the
//! host type's deferred reply until another of its threads opens the gate.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use mgr::Manager;

const KEY: &str = "example-key";

/// `target/<profile>/examples/NAME`, built here with `features` (cargo's
/// incremental build makes this a no-op when `cargo test` already built it, and
/// it never leaves an example older than its sources, as checking for the
/// file's existence did).
fn example(name: &str, features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join("examples").join(name);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "libmgr", "--example", name])
        .current_dir(common::repo_root());
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().expect("run cargo build").success());
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Starts example `name`, runs the Gate client against it, shuts it down.
fn serves_the_gate(name: &str, features: &[&str]) {
    let mut child = Command::new(example(name, features))
        .arg("127.0.0.1:0")
        .env("MGR_AUTHKEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("its first line");
    let address = line
        .trim()
        .strip_prefix(&format!("{name} listening on "))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let (host, port) = address.rsplit_once(':').unwrap();
    let script = common::repo_root().join("tests/python/examples/gate_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([host, port])
        .env("MGR_AUTHKEY", KEY)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let client_ok = out.status.success() && stdout.contains("gate: ok");
    Manager::connect(&address, KEY.as_bytes())
        .and_then(|m| m.shutdown())
        .expect("ask the example to shut down");
    let done = child.wait_with_output().expect("the example exits");
    assert!(
        client_ok,
        "client stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(
        done.status.success() && err.contains("shut down after"),
        "{name}: {:?} {err}",
        done.status
    );
}

#[test]
fn mio_host_serves_a_deferred_host_type_to_a_stock_cpython_client() {
    serves_the_gate("mio_host", &[]);
}

#[test]
fn tokio_host_serves_a_deferred_host_type_to_a_stock_cpython_client() {
    serves_the_gate("tokio_host", &["tokio"]);
}
