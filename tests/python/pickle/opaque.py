"""Opaque values between CPython and a native (Rust) client: phase `put` stores
standard-library values in the dict the Rust driver created (MGR_DICT, its hex
id); the driver reads them over the native codec and stores them back under
'out'; phase `check` reads 'out' and finds every value intact, of its type."""
import collections
import datetime
import decimal
import fractions
import os
import pathlib
import uuid
from multiprocessing.managers import DictProxy, Token

from _support import address, connect

VALUES = {
    'datetime': datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc),
    'decimal': decimal.Decimal('-1.50'),
    'fraction': fractions.Fraction(3, 7),
    'complex': 1 + 2j,
    'uuid': uuid.UUID(int=12345),
    'path': pathlib.PurePosixPath('a/b'),
    'counter': collections.Counter('hello'),
    'ordered': collections.OrderedDict([('z', 1), ('a', 2)]),
    'default': collections.defaultdict(int, {'n': 3}),
    'deque': collections.deque([1, 2], maxlen=3),
    'surrogate': 'x\udc80y',
}

m = connect()
d = DictProxy(Token('dict', address(), os.environ['MGR_DICT']), 'pickle',
              manager=m, authkey=m._authkey)
phase = os.environ['MGR_PHASE']
if phase == 'put':
    d['in'] = VALUES
    d['exc'] = KeyError('gone')
    print('opaque put: ok')
else:
    got = d['out']
    assert list(got) == list(VALUES), list(got)
    for k, v in VALUES.items():
        assert type(got[k]) is type(v), (k, type(got[k]))
        assert got[k] == v, (k, got[k], v)
    assert got['deque'].maxlen == 3
    assert got['default'].default_factory is int
    exc = d['exc_out']
    assert type(exc) is KeyError and exc.args == ('gone',), repr(exc)
    # A value the Rust client made itself.
    assert d['made'] == decimal.Decimal('2.5'), repr(d['made'])
    print('opaque check: ok')
