"""A stock CPython client of the C host daemon (c-examples/host_daemon.c): a
BaseManager subclass registers the typeids the daemon defined in C and uses them
through AutoProxy over pickle. Run by tests/c_examples.rs.

usage: MGR_AUTHKEY=key c_daemon_client.py HOST:PORT
Prints "python: all checks passed" on success.
"""

import multiprocessing
import os
import sys
from multiprocessing.managers import BaseManager, RemoteError


class HostManager(BaseManager):
    pass


HostManager.register("Mailbox", method_to_typeid={"snapshot": "Snapshot", "fork": "Mailbox"})
HostManager.register("Snapshot")


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
    del box, snap, copy
    import gc
    import time

    gc.collect()
    deadline = time.monotonic() + 15
    while m._number_of_objects() != base and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m._number_of_objects() == base, m._number_of_objects()
    print("python: all checks passed")


if __name__ == "__main__":
    main()
