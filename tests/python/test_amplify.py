"""Bounded cost seen from a stock CPython client: a small request cannot make
mgrd build a result bigger than --max-frame (sized in bytes, not items), nor
hold more than --max-held-bytes, nor keep more than --max-objects-per-conn
objects one connection created. Each refusal is a MemoryError for that call;
the object is unchanged and everyone keeps being served."""

import unittest
from multiprocessing.managers import RemoteError, SyncManager

from mgrtest import Mgrd

MIB = 1 << 20


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class ServerTestCase(unittest.TestCase):
    """One mgrd with `args` for the class, and a connected SyncManager."""

    args = ()

    @classmethod
    def setUpClass(cls):
        cls.mgrd = Mgrd(authkey=b"k", args=("--reply-grace", "0.5", *cls.args))
        cls.manager = cls.connect()

    @classmethod
    def connect(cls):
        m = SyncManager(address=cls.mgrd.address, authkey=b"k")
        m.connect()
        return m

    @classmethod
    def tearDownClass(cls):
        code = cls.mgrd.stop()
        if code != 0:
            raise AssertionError(f"mgrd exited with {code}")


class ResultLimitTest(ServerTestCase):
    args = ("--max-frame", str(16 * MIB))

    def test_repeating_a_big_item_is_refused_by_its_bytes(self):
        l = self.manager.list([b"x" * MIB])
        before = rss_kib(self.mgrd.proc.pid)
        # 49 bytes of request asking for 100 GB.
        with self.assertRaises(MemoryError):
            l *= 100000
        with self.assertRaises(MemoryError):
            l * 100000
        with self.assertRaises(MemoryError):
            100000 * l
        grew = rss_kib(self.mgrd.proc.pid) - before
        self.assertLess(grew, 8 * 1024, "a refused repeat grew mgrd by %d KiB" % grew)
        self.assertEqual(len(l), 1, "the list is unchanged")
        self.assertEqual(len(l * 8), 8)
        # Many small items are fine.
        self.assertEqual(len(self.manager.list([0]) * 100000), 100000)

    def test_extending_a_list_with_itself_stops_at_the_limit(self):
        l = self.manager.list([b"y" * MIB])
        self.assertEqual(len(l + l), 2)
        doublings = 0
        with self.assertRaises(MemoryError):
            while doublings < 64:
                l += l
                doublings += 1
        self.assertEqual(doublings, 3)
        self.assertEqual(len(l), 8, "the refused extend changed nothing")
        with self.assertRaises(MemoryError):
            l.extend(l)
        l.pop()
        self.assertEqual(len(l), 7)

    def test_arrays_and_lists_from_big_bytes_are_refused(self):
        for make in (
            lambda: self.manager.Array("b", b"\0" * MIB),
            lambda: self.manager.Array("u", "x" * MIB),
            lambda: self.manager.list(b"\0" * MIB),
        ):
            with self.assertRaises(RemoteError) as cm:
                make()
            self.assertIn("MemoryError", str(cm.exception))
            self.assertIn("max_frame", str(cm.exception))
        self.assertEqual(len(self.manager.Array("b", b"\1" * 1000)), 1000)

    def test_copies_of_a_grown_dict_are_refused(self):
        d = self.manager.dict()
        for k in range(20):
            d[k] = b"z" * MIB
        for copy in (d.copy, d.items, d.values, d._getvalue):
            with self.assertRaises(MemoryError):
                copy()
        self.assertEqual(len(d.keys()), 20)
        self.assertEqual(len(d[3]), MIB)
        d.clear()


class HeldBytesCapTest(ServerTestCase):
    args = ("--max-held-bytes", str(4 * MIB))

    def test_growth_past_the_cap_is_refused_and_others_are_served(self):
        l = self.manager.list()
        for _ in range(3):
            l.append(b"a" * MIB)
        with self.assertRaises(MemoryError) as cm:
            l.append(b"a" * MIB)
        self.assertIn("max_held_bytes", str(cm.exception))
        self.assertEqual(len(l), 3)
        other = self.connect()
        with self.assertRaises(RemoteError) as cm:
            other.list([b"b" * MIB, b"b" * MIB])
        self.assertIn("MemoryError", str(cm.exception))
        q = other.Queue()
        with self.assertRaises(MemoryError):
            q.put(b"c" * MIB)
        self.assertEqual(q.qsize(), 0)
        d = other.dict(a=1)
        d["b"] = 2
        self.assertEqual(d.copy(), {"a": 1, "b": 2})
        # Letting go makes room again.
        del l
        again = self.manager.list()
        for _ in range(3):
            again.append(b"a" * MIB)
        self.assertEqual(len(again), 3)


class ObjectsPerConnectionCapTest(ServerTestCase):
    args = ("--max-objects-per-conn", "3")

    def test_objects_a_connection_creates_are_capped(self):
        d = self.manager.dict({1: 2})
        # CPython opens a connection per create; the iterators come from calls
        # on this thread's one connection.
        iterators = [iter(d) for _ in range(3)]
        with self.assertRaises(MemoryError) as cm:
            iter(d)
        self.assertIn("max_objects_per_conn", str(cm.exception))
        self.assertEqual(list(iterators[0]), [1])
        del iterators[0]
        self.assertEqual(list(iter(d)), [1])
        # Other connections are served.
        self.assertEqual(len(self.connect().dict(x=1)), 1)


if __name__ == "__main__":
    unittest.main()
