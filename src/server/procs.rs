//! Client processes and what they hold: crash-safe references for stock
//! CPython clients.
//!
//! CPython's clients take references over short connections of their own (one
//! per `incref`), so a reference cannot belong to a connection. On a Unix
//! socket the server knows the peer's pid (`SO_PEERCRED`, read at accept), so
//! a reference taken over any of a process's connections belongs to that
//! process, and when the process exits its references are released. Objects
//! may also watch a process (a lock it holds, a barrier it waits at) and are
//! told when it exits.
//!
//! A process is watched from its first reference or watch until it exits:
//! with a pidfd (`pidfd_open`, registered in the reactor's `Poll`, readable
//! when the process exits), or where that is missing (old kernels, seccomp,
//! out of descriptors) by polling: every [`POLL_EVERY`], at most
//! [`POLL_BATCH`] watched pids are checked with `kill(pid, 0)` and
//! `/proc/PID/stat` (a zombie counts as exited). A process whose connections
//! all closed but which lives keeps what it holds.
//!
//! TCP peers have no pid: their references stay global, as on CPython's
//! server (see SECURITY.md, "Crash-safe references").
//!
//! This module keeps the bookkeeping and asks the kernel about pids; the
//! reactor registers the pidfds, and `Core::process_exited` releases.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use super::context::{Core, Recount, TimerId, TimerTarget};
use super::fasthash::FastMap;
use crate::proto::ObjectId;

/// How often pids without a pidfd are checked.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(200);
/// Pids checked per poll at most (round-robin).
pub(crate) const POLL_BATCH: usize = 64;
/// A process's watchers are first pruned of destroyed objects at this size.
const PRUNE_MIN: usize = 16;

/// How a process's exit is noticed.
#[derive(Debug)]
pub(crate) enum Watch {
    /// Not yet set up (the reactor does it after the turn's requests).
    Pending,
    /// A pidfd registered in the reactor's `Poll` (token from the pid); held
    /// for its drop, which closes it (and so takes it out of the `Poll`).
    Pidfd(#[allow(dead_code)] OwnedFd),
    /// Checked every [`POLL_EVERY`].
    Polled,
}

/// One client process.
#[derive(Debug)]
pub(crate) struct Proc {
    /// References it took and has not given back, by object.
    pub(crate) refs: FastMap<ObjectId, u32>,
    /// Objects to tell when it exits (a set; destroyed ones are pruned when
    /// it has doubled since the last pruning, so it stays within twice the
    /// live ones).
    pub(crate) watchers: FastMap<ObjectId, ()>,
    prune_at: usize,
    pub(crate) watch: Watch,
}

/// Every client process the server knows the pid of and that holds something.
#[derive(Debug, Default)]
pub(crate) struct Procs {
    pub(crate) by_pid: FastMap<u32, Proc>,
    /// Pids whose watch the reactor still has to set up.
    pub(crate) unwatched: Vec<u32>,
    /// Pids watched by polling, and where the next poll starts.
    polled: Vec<u32>,
    poll_at: usize,
    /// The polling timer, while any pid is polled.
    pub(crate) poll_timer: Option<TimerId>,
    /// Whether plain locks and semaphores of an exited process are released
    /// ([`ServerConfig::release_locks_of_dead`](super::ServerConfig::release_locks_of_dead)).
    pub(crate) release_locks: bool,
    /// Processes seen to exit while holding something.
    pub(crate) exited: u64,
}

impl Procs {
    fn entry(&mut self, pid: u32) -> &mut Proc {
        let unwatched = &mut self.unwatched;
        self.by_pid.entry(pid).or_insert_with(|| {
            unwatched.push(pid);
            Proc {
                refs: FastMap::default(),
                watchers: FastMap::default(),
                prune_at: PRUNE_MIN,
                watch: Watch::Pending,
            }
        })
    }

    /// Records a reference `pid` took to `id`.
    pub(crate) fn take(&mut self, pid: u32, id: ObjectId) {
        *self.entry(pid).refs.entry(id).or_insert(0) += 1;
    }

