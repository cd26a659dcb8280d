//! Our client's handshake against CPython's own `Listener`: the 3.11 one installed
//! here (legacy HMAC-MD5 challenge) and one speaking the Python >= 3.12 handshake.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use mgr::client::Connection;
use mgr::{Address, Error};

struct PyListener {
    child: Child,
    address: Address,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl PyListener {
    fn start(key: &str, modern: bool) -> PyListener {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");
        let mut cmd = Command::new("python3");
        cmd.arg(format!("{dir}/listener.py")).arg(key);
        if modern {
            cmd.arg("--modern");
        }
        let mut child = cmd
            .env("PYTHONPATH", dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("listener prints its address").unwrap();
        PyListener {
            child,
            address: first.parse().expect("host:port"),
            lines,
        }
    }

    fn echo(&self, key: &[u8], msg: &[u8]) -> Result<Vec<u8>, Error> {
        let mut c = Connection::connect(&self.address, key)?;
        c.queue_raw(msg);
        c.write_out()?;
        c.read_frame(1 << 20)
    }
}

impl Drop for PyListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rust_client_authenticates_with_cpython_311_listener() {
    let mut l = PyListener::start("k311", false);
    assert_eq!(l.echo(b"k311", b"hi").unwrap(), b"echo:hi");
    match l.echo(b"wrong", b"hi") {
        Err(Error::Auth(e)) => assert!(e.to_string().contains("rejected"), "{e}"),
        other => panic!("expected an auth error, got {other:?}"),
    }
    let refused = l.lines.next().unwrap().unwrap();
    assert!(refused.starts_with("refused:"), "{refused}");
    // Still serving the right key after a refusal.
    assert_eq!(l.echo(b"k311", b"again").unwrap(), b"echo:again");
}

#[test]
fn rust_client_authenticates_with_a_312_listener() {
    let mut l = PyListener::start("k312", true);
    assert_eq!(l.echo(b"k312", b"hello").unwrap(), b"echo:hello");
    assert!(matches!(l.echo(b"bad", b"x"), Err(Error::Auth(_))));
    let refused = l.lines.next().unwrap().unwrap();
    assert!(refused.starts_with("refused:"), "{refused}");
}
