"""The mgrd command-line contract: first line, signals, key policy, flags."""

import os
import re
import signal
import subprocess
import tempfile
import unittest
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client

from mgrtest import MGRD, Mgrd, answer_challenge_312


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

    def test_verbose_logs_connections_refused_keys_and_shutdown(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "s")
            m = Mgrd(f"unix:{path}", authkey=b"sentinel-key", args=("-v",))
            try:
                # A wrong key, then a peer that connects and goes away.
                c = Client(path, family="AF_UNIX", authkey=None)
                with self.assertRaises(AuthenticationError):
                    answer_challenge_312(c, b"wrong-sentinel")
                c.close()
                c = Client(path, family="AF_UNIX", authkey=None)
                c.close()
                m.proc.send_signal(signal.SIGTERM)
                self.assertEqual(m.proc.wait(timeout=20), 0)
                lines = m.proc.stderr.read().decode().splitlines()
            finally:
                m.stop()
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z mgrd: "
        me = f"from unix: (pid {os.getpid()}, uid {os.getuid()})"
        events = [re.sub("^" + stamp, "", l) for l in lines if re.match(stamp, l)]
        accepted = [e for e in events if e.startswith("accepted conn ") and me in e]
        closed = [e for e in events if e.startswith("closed conn ") and me in e]
        failed = [e for e in events if e.startswith("authentication failed for conn ")]
        self.assertEqual((len(accepted), len(closed), len(failed)), (2, 2, 1), lines)
        self.assertIn(me, failed[0])
        self.assertIn("shutting down", events)
        self.assertNotIn("sentinel", "\n".join(lines), "no key in the log")

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
