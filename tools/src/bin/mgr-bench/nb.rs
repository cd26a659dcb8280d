//! The library's own non-blocking client under load (`--client nb`): N
//! [`NbClient`]s registered in one `mio::Poll` on one thread, each keeping
//! `--depth` calls in flight the way the `loop` client does — D calls started
//! together, the next D once all D have completed (from inside the last
//! callback), each reply's latency taken from its batch's start. Unlike the
//! `loop` client, which writes pre-encoded frames and only checks reply bytes,
//! every call here goes through the public API: a `Request` encoded, a
//! `Value` decoded, a callback run. Connecting and creating each connection's
//! object happen before the clock starts.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use mgr::client::{NbClient, NbConfig, NbProxy, NbResult};
use mgr::{Address, ObjectId, Value};

use crate::hist::Histogram;
use crate::scenarios::{CallKind, Meter, Outcome, KEY};

/// One connection's progress, shared with its callbacks.
struct State {
    id: ObjectId,
    issued: u64,
    due: usize,
    batch_t: Instant,
    done: bool,
    failed: Option<String>,
}

struct Run {
    call: CallKind,
    size: usize,
    depth: usize,
    calls: u64,
    deadline: Instant,
    hist: Histogram,
}

type Shared = Rc<RefCell<Run>>;

/// Each connection's object once its create completed.
type Created = Rc<RefCell<Vec<Option<Result<NbProxy, String>>>>>;

/// The `i`th call's method and arguments (dict calls alternate set and get).
fn call_of(kind: CallKind, size: usize, i: u64) -> (&'static str, Vec<Value>) {
    match kind {
        CallKind::Dict if i % 2 == 0 => (
            "__setitem__",
            vec![Value::Str(KEY.into()), Value::Bytes(vec![b'x'; size])],
        ),
        CallKind::Dict => ("__getitem__", vec![Value::Str(KEY.into())]),
        CallKind::Qsize => ("qsize", vec![]),
    }
}

/// Starts the next batch on `c` (or marks the connection done).
fn next_batch(c: &mut NbClient, st: &Rc<RefCell<State>>, run: &Shared) {
    let (depth, stop) = {
        let r = run.borrow();
        let s = st.borrow();
        (r.depth, s.issued >= r.calls || Instant::now() >= r.deadline)
    };
    if stop {
        st.borrow_mut().done = true;
        return;
    }
    let (kind, size) = (run.borrow().call, run.borrow().size);
    {
        let mut s = st.borrow_mut();
        s.batch_t = Instant::now();
        s.due = depth;
    }
    for _ in 0..depth {
        let (i, id) = {
            let mut s = st.borrow_mut();
            s.issued += 1;
            (s.issued - 1, s.id)
        };
        let (method, args) = call_of(kind, size, i);
        let (st2, run2) = (st.clone(), run.clone());
        let started = c.call_id(id, method, args, vec![], move |c, r: NbResult| {
            let t = st2.borrow().batch_t;
            run2.borrow_mut().hist.record(t.elapsed().as_nanos() as u64);
            if let Err(e) = r {
                st2.borrow_mut().failed = Some(e.to_string());
                st2.borrow_mut().done = true;
                return;
            }
            let last = {
                let mut s = st2.borrow_mut();
                s.due -= 1;
                s.due == 0
            };
            if last {
                next_batch(c, &st2, &run2);
            }
        });
        if let Err(e) = started {
            let mut s = st.borrow_mut();
            s.failed = Some(e.to_string());
            s.done = true;
            return;
        }
    }
}

/// Drives `clients` until `until` holds.
fn drive(
    poll: &mut Poll,
    clients: &mut [NbClient],
    mut until: impl FnMut() -> bool,
) -> Result<(), String> {
    let mut events = Events::with_capacity(1024);
    while !until() {
        // No timer when no client has a deadline (the usual case once
        // connected): a timed epoll_wait arms and cancels an hrtimer on
        // every wait, a cost the blocking client's read does not pay.
        let timeout = clients.iter().filter_map(NbClient::timeout).min();
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for ev in events.iter() {
            let c = &mut clients[ev.token().0];
            // A writable edge with nothing to write needs no turn.
            if ev.is_readable() || ev.is_error() || ev.is_read_closed() || c.wants_write() {
                c.process();
            }
        }
        for c in clients.iter_mut() {
            if c.next_deadline().is_some_and(|d| d <= Instant::now()) {
                c.process();
            }
        }
    }
    Ok(())
}

/// Runs the call loop on `conns` non-blocking clients of one thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    address: &Address,
    authkey: &[u8],
    conns: usize,
    call: CallKind,
    size: usize,
    depth: usize,
    calls: u64,
    seconds: f64,
    pid: Option<u32>,
) -> Result<Outcome, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut clients = Vec::with_capacity(conns);
    let proxies: Created = Rc::new(RefCell::new((0..conns).map(|_| None).collect()));
    for i in 0..conns {
        let mut c =
            NbClient::connect(address, authkey, NbConfig::default()).map_err(|e| e.to_string())?;
        poll.registry()
            .register(&mut c, Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("register: {e}"))?;
        let p = proxies.clone();
        c.create(call.typeid(), vec![], vec![], move |_, r| {
            p.borrow_mut()[i] = Some(r.and_then(|r| r.into_proxy()).map_err(|e| e.to_string()));
        })
        .map_err(|e| e.to_string())?;
        clients.push(c);
    }
    drive(&mut poll, &mut clients, || {
        proxies.borrow().iter().all(Option::is_some)
    })?;
    let objects: Vec<NbProxy> = std::mem::take(&mut *proxies.borrow_mut())
        .into_iter()
        .map(|p| p.expect("created"))
        .collect::<Result<_, _>>()?;
    let run = Rc::new(RefCell::new(Run {
        call,
        size,
        depth,
        calls,
        deadline: Instant::now() + Duration::from_secs_f64(seconds),
        hist: Histogram::default(),
    }));
    let states: Vec<Rc<RefCell<State>>> = objects
        .iter()
        .map(|p| {
            Rc::new(RefCell::new(State {
                id: p.id(),
                issued: 0,
                due: 0,
                batch_t: Instant::now(),
                done: false,
                failed: None,
            }))
        })
        .collect();
    let meter = Meter::start(pid);
    run.borrow_mut().deadline = Instant::now() + Duration::from_secs_f64(seconds);
    for (c, st) in clients.iter_mut().zip(&states) {
        next_batch(c, st, &run);
    }
    drive(&mut poll, &mut clients, || {
        states.iter().all(|s| s.borrow().done)
    })?;
    let mut out = Outcome::default();
    meter.stop(&mut out);
    if let Some(e) = states.iter().find_map(|s| s.borrow().failed.clone()) {
        return Err(format!("a call failed: {e}"));
    }
    out.calls = states.iter().map(|s| s.borrow().issued).sum();
    out.hist = std::mem::take(&mut run.borrow_mut().hist);
    drop(objects);
    Ok(out)
}
