"""Pipelines calls to the C host daemon (c-examples/host_daemon.c) on one
connection, more than its 16-request turn, and checks every answer: the
daemon's loop must take the turns mgr_server_pending() asks for. Run by
capi/tests/c_examples.rs.

usage: MGR_AUTHKEY=key c_daemon_pipeline.py HOST:PORT N
Prints "pipeline: all checks passed" on success.
"""

import os
import sys
from multiprocessing.connection import Client


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    n = int(sys.argv[2])
    key = os.environ["MGR_AUTHKEY"].encode()
    address = (host, int(port))
    with Client(address, authkey=key) as c:
        c.send((None, "create", ("Mailbox",), {}))
        kind, (ident, _exposed) = c.recv()
        assert kind == "#RETURN", kind
    with Client(address, authkey=key) as c:
        c.send((None, "accept_connection", ("pipeline",), {}))
        assert c.recv() == ("#RETURN", None)
        for _ in range(n):  # all sent before any answer is read
            c.send((ident, "count", (), {}))
        for i in range(n):
            assert c.recv() == ("#RETURN", 0), i
        c.send((None, "decref", (ident,), {}))
        assert c.recv() == ("#RETURN", None)
    print("pipeline: all checks passed")


if __name__ == "__main__":
    main()
