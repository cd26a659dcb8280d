"""Values the data model does not represent — datetime, Decimal, Fraction,
complex, UUID, pathlib paths, collections' types, exception instances, strings
with lone surrogates, user classes — stored in mgrd by stock CPython 3.11
clients and read back intact by another process: kept as inert data, never
executed, under the server's policy on globals (`--globals default|any|none`).
Standard library only."""

import collections
import datetime
import decimal
import fractions
import multiprocessing
import pathlib
import queue
import uuid
from multiprocessing.managers import RemoteError, SyncManager

from mgrtest import MgrdTestCase

fork = multiprocessing.get_context("fork")


class Point:
    """A user class: passes only under `--globals any`."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)


def stdlib_values():
    utc = datetime.timezone.utc
    return {
        "datetime": datetime.datetime(2024, 5, 1, 12, 30, 5, 123),
        "datetime_tz": datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        "date": datetime.date(2024, 5, 1),
        "time": datetime.time(23, 59, 1, tzinfo=utc),
        "timedelta": datetime.timedelta(days=3, seconds=7),
        "timezone": utc,
        "decimal": decimal.Decimal("-1.50"),
        "fraction": fractions.Fraction(3, 7),
        "complex": 1.5 - 2j,
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "uuid4": uuid.uuid4(),
        "purepath": pathlib.PurePosixPath("a/b.txt"),
        "path": pathlib.Path("/tmp/x"),
        "counter": collections.Counter("abracadabra"),
        "ordereddict": collections.OrderedDict([("b", 1), ("a", [2, 3])]),
        "defaultdict": collections.defaultdict(list, {"k": [1, 2]}),
        "deque": collections.deque([1, "two", 3.0], maxlen=5),
        "nested": [decimal.Decimal("1"), {"when": datetime.date(2000, 1, 1)}],
        "surrogate": "a\ud800b\udfff",
    }


def exception_values():
    return {
        "valueerror": ValueError("bad", 42),
        "keyerror": KeyError("k"),
        "oserror": FileNotFoundError(2, "No such file"),
        "empty": queue.Empty(),
    }


def same_exception(a, b):
    return type(a) is type(b) and a.args == b.args


def store_everywhere(d, l, q, ns, values):
    """Child: stores every value in a dict, a list, a Queue and a Namespace."""
    for k, v in values.items():
        d[k] = v
        l.append(v)
        q.put(v)
        setattr(ns, k, v)


def report_failure(q):
    """Child: a worker reporting its exception through a queue."""
    try:
        {}["missing"]
    except KeyError as e:
        q.put(e)
    try:
        int("x")
    except ValueError as e:
        q.put(("failed", e))


class ManagerTestCase(MgrdTestCase):
    """A stock `SyncManager` connected to the class's mgrd (`cls.m`)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        multiprocessing.current_process().authkey = cls.authkey
        cls.m = SyncManager(address=cls.address, authkey=cls.authkey)
        cls.m.connect()


