//! Starting mgrd as a child process from the Rust client, and stopping it the way
//! CPython's finalizer does.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use common::TempDir;
use mgr::client::{SpawnOptions, SpawnedServer};
use mgr::{Address, Error};

fn options(key: &[u8]) -> SpawnOptions {
    let mut o = SpawnOptions::new(key);
    o.program = common::mgrd();
    o
}

/// Writes an executable shell script `name` into `dir`.
fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Starts `o`, retrying while a script written by this test process is still
/// open in a child another test thread is forking (ETXTBSY): a race of the test
/// harness's threads, not of the code under test.
fn start(o: &SpawnOptions) -> mgr::Result<SpawnedServer> {
    for _ in 0..50 {
        match SpawnedServer::start(o) {
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
    SpawnedServer::start(o)
}

#[test]
fn spawned_server_serves_and_stops_on_request() {
    let mut s = SpawnedServer::start(&options(b"spawn-key")).unwrap();
    assert!(matches!(s.address(), Address::Tcp(a) if a.port() != 0));
    let m = s.connect().unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 0);
    // mgrd serves the built-in types.
    let q = m.create("Queue", vec![]).unwrap();
    q.call("put", vec![mgr::Value::Str("job".into())]).unwrap();
    assert_eq!(
        q.call("get", vec![]).unwrap(),
        mgr::Value::Str("job".into())
    );
    drop(q);
    assert_eq!(m.number_of_objects().unwrap(), 0);
    assert!(mgr::Manager::connect_to(s.address(), b"wrong").is_err());
    let status = s.stop(Duration::from_secs(10)).unwrap();
    assert!(
        status.success(),
        "a shutdown request ends it cleanly: {status:?}"
    );
    assert!(s.connect().is_err());
}

#[test]
fn spawned_server_on_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("mgr-spawn-{}.sock", std::process::id()));
    let mut o = options(b"k");
    o.address = format!("unix:{}", path.display());
    let mut s = SpawnedServer::start(&o).unwrap();
    assert_eq!(s.address(), &Address::Unix(path.clone()));
    s.connect().unwrap();
    assert!(s.stop(Duration::from_secs(10)).unwrap().success());
    assert!(!path.exists(), "the socket file is gone");
}

#[test]
fn a_server_that_ignores_shutdown_and_sigterm_is_killed() {
    let dir = TempDir::new("mgr-spawn");
    let stubborn = script(
        &dir,
        "stubborn",
        "trap '' TERM\necho 'mgrd listening on 127.0.0.1:9'\nexec sleep 600",
    );
    let mut o = options(b"k");
    o.program = stubborn;
    let mut s = start(&o).unwrap();
    let status = s.stop(Duration::from_millis(200)).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[test]
fn start_failures_are_clear_errors() {
    let mut o = options(b"k");
    o.program = PathBuf::from("/nonexistent/mgrd");
    let err = start(&o).unwrap_err();
    assert!(err.to_string().contains("cannot start"), "{err}");

    let dir = TempDir::new("mgr-spawn");
    o.program = script(&dir, "chatty", "echo 'hello there'");
    let err = start(&o).unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ref m) if m.contains("hello there")),
        "{err}"
    );

    let dir = TempDir::new("mgr-spawn");
    o.program = script(&dir, "silent", "exec sleep 600");
    o.start_timeout = Duration::from_millis(200);
    let err = start(&o).unwrap_err();
    assert!(err.to_string().contains("did not report"), "{err}");
}
