"""CPython's DictProxy against a libmgr server: 20,000 int keys that all share
CPython's hash (multiples of 2**61 - 1) in one dict.update, read back intact;
Python's key equality across bool / int / float still holds.

The update and the reads use lists of pairs / keys: a CPython dict of these keys
would cost this script itself ~N**2/2 comparisons to build."""
from multiprocessing.managers import DictProxy

from _support import TestManager, connect

TestManager.register('dict', proxytype=DictProxy)

M = 2**61 - 1
N = 20_000
keys = [k * M for k in range(1, N + 1)]
assert len({hash(k) for k in keys}) == 1, 'the keys collide in CPython itself'

m = connect()
d = m.dict()
d.update([(k, -k) for k in keys])
assert len(d) == N, len(d)
assert d.keys() == keys, 'insertion order kept'
assert d.values() == [-k for k in keys]
for k in (keys[0], keys[N // 2], keys[-1]):
    assert d[k] == -k
    assert k in d
assert (N + 1) * M not in d
# Big ints beyond 128 bits, and equal numbers of other types, are one key.
d[M << 200] = 'big'
assert d[M << 200] == 'big'
d[True] = 'one'
assert d[1] == 'one' and d[1.0] == 'one', d.get(1)
d[float(2**100)] = 'float'
assert d[2**100] == 'float'
assert len(d) == N + 3, len(d)
del d
print('hash_flood: ok')
