"""CPython's BaseManager against a libmgr server: create, calls with args and
kwargs, #PROXY results, proxies inside values, errors, fallbacks, refcounts."""
import gc
import array

from multiprocessing.managers import RemoteError

from _support import connect, expect, wait_for_count

m = connect()
assert m._number_of_objects() == 0, m._number_of_objects()

# Create and call, positional and keyword arguments.
c = m.Counter(10)
assert c.incr() == 11
assert c.incr(5) == 16
assert c.incr(n=4) == 20
assert c.get() == 20
assert c._getvalue() == 20
# Keyword arguments reach the constructor too.
c0 = m.Counter(start=5)
assert c0.get() == 5
del c0

# str() asks the server (__repr__ fallback); repr() is the local proxy's.
assert str(c) == 'Counter(20)', str(c)
assert "typeid 'Counter'" in repr(c), repr(c)

# A method error arrives as the same exception class CPython's server sends.
e = expect(ValueError, c.fail)
assert str(e) == 'asked to fail', repr(e)
# Calling something not exposed is a RemoteError with a readable traceback.
e = expect(RemoteError, c._callmethod, 'nope')
assert 'AttributeError' in str(e) and 'nope' in str(e), str(e)
del e  # its traceback holds a reference to the proxy
# The connection is still good after errors.
assert c.incr() == 21

# #PROXY: Maker.counter is in method_to_typeid.
maker = m.Maker()
c2 = maker.counter(100)
assert type(c2).__name__ == 'AutoProxy[Counter]', type(c2)
assert c2.incr() == 101

# A proxy passed as an argument, stored, and returned inside a value.
h = m.Holder(None)
h.set(c2)
got = h.get()
assert type(got).__name__ == 'AutoProxy[Counter]', type(got)
assert got.incr() == 102
assert c2.get() == 102
h.set({'counters': [c2, got], 'n': 1})
both = h.get()
assert both['n'] == 1
assert [p.get() for p in both['counters']] == [102, 102]
del both

# Values of every kind round-trip through a shared object.
value = {
    'none': None, 'bools': (True, False), 'ints': [0, -1, 2**31, -2**63, 2**64, -2**100],
    'float': 1.25, 'str': 'héllo', 'bytes': b'\x00\xff', 'bytearray': bytearray(b'ab'),
    'set': {1, 2}, 'frozenset': frozenset({'x'}), 'slice': slice(1, None, 2),
    'nested': [[[]], ((),), {'a': {'b': []}}], 2: 'int key',
}
h.set(value)
assert h.get() == value, h.get()
assert h._getvalue() == value
h.set(array.array('i', [1, -2, 3]))
assert h.get() == array.array('i', [1, -2, 3]), h.get()

# wrap(v) makes v a new Holder, returned as #PROXY.
w = maker.wrap([1, {'a': 2}])
assert w.get() == [1, {'a': 2}]

# debug_info lists the live objects.
info = m._debug_info()
assert 'refcount=' in info, info

# Letting go of every proxy frees every object (the Holder frees its counter).
del c, c2, got, h, w, maker
gc.collect()
n = wait_for_count(m, 0)
assert n == 0, 'objects left: %d\n%s' % (n, m._debug_info())
print('basic: ok')
