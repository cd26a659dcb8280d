"""Stock CPython clients against mgrd: reference cycles between shared objects
are freed (CPython's own server leaks them, gh-103136), and over a Unix socket
the references a process took are released when it dies. Standard library only."""

import gc
import multiprocessing
import os
import signal
import tempfile
import time
import unittest
from multiprocessing.managers import SyncManager

from mgrtest import Mgrd, MgrdTestCase

fork = multiprocessing.get_context("fork")


def wait_for_count(m, want, timeout=30):
    """Polls the object count until it is `want` (or `timeout` passes); returns
    the last count. Never asserts on how long it took."""
    gc.collect()
    deadline = time.monotonic() + timeout
    count = m._number_of_objects()
    while count != want and time.monotonic() < deadline:
        time.sleep(0.02)
        count = m._number_of_objects()
    return count


class CycleTest(MgrdTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        multiprocessing.current_process().authkey = cls.authkey
        cls.manager = SyncManager(address=cls.address, authkey=cls.authkey)
        cls.manager.connect()

    def setUp(self):
        self.baseline = wait_for_count(self.manager, 0)

    def test_a_list_that_holds_itself_is_freed(self):
        m = self.manager
        l = m.list()
        l.append(l)
        self.assertEqual(len(l), 1)
        self.assertEqual(l[0]._token.id, l._token.id)
        del l
        self.assertEqual(wait_for_count(m, self.baseline), self.baseline)

    def test_a_dict_and_a_list_that_hold_each_other_are_freed(self):
        m = self.manager
        d = m.dict()
        l = m.list()
        d["l"] = l
        l.append(d)
        ns = m.Namespace()
        ns.d = d  # a third object on the cycle's path, held from outside
        del d, l
        # Still reachable through the namespace: nothing is freed.
        self.assertEqual(wait_for_count(m, self.baseline + 3, timeout=1), self.baseline + 3)
        self.assertEqual(len(ns.d["l"]), 1)
        del ns
        self.assertEqual(wait_for_count(m, self.baseline), self.baseline)

    def test_a_cycle_held_by_a_live_proxy_is_kept(self):
        m = self.manager
        a = m.list()
        b = m.list([a])
        a.append(b)
        del b
        time.sleep(0.3)  # collections run meanwhile; `a` keeps both
        self.assertEqual(m._number_of_objects(), self.baseline + 2)
        self.assertEqual(len(a[0]), 1)
        del a
        self.assertEqual(wait_for_count(m, self.baseline), self.baseline)

    def test_the_collector_reports_its_work(self):
        m = self.manager
        l = m.list()
        l.append(l)
        del l
        wait_for_count(m, self.baseline)
        conn = m._Client(self.address, authkey=self.authkey)
        try:
            from multiprocessing.managers import dispatch
            stats = dispatch(conn, None, "stats")
        finally:
            conn.close()
        self.assertGreaterEqual(stats["gc_freed"], 1)
        self.assertGreaterEqual(stats["gc_collections"], 1)


def start_unix(authkey, *args):
    """A mgrd on a Unix socket in a new temporary directory (reply grace 0.5 s,
    then `args`) and a SyncManager connected to it: (directory, server, manager)."""
    d = tempfile.TemporaryDirectory()
    path = os.path.join(d.name, "mgr.sock")
    server = Mgrd("unix:" + path, authkey, ("--reply-grace", "0.5", *args))
    multiprocessing.current_process().authkey = authkey
    m = SyncManager(address=path, authkey=authkey)
    m.connect()
    return d, server, m


def hold_proxies(address, authkey, n, ready_w, closed_conns):
    """In a forked child: takes `n` proxies over its own connections, closes
    every connection it has, says so on `ready_w`, and sleeps until killed."""
    multiprocessing.current_process().authkey = authkey
    m = SyncManager(address=address, authkey=authkey)
    m.connect()
    held = [m.list([i]) for i in range(n)]
    assert held[0][0] == 0  # a call: opens this thread's own connection
    if closed_conns:
        held[0]._tls.connection.close()
        del held[0]._tls.connection
    os.write(ready_w, b"x")
    time.sleep(600)


class CrashSafeReferencesTest(unittest.TestCase):
    """Over a Unix socket the server knows each peer's pid: a process's
    references are released when it dies, and only then."""

    authkey = b"crash-key"

    def setUp(self):
        self.dir, self.server, self.m = start_unix(self.authkey)
        self.path = self.m.address
        self.baseline = wait_for_count(self.m, 0)

    def tearDown(self):
        try:
            self.assertEqual(self.server.stop(), 0)
        finally:
            self.dir.cleanup()

    def start_holder(self, n, closed_conns):
        r, w = os.pipe()
        p = fork.Process(target=hold_proxies, args=(self.path, self.authkey, n, w, closed_conns))
        p.start()
        os.close(w)
        try:
            self.assertEqual(os.read(r, 1), b"x", "the child did not get its proxies")
        finally:
            os.close(r)
        return p

    def test_a_killed_process_s_references_are_released(self):
        p = self.start_holder(100, closed_conns=False)
        try:
            self.assertEqual(self.m._number_of_objects(), self.baseline + 100)
            time.sleep(0.3)
            self.assertEqual(
                self.m._number_of_objects(), self.baseline + 100,
                "a live process's references were released")
        finally:
            p.kill()
            p.join(10)
        self.assertEqual(wait_for_count(self.m, self.baseline), self.baseline)

    def test_a_live_process_with_no_connection_open_keeps_its_objects(self):
        p = self.start_holder(10, closed_conns=True)
        try:
            # Its connections are all closed; it lives, so its objects do.
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                self.assertEqual(self.m._number_of_objects(), self.baseline + 10)
                time.sleep(0.05)
        finally:
            p.kill()
            p.join(10)
        self.assertEqual(wait_for_count(self.m, self.baseline), self.baseline)


def acquire_and_exit(lock, sem, bsem):
    lock.acquire()
    sem.acquire()
    bsem.acquire()


class LocksOfDeadProcessesTest(unittest.TestCase):
    """A plain Lock, Semaphore and BoundedSemaphore a process acquired: kept
    held when it exits by default (as on CPython's server), released with
    --release-locks-of-dead."""

    authkey = b"locks-key"

    def run_server(self, args):
        d, server, m = start_unix(self.authkey, *args)
        lock, sem, bsem = m.Lock(), m.Semaphore(1), m.BoundedSemaphore(1)
        p = fork.Process(target=acquire_and_exit, args=(lock, sem, bsem))
        p.start()
        p.join(10)
        self.assertEqual(p.exitcode, 0)
        return d, server, m, (lock, sem, bsem)

    def stop(self, d, server):
        try:
            self.assertEqual(server.stop(), 0)
        finally:
            d.cleanup()

    def test_by_default_they_stay_held(self):
        d, server, m, objs = self.run_server(())
        try:
            time.sleep(0.3)
            for o in objs:
                self.assertFalse(o.acquire(False), f"{o} was released")
            objs[0].release()  # a hand-off still works
            self.assertTrue(objs[0].acquire(False))
            objs[0].release()
        finally:
            del objs
            self.stop(d, server)

    def test_with_the_opt_in_they_are_released(self):
        d, server, m, objs = self.run_server(("--release-locks-of-dead",))
        try:
            for o in objs:
                # Blocks until the server sees the process gone (no time bound
                # asserted: the generous timeout only keeps a failure finite).
                self.assertTrue(o.acquire(timeout=30), f"{o} stayed held")
            with self.assertRaises(ValueError):
                objs[2].release()
                objs[2].release()  # bounded: the dead process's unit came back once
        finally:
            del objs
            self.stop(d, server)


def barrier_wait(b):
    b.wait()


class BarrierOfADeadProcessTest(unittest.TestCase):
    def test_a_killed_waiter_breaks_the_barrier(self):
        import threading

        d, server, m = start_unix(b"barrier-key")
        with d:
            try:
                b = m.Barrier(3)
                p = fork.Process(target=barrier_wait, args=(b,))
                p.start()
                deadline = time.monotonic() + 30
                while b.n_waiting < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                self.assertEqual(b.n_waiting, 1)
                p.kill()
                p.join(10)
                # The third party never comes: a wait with no timeout ends
                # only because the barrier breaks. (The join's timeout only
                # keeps a failure finite; a timeout of the wait itself would
                # break the barrier too, so none is given.)
                got = []

                def wait():
                    try:
                        got.append(b.wait())
                    except threading.BrokenBarrierError as e:
                        got.append(e)

                t = threading.Thread(target=wait, daemon=True)
                t.start()
                t.join(60)
                self.assertFalse(t.is_alive(), "the wait hangs")
                self.assertIsInstance(got[0], threading.BrokenBarrierError)
                self.assertTrue(b.broken)
                del b
            finally:
                self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
