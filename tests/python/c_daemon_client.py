"""A stock CPython client of the C host daemon (c-examples/host_daemon.c): a
BaseManager subclass registers the typeids the daemon defined in C and uses them
through AutoProxy over pickle. Run by capi/tests/c_examples.rs.

usage: MGR_AUTHKEY=key c_daemon_client.py HOST:PORT
Prints "python: all checks passed" on success.
"""

import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Client
from multiprocessing.managers import BaseManager, RemoteError


class HostManager(BaseManager):
    pass


HostManager.register("Mailbox", method_to_typeid={"snapshot": "Snapshot", "fork": "Mailbox"})
HostManager.register("Snapshot")


def eventually(pred, what, seconds=15):
    """Waits for pred() (a generous guard for the daemon's turn, not a timing check)."""
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.02)


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    key = os.environ["MGR_AUTHKEY"].encode()
    multiprocessing.current_process().authkey = key
    m = HostManager(address=(host, int(port)), authkey=key)
    m.connect()
    base = m._number_of_objects()

    box = m.Mailbox()
    assert box.count() == 0
    assert box.put("one") == 1
    assert box.put("two") == 2
    snap = box.snapshot()  # a new Snapshot object, built from the returned list
    assert snap.len() == 2 and snap.item(1) == "two", (snap.len(), snap.item(1))
    copy = box.fork()  # a new Mailbox handed back by the C callback
    assert copy.count() == 2
    assert box.get() == "one"
    assert box.pop() == "two"
    try:
        box.pop()
        raise AssertionError("pop() on an empty mailbox did not raise")
    except IndexError as e:
        assert "empty" in str(e), e
    try:
        box.bad()
        raise AssertionError("bad() did not raise")
    except RuntimeError:
        pass
    try:
        box.put(1)
        raise AssertionError("put(1) did not raise")
    except TypeError:
        pass
    try:
        box._callmethod("not_exposed")
        raise AssertionError("an unexposed method did not raise")
    except RemoteError:
        pass
    # wait_tick() is deferred in C and answered by the daemon's own timer.
    assert isinstance(box.wait_tick(), int)
    # Getters parked on their own connections, which then close: the daemon's
    # cancel callback drops each from its waiters as its client goes.
    token = box._token
    parked = []
    for _ in range(3):
        c = Client(token.address, authkey=key)
        c.send((None, "accept_connection", ("parked",), {}))  # as BaseProxy does
        assert c.recv() == ("#RETURN", None)
        c.send((token.id, "get", (), {}))
        parked.append(c)
    eventually(lambda: box.waiting() == 3, "the three getters did not park")
    for c in parked:
        c.close()
    eventually(lambda: box.waiting() == 0, "the vanished getters were not cancelled")
    assert box.put("after") == 1 and box.get() == "after"
    del box, snap, copy
    import gc

    gc.collect()
    eventually(lambda: m._number_of_objects() == base, "objects left behind")
    print("python: all checks passed")


if __name__ == "__main__":
    main()