class OpaqueDefaultTest(ManagerTestCase):
    def roundtrip(self, values, check):
        m = self.m
        d, l, q, ns = m.dict(), m.list(), m.Queue(), m.Namespace()
        p = fork.Process(target=store_everywhere, args=(d, l, q, ns, values))
        p.start()
        p.join(30)
        self.assertEqual(p.exitcode, 0)
        got_d = d.copy()
        got_l = l[:]
        got_q = [q.get(timeout=5) for _ in values]
        for i, (k, v) in enumerate(values.items()):
            with self.subTest(kind=k):
                check(self, v, got_d[k])
                check(self, v, d[k])
                check(self, v, got_l[i])
                check(self, v, l[i])
                check(self, v, got_q[i])
                check(self, v, getattr(ns, k))

    def test_stdlib_value_types_round_trip_through_every_container(self):
        def check(t, want, got):
            t.assertIs(type(got), type(want))
            t.assertEqual(got, want)
            if isinstance(want, collections.deque):
                t.assertEqual(got.maxlen, want.maxlen)
            if isinstance(want, collections.defaultdict):
                t.assertIs(got.default_factory, want.default_factory)

        self.roundtrip(stdlib_values(), check)

    def test_exception_instances_round_trip(self):
        self.roundtrip(
            exception_values(),
            lambda t, want, got: t.assertTrue(same_exception(want, got), (want, got)),
        )

    def test_a_worker_reports_its_exception_through_a_queue(self):
        q = self.m.Queue()
        p = fork.Process(target=report_failure, args=(q,))
        p.start()
        p.join(30)
        self.assertEqual(p.exitcode, 0)
        e = q.get(timeout=5)
        self.assertIsInstance(e, KeyError)
        self.assertEqual(e.args, ("missing",))
        tag, e = q.get(timeout=5)
        self.assertEqual(tag, "failed")
        self.assertIsInstance(e, ValueError)
        self.assertIn("invalid literal", str(e))

    def test_opaque_values_as_keys_equality_and_errors(self):
        d = self.m.dict()
        when = datetime.date(2024, 1, 2)
        d[when] = "a date key"
        d[decimal.Decimal("2.5")] = "a decimal key"
        self.assertEqual(d[datetime.date(2024, 1, 2)], "a date key")
        self.assertIn(decimal.Decimal("2.5"), d)
        self.assertEqual(set(d.keys()), {when, decimal.Decimal("2.5")})
        l = self.m.list([uuid.UUID(int=1), uuid.UUID(int=1), uuid.UUID(int=2)])
        self.assertEqual(l.count(uuid.UUID(int=1)), 2)
        self.assertEqual(l.index(uuid.UUID(int=2)), 2)
        # Ordering needs Python semantics: refused, as the TypeError Python
        # raises for instances of a class without ordering (naming the class).
        with self.assertRaisesRegex(
            TypeError, "'<' not supported between instances of 'UUID' and 'UUID'"
        ):
            l.sort()
        # repr names the class.
        self.assertIn("Decimal('2.5')", str(d))

    def test_a_user_class_is_refused_with_a_clear_error(self):
        d = self.m.dict()
        with self.assertRaises(Exception) as cm:
            d["p"] = Point(1, 2)
        self.assertIn("Point", str(cm.exception))
        self.assertIn("--globals any", str(cm.exception))
        # The connection keeps serving.
        d["ok"] = 1
        self.assertEqual(d["ok"], 1)

    def test_code_is_never_run_on_the_server(self):
        class Evil:
            def __reduce__(self):
                import os

                return (os.system, ("touch /tmp/mgrd-opaque-pwned",))

        d = self.m.dict()
        with self.assertRaises(Exception) as cm:
            d["x"] = Evil()
        self.assertIn("posix.system", str(cm.exception))
        import os

        self.assertFalse(os.path.exists("/tmp/mgrd-opaque-pwned"))


class OpaqueAnyTest(ManagerTestCase):
    server_args = ("--reply-grace", "0.5", "--globals", "any")

    def test_user_classes_pass_under_any(self):
        d, q, ns = self.m.dict(), self.m.Queue(), self.m.Namespace()
        d["p"] = Point(1, [2, 3])
        q.put(Point("a", None))
        ns.p = Point(0, 0)
        self.assertEqual(d["p"], Point(1, [2, 3]))
        self.assertEqual(q.get(timeout=5), Point("a", None))
        self.assertEqual(ns.p, Point(0, 0))

    def test_a_proxy_inside_an_opaque_value_keeps_its_object_alive(self):
        import gc
        import time

        ns = self.m.Namespace()
        inner = self.m.dict({"a": 1})
        ns.p = Point(inner, "held")
        del inner
        gc.collect()
        time.sleep(1)  # past the reply grace: only the namespace holds it now
        got = ns.p
        self.assertEqual(got.y, "held")
        self.assertEqual(got.x["a"], 1)
        self.assertEqual(got.x._token.typeid, "dict")


class OpaqueNoneTest(ManagerTestCase):
    server_args = ("--reply-grace", "0.5", "--globals", "none")

    def test_nothing_opaque_passes_under_none(self):
        d = self.m.dict()
        for v in [datetime.date(2024, 1, 1), decimal.Decimal(1), ValueError("x")]:
            with self.subTest(v=v):
                with self.assertRaises(Exception) as cm:
                    d["k"] = v
                self.assertIn("--globals none", str(cm.exception))
        d["k"] = [1, "plain", {"data": None}]
        self.assertEqual(d["k"], [1, "plain", {"data": None}])