    /// Takes back one reference `pid` holds to `id`; false when it holds none
    /// (the reference given back was another's: a global one).
    pub(crate) fn give_back(&mut self, pid: u32, id: ObjectId) -> bool {
        let Some(p) = self.by_pid.get_mut(&pid) else {
            return false;
        };
        let Some(n) = p.refs.get_mut(&id) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            p.refs.remove(&id);
        }
        true
    }

    /// Asks for object `id`'s `on_process_exit` when `pid` exits (once);
    /// `live` says which watching objects still exist.
    pub(crate) fn watch(&mut self, pid: u32, id: ObjectId, live: impl Fn(ObjectId) -> bool) {
        let p = self.entry(pid);
        p.watchers.insert(id, ());
        if p.watchers.len() >= p.prune_at {
            p.watchers.retain(|w, _| live(*w));
            p.prune_at = (2 * p.watchers.len()).max(PRUNE_MIN);
        }
    }

    /// Falls back to polling for `pid` (no pidfd); the caller arms the timer
    /// (`Core::arm_process_poll`).
    pub(crate) fn poll_instead(&mut self, pid: u32) {
        if let Some(p) = self.by_pid.get_mut(&pid) {
            p.watch = Watch::Polled;
            self.polled.push(pid);
        }
    }

    /// The next [`POLL_BATCH`] polled pids that have exited (they stay listed
    /// until `Core::process_exited` removes them).
    fn poll_exited(&mut self) -> Vec<u32> {
        self.polled.retain(|pid| self.by_pid.contains_key(pid));
        let n = self.polled.len().min(POLL_BATCH);
        let mut dead = Vec::new();
        for _ in 0..n {
            self.poll_at %= self.polled.len();
            let pid = self.polled[self.poll_at];
            if has_exited(pid) {
                dead.push(pid);
            }
            self.poll_at += 1;
        }
        dead
    }
}

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when `pid` exits.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `pid` no longer runs: gone (`kill(pid, 0)` fails with ESRCH), or a
/// zombie waiting to be reaped.
pub(crate) fn has_exited(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return true;
    }
    // `/proc/PID/stat` is "PID (COMM) STATE …"; COMM may hold ')' itself.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
        Err(_) => false,
    }
}

impl Core {
    /// Process `pid` has exited: its references are released and the objects
    /// watching it told (a lock it held, a barrier it waited at).
    pub(crate) fn process_exited(&mut self, pid: u32) {
        let Some(p) = self.procs.by_pid.remove(&pid) else {
            return;
        };
        self.procs.exited += 1;
        for (object, ()) in p.watchers {
            let _ = self.with_object(object, None, None, Recount::IfHolding, |o, cx| {
                o.on_process_exit(cx, pid)
            });
        }
        for (id, n) in p.refs {
            for _ in 0..n {
                self.objects.decref(id);
            }
        }
        // A pidfd is closed as `p.watch` drops (a closed descriptor leaves the
        // epoll set by itself).
    }

    /// The polling timer fired: checks the next batch of polled pids and
    /// re-arms while any is left.
    pub(crate) fn poll_processes(&mut self) {
        self.procs.poll_timer = None;
        for pid in self.procs.poll_exited() {
            self.process_exited(pid);
        }
        self.arm_process_poll();
    }

