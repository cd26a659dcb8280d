"""Small answers made CPython's: each check runs with a stock SyncManager client
against mgrd and against CPython's own manager server, and both must answer
alike (the same result, or the same exception kind and text).

Standard library only; run by ./test.sh (MGRD names the server binary).
"""

import threading
import unittest
from multiprocessing.managers import RemoteError

from mgrtest import BothServersTestCase

KEY = b"parity-test-key"
RULE = "-" * 75


def outcome(f):
    """('ok', result) or (exception kind, text), with a RemoteError reduced to
    the last line of its traceback (the raised kind and message)."""
    try:
        return ("ok", f())
    except RemoteError as e:
        lines = str(e).strip("\n-").splitlines()
        return ("RemoteError", lines[-1] if lines else "")
    except Exception as e:  # noqa: BLE001 - the kind is what is compared
        return (type(e).__name__, str(e))


class ParityTest(BothServersTestCase):
    authkey = KEY

    def both(self, check):
        """check(manager) on each server; returns (mgrd's, CPython's)."""
        return check(self.ours), check(self.cpython)

    def assert_alike(self, check):
        ours, theirs = self.both(check)
        self.assertEqual(ours, theirs)
        return ours

    def test_traceback_text_ends_its_line_before_the_rule(self):
        def check(m):
            with self.assertRaises(RemoteError) as cm:
                m._create("nope")
            text = str(cm.exception)
            self.assertTrue(text.startswith("\n" + RULE + "\n"), repr(text))
            self.assertTrue(text.endswith("\n" + RULE), repr(text))
            self.assertFalse(text.endswith("\n\n" + RULE), repr(text))
            return text.strip("\n-").splitlines()[-1]

        # CPython's server looks the typeid up in a dict.
        self.assertEqual(self.assert_alike(check), "KeyError: 'nope'")

    def test_a_pool_is_refused_with_the_reason(self):
        # CPython's server runs the pool's Python functions; mgrd runs no Python,
        # so it answers CPython's KeyError for an unknown typeid, saying why.
        with self.assertRaises(RemoteError) as cm:
            self.ours.Pool(2)
        text = str(cm.exception)
        self.assertIn("KeyError: 'Pool'", text)
        self.assertIn("make a multiprocessing.Pool in the client", text)
        self.assertEqual(self.ours.list([1])[:], [1])

    def test_unknown_typeid_attribute(self):
        got = self.assert_alike(lambda m: outcome(lambda: m.Nope()))
        self.assertEqual(got[0], "AttributeError")

    def test_barrier_of_no_parties(self):
        def check(m):
            results = []
            for parties in (0, -1):
                b = m.Barrier(parties)
                results.append(b.parties)
                # Never fills: a wait leaves by its timeout, breaking it.
                results.append(outcome(lambda: b.wait(0))[0])
                results.append(b.broken)
            return results

        got = self.assert_alike(check)
        self.assertEqual(got, [0, "BrokenBarrierError", True, -1, "BrokenBarrierError", True])

    def test_queue_of_any_maxsize(self):
        def check(m):
            q = m.Queue(maxsize="2")
            results = [
                outcome(lambda: q.put(1)),
                outcome(lambda: q.put_nowait(1)),
                outcome(lambda: q.full()),
                q.qsize(),
                q.empty(),
                outcome(lambda: q.get_nowait())[0],
            ]
            f = m.Queue(maxsize=2.5)
            for i in range(3):
                results.append(f.full())
                f.put_nowait(i)
            results.append(f.full())
            results.append(outcome(lambda: f.put_nowait(9))[0])
            return results

        got = self.assert_alike(check)
        self.assertEqual(got[0][0], "TypeError")
        self.assertEqual(got[-2:], [True, "Full"])

    def test_pop_on_an_empty_dict_answers_before_hashing(self):
        def check(m):
            d = m.dict()
            results = [outcome(lambda: d.pop([1], 0)), outcome(lambda: d.pop([1]))]
            d[1] = 1
            results.append(outcome(lambda: d.pop([1], 0)))
            return results

        got = self.assert_alike(check)
        self.assertEqual(got[0], ("ok", 0))
        self.assertEqual(got[1][0], "KeyError")
        self.assertEqual(got[2], ("TypeError", "unhashable type: 'list'"))

    def test_debug_info_lists_what_number_of_objects_counts(self):
        def check(m):
            inner = m.dict({"a": 1})
            outer = m.list([inner])
            del inner
            got = outer[0]  # named in a reply: lent to the receiver a while
            del got
            outer.pop()
            info = m._debug_info()
            n = m._number_of_objects()
            del outer
            return info.count("refcount="), n, info.endswith("\n")

        for listed, counted, trailing in self.both(check):
            self.assertEqual(listed, counted)
            self.assertFalse(trailing, "entries are joined, not terminated")

    def test_refused_value_keeps_the_thread_connection(self):
        # CPython's server takes any picklable value; mgrd (by default)
        # refuses a user class, and on both the same proxy (the same thread's
        # connection) keeps working.
        def check(m):
            d = m.dict()
            first = outcome(lambda: d.__setitem__("t", UserClass()))
            d["x"] = 1
            return first[0], d["x"], d.get("x")

        ours, theirs = self.both(check)
        self.assertEqual(theirs, ("ok", 1, 1))
        self.assertEqual(ours, ("RemoteError", 1, 1))
        # From another thread too.
        out = []
        t = threading.Thread(target=lambda: out.append(check(self.ours)))
        t.start()
        t.join()
        self.assertEqual(out, [("RemoteError", 1, 1)])


class UserClass:
    """A class of this module: mgrd passes it only under `--globals any`."""


if __name__ == "__main__":
    unittest.main()
