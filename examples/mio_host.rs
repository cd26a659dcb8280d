//! A mio program that embeds a libmgr server in its own event loop, next to its
//! own work (a 60 Hz tick), without `unsafe` and without a thread.
//!
//! It serves the built-in types and a host type, `Gate`: `wait()` blocks its
//! caller (a deferred reply, no thread) until another client calls `open()`,
//! which answers every waiter with the number of ticks so far. A stock CPython
//! client reaches it through `BaseManager.register('Gate')`.
//!
//! ```sh
//! MGR_AUTHKEY=secret cargo run --example mio_host -- 127.0.0.1:50000
//! ```
//!
//! It prints `mio_host listening on ADDR` and serves until a client asks the
//! server to shut down.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mgr::{Server, ServerConfig};
use mio::{Events, Interest, Poll, Token};

#[path = "shared/gate.rs"]
mod gate;

/// The server's descriptor in our poll.
const SERVER: Token = Token(0);
/// The host's own frame rate.
const TICK: Duration = Duration::from_micros(16_667);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let key = std::env::var("MGR_AUTHKEY").unwrap_or_default();
    let mut server = Server::bind(ServerConfig::new(address.parse()?, key.as_bytes()))?;
    server.register_builtins();
    let ticks = Rc::new(Cell::new(0u64));
    server.register(gate::gate_type(&ticks));
    println!("mio_host listening on {}", server.address());

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    poll.registry()
        .register(&mut server, SERVER, Interest::READABLE)?;
    let mut next_tick = Instant::now() + TICK;
    while !server.is_shut_down() {
        // Wait for the server's fd, its next timer or our next tick, whichever is
        // first; not at all while the server has work left from its last turn.
        let wake = server
            .next_deadline()
            .map_or(next_tick, |d| d.min(next_tick));
        poll.poll(
            &mut events,
            Some(wake.saturating_duration_since(Instant::now())),
        )?;
        // One bounded turn per wake-up: a flood of requests cannot take the frame.
        server.process()?;
        if Instant::now() >= next_tick {
            ticks.set(ticks.get() + 1); // the host's own frame work goes here
            next_tick += TICK;
        }
    }
    eprintln!("mio_host: shut down after {} ticks", ticks.get());
    Ok(())
}
