"""mgrctl against a running mgrd."""

import json
import os
import subprocess
import unittest
from multiprocessing.managers import SyncManager

from mgrtest import MGRD, Mgrd

MGRCTL = os.path.join(os.path.dirname(MGRD), "mgrctl")


def mgrctl(address, *args, key=b"secret"):
    env = dict(os.environ, MGR_AUTHKEY=key.decode())
    return subprocess.run(
        [MGRCTL, "--address", address, *args], env=env, capture_output=True, timeout=20
    )


class MgrctlTest(unittest.TestCase):
    def test_ping_objects_debug_info_segments_shutdown(self):
        m = Mgrd()
        try:
            r = mgrctl(m.text, "ping")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(r.stdout.startswith(b"pong from "), r.stdout)
            r = mgrctl(m.text, "objects")
            self.assertEqual((r.returncode, r.stdout), (0, b"0\n"))
            r = mgrctl(m.text, "debug-info")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(b"holds no shared objects", r.stderr)
            r = mgrctl(m.text, "segments")
            self.assertEqual((r.returncode, r.stdout), (0, b""))
            self.assertIn(b"tracks no shared-memory segments", r.stderr)
            r = mgrctl(m.text, "ping", key=b"wrong")
            self.assertEqual(r.returncode, 1)
            self.assertIn(b"authentication failed", r.stderr)
            self.assertNotIn(b"MGR_AUTHKEY is not set", r.stderr)
            env = {k: v for k, v in os.environ.items() if k != "MGR_AUTHKEY"}
            r = subprocess.run(
                [MGRCTL, "--address", m.text, "ping"], env=env, capture_output=True, timeout=20
            )
            self.assertEqual(r.returncode, 1)
            self.assertIn(b"hint: MGR_AUTHKEY is not set", r.stderr)
            r = mgrctl(m.text, "shutdown")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(b"shutting down", r.stdout)
            self.assertEqual(m.proc.wait(timeout=20), 0, "mgrd exits after shutdown")
        finally:
            m.stop()

    def test_stats_text_and_json(self):
        m = Mgrd()
        try:
            manager = SyncManager(address=m.address, authkey=b"secret")
            manager.connect()
            q = manager.Queue()
            d = manager.dict()
            d2 = manager.dict()
            r = mgrctl(m.text, "stats")
            self.assertEqual(r.returncode, 0, r.stderr)
            text = dict(line.split(" ") for line in r.stdout.decode().splitlines())
            self.assertEqual(text["objects"], "3")
            self.assertEqual(text["objects_by_type.Queue"], "1")
            self.assertEqual(text["objects_by_type.dict"], "2")
            self.assertEqual(text["connections_preauth"], "0")
            self.assertEqual(text["deferred_pending"], "0")
            for name in ("requests_served", "bytes_in", "bytes_out", "turns"):
                self.assertGreater(int(text[name]), 0, name)
            accepted = int(text["connections_accepted"])
            # SyncManager opens a connection per create, mgrctl its own.
            self.assertGreaterEqual(accepted, 4)

            r = mgrctl(m.text, "stats", "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            stats = json.loads(r.stdout)
            self.assertEqual(stats["objects"], 3)
            self.assertEqual(stats["objects_by_type"], {"Queue": 1, "dict": 2})
            self.assertEqual(stats["connections_accepted"], accepted + 1, "this call's")
            self.assertEqual(set(stats) - {"objects_by_type"}, set(text) - {
                "objects_by_type.Queue", "objects_by_type.dict"})

            # A refused key is counted (never shown).
            self.assertEqual(mgrctl(m.text, "ping", key=b"wrong").returncode, 1)
            stats = json.loads(mgrctl(m.text, "stats", "--json").stdout)
            self.assertEqual(stats["auth_failures"], 1)
            del q, d, d2

            r = mgrctl(m.text, "ping", "--json")
            self.assertEqual(r.returncode, 2)
            self.assertIn(b"--json applies to stats only", r.stderr)
        finally:
            m.stop()

    def test_usage_errors(self):
        r = subprocess.run([MGRCTL, "ping"], capture_output=True, timeout=20)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"--address is required", r.stderr)
        r = subprocess.run(
            [MGRCTL, "--address", "127.0.0.1:1", "frobnicate"], capture_output=True, timeout=20
        )
        self.assertEqual(r.returncode, 2)
        r = mgrctl("127.0.0.1:1", "ping")
        self.assertEqual(r.returncode, 1, "nothing listens on port 1")


if __name__ == "__main__":
    unittest.main()