class PureBuiltinsTest(ManagerTestCase):
    """Pure builtins and iterators over data, interpreted (never run) as
    method and constructor arguments, as CPython's server accepts them."""

    def test_sort_with_a_pure_key(self):
        import operator

        words = ["b", "A", "c", "B", "a"]
        for key in (str.lower, str.upper, str.casefold, len):
            for reverse in (False, True):
                with self.subTest(key=key, reverse=reverse):
                    l = self.m.list(words + ["ccc", "dd"])
                    l.sort(key=key, reverse=reverse)
                    self.assertEqual(l[:], sorted(words + ["ccc", "dd"], key=key, reverse=reverse))
        nums = self.m.list([3, -1, -4, 2])
        nums.sort(key=abs)
        self.assertEqual(nums[:], [-1, 2, 3, -4])
        rows = [(2, "b"), (1, "z"), (2, "a"), (1, "y")]
        l = self.m.list(rows)
        l.sort(key=operator.itemgetter(0))
        self.assertEqual(l[:], sorted(rows, key=operator.itemgetter(0)))
        l.sort(key=operator.itemgetter(1, 0), reverse=True)
        self.assertEqual(l[:], sorted(rows, key=operator.itemgetter(1, 0), reverse=True))
        d = self.m.list([{"n": 2}, {"n": 1}])
        d.sort(key=operator.itemgetter("n"))
        self.assertEqual(d[:], [{"n": 1}, {"n": 2}])
        # Dict keys are found as Python finds them: 1 == 1.0 == True.
        for k in (1.0, True):
            with self.subTest(k=k):
                by_num = self.m.list([{1: "b"}, {1: "a"}])
                by_num.sort(key=operator.itemgetter(k))
                self.assertEqual(by_num[:], [{1: "a"}, {1: "b"}])
        # A key that applies to no item is the TypeError Python raises, and
        # the list is unchanged.
        mixed = self.m.list(["a", 1])
        with self.assertRaises(TypeError):
            mixed.sort(key=str.lower)
        self.assertEqual(mixed[:], ["a", 1])

    def test_other_keys_stay_refused(self):
        l = self.m.list([1, 2])
        for key in (lambda x: -x, str.strip, sorted):
            with self.subTest(key=key):
                with self.assertRaises(Exception):
                    l.sort(key=key)
        self.assertEqual(l[:], [1, 2])

    def test_iterators_over_data_as_constructor_and_method_arguments(self):
        k, v = ["a", "b", "c"], [1, 2, 3]
        self.assertEqual(self.m.dict(zip(k, v)).copy(), dict(zip(k, v)))
        self.assertEqual(self.m.list(enumerate(k))[:], list(enumerate(k)))
        self.assertEqual(self.m.list(enumerate(k, 5))[:], list(enumerate(k, 5)))
        self.assertEqual(self.m.list(reversed(v))[:], [3, 2, 1])
        self.assertEqual(self.m.list(iter(v))[:], v)
        self.assertEqual(self.m.list(map(str.upper, k))[:], ["A", "B", "C"])
        self.assertEqual(self.m.list(map(len, ["ab", "c"]))[:], [2, 1])
        self.assertEqual(self.m.list(range(2, 10, 3))[:], [2, 5, 8])
        # A partly consumed iterator pickles its position.
        it = iter(v)
        next(it)
        self.assertEqual(self.m.list(it)[:], [2, 3])
        r = reversed(v)
        next(r)
        self.assertEqual(self.m.list(r)[:], [2, 1])
        # Iterating a str, bytes, range or bytearray yields what Python's does.
        def rest(src, n):
            it = iter(src)
            for _ in range(n):
                next(it)
            return it

        for src in ("abc", "héllo wörld", b"xyz", range(3), range(10, -10, -3),
                    bytearray(b"ab"), range(2**62, 2**62 + 3)):
            with self.subTest(src=src):
                self.assertEqual(self.m.list(iter(src))[:], list(src))
                self.assertEqual(self.m.list(reversed(src))[:], list(reversed(src)))
                self.assertEqual(self.m.list(rest(src, 1))[:], list(src)[1:])
                self.assertEqual(self.m.list(enumerate(src))[:], list(enumerate(src)))
                self.assertEqual(self.m.list(zip(src, k))[:], list(zip(src, k)))
        self.assertEqual(self.m.dict(zip(range(3), "abc")).copy(), {0: "a", 1: "b", 2: "c"})
        self.assertEqual(self.m.list(map(str.upper, "ab"))[:], ["A", "B"])
        # A range too big to iterate within the request's budget is refused with
        # the limit named, and the connection keeps working.
        with self.assertRaisesRegex(Exception, "expands beyond"):
            self.m.list(iter(range(10**12)))
        self.assertEqual(self.m.list(iter("ok"))[:], ["o", "k"])
        d = self.m.dict()
        d.update(zip(k, v))
        d.update(collections.Counter("aab"))
        self.assertEqual(d.copy(), {"a": 2, "b": 1, "c": 3})
        d.update(collections.OrderedDict([("z", 0)]))
        d.update(collections.defaultdict(int, {"y": 9}))
        self.assertEqual(d["z"], 0)
        self.assertEqual(d["y"], 9)
        self.assertEqual(self.m.dict(collections.Counter("xx")).copy(), {"x": 2})
        self.assertEqual(self.m.list(collections.deque([1, 2]))[:], [1, 2])
        l = self.m.list()
        l.extend(zip(k, v))
        self.assertEqual(l[:], list(zip(k, v)))
        with self.assertRaises(Exception):
            self.m.list(map(lambda x: x, k))

    def test_ctypes_and_builtin_types_as_value_typecodes(self):
        import ctypes

        for code, value in [
            (ctypes.c_int, 0),
            (ctypes.c_double, 1.5),
            (ctypes.c_bool, True),
            (ctypes.c_char_p, b"x"),
            (bool, False),
            (int, 3),
            (float, 2.5),
        ]:
            with self.subTest(code=code):
                v = self.m.Value(code, value)
                self.assertEqual(v.value, value)
                v.value = value
                self.assertEqual(v.get(), value)
                self.assertIn(code.__name__, str(v))
        # A ctypes type is a class here, never called.
        with self.assertRaises(Exception):
            self.m.Value("i", ctypes.c_int(5))


