"""Hostile pickles naming os.system (and friends), sent over authenticated
connections, are rejected without running anything; other clients are fine."""
import os
import pickle
import sys
from multiprocessing.connection import Client

from _support import address, authkey, connect

canary = os.environ['MGR_CANARY']
assert not os.path.exists(canary)
command = 'touch ' + canary


class Evil:
    def __reduce__(self):
        return (os.system, (command,))


payloads = {
    # A hand-written GLOBAL naming os.system, as an attacker would send it.
    'raw os.system': b'\x80\x04cos\nsystem\n' + pickle.dumps(command, protocol=4)[2:-1]
                     + b'\x85R.',
    # What pickle.dumps makes of os.system (posix.system) inside a request tuple.
    'request with posix.system': pickle.dumps((None, 'create', (Evil(),), {}), protocol=4),
    'builtins.eval': pickle.dumps((None, 'dummy', (), {}), protocol=2).replace(
        b'N', b'cbuiltins\neval\nX\x0c\x00\x00\x00print("bad")\x85R', 1),
}

for name, payload in payloads.items():
    c = Client(address(), authkey=authkey())
    c.send_bytes(payload)
    try:
        kind, result = c.recv()
    except EOFError:
        kind, result = None, None
    c.close()
    assert kind == '#TRACEBACK', (name, kind, result)
    assert 'not allowed' in result, (name, result)
    print('%s rejected: %s' % (name, result.splitlines()[-1]), file=sys.stderr)

# The same on a persistent connection, after accept_connection.
c = Client(address(), authkey=authkey())
c.send((None, 'accept_connection', ('evil',), {}))
assert c.recv() == ('#RETURN', None)
for name, payload in payloads.items():
    c.send_bytes(payload)
    kind, result = c.recv()
    assert kind == '#TRACEBACK' and 'not allowed' in result, (name, kind, result)
    assert result.endswith('\n'), result
# The connection stays usable, as on CPython's server.
c.send((None, 'number_of_objects', (), {}))
assert c.recv() == ('#RETURN', 0)
c.close()

assert not os.path.exists(canary), 'a hostile pickle ran a command'

# Another client keeps working.
m = connect()
counter = m.Counter(1)
assert counter.incr() == 2
del counter
assert m._number_of_objects() == 0
print('hostile: ok')
