"""CPython 3.11's stock SyncManager against mgrd: every built-in type through the
standard library's own proxies, blocking calls completed from other processes,
errors raised as the exceptions CPython's server would raise, and the object count
back to its baseline at the end. Standard library only."""

import gc
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from multiprocessing.managers import RemoteError, SyncManager, dispatch

from mgrtest import Mgrd, MgrdTestCase

fork = multiprocessing.get_context("fork")
HERE = os.path.dirname(os.path.abspath(__file__))


def run_in_child(target, *args):
    """Runs `target(*args)` in a forked process; returns the process (started)."""
    p = fork.Process(target=target, args=args)
    p.start()
    return p


def join_ok(test, p):
    p.join(30)
    test.assertEqual(p.exitcode, 0, "child process failed")


# Children: each receives proxies (pickled to it by fork) and does its part.


def put_later(q, item):
    time.sleep(0.2)
    q.put(item)


def consume_and_ack(q, n, out):
    for _ in range(n):
        out.append(q.get(timeout=10) * 10)
        q.task_done()


def set_later(e):
    time.sleep(0.2)
    e.set()


def hold_lock(lock, held, release):
    lock.acquire()
    held.set()
    release.wait(10)
    lock.release()


def acquire_and_exit(lock):
    lock.acquire()


def notify_later(cond, state):
    time.sleep(0.2)
    with cond:
        state["ready"] = True
        cond.notify_all()


def barrier_party(barrier, results):
    results.append(barrier.wait(10))


