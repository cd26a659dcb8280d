//! How a server gets its socket, as an embedding host meets it: `Server::bind`
//! replaces a stale Unix socket file and names the address in its errors;
//! `Server::from_listener` serves a socket that is already listening and leaves
//! its file alone.

mod common;

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;

use common::{TempDir, KEY};
use mgr::{Address, Error, Manager, Server, ServerConfig, Value};

/// Makes a server on a thread (a `Server` stays on its thread) and serves
/// until a client shuts it down; returns its address once it listens.
fn serve(
    make: impl FnOnce() -> mgr::Result<Server> + Send + 'static,
) -> (Address, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut server = make().expect("server");
        server.register_builtins();
        tx.send(server.address().clone()).unwrap();
        server.run().expect("run");
    });
    (rx.recv().expect("server started"), thread)
}

/// A client stores and reads a value, then shuts the server down.
fn use_and_stop(address: &Address) {
    let m = Manager::connect_to(address, KEY).expect("connect");
    let d = m.create("dict", vec![]).unwrap();
    d.call("__setitem__", vec![Value::Str("k".into()), Value::Int(1)])
        .unwrap();
    assert_eq!(
        d.call("get", vec![Value::Str("k".into())]).unwrap(),
        Value::Int(1)
    );
    drop(d);
    m.shutdown().unwrap();
}

fn io_error(r: mgr::Result<Server>) -> std::io::Error {
    match r {
        Err(Error::Io(e)) => e,
        Err(other) => panic!("expected an I/O error, got {other}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn a_stale_socket_is_replaced_and_the_file_removed_at_the_end() {
    let dir = TempDir::new("startup-stale");
    let path = dir.join("m.sock");
    drop(UnixListener::bind(&path).unwrap()); // a crashed server's leftover
    let address = Address::Unix(path.clone());
    let config = ServerConfig::new(address.clone(), KEY);
    let (_, thread) = serve(move || Server::bind(config));

    // While it serves, the path is refused to others.
    let e = io_error(Server::bind(ServerConfig::new(address.clone(), KEY)));
    assert_eq!(e.kind(), ErrorKind::AddrInUse);
    assert_eq!(
        e.to_string(),
        format!("another server is listening on unix:{}", path.display())
    );

    use_and_stop(&address);
    thread.join().unwrap();
    assert!(!path.exists(), "its own socket file is removed");
}

#[test]
fn errors_name_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    let e = io_error(Server::bind(ServerConfig::new(Address::Tcp(at), KEY)));
    assert_eq!(e.kind(), ErrorKind::AddrInUse);
    assert_eq!(
        e.to_string(),
        format!("{at} is already in use (another server?)")
    );

    let dir = TempDir::new("startup-errors");
    let missing = dir.join("no");
    let address = Address::Unix(missing.join("m.sock"));
    let e = io_error(Server::bind(ServerConfig::new(address, KEY)));
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.to_string()
            .ends_with(&format!("directory {} does not exist", missing.display())),
        "{e}"
    );

    let file = dir.join("data");
    std::fs::write(&file, b"keep").unwrap();
    let e = io_error(Server::bind(ServerConfig::new(
        Address::Unix(file.clone()),
        KEY,
    )));
    assert!(e.to_string().contains("exists and is not a socket"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}

#[test]
fn an_adopted_unix_socket_is_served_and_its_file_left() {
    let dir = TempDir::new("startup-adopt");
    let path = dir.join("a.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // The configured address is replaced by the socket's own.
    let config = ServerConfig::new("127.0.0.1:1".parse().unwrap(), KEY);
    let (served, thread) = serve(move || Server::from_listener(OwnedFd::from(listener), config));
    let address = Address::Unix(path.clone());
    assert_eq!(served, address);
    use_and_stop(&address);
    thread.join().unwrap();
    assert!(path.exists(), "the file belongs to whoever created it");
}

#[test]
fn an_adopted_tcp_socket_is_served_and_the_key_rule_holds() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = Address::Tcp(listener.local_addr().unwrap());
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY);
    let (served, thread) = serve(move || Server::from_listener(OwnedFd::from(listener), config));
    assert_eq!(served, at);
    use_and_stop(&at);
    thread.join().unwrap();

    // An empty key on a public socket is refused, whatever the config said.
    let public = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), b"");
    match Server::from_listener(OwnedFd::from(public), config) {
        Err(Error::Config(m)) => assert!(m.contains("without an authkey"), "{m}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
