//! A tokio program that serves libmgr on its current-thread runtime, beside a
//! task of its own (a 60 Hz tick), with `mgr::server::serve` (feature `tokio`),
//! without `unsafe` and without a thread.
//!
//! It serves the built-in types and the `Gate` host type (see `shared/gate.rs`:
//! `wait()` is a deferred reply answered by another client's `open()`).
//!
//! ```sh
//! MGR_AUTHKEY=secret cargo run --features tokio --example tokio_host -- 127.0.0.1:50000
//! ```
//!
//! It prints `tokio_host listening on ADDR` and serves until a client asks the
//! server to shut down.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use mgr::{Server, ServerConfig};

#[path = "shared/gate.rs"]
mod gate;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let key = std::env::var("MGR_AUTHKEY").unwrap_or_default();
    let mut server = Server::bind(ServerConfig::new(address.parse()?, key.as_bytes()))?;
    server.register_builtins();
    let ticks = Rc::new(Cell::new(0u64));
    server.register(gate::gate_type(&ticks));
    println!("tokio_host listening on {}", server.address());

    // The host's own work, on the same thread: a local task, as the server's
    // state (`Rc`) is.
    let local = tokio::task::LocalSet::new();
    let clock = ticks.clone();
    local.spawn_local(async move {
        let mut frame = tokio::time::interval(Duration::from_micros(16_667));
        loop {
            frame.tick().await;
            clock.set(clock.get() + 1);
        }
    });
    local.run_until(mgr::server::serve(&mut server)).await?;
    eprintln!("tokio_host: shut down after {} ticks", ticks.get());
    Ok(())
}
