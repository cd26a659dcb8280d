"""str() of shared objects as CPython's server writes it, and proxies passed as
arguments where Python iterates or reads them.

Each repr check runs with a stock SyncManager client against mgrd and against
CPython's own manager server (started here), and compares the text with
addresses (`0x…`) and lock owners masked. Standard library only; run by
./test.sh (MGRD names the server binary).
"""

import re
import unittest
from multiprocessing.managers import RemoteError, SyncManager

from mgrtest import BothServersTestCase, Mgrd

KEY = b"repr-parity-key"

# Every kind of leaf and container whose repr differs from Rust's defaults.
VALUES = [
    "it's done",
    'say "hi"',
    "a\"b'c",
    "\0\x1b\x7f\x85\xa0\xad",
    "\u200b\u2028\ue000\U000e0001\U0010ffff",
    "tab\tnl\nbs\\ 日本 🐍 é",
    b"\x00\xff'\"\\\t",
    b"it's",
    1e-05,
    1e16,
    1.5e-07,
    5e-324,
    1.7976931348623157e308,
    0.1,
    1 / 3,
    -0.0,
    2.0,
    123456.789,
    1e15,
    float("inf"),
    float("-inf"),
    float("nan"),
    2**64,
    -(2**64),
    10**300,
    -(10**300),
    2**63 - 1,
    -(2**63),
    frozenset(),
    frozenset({1}),
    set(),
    {1, 2},
    (1,),
    (),
    {"k": [1, (2, None)], 3: {}},
    True,
    False,
    None,
]


def mask(text):
    text = re.sub(r"0x[0-9a-f]+", "0x…", text)
    return re.sub(r"owner=\d+", "owner=N", text)


class ReprParityTest(BothServersTestCase):
    authkey = KEY

    def alike(self, check):
        """check(manager) on both servers; asserts equal masked text."""
        ours, theirs = mask(check(self.ours)), mask(check(self.cpython))
        self.assertEqual(ours, theirs)
        return ours

    def test_values(self):
        # One list holding them all (a mismatch shows the whole text), and
        # the same values as a dict's values and a tuple's items.
        got = self.alike(lambda m: str(m.list(VALUES)))
        self.alike(lambda m: str(m.dict({i: v for i, v in enumerate(VALUES)})))
        self.alike(lambda m: str(m.list([tuple(VALUES)])))
        self.assertIn("\"it's done\", 'say \"hi\"'", got)
        self.assertIn(", 1e-05, 1e+16, 1.5e-07, 5e-324, 1.7976931348623157e+308,", got)
        self.assertIn(", 18446744073709551616, -18446744073709551616, 1000", got)
        self.assertIn(", frozenset(), frozenset({1}), set(), {1, 2}, (1,), (),", got)

    def test_standard_library_values(self):
        # Stored as opaque values: their repr is read from their pickled data.
        import datetime
        import decimal
        import fractions
        import uuid

        values = [
            datetime.datetime(2024, 5, 1),
            datetime.datetime(2024, 5, 1, 13, 4, 5),
            datetime.datetime(2024, 5, 1, 13, 4, 0, 258),
            datetime.date(2024, 12, 31),
            datetime.time(9, 30),
            datetime.timedelta(days=3, seconds=7),
            datetime.timedelta(0),
            datetime.timedelta(microseconds=-1),
            decimal.Decimal("-1.50"),
            fractions.Fraction(-1, 3),
            uuid.UUID(int=5),
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
        ]
        got = self.alike(lambda m: str(m.list(values)))
        self.assertIn("datetime.datetime(2024, 5, 1, 0, 0)", got)
        self.assertIn("UUID('12345678-1234-5678-1234-567812345678')", got)

    def test_sync_objects(self):
        def check(m):
            ev, lock, rlock = m.Event(), m.Lock(), m.RLock()
            cond, bar = m.Condition(), m.Barrier(2)
            out = [str(o) for o in (ev, lock, rlock, cond, bar)]
            out += [str(m.Semaphore(2)), str(m.BoundedSemaphore(3))]
            out += [str(m.Queue()), str(m.JoinableQueue())]
            ev.set()
            lock.acquire()
            rlock.acquire()
            cond.acquire()
            bar.abort()
            out += [str(o) for o in (ev, lock, rlock, cond, bar)]
            rlock.release()
            cond.release()
            lock.release()
            return "\n".join(out)

        got = self.alike(check).splitlines()
        self.assertEqual(got[0], "<threading.Event at 0x…: unset>")
        self.assertEqual(got[1], "<unlocked _thread.lock object at 0x…>")
        self.assertEqual(got[-1], "<threading.Barrier at 0x…: broken>")

    def test_data_objects(self):
        self.alike(lambda m: str(m.Namespace(a="it's", b=1e16)))
        self.alike(lambda m: str(m.Value("d", 1e-05)))
        self.alike(lambda m: str(m.Array("d", [0.1, 1e16])))
        self.alike(lambda m: str(m.Array("i", [])))

    def test_nested_proxies_print_as_the_servers_proxy_objects(self):
        def check(m):
            d = m.dict()
            d["ev"] = m.Event()
            d["lock"] = m.Lock()
            d["rlock"] = m.RLock()
            d["sem"] = m.Semaphore()
            d["cond"] = m.Condition()
            d["bar"] = m.Barrier(2)
            d["q"] = m.Queue()
            d["jq"] = m.JoinableQueue()
            d["ns"] = m.Namespace()
            d["val"] = m.Value("i", 1)
            d["arr"] = m.Array("i", [1])
            d["l"] = m.list()
            d["d"] = m.dict()
            return str(d) + "\n" + str(m.list([m.list([1])]))

        got = self.alike(check)
        self.assertIn("'q': <AutoProxy[Queue] object, typeid 'Queue' at 0x…>", got)
        self.assertIn("[<ListProxy object, typeid 'list' at 0x…>]", got)


