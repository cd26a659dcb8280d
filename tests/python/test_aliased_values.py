"""Aliased data from stock CPython clients: `[[0] * 300] * 300` pickles as one
inner list and 299 memo references to it. mgrd keeps the sharing (memory linear
in the request, not in what it expands to), reads it back equal from another
process with the aliasing intact (`x[0] is x[1]`), and prints it as CPython's
own server does.

Standard library only; run by ./test.sh (MGRD names the server binary).
"""

import multiprocessing
import pickle
import re
import unittest
from multiprocessing.managers import SyncManager

from mgrtest import BothServersTestCase

KEY = b"aliased-values-key"


def shapes():
    """The aliased shapes: two levels (90,000 ints) and three (1,000,000)."""
    return {
        "two": [[0] * 300] * 300,
        "three": [[[0] * 100] * 100] * 100,
    }


def read_back(address, authkey, kind, name, out):
    """In another process: read one stored value and report it and whether
    its aliasing came back (an inner list is the same object at every place)."""
    multiprocessing.current_process().authkey = authkey
    m = SyncManager(address=address, authkey=authkey)
    m.connect()
    ns = m.Namespace  # noqa: F841 (registers the proxy types)
    obj = out.get(timeout=30)
    if kind == "list":
        v = obj[:]
    elif kind == "dict":
        v = obj.get(name)
    elif kind == "queue":
        v = obj.get(timeout=30)
    else:
        v = getattr(obj, name)
    same = all(x is v[0] for x in v)
    deep = isinstance(v[0][0], list) and all(x is v[0][0] for x in v[0])
    out.put((v == shapes()[name], same, deep, len(pickle.dumps(v))))


