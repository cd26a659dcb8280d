"""A stock CPython client of examples/mio_host.rs's `Gate` host type: a thread
blocks in `wait()` (a deferred reply on the host) until the main thread calls
`open()`. argv: host port; the key is MGR_AUTHKEY."""

import os
import sys
import threading
import time
from multiprocessing.managers import BaseManager


class GateManager(BaseManager):
    pass


GateManager.register("Gate")

host, port = sys.argv[1], int(sys.argv[2])
m = GateManager(address=(host, port), authkey=os.environ["MGR_AUTHKEY"].encode())
m.connect()
gate = m.Gate()
got = []
waiter = threading.Thread(target=lambda: got.append(gate.wait()))
waiter.start()
deadline = time.monotonic() + 20
while gate.waiting() != 1:
    assert time.monotonic() < deadline, "the waiter never arrived"
    time.sleep(0.01)
try:
    gate.open("all")
    raise AssertionError("open('all') should raise TypeError")
except TypeError as e:
    assert "argument 1" in str(e), e
assert gate.waiting() == 1, "a refused open() woke no one"
assert gate.open() == 1, "open() woke one waiter"
waiter.join(20)
assert got and isinstance(got[0], int) and got[0] >= 0, got
assert gate.waiting() == 0
print("gate: ok, opened at tick", got[0])