class TypesRoundTripTest(ManagerTestCase):
    """array.array, range and bytearray come back as what was stored; Array
    slices are arrays; `_getvalue()` returns what CPython's server returns."""

    def test_array_range_bytearray_stored_as_values(self):
        import array

        values = [
            array.array("d", [1.5, -2.0]),
            array.array("i", [1, 2, 3]),
            array.array("u", "hé"),
            array.array("B"),
            range(3),
            range(10, 0, -3),
            bytearray(b"ab\x00"),
            bytearray(),
        ]
        d, l, q, ns = self.m.dict(), self.m.list(), self.m.Queue(), self.m.Namespace()
        for i, v in enumerate(values):
            d[i] = v
            l.append(v)
            q.put(v)
            setattr(ns, f"a{i}", v)
        for i, v in enumerate(values):
            for got in (d[i], l[i], q.get(timeout=5), getattr(ns, f"a{i}")):
                with self.subTest(v=v):
                    self.assertIs(type(got), type(v))
                    self.assertEqual(got, v)
                    if isinstance(v, array.array):
                        self.assertEqual(got.typecode, v.typecode)
        # Still usable as iterables by the server's constructors.
        self.assertEqual(self.m.list(array.array("i", [4, 5]))[:], [4, 5])
        self.assertEqual(self.m.list(bytearray(b"\x01\x02"))[:], [1, 2])
        self.assertEqual(self.m.list(range(3))[:], [0, 1, 2])

    def test_array_slices_are_arrays_and_take_only_arrays(self):
        import array

        a = self.m.Array("d", [1.0, 2.0, 3.0])
        s = a[:]
        self.assertIsInstance(s, array.array)
        self.assertEqual(s, array.array("d", [1.0, 2.0, 3.0]))
        self.assertEqual(a[1:], array.array("d", [2.0, 3.0]))
        with self.assertRaises(TypeError):
            a[0:2] = [9.0, 8.0]
        with self.assertRaises(TypeError):
            a[0:2] = array.array("i", [9, 8])
        a[0:2] = array.array("d", [9.0, 8.0])
        self.assertEqual(a[:], array.array("d", [9.0, 8.0, 3.0]))
        self.assertEqual(a._getvalue(), array.array("d", [9.0, 8.0, 3.0]))
        u = self.m.Array("u", "ab")
        self.assertEqual(u[:], array.array("u", "ab"))

    def test_getvalue_of_namespace_and_value_is_cpythons(self):
        from multiprocessing.managers import Namespace, Value

        ns = self.m.Namespace(x=1, y="two")
        got = ns._getvalue()
        self.assertIsInstance(got, Namespace)
        self.assertEqual(repr(got), "Namespace(x=1, y='two')")
        v = self.m.Value("i", 5)
        got = v._getvalue()
        self.assertIsInstance(got, Value)
        self.assertEqual(got.value, 5)
        self.assertEqual(repr(got), "Value('i', 5)")

    def test_a_million_item_range_is_kept_compact_until_built(self):
        l = self.m.list(range(1_000_000))
        self.assertEqual(len(l), 1_000_000)
        self.assertEqual(l[999_999], 999_999)
        self.assertEqual(l[:3], [0, 1, 2])
        # Building a trillion items is refused by the call's byte bound, not
        # paid for when the request is decoded.
        with self.assertRaises(RemoteError) as cm:
            self.m.list(range(10**12))
        self.assertIn("MemoryError", str(cm.exception))
        self.assertIn("max_frame", str(cm.exception))