    /// Starts the polling timer if pids are polled and it is not running
    /// (costs the polled pids, not every process).
    pub(crate) fn arm_process_poll(&mut self) {
        let procs = &mut self.procs;
        procs.polled.retain(|pid| procs.by_pid.contains_key(pid));
        if !procs.polled.is_empty() && procs.poll_timer.is_none() {
            let due = self.now + POLL_EVERY;
            self.procs.poll_timer = Some(self.add_timer(due, TimerTarget::Processes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The polling timer runs while a pid is polled, and only then.
    #[test]
    fn only_a_polled_pid_arms_the_poll_timer() {
        let mut core = Core::new();
        let me = std::process::id();
        core.procs.take(me, ObjectId(1));
        core.arm_process_poll();
        assert!(core.procs.poll_timer.is_none(), "no pid is polled");
        core.procs.poll_instead(me);
        core.arm_process_poll();
        assert!(core.procs.poll_timer.is_some(), "a polled pid");
        core.procs.by_pid.remove(&me);
        core.procs.poll_timer = None;
        core.arm_process_poll();
        assert!(core.procs.poll_timer.is_none(), "its process is gone");
    }

    #[test]
    fn an_exited_child_is_seen_as_exited_zombie_or_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!has_exited(pid), "a running process");
        let fd = pidfd_open(pid);
        child.kill().unwrap();
        // Not reaped yet: a zombie.
        let mut zombie = false;
        for _ in 0..1000 {
            if has_exited(pid) {
                zombie = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(zombie, "a killed, unreaped child is a zombie");
        if let Ok(fd) = fd {
            use std::os::fd::AsRawFd;
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            assert_eq!(n, 1, "the pidfd is readable once the process exited");
        }
        child.wait().unwrap();
        assert!(has_exited(pid), "reaped");
    }

    #[test]
    fn a_decref_read_after_its_process_exited_is_ignored() {
        use crate::proto::RemoteError;
        use crate::server::context::{ConnId, Context};
        use crate::server::dispatch::{IdStyle, Session};
        use crate::server::peer::Peer;
        use crate::server::registry::{CallArgs, CallResult, SharedObject, TypeSpec};

        struct Nothing;
        impl SharedObject for Nothing {
            fn call(&mut self, _: &mut Context<'_>, _: &str, _: CallArgs) -> CallResult {
                Err(RemoteError::type_error("no methods"))
            }
        }
        let spec = std::rc::Rc::new(TypeSpec::new("nothing", &[], |_, _| {
            Err(RemoteError::type_error("unused"))
        }));
        let mut core = Core::new();
        let id = core.objects.insert(spec, Box::new(Nothing));
        core.objects.incref(id); // another client's
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let conn = ConnId::new(1, 1);
        let mut peer = Peer::tcp(conn, "127.0.0.1:9".parse().unwrap());
        peer.pid = Some(child.id());
        core.peers.insert(conn, peer);
        let mut session = Session::new(conn, IdStyle::Hex, false);
        assert!(session.take_ref(&mut core, id));
        assert!(session.take_ref(&mut core, id));
        assert!(
            session.drop_ref(&mut core, id),
            "a live process gives one back"
        );
        assert_eq!(core.objects.get(id).unwrap().refcount, 2);
        child.wait().unwrap();
        core.process_exited(child.id());
        assert_eq!(
            core.objects.get(id).unwrap().refcount,
            1,
            "its last one released"
        );
        // Its late decref must not take the other client's reference.
        assert!(session.drop_ref(&mut core, id));
        assert_eq!(core.objects.get(id).unwrap().refcount, 1);
    }

    #[test]
    fn references_are_counted_per_process() {
        let mut p = Procs::default();
        let id = ObjectId::new(1, 1);
        p.take(7, id);
        p.take(7, id);
        assert_eq!(p.unwatched, vec![7], "watched once");
        assert!(p.give_back(7, id));
        assert!(p.give_back(7, id));
        assert!(!p.give_back(7, id), "none left: the caller's is global");
        assert!(!p.give_back(8, id));
        p.watch(7, id, |_| true);
        p.watch(7, id, |_| true);
        assert_eq!(p.by_pid[&7].watchers.len(), 1);
        // Watchers that went are pruned as the set grows: it stays within
        // twice the live ones.
        for i in 2..1000 {
            p.watch(7, ObjectId::new(i, 1), |w| w == id);
            assert!(p.by_pid[&7].watchers.len() <= 2 * PRUNE_MIN, "{i}");
        }
    }
}
