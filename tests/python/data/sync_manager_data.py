"""CPython 3.11's SyncManager against a libmgr server with register_builtins:
the data types (dict, list, Namespace, Value, Array, Iterator) through the
stock proxies. Needs the pickle serializer on the server side.

Run: MGR_ADDRESS=127.0.0.1:PORT MGR_AUTHKEY=key python3 sync_manager_data.py
Prints "data: ok" on success.
"""
import multiprocessing
import os
from multiprocessing.managers import RemoteError, SyncManager


def expect(exc, f, *args):
    try:
        f(*args)
    except exc as e:
        return e
    raise AssertionError(f'{f} did not raise {exc.__name__}')


host, port = os.environ['MGR_ADDRESS'].rsplit(':', 1)
key = os.environ['MGR_AUTHKEY'].encode()
multiprocessing.current_process().authkey = key
m = SyncManager(address=(host, int(port)), authkey=key)
m.connect()
base = m._number_of_objects()

# dict: views come back as lists, iteration goes through an Iterator proxy.
d = m.dict({1: 'a', 'x': 2})
assert d.keys() == [1, 'x'] and d.values() == ['a', 2]
assert d.items() == [(1, 'a'), ('x', 2)]
assert list(d) == [1, 'x'] and [k for k in d] == [1, 'x']
assert d[1.0] == 'a' and d[True] == 'a' and 'x' in d and len(d) == 2
assert str(d) == "{1: 'a', 'x': 2}"
e = expect(KeyError, d.__getitem__, 5)
assert e.args == (5,), e.args
e = expect(TypeError, d.__setitem__, [1], 2)
assert str(e) == "unhashable type: 'list'"
e = expect(KeyError, m.dict().popitem)
assert e.args == ('popitem(): dictionary is empty',)
d.update([(3, 4)], z=5)
assert d._getvalue() == {1: 'a', 'x': 2, 3: 4, 'z': 5}
assert d.copy() == d._getvalue()

# list: slices, operators, sort with Python's ordering, errors.
l = m.list([3, 1, 2])
assert list(reversed(l)) == [2, 1, 3]
assert l + [5] == [3, 1, 2, 5] and l * 2 == [3, 1, 2] * 2 and 2 * l == l * 2
assert l[0:2] == [3, 1] and l[::-1] == [2, 1, 3]
l[0:1] = [7, 8]
assert l._getvalue() == [7, 8, 1, 2]
del l[::2]
assert l._getvalue() == [8, 2]
e = expect(TypeError, m.list([1, 'a']).sort)
assert "'<' not supported between instances of" in str(e)
l.extend([0, 5])
l.sort(reverse=True)
assert l._getvalue() == [8, 5, 2, 0]
assert str(expect(ValueError, l.index, 9)) == '9 is not in list'
assert str(expect(ValueError, l.remove, 9)) == 'list.remove(x): x not in list'
assert str(expect(IndexError, m.list().pop)) == 'pop from empty list'
assert str(expect(IndexError, l.__getitem__, 10)) == 'list index out of range'
l += [1]
l *= 2
assert l._getvalue() == [8, 5, 2, 0, 1] * 2
assert str(l) == str([8, 5, 2, 0, 1] * 2)

# A list of dicts keeps the inner dict alive.
ld = m.list()
inner = m.dict(a=1)
ld.append(inner)
del inner
assert ld[0]['a'] == 1

# Namespace, Value, Array.
n = m.Namespace(b=2, a=1, _c=3)
assert str(n) == 'Namespace(a=1, b=2)' and n.a == 1
n.z = [1]
assert n.z == [1]
assert str(expect(AttributeError, getattr, n, 'zz')) == \
    "'Namespace' object has no attribute 'zz'"
v = m.Value('i', 5)
assert v.value == 5
v.value = 9
assert v.get() == 9 and str(v) == "Value('i', 9)"
a = m.Array('i', [1, 2, 3])
assert str(a) == "array('i', [1, 2, 3])" and len(a) == 3 and list(a) == [1, 2, 3]
import array
assert a[0:2] == array.array('i', [1, 2])
e = expect(OverflowError, a.__setitem__, 0, 2**40)
assert str(e) == 'signed integer is greater than maximum'
e = expect(TypeError, a.__setitem__, 0, 'x')
assert str(e) == "'str' object cannot be interpreted as an integer"
assert str(expect(IndexError, a.__getitem__, 7)) == 'array index out of range'
e = expect(RemoteError, m.Array, 'z', [1])
assert 'bad typecode' in str(e)

del d, l, ld, n, v, a, e
import gc
gc.collect()
# Objects named in replies outlive them by the server's grace period (5 s).
import time
deadline = time.monotonic() + 15
while m._number_of_objects() != base and time.monotonic() < deadline:
    time.sleep(0.05)
assert m._number_of_objects() == base, m._number_of_objects()
print('data: ok')
