//! The cycle collector over real sockets: a ring of lists a native client
//! built and let go of is freed, by steps no larger than the configured work
//! per turn (counted by the server's own `gc_longest_step`, not timed), while
//! a ring a client still holds is kept.

mod common;

use std::time::Duration;

use common::KEY;
use mgr::{Manager, Server, ServerConfig, Value};

const WORK: usize = 100;

/// Builds a ring of `n` lists (each holds the next) over its own connection;
/// keeps a proxy for the first if `keep`, drops everything else.
fn build_ring(address: mgr::Address, n: usize, keep: bool) -> Option<(Manager, mgr::Proxy)> {
    let m = Manager::connect_to(&address, KEY).expect("connect");
    let lists: Vec<_> = (0..n).map(|_| m.create("list", vec![]).unwrap()).collect();
    for i in 0..n {
        let next = Value::Ref(lists[(i + 1) % n].token().clone());
        lists[i].call("append", vec![next]).unwrap();
    }
    let mut lists = lists.into_iter();
    let first = lists.next().unwrap();
    drop(lists);
    if keep {
        Some((m, first))
    } else {
        None
    }
}

#[test]
fn a_ring_of_lists_is_freed_in_steps_bounded_by_the_work_per_turn() {
    const N: usize = 2000;
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), KEY);
    config.reply_ref_grace = Duration::from_millis(50);
    config.gc_work_per_turn = WORK;
    let mut server = Server::bind(config).unwrap();
    server.register_builtins();
    let address = server.address().clone();

    // A ring some client holds stays, collections or not.
    let a = address.clone();
    let client = std::thread::spawn(move || build_ring(a, N, true));
    while !client.is_finished() {
        server.turn(Some(Duration::from_millis(5))).unwrap();
    }
    let held = client.join().unwrap().unwrap();
    for _ in 0..2000 {
        server.turn(Some(Duration::from_millis(1))).unwrap();
        if !server.has_pending_work() && server.number_of_objects() == N {
            break;
        }
    }
    assert_eq!(server.number_of_objects(), N, "the held ring is kept");
    assert_eq!(server.stats().gc_freed, 0);

    // Its last client reference goes (the manager's connection closes):
    // only the ring's own references are left.
    let dropper = std::thread::spawn(move || drop(held));
    let mut turns = 0;
    while server.number_of_objects() > 0 {
        server.turn(Some(Duration::from_millis(5))).unwrap();
        turns += 1;
        assert!(turns < 20_000, "the collector never finishes");
    }
    dropper.join().unwrap();
    let stats = server.stats();
    assert_eq!(stats.gc_freed, N as u64, "the collector freed the ring");
    assert!(stats.gc_collections >= 1);
    assert!(
        stats.gc_longest_step <= (WORK + 1) as u64,
        "a step did {} units, over {WORK} + one list's reference",
        stats.gc_longest_step
    );
    // Four passes over N slots, at most WORK + 1 units a turn.
    assert!(turns >= 4 * N / (WORK + 1), "{turns} turns");
}