class ProxyArgumentTest(BothServersTestCase):
    """A proxy where Python iterates or reads a value stands for its object's
    current value; other kinds of object are a TypeError."""

    authkey = KEY

    def alike(self, check):
        ours, theirs = check(self.ours), check(self.cpython)
        self.assertEqual(ours, theirs)
        return ours

    def test_dict_update_with_a_dict_proxy(self):
        def check(m):
            totals, partial = m.dict(a=1), m.dict(b=2, a=3)
            totals.update(partial)
            partial["c"] = 4  # a snapshot: later changes are not seen
            return totals.copy()

        self.assertEqual(self.alike(check), {"a": 3, "b": 2})

    def test_dict_update_with_a_list_proxy_of_pairs(self):
        def check(m):
            d = m.dict()
            d.update(m.list([("k", 1), ("j", 2)]))
            return d.copy()

        self.assertEqual(self.alike(check), {"k": 1, "j": 2})

    def test_list_extend_and_iadd_with_a_list_proxy(self):
        def check(m):
            l, l2 = m.list([1, 2]), m.list([3])
            l.extend(l2)
            l += l2
            return l[:]

        self.assertEqual(self.alike(check), [1, 2, 3, 3])

    def test_list_extend_with_an_array_proxy(self):
        def check(m):
            l = m.list([0])
            l.extend(m.Array("i", [1, 2]))
            return l[:]

        self.assertEqual(self.alike(check), [0, 1, 2])

    def test_constructors_from_proxies(self):
        def check(m):
            return m.dict(m.dict(b=2)).copy(), m.list(m.list([3]))[:]

        self.assertEqual(self.alike(check), ({"b": 2}, [3]))

    def test_concatenation_with_a_list_proxy(self):
        # CPython 3.11 refuses this ("can only concatenate list (not
        # "ListProxy") to list"): its server holds a proxy, not the list.
        # mgrd concatenates the list's current items, as Python 3.8's
        # server did (it handed the method the list itself).
        m = self.ours
        l, l2 = m.list([1]), m.list([2, 3])
        self.assertEqual(l + l2, [1, 2, 3])
        self.assertEqual(l[:], [1])
        with self.assertRaises(TypeError) as cm:
            l + m.dict()
        self.assertIn('(not "DictProxy")', str(cm.exception))

    def test_a_list_extended_with_its_own_proxy_doubles(self):
        # As a Python list does (CPython 3.11's server loops forever: it
        # iterates a proxy of the list it is growing).
        l = self.ours.list([1, "a"])
        l.extend(l)
        l += l
        self.assertEqual(l[:], [1, "a"] * 4)
        d = self.ours.dict(a=1)
        d.update(d)
        self.assertEqual(d.copy(), {"a": 1})

    def test_sync_objects_and_values_are_not_iterable(self):
        m = self.ours
        l = m.list([1])
        for proxy, name in (
            (m.Event(), "EventProxy"),
            (m.Lock(), "AcquirerProxy"),
            (m.Queue(), "AutoProxy[Queue]"),
            (m.Value("i", 1), "ValueProxy"),
            (m.Namespace(), "NamespaceProxy"),
        ):
            with self.subTest(name=name):
                with self.assertRaises(TypeError) as cm:
                    l.extend(proxy)
                self.assertEqual(str(cm.exception), f"'{name}' object is not iterable")
                with self.assertRaises(TypeError):
                    m.dict().update(proxy)
                # A create's error comes back as a RemoteError, as from CPython.
                with self.assertRaises(RemoteError) as cm:
                    m.list(proxy)
                self.assertIn(f"TypeError: '{name}' object is not iterable", str(cm.exception))
        self.assertEqual(l[:], [1])


class ProxyArgumentBoundTest(unittest.TestCase):
    """Reading a proxy's object is bounded like any result (--max-frame)."""

    def test_a_proxy_to_a_list_over_the_bound_is_refused_and_changes_nothing(self):
        mgrd = Mgrd(authkey=b"k", args=("--max-frame", "65536"))
        try:
            m = SyncManager(address=mgrd.address, authkey=b"k")
            m.connect()
            big = m.list()
            # Built in pieces, each request under the frame limit: about
            # 4000 × (56 + 40) bytes, well over 64 KiB.
            for _ in range(8):
                big.extend(["x" * 40] * 500)
            self.assertEqual(len(big), 4000)
            small = m.list([1])
            d = m.dict(a=1)
            with self.assertRaises(MemoryError):
                small.extend(big)
            with self.assertRaises(MemoryError):
                small += big
            with self.assertRaises(MemoryError):
                small + big
            with self.assertRaises(MemoryError):
                d.update(big)
            for make in (m.list, m.dict):
                with self.assertRaises(RemoteError) as cm:
                    make(big)
                self.assertIn("MemoryError: the result would take", str(cm.exception))
            self.assertEqual(small[:], [1])
            self.assertEqual(d.copy(), {"a": 1})
            self.assertEqual(len(big), 4000)
            # Under the bound it works.
            small.extend(m.list([2, 3]))
            self.assertEqual(small[:], [1, 2, 3])
        finally:
            self.assertEqual(mgrd.stop(), 0)


if __name__ == "__main__":
    unittest.main()
