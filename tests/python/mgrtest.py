"""Shared helpers for the Python interop tests: start and stop a real `mgrd`, and
speak the Python >= 3.12 handshake from this 3.11 interpreter.

Standard library only. `MGRD` names the server binary (default: target/debug/mgrd
under the repository root).
"""

import hmac
import os
import signal
import subprocess
import sys
import unittest
from multiprocessing import AuthenticationError
from multiprocessing.connection import CHALLENGE, FAILURE, WELCOME

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MGRD = os.environ.get("MGRD", os.path.join(ROOT, "target", "debug", "mgrd"))


class Mgrd:
    """A running `mgrd` child process."""

    def __init__(self, address="127.0.0.1:0", authkey=b"secret", args=()):
        env = dict(os.environ)
        env["MGR_AUTHKEY"] = authkey.decode("latin-1")
        self.authkey = authkey
        self.proc = subprocess.Popen(
            [MGRD, "--address", address, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        line = self.proc.stdout.readline().decode()
        prefix = "mgrd listening on "
        if not line.startswith(prefix):
            err = self.proc.stderr.read().decode()
            self.proc.kill()
            raise RuntimeError(f"mgrd did not start: {line!r} {err!r}")
        self.text = line[len(prefix):].strip()
        if self.text.startswith("unix:"):
            self.address = self.text[len("unix:"):]
        else:
            host, _, port = self.text.rpartition(":")
            self.address = (host.strip("[]"), int(port))

    def stop(self, sig=signal.SIGTERM):
        """Stops the server with `sig` and returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()


class MgrdTestCase(unittest.TestCase):
    """Starts one `mgrd` for the test class."""

    authkey = b"secret"
    server_address = "127.0.0.1:0"
    # Objects named in replies outlive them this long; short keeps teardown quick.
    server_args = ("--reply-grace", "0.5")

    @classmethod
    def setUpClass(cls):
        cls.mgrd = Mgrd(cls.server_address, cls.authkey, cls.server_args)
        cls.address = cls.mgrd.address

    @classmethod
    def tearDownClass(cls):
        code = cls.mgrd.stop()
        if code != 0:
            raise AssertionError(f"mgrd exited with {code}")



class BothServersTestCase(unittest.TestCase):
    """A stock `SyncManager` connected to one `mgrd` (`cls.ours`) and one to
    CPython's own manager server started here (`cls.cpython`), both with the
    class's `authkey`, for tests that compare the two."""

    authkey = b"both-servers-key"

    @classmethod
    def setUpClass(cls):
        import multiprocessing
        from multiprocessing.managers import SyncManager

        # Proxies rebuilt from replies (and inside CPython's server)
        # authenticate with the process's key.
        multiprocessing.current_process().authkey = cls.authkey
        cls.mgrd = Mgrd(authkey=cls.authkey)
        cls.ours = SyncManager(address=cls.mgrd.address, authkey=cls.authkey)
        cls.ours.connect()
        cls.cpython = SyncManager(address=("127.0.0.1", 0), authkey=cls.authkey)
        cls.cpython.start()

    @classmethod
    def tearDownClass(cls):
        cls.cpython.shutdown()
        cls.mgrd.stop()

# ---- the Python >= 3.12 handshake (Lib/multiprocessing/connection.py), for 3.11 ----

_ALLOWED = {b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"}
_LEGACY_LENGTHS = (20, 16)


def _digest_and_payload(message):
    if len(message) in _LEGACY_LENGTHS:
        return "", message
    if message.startswith(b"{"):
        curly = message.find(b"}", 1, 10)
        if curly > 0 and message[1:curly] in _ALLOWED:
            return message[1:curly].decode("ascii"), message[curly + 1:]
    raise AuthenticationError(f"unsupported message {message!r}")


def _create_response(authkey, message):
    name = _digest_and_payload(message)[0]
    if not name:
        return hmac.new(authkey, message, "md5").digest()
    return b"{%s}%s" % (name.encode(), hmac.new(authkey, message, name).digest())


def answer_challenge_312(conn, authkey):
    message = conn.recv_bytes(256)
    if not message.startswith(CHALLENGE):
        raise AuthenticationError(f"expected challenge: {message!r}")
    conn.send_bytes(_create_response(authkey, message[len(CHALLENGE):]))
    if conn.recv_bytes(256) != WELCOME:
        raise AuthenticationError("digest sent was rejected")


def deliver_challenge_312(conn, authkey, digest_name="sha256"):
    message = b"{%s}%s" % (digest_name.encode(), os.urandom(40))
    conn.send_bytes(CHALLENGE + message)
    response = conn.recv_bytes(256)
    name, mac = _digest_and_payload(response)
    expected = hmac.new(authkey, message, name or "md5").digest()
    if not hmac.compare_digest(expected, mac):
        conn.send_bytes(FAILURE)
        raise AuthenticationError("digest received was wrong")
    conn.send_bytes(WELCOME)


def client_312(address, authkey, digest_name="sha256"):
    """A `multiprocessing.connection.Client` that speaks the 3.12 handshake."""
    import socket
    from multiprocessing.connection import Connection

    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    s = socket.socket(family)
    s.connect(address)
    conn = Connection(s.detach())
    try:
        answer_challenge_312(conn, authkey)
        deliver_challenge_312(conn, authkey, digest_name)
    except BaseException:
        conn.close()
        raise
    return conn


if __name__ == "__main__":
    sys.exit("helpers only; run the test_*.py modules")