class AliasedValues(BothServersTestCase):
    authkey = KEY

    def check_elsewhere(self, kind, obj, name):
        """Hands `obj` to a child process, which reads `name`'s value back."""
        q = self.ours.Queue()
        q.put(obj)
        p = multiprocessing.get_context("spawn").Process(
            target=read_back, args=(self.mgrd.address, KEY, kind, name, q)
        )
        p.start()
        p.join(120)
        self.assertEqual(p.exitcode, 0)
        equal, same, deep, size = q.get(timeout=30)
        self.assertTrue(equal, f"{kind} {name}: read back equal")
        self.assertTrue(same, f"{kind} {name}: x[0] is x[1] after reading back")
        if name == "three":
            self.assertTrue(deep, f"{kind} {name}: the innermost list is shared too")
        # The reply was as small as the request: the sharing travelled.
        self.assertLess(size, 10_000, f"{kind} {name}")

    def test_list_dict_queue_namespace_hold_aliased_values(self):
        for name, value in shapes().items():
            with self.subTest(name=name):
                # A request this small would expand past the decode budget
                # if each reference were copied.
                self.assertLess(len(pickle.dumps(value)), 2_000)
                l = self.ours.list(value)
                self.assertEqual(len(l), len(value))
                got = l[:]
                self.assertEqual(got, value)
                self.assertIs(got[0], got[1])
                self.assertEqual(l[5], value[5])
                self.check_elsewhere("list", l, name)

                d = self.ours.dict()
                d[name] = value
                self.assertEqual(d[name], value)
                self.check_elsewhere("dict", d, name)

                q = self.ours.Queue()
                q.put(value)
                self.check_elsewhere("queue", q, name)

                ns = self.ours.Namespace()
                setattr(ns, name, value)
                self.assertEqual(getattr(ns, name), value)
                self.check_elsewhere("namespace", ns, name)

    def test_reads_writes_and_compares_see_through_sharing(self):
        l = self.ours.list([[0] * 3] * 4)
        l[1] = l[1] + [7]  # a read, then a write of a new value
        self.assertEqual(l[:], [[0] * 3, [0, 0, 0, 7], [0] * 3, [0] * 3])
        self.assertEqual(l.count([0, 0, 0]), 3)
        self.assertEqual(l.index([0, 0, 0, 7]), 1)
        self.assertIn([0, 0, 0], l)
        l.sort()
        self.assertEqual(l[:], [[0] * 3] * 3 + [[0, 0, 0, 7]])
        # Shared tuples as dict keys hash and compare as their values.
        t = (1, "k" * 100)
        d = self.ours.dict([(t, 1), ((t, t), 2)])
        self.assertEqual(d[t], 1)
        self.assertEqual(d[((1, "k" * 100), (1, "k" * 100))], 2)
        self.assertEqual(self.ours.dict([[t, t]] * 3)[t], t)
        # A long str referenced twice is shared as well.
        s = "x" * 1000
        l2 = self.ours.list([s, s, [s]])
        self.assertEqual(l2[:], [s, s, [s]])
        # Arguments aliasing each other (one object passed twice).
        inner = [1, 2]
        l3 = self.ours.list()
        l3.extend([inner, inner])
        l3.insert(0, inner)
        self.assertEqual(l3[:], [inner] * 3)
        # One object as two top-level arguments: both see through the share.
        pairs = [("a", [1, 2])]
        for m in (self.ours, self.cpython):
            d = m.dict()
            d.update(pairs, k=pairs)
            self.assertEqual(d.copy(), {"a": [1, 2], "k": pairs})
            l4 = m.list()
            l4.extend(pairs * 2)
            self.assertEqual(l4[:], pairs * 2)

    def test_str_of_aliased_values_matches_cpython(self):
        mask = lambda s: re.sub(r"0x[0-9a-f]+", "0x…", s)  # noqa: E731
        for value in (
            [[0] * 30] * 30,
            [[[0] * 4] * 4] * 4,
            {"a": [[1, "s"]] * 3, "b": ((1,),) * 2},
            [("t" * 80,) * 2] * 2,
        ):
            with self.subTest(value=str(value)[:40]):
                ours = self.ours.list(value)
                theirs = self.cpython.list(value)
                self.assertEqual(mask(str(ours)), mask(str(theirs)))
                d1, d2 = self.ours.dict(k=value), self.cpython.dict(k=value)
                self.assertEqual(mask(str(d1)), mask(str(d2)))

    def test_exponential_aliasing_is_refused_and_the_connection_lives(self):
        # 2**30 values in a few hundred bytes: refused by the logical cap.
        a = [0]
        for _ in range(30):
            a = [a, a]
        l = self.ours.list()
        with self.assertRaises(Exception) as cm:
            l.append(a)
        self.assertIn("MAX_EXPANDED_VALUES", str(cm.exception))
        l.append(1)
        self.assertEqual(l[:], [1])

    def test_a_big_text_in_many_places_is_refused(self):
        # A 1 MiB str at 2**20 places: 2**21 values, but a TiB of text for a
        # repr or a comparison to read; its bytes count toward the cap too.
        a = "s" * (1 << 20)
        for _ in range(20):
            a = [a, a]
        l = self.ours.list()
        with self.assertRaises(Exception) as cm:
            l.append(a)
        self.assertIn("MAX_EXPANDED_VALUES", str(cm.exception))
        self.assertEqual(len(l), 0)

    def test_a_repr_is_bounded_by_what_it_expands_to(self):
        # 8 million values held in 200 slots: stored and read like any value,
        # but its repr (every place written out) is sized as if copied, so it
        # is refused over max_frame rather than built.
        l = self.ours.list([[[0] * 200] * 200] * 200)
        self.assertEqual(l[7][7], [0] * 200)
        with self.assertRaises(MemoryError) as cm:
            l._callmethod("__repr__")
        self.assertIn("max_frame", str(cm.exception))
        self.assertEqual(len(l), 200)

    def test_a_million_plain_ints_still_pass(self):
        l = self.ours.list(range(1_000_000))
        self.assertEqual(len(l), 1_000_000)
        self.assertEqual(l[999_999], 999_999)


if __name__ == "__main__":
    unittest.main()
