"""A stock CPython client of objects a C host published by name
(`mgr_server_expose_object`, `mgr_server_expose`): a BaseManager subclass
registers the names with no callable and reaches them through AutoProxy, as the
standard library's remote-manager example does. Run by capi/src/tests.rs.

usage: MGR_AUTHKEY=key c_expose_client.py HOST:PORT
Prints "python: all checks passed" on success.
"""

import os
import queue
import sys
from multiprocessing.managers import BaseManager


class GameManager(BaseManager):
    pass


GameManager.register("get_scoreboard")
GameManager.register("get_queue")


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    key = os.environ["MGR_AUTHKEY"].encode()
    m = GameManager(address=(host, int(port)), authkey=key)
    m.connect()
    board = m.get_scoreboard()
    assert board.get() == 100, board.get()
    assert board.add(5) == 105
    again = m.get_scoreboard()
    assert again._token.id == board._token.id, "one object"
    assert again.get() == 105
    q = m.get_queue()
    q.put("x")
    assert q.full(), "published as Queue(1)"
    try:
        q.put("y", timeout=0.05)
    except queue.Full:
        pass
    else:
        raise AssertionError("Queue(1) took a second item")
    assert q.get() == "x"
    print("python: all checks passed")


if __name__ == "__main__":
    main()
