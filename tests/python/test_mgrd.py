"""The mgrd command-line contract: first line, signals, key policy, flags."""

import os
import signal
import subprocess
import unittest

from mgrtest import MGRD, Mgrd


class MgrdCliTest(unittest.TestCase):
    def test_first_line_names_the_real_port(self):
        m = Mgrd("127.0.0.1:0")
        try:
            host, port = m.address
            self.assertEqual(host, "127.0.0.1")
            self.assertGreater(port, 0)
            self.assertEqual(m.text, f"127.0.0.1:{port}")
        finally:
            self.assertEqual(m.stop(signal.SIGTERM), 0)

    def test_sigint_and_sigterm_exit_cleanly(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with self.subTest(sig=sig):
                m = Mgrd()
                self.assertEqual(m.stop(sig), 0)

    def test_refuses_public_address_without_key(self):
        env = {k: v for k, v in os.environ.items() if k != "MGR_AUTHKEY"}
        r = subprocess.run(
            [MGRD, "--address", "0.0.0.0:0"], env=env, capture_output=True, timeout=20
        )
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"without an authkey", r.stderr)
        self.assertEqual(r.stdout, b"")

    def test_raises_its_descriptor_limit_toward_max_connections(self):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

        def low():
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

        p = subprocess.Popen(
            [MGRD, "--address", "127.0.0.1:0", "--max-connections", "500"],
            stdout=subprocess.PIPE,
            preexec_fn=low,
        )
        try:
            self.assertTrue(p.stdout.readline().startswith(b"mgrd listening on "))
            with open(f"/proc/{p.pid}/limits") as f:
                line = next(l for l in f if l.startswith("Max open files"))
            self.assertEqual(int(line.split()[3]), min(500 + 256 + 64, hard), line)
        finally:
            p.terminate()
            self.assertEqual(p.wait(timeout=20), 0)
            p.stdout.close()

    def test_help_version_and_bad_flags(self):
        r = subprocess.run([MGRD, "--help"], capture_output=True, timeout=20)
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"--address", r.stdout)
        r = subprocess.run([MGRD, "--version"], capture_output=True, timeout=20)
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith(b"mgrd "))
        r = subprocess.run([MGRD, "--bogus"], capture_output=True, timeout=20)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"unknown argument", r.stderr)


if __name__ == "__main__":
    unittest.main()
