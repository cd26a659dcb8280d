//! The programs in `examples/`, run as their users would: `mio_host` embeds the
//! server in its own mio loop, and a stock CPython client blocks on its host
//! type's deferred reply until another of its threads opens the gate.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use mgr::Manager;

const KEY: &str = "example-key";

/// `target/<profile>/examples/NAME`, which `cargo test` builds with the tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

#[test]
fn mio_host_serves_a_deferred_host_type_to_a_stock_cpython_client() {
    let mut child = Command::new(example("mio_host"))
        .arg("127.0.0.1:0")
        .env("MGR_AUTHKEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mio_host");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("its first line");
    let address = line
        .trim()
        .strip_prefix("mio_host listening on ")
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
        .expect("ask mio_host to shut down");
    let done = child.wait_with_output().expect("mio_host exits");
    assert!(
        client_ok,
        "client stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(
        done.status.success() && err.contains("shut down after"),
        "mio_host: {:?} {err}",
        done.status
    );
}
