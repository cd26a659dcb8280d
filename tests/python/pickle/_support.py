"""Shared helpers for the pickle interop scripts: standard library only.

The Rust driver (tests/pickle_interop.rs) passes the server's address in
MGR_ADDRESS ("host:port" or "unix:/path") and the authkey in MGR_AUTHKEY.
"""
import multiprocessing
import os
from multiprocessing.managers import BaseManager


class TestManager(BaseManager):
    """The test types the Rust TestServer registers, as AutoProxy typeids."""


TestManager.register('Counter')
TestManager.register('Mailbox')
TestManager.register('Holder')
TestManager.register('Maker', method_to_typeid={'counter': 'Counter', 'wrap': 'Holder'})


def address():
    a = os.environ['MGR_ADDRESS']
    if a.startswith('unix:'):
        return a[len('unix:'):]
    host, port = a.rsplit(':', 1)
    return (host, int(port))


def authkey():
    return os.environ['MGR_AUTHKEY'].encode()


def connect():
    # Proxies rebuilt from a pickle (a proxy inside a returned value) have no
    # manager and authenticate with the process's authkey, as with CPython.
    multiprocessing.current_process().authkey = authkey()
    m = TestManager(address=address(), authkey=authkey())
    m.connect()
    return m


def expect(exc_type, f, *args, **kwds):
    """Calls f and returns the exception of exc_type it must raise."""
    try:
        r = f(*args, **kwds)
    except exc_type as e:
        return e
    raise AssertionError('%r returned %r instead of raising %s' % (f, r, exc_type.__name__))


def wait_for_count(m, n, seconds=15):
    """The manager's object count once it reaches `n` (objects named in a reply
    outlive it by the server's grace period), or the last count seen."""
    import time
    deadline = time.monotonic() + seconds
    count = m._number_of_objects()
    while count != n and time.monotonic() < deadline:
        time.sleep(0.05)
        count = m._number_of_objects()
    return count
