"""Named objects: `mgrd --object NAME=TYPE[:ARGS]` serves long-lived objects that
stock CPython clients reach by typeid, as CPython's own
`register('get_queue', callable=lambda: queue)` server does. The client side of
the standard library's "Using a remote manager" example runs unchanged, in two
separate processes that exchange an item. Standard library only."""

import queue
import subprocess
import sys
import textwrap
import unittest
import multiprocessing
from multiprocessing.managers import BaseManager, IteratorProxy

from mgrtest import MGRD, Mgrd

AUTHKEY = b"abracadabra"

# The client side of the documentation's example, verbatim but for the address.
PUTTER = """
from multiprocessing.managers import BaseManager
class QueueManager(BaseManager): pass
QueueManager.register('get_queue')
m = QueueManager(address=ADDRESS, authkey=b'abracadabra')
m.connect()
queue = m.get_queue()
queue.put('hello')
"""

GETTER = """
from multiprocessing.managers import BaseManager
class QueueManager(BaseManager): pass
QueueManager.register('get_queue')
m = QueueManager(address=ADDRESS, authkey=b'abracadabra')
m.connect()
queue = m.get_queue()
print(queue.get())
"""


def run_client(source, address):
    code = f"ADDRESS = {address!r}\n" + textwrap.dedent(source)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )


class QueueManager(BaseManager):
    pass


QueueManager.register("get_queue")
QueueManager.register("get_state")
QueueManager.register("jobs")
QueueManager.register("Queue")  # a plain typeid, for contrast
# What dict.__iter__ returns (method_to_typeid), as for any such result.
QueueManager.register("Iterator", proxytype=IteratorProxy, create_method=False)


class NamedObjectsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mgrd = Mgrd(
            authkey=AUTHKEY,
            args=(
                "--object", "get_queue=Queue",
                "--object", "get_state=dict",
                "--object", "jobs=Queue:1",
            ),
        )
        cls.address = cls.mgrd.address

    @classmethod
    def tearDownClass(cls):
        code = cls.mgrd.stop()
        if code != 0:
            raise AssertionError(f"mgrd exited with {code}")

    def manager(self):
        m = QueueManager(address=self.address, authkey=AUTHKEY)
        m.connect()
        return m

    def test_the_documented_remote_manager_clients_exchange_an_item(self):
        put = run_client(PUTTER, self.address)
        self.assertEqual(put.returncode, 0, put.stderr)
        got = run_client(GETTER, self.address)
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertEqual(got.stdout.strip(), "hello")

    def test_every_create_returns_the_same_object_which_outlives_its_proxies(self):
        m = self.manager()
        baseline = m._number_of_objects()
        self.assertEqual(baseline, 3, "the published objects live from the start")
        a, b = m.get_queue(), m.get_queue()
        self.assertEqual(a._token.id, b._token.id)
        self.assertEqual(a._token.typeid, "get_queue")
        a.put(1)
        self.assertEqual(b.get(timeout=5), 1)
        with self.assertRaises(queue.Empty):
            b.get(timeout=0.05)
        # A plain typeid makes a new object per create.
        p, q = m.Queue(), m.Queue()
        self.assertNotEqual(p._token.id, q._token.id)
        self.assertEqual(m._number_of_objects(), baseline + 2)
        del a, b, p, q
        # The proxies gave their references back; the server still holds its own.
        self.assertEqual(m._number_of_objects(), baseline)
        self.assertEqual(m.get_queue().qsize(), 0)

    def test_types_with_arguments_and_autoproxy_methods(self):
        m = self.manager()
        state = m.get_state()
        # AutoProxy asked for the dict's exposed methods through the token.
        state.update({"level": 3})
        state["score"] = 10
        self.assertEqual(self.manager().get_state().get("score"), 10)
        self.assertEqual(sorted(state.keys()), ["level", "score"])
        jobs = m.jobs()
        jobs.put("one")
        self.assertTrue(jobs.full(), "jobs=Queue:1 is a Queue(1)")
        with self.assertRaises(queue.Full):
            jobs.put("two", timeout=0.05)
        self.assertEqual(jobs.get(), "one")

    def test_a_published_objects_proxy_nested_in_a_value_comes_back_usable(self):
        # Proxies rebuilt from returned values authenticate with the process key.
        multiprocessing.current_process().authkey = AUTHKEY
        m = self.manager()
        state, q = m.get_state(), m.get_queue()
        state["inbox"] = q
        try:
            back = state["inbox"]
            # The pickled proxy carried the exposed methods: no get_methods
            # round trip (which a proxy rebuilt without a manager cannot make).
            self.assertEqual(back._token.id, q._token.id)
            self.assertIn("put", back._exposed_)
            back.put("via the dict")
            self.assertEqual(q.get(timeout=5), "via the dict")
            self.assertIn("inbox", list(state))
        finally:
            del state["inbox"]

    def test_arguments_to_a_named_create_are_refused(self):
        m = self.manager()
        with self.assertRaisesRegex(Exception, "takes no arguments"):
            m.get_queue(5)
        # The object is untouched and still served.
        self.assertEqual(m.get_queue().qsize(), 0)


class BadObjectFlagTest(unittest.TestCase):
    def test_bad_object_specs_stop_mgrd_with_a_reason(self):
        for spec, why in [
            ("noequals", "NAME=TYPE"),
            ("x=NoSuchType", "unknown typeid"),
            ("dict=dict", "registered typeid"),
            ("q=Queue:'open", "unterminated quote"),
            # (Queue takes any maxsize, as queue.Queue does; Barrier's parties
            # must be an int.)
            ("b=Barrier:notanint", "TypeError"),
        ]:
            p = subprocess.run(
                [MGRD, "--object", spec], capture_output=True, text=True, timeout=20
            )
            self.assertEqual(p.returncode, 2, spec)
            self.assertIn(why, p.stderr, spec)
            self.assertEqual(p.stdout, "", "it never listened")


if __name__ == "__main__":
    unittest.main()