class SyncManagerTest(MgrdTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Proxies rebuilt from returned values authenticate with the process key,
        # as against CPython's own server.
        multiprocessing.current_process().authkey = cls.authkey
        cls.manager = SyncManager(address=cls.address, authkey=cls.authkey)
        cls.manager.connect()
        cls.baseline = cls.manager._number_of_objects()

    @classmethod
    def tearDownClass(cls):
        gc.collect()
        deadline = time.monotonic() + 10
        count = cls.manager._number_of_objects()
        while count != cls.baseline and time.monotonic() < deadline:
            time.sleep(0.05)
            count = cls.manager._number_of_objects()
        super().tearDownClass()
        if count != cls.baseline:
            raise AssertionError(f"{count} objects left, baseline {cls.baseline}")

    @property
    def m(self):
        return self.manager

    # ---- queues ----

    def test_queue_basics_and_errors(self):
        q = self.m.Queue(2)
        self.assertTrue(q.empty())
        q.put(1)
        q.put_nowait("two")
        self.assertTrue(q.full())
        self.assertEqual(q.qsize(), 2)
        with self.assertRaises(queue.Full):
            q.put(3, timeout=0.05)
        with self.assertRaises(queue.Full):
            q.put_nowait(3)
        self.assertEqual(q.get(), 1)
        self.assertEqual(q.get_nowait(), "two")
        with self.assertRaises(queue.Empty):
            q.get(timeout=0.05)
        with self.assertRaises(queue.Empty):
            q.get(False)
        with self.assertRaises(ValueError):
            q.get(True, -1)

    def test_queue_get_blocks_until_another_process_puts(self):
        q = self.m.Queue()
        p = run_in_child(put_later, q, {"job": [1, 2.5, None]})
        self.assertEqual(q.get(timeout=10), {"job": [1, 2.5, None]})
        join_ok(self, p)

    def test_joinable_queue_join_waits_for_task_done_in_another_process(self):
        q = self.m.JoinableQueue()
        out = self.m.list()
        for i in range(3):
            q.put(i)
        p = run_in_child(consume_and_ack, q, 3, out)
        q.join()
        self.assertEqual(sorted(out), [0, 10, 20])
        join_ok(self, p)
        with self.assertRaises(ValueError):
            q.task_done()

    # ---- locks ----

    def test_lock_held_by_another_process(self):
        lock = self.m.Lock()
        held, release = self.m.Event(), self.m.Event()
        p = run_in_child(hold_lock, lock, held, release)
        self.assertTrue(held.wait(10))
        self.assertFalse(lock.acquire(timeout=0.05))
        self.assertFalse(lock.acquire(False))
        release.set()
        self.assertTrue(lock.acquire(timeout=10))
        lock.release()
        join_ok(self, p)
        with self.assertRaises(RuntimeError):
            lock.release()

    def test_lock_outlives_the_thread_and_process_that_acquired_it(self):
        # A plain Lock has no owner (threading.Lock): acquired by a thread or a
        # process that then ends, it stays held until someone releases it.
        lock = self.m.Lock()
        t = threading.Thread(target=lock.acquire)
        t.start()
        t.join(10)
        gc.collect()  # the thread's connection goes with its thread-local state
        time.sleep(0.2)
        self.assertFalse(lock.acquire(False), "the lock was released when its thread ended")
        lock.release()  # a hand-off: another thread releases it
        self.assertTrue(lock.acquire(False))
        lock.release()
        p = run_in_child(acquire_and_exit, lock)
        join_ok(self, p)
        time.sleep(0.2)
        self.assertFalse(lock.acquire(False), "the lock was released when its process ended")
        lock.release()

    def test_rlock_of_a_thread_that_ended_is_released(self):
        # An RLock belongs to the thread (connection) that acquired it; once that
        # is gone for good no one else could release it, so the server does.
        r = self.m.RLock()
        t = threading.Thread(target=r.acquire)
        t.start()
        t.join(10)
        gc.collect()
        self.assertTrue(r.acquire(timeout=10))
        r.release()

    def test_rlock_reentrancy_and_ownership(self):
        r = self.m.RLock()
        with r:
            with r:
                self.assertTrue(r.acquire(False))
                r.release()
        with self.assertRaises(RuntimeError):
            r.release()
        # Another thread has its own connection, so it does not own the lock.
        r.acquire()
        errors = []

        def other():
            try:
                r.release()
            except RuntimeError as e:
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        self.assertEqual(len(errors), 1)
        r.release()

    def test_semaphores(self):
        s = self.m.Semaphore(2)
        self.assertTrue(s.acquire())
        self.assertTrue(s.acquire())
        self.assertFalse(s.acquire(timeout=0.05))
        s.release()
        s.release()
        s.release()  # a plain semaphore may go above its start value
        b = self.m.BoundedSemaphore(1)
        with b:
            self.assertFalse(b.acquire(False))
        with self.assertRaises(ValueError):
            b.release()

    # ---- events, conditions, barriers ----

    def test_event_set_by_another_process(self):
        e = self.m.Event()
        self.assertFalse(e.is_set())
        self.assertFalse(e.wait(0.05))
        p = run_in_child(set_later, e)
        self.assertTrue(e.wait(10))
        self.assertTrue(e.is_set())
        e.clear()
        self.assertFalse(e.is_set())
        join_ok(self, p)

    def test_condition_wait_notify_across_processes(self):
        cond = self.m.Condition()
        state = self.m.dict(ready=False)
        p = run_in_child(notify_later, cond, state)
        with cond:
            self.assertTrue(cond.wait_for(lambda: state["ready"], timeout=10))
        join_ok(self, p)
        with cond:
            self.assertFalse(cond.wait(0.05))
        with self.assertRaises(RuntimeError):
            cond.notify()
        with self.assertRaises(RuntimeError):
            cond.wait(0.01)

    def test_barrier_rounds_and_abort(self):
        b = self.m.Barrier(3)
        self.assertEqual((b.parties, b.n_waiting, b.broken), (3, 0, False))
        results = self.m.list()
        ps = [run_in_child(barrier_party, b, results) for _ in range(2)]
        results.append(b.wait(10))
        for p in ps:
            join_ok(self, p)
        self.assertEqual(sorted(results), [0, 1, 2])
        with self.assertRaises(threading.BrokenBarrierError):
            b.wait(0.05)
        self.assertTrue(b.broken)
        b.reset()
        self.assertFalse(b.broken)
        b.abort()
        with self.assertRaises(threading.BrokenBarrierError):
            b.wait()

    def test_barrier_party_killed_mid_wait_still_counts(self):
        # As on CPython's server: a party that arrived counts for its round
        # even if its process dies before the round is released.
        b = self.m.Barrier(3)
        results = self.m.list()
        doomed = run_in_child(barrier_party, b, results)
        deadline = time.monotonic() + 10
        while b.n_waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        doomed.kill()
        doomed.join(10)
        self.assertEqual(b.n_waiting, 1)
        p = run_in_child(barrier_party, b, results)
        results.append(b.wait(10))
        join_ok(self, p)
        self.assertEqual(sorted(results), [1, 2])
        self.assertFalse(b.broken)
        # The killed child took a reference to each proxy after the fork and
        # never gave it back (over TCP the server has no pid to see it die,
        # as on CPython; over a Unix socket it would): give them back for it.
        for proxy in (b, results):
            conn = self.m._Client(self.address, authkey=self.authkey)
            try:
                dispatch(conn, None, "decref", (proxy._token.id,))
            finally:
                conn.close()

    # ---- data types ----

    def test_dict_iterator_invalidated_like_cpythons(self):
        # CPython's test_dict: changing a dict's size (or its keys) while
        # iterating raises RuntimeError from next().
        d = self.m.dict({1: 1, 2: 2})
        it = iter(d)
        d.clear()
        with self.assertRaisesRegex(RuntimeError, "dictionary changed size during iteration"):
            next(it)
        d = self.m.dict({1: 1})
        with self.assertRaises(RuntimeError):
            for i in d:
                d[i + 1] = 1
        d = self.m.dict({0: 0})
        with self.assertRaisesRegex(RuntimeError, "dictionary keys changed during iteration"):
            for i in d:
                del d[0]
                d[0] = 0
        # Values may change: iteration completes.
        d = self.m.dict({"a": 1, "b": 2})
        for k in d:
            d[k] += 1
        self.assertEqual(dict(d.items()), {"a": 2, "b": 3})

    def test_dict(self):
        d = self.m.dict({"a": 1}, b=2)
        d[3] = [1, 2]
        d[(1, "x")] = None
        self.assertEqual(len(d), 4)
        self.assertIn("a", d)
        self.assertEqual(d.get("zz", "default"), "default")
        self.assertEqual(sorted(map(str, d.keys())), ["(1, 'x')", "3", "a", "b"])
        self.assertEqual(list(iter(d))[:2], ["a", "b"])
        self.assertEqual(d.pop("a"), 1)
        self.assertEqual(d.setdefault("c", 7), 7)
        d.update({"e": 5}, f=6)
        self.assertEqual(d.copy()["f"], 6)
        with self.assertRaises(KeyError) as cm:
            d["missing"]
        self.assertEqual(cm.exception.args, ("missing",))
        with self.assertRaises(TypeError):
            d[[1]] = 1
        d[1] = "one"
        d[1.0] = "float one"
        self.assertEqual(d[True], "float one")
        self.assertEqual(d._getvalue()[1], "float one")
        del d[1]
        d.clear()
        self.assertEqual(str(d), "{}")
        self.assertEqual(repr(d)[:1], "<")

    def test_list(self):
        l = self.m.list([3, 1, 2])
        l.append(4)
        l.extend([5])
        l += [6]
        l.insert(0, 0)
        self.assertEqual(l[:], [0, 3, 1, 2, 4, 5, 6])
        self.assertEqual(l[1:3], [3, 1])
        self.assertEqual(l[-1], 6)
        l.sort()
        self.assertEqual(list(l), [0, 1, 2, 3, 4, 5, 6])
        l.reverse()
        self.assertEqual(l.pop(), 0)
        self.assertEqual(l.index(4), 2)
        self.assertEqual(l.count(4), 1)
        l.remove(4)
        l[0] = "x"
        del l[1]
        l[1:3] = ["a", "b", "c"]
        self.assertEqual(l._getvalue(), ["x", "a", "b", "c", 1])
        self.assertEqual(l + [9], ["x", "a", "b", "c", 1, 9])
        self.assertEqual(len(l * 2), 10)
        with self.assertRaises(IndexError):
            l[100]
        with self.assertRaises(ValueError):
            l.remove("nope")
        with self.assertRaises(TypeError):
            l.sort()  # str and int do not compare
        self.assertEqual(self.m.list(range(2, 9, 3))[:], [2, 5, 8])

    def test_nested_proxies(self):
        outer = self.m.list([self.m.dict() for _ in range(2)])
        first = outer[0]
        first["a"] = 1
        self.assertEqual(outer[0]["a"], 1)
        inner = self.m.dict(k="v")
        holder = self.m.dict()
        holder["inner"] = inner
        self.assertEqual(holder["inner"]["k"], "v")

    def test_namespace_value_array(self):
        ns = self.m.Namespace(a=1)
        ns.b = "two"
        self.assertEqual((ns.a, ns.b), (1, "two"))
        del ns.a
        with self.assertRaises(AttributeError):
            ns.a
        self.assertEqual(str(ns), "Namespace(b='two')")
        v = self.m.Value("d", 1.5)
        v.value += 1
        self.assertEqual(v.value, 2.5)
        self.assertEqual(v.get(), 2.5)
        import array

        # Slices are arrays, as on CPython.
        self.assertEqual(self.m.Array("i", range(3))[:], array.array("i", [0, 1, 2]))
        a = self.m.Array("i", [1, 2, 3])
        a[0] = 10
        self.assertEqual((len(a), a[0], a[1:]), (3, 10, array.array("i", [2, 3])))
        with self.assertRaises(TypeError):
            a[0] = "x"
        with self.assertRaises(OverflowError):
            a[0] = 2**40

    def test_unknown_method_is_a_remote_error_and_connection_survives(self):
        d = self.m.dict()
        with self.assertRaises(RemoteError) as cm:
            d._callmethod("no_such_method")
        self.assertIn("no_such_method", str(cm.exception))
        d["ok"] = True
        self.assertTrue(d["ok"])

    def test_debug_info_lists_objects(self):
        d = self.m.dict(marker="debug-info-marker")
        info = self.m._debug_info()
        self.assertIn("debug-info-marker", info)
        del d

    def test_data_script_from_a_separate_process(self):
        env = dict(
            os.environ,
            MGR_ADDRESS="%s:%d" % self.address,
            MGR_AUTHKEY=self.authkey.decode(),
        )
        r = subprocess.run(
            [sys.executable, os.path.join(HERE, "data", "sync_manager_data.py")],
            env=env,
            capture_output=True,
            timeout=120,
        )
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        self.assertIn(b"data: ok", r.stdout)


class UnixSocketSyncManagerTest(unittest.TestCase):
    def test_queue_and_dict_over_a_unix_socket(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "mgr.sock")
            server = Mgrd("unix:" + path, b"unix-key")
            try:
                multiprocessing.current_process().authkey = b"unix-key"
                m = SyncManager(address=path, authkey=b"unix-key")
                m.connect()
                q = m.Queue()
                dd = m.dict()
                p = run_in_child(put_later, q, "via unix")
                dd["got"] = q.get(timeout=10)
                self.assertEqual(dd["got"], "via unix")
                join_ok(self, p)
                del q, dd
                gc.collect()
                self.assertEqual(m._number_of_objects(), 0)
            finally:
                self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
