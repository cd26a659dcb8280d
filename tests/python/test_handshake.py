"""CPython's own handshake against mgrd: the 3.11 client (legacy HMAC-MD5) and a
client speaking the >= 3.12 handshake ({digest} prefix), right and wrong keys."""

import os
import signal
import tempfile
import unittest
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client

from mgrtest import Mgrd, MgrdTestCase, client_312

# A native request for the public method `dummy` and its reply, byte for byte
# (version 1, request tag 0, no target, "dummy", no args, no kwargs).
DUMMY_REQUEST = bytes([1, 0, 0, 5]) + b"dummy" + bytes([0, 0])
NONE_REPLY = bytes([1, 0, 0])


class HandshakeTest(MgrdTestCase):
    def assert_serving(self, conn):
        conn.send_bytes(DUMMY_REQUEST)
        self.assertEqual(conn.recv_bytes(), NONE_REPLY)

    def test_cpython_311_client_authenticates(self):
        with Client(self.address, authkey=self.authkey) as conn:
            self.assert_serving(conn)

    def test_cpython_311_client_with_wrong_key_is_refused(self):
        with self.assertRaises(AuthenticationError):
            Client(self.address, authkey=b"not the key")
        with Client(self.address, authkey=self.authkey) as conn:
            self.assert_serving(conn)

    def test_312_client_authenticates_with_every_digest(self):
        for digest in ("sha256", "md5", "sha384", "sha3_256", "sha3_384"):
            with self.subTest(digest=digest):
                with client_312(self.address, self.authkey, digest) as conn:
                    self.assert_serving(conn)

    def test_312_client_with_wrong_key_is_refused(self):
        with self.assertRaises(AuthenticationError):
            client_312(self.address, b"nope")

    def test_oversized_handshake_message_closes_the_connection(self):
        import socket
        from multiprocessing.connection import Connection

        s = socket.create_connection(self.address)
        conn = Connection(s.detach())
        challenge = conn.recv_bytes(256)
        self.assertTrue(challenge.startswith(b"#CHALLENGE#{sha256}"))
        conn.send_bytes(b"x" * 1000)
        with self.assertRaises((EOFError, ConnectionError, OSError)):
            conn.recv_bytes(256)
            conn.recv_bytes(256)
        conn.close()
        with Client(self.address, authkey=self.authkey) as ok:
            self.assert_serving(ok)


class UnixSocketTest(unittest.TestCase):
    def test_unix_socket_both_handshakes_and_cleanup(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.sock")
            m = Mgrd("unix:" + path, b"k")
            try:
                self.assertEqual(m.text, "unix:" + path)
                with Client(path, authkey=b"k") as conn:
                    conn.send_bytes(DUMMY_REQUEST)
                    self.assertEqual(conn.recv_bytes(), NONE_REPLY)
                with client_312(path, b"k") as conn:
                    conn.send_bytes(DUMMY_REQUEST)
                    self.assertEqual(conn.recv_bytes(), NONE_REPLY)
            finally:
                code = m.stop(signal.SIGINT)
            self.assertEqual(code, 0)
            self.assertFalse(os.path.exists(path), "socket file removed at exit")


if __name__ == "__main__":
    unittest.main()
