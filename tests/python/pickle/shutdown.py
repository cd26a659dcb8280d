"""The public `shutdown` request, as CPython's manager finalizer sends it."""
from multiprocessing.connection import Client
from multiprocessing.managers import dispatch

from _support import address, authkey, connect

m = connect()
conn = Client(address(), authkey=authkey())
assert dispatch(conn, None, 'dummy') is None
conn.close()
conn = Client(address(), authkey=authkey())
assert dispatch(conn, None, 'shutdown') is None
conn.close()
try:
    Client(address(), authkey=authkey())
except OSError:
    pass
else:
    raise AssertionError('server still accepting after shutdown')
print('shutdown: ok')
