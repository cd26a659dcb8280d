"""Limits of a real mgrd seen from outside: running out of file descriptors and the
connection cap."""

import os
import resource
import select
import socket
import subprocess
import time
import unittest
from multiprocessing.connection import (
    Client,
    Connection,
    answer_challenge,
    deliver_challenge,
)

from mgrtest import MGRD

DUMMY_REQUEST = bytes([1, 0, 0, 5]) + b"dummy" + bytes([0, 0])


def start(*args, nofile=None):
    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    p = subprocess.Popen(
        [MGRD, "--address", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        env=dict(os.environ, MGR_AUTHKEY="k"),
        preexec_fn=limit,
    )
    line = p.stdout.readline().decode()
    host, _, port = line.split()[-1].rpartition(":")
    return p, (host, int(port))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DescriptorExhaustionTest(unittest.TestCase):
    def test_backlog_waits_without_spinning_and_is_served_later(self):
        p, addr = start("--handshake-timeout", "120", nofile=32)
        socks = []
        try:
            # Far more connections than the server has descriptors for: the rest
            # wait in the kernel's backlog.
            for _ in range(60):
                socks.append(socket.create_connection(addr))
            time.sleep(0.5)
            before = cpu_seconds(p.pid)
            time.sleep(1.0)
            spent = cpu_seconds(p.pid) - before
            self.assertLess(spent, 0.5, "the server must not busy-loop on EMFILE")
            # Free descriptors: the connections waiting in the backlog get accepted
            # with no new connection arriving to wake the listener.
            for s in socks[:40]:
                s.close()
            last = socks.pop()
            ready, _, _ = select.select([last], [], [], 10)
            self.assertEqual(ready, [last], "a backlogged peer gets its challenge")
            with Connection(last.detach()) as c:
                answer_challenge(c, b"k")
                deliver_challenge(c, b"k")
                c.send_bytes(DUMMY_REQUEST)
                self.assertEqual(c.recv_bytes(), bytes([1, 0, 0]))
            with Client(addr, authkey=b"k") as c:
                c.send_bytes(DUMMY_REQUEST)
                self.assertEqual(c.recv_bytes(), bytes([1, 0, 0]))
            self.assertIsNone(p.poll(), "still running")
        finally:
            for s in socks:
                s.close()
            p.terminate()
            self.assertEqual(p.wait(timeout=20), 0)
            p.stdout.close()


class ConnectionCapTest(unittest.TestCase):
    def test_excess_connections_are_refused_and_others_keep_working(self):
        p, addr = start("--max-connections", "3")
        try:
            held = [Client(addr, authkey=b"k") for _ in range(3)]
            with self.assertRaises((EOFError, ConnectionError, OSError)):
                Client(addr, authkey=b"k")
            for c in held:
                c.send_bytes(DUMMY_REQUEST)
                self.assertEqual(c.recv_bytes(), bytes([1, 0, 0]))
            held.pop().close()
            deadline = time.monotonic() + 10
            while True:
                try:
                    extra = Client(addr, authkey=b"k")
                    break
                except (EOFError, ConnectionError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            extra.close()
            for c in held:
                c.close()
        finally:
            p.terminate()
            self.assertEqual(p.wait(timeout=20), 0)
            p.stdout.close()


if __name__ == "__main__":
    unittest.main()


class PreauthCapTest(unittest.TestCase):
    def test_idle_sockets_beyond_the_preauth_cap_cannot_lock_out_a_stock_client(self):
        from multiprocessing.managers import SyncManager

        p, addr = start("--max-preauth", "8", "--max-connections", "4")
        idle = []
        try:
            # Ten times the cap of sockets that connect and never authenticate.
            for _ in range(80):
                idle.append(socket.create_connection(addr))
            m = SyncManager(address=addr, authkey=b"k")
            m.connect()
            d = m.dict({"a": 1})
            d["b"] = 2
            self.assertEqual(d.copy(), {"a": 1, "b": 2})
            q = m.Queue()
            q.put("x")
            self.assertEqual(q.get(timeout=5), "x")
            # The oldest idle sockets were closed to make room for newer peers.
            closed = 0
            for s in idle:
                s.settimeout(0.01)
                try:
                    while s.recv(256):
                        pass
                    closed += 1
                except ConnectionResetError:
                    closed += 1
                except (socket.timeout, BlockingIOError):
                    pass
            self.assertGreaterEqual(closed, 70)
            self.assertIsNone(p.poll(), "still running")
        finally:
            for s in idle:
                s.close()
            p.terminate()
            self.assertEqual(p.wait(timeout=20), 0)
            p.stdout.close()
