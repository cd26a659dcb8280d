"""mgrd's start-up as an operator meets it: a stale Unix socket is replaced, a
taken address is named, an empty key is noted, and systemd's socket activation
and readiness notification work."""

import os
import signal
import socket
import subprocess
import tempfile
import unittest
from multiprocessing.managers import BaseManager

from mgrtest import MGRD, Mgrd


class _Manager(BaseManager):
    pass


_Manager.register("dict")


def served(address, authkey=b"secret"):
    """A stock client creates and uses a dict on `address`."""
    m = _Manager(address=address, authkey=authkey)
    m.connect()
    d = m.dict()
    d["k"] = 1
    value = d.copy()
    del d
    return value


def env_without_key(**extra):
    env = {k: v for k, v in os.environ.items() if k != "MGR_AUTHKEY"}
    env.update(extra)
    return env


def run_mgrd(args, env=None):
    """Runs an mgrd that is expected to fail at start-up."""
    if env is None:
        env = dict(os.environ, MGR_AUTHKEY="secret")
    return subprocess.run([MGRD, *args], env=env, capture_output=True, timeout=20)


class StartupTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="mgrd-startup-")
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_a_crashed_servers_socket_is_replaced(self):
        path = os.path.join(self.dir, "m.sock")
        m = Mgrd("unix:" + path)
        m.proc.kill()  # no clean-up: the socket file stays, nothing accepts on it
        m.proc.wait(timeout=20)
        m.stop()
        self.assertTrue(os.path.exists(path))
        m = Mgrd("unix:" + path)
        try:
            self.assertEqual(served(path), {"k": 1})
        finally:
            self.assertEqual(m.stop(), 0)
        self.assertFalse(os.path.exists(path), "removed at a clean exit")

    def test_a_live_socket_is_refused_and_keeps_serving(self):
        path = os.path.join(self.dir, "m.sock")
        m = Mgrd("unix:" + path)
        try:
            r = run_mgrd(["--address", "unix:" + path])
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stdout, b"")
            self.assertEqual(
                r.stderr.decode(), f"mgrd: another server is listening on unix:{path}\n"
            )
            self.assertEqual(served(path), {"k": 1})
        finally:
            self.assertEqual(m.stop(), 0)

    def test_a_path_that_is_not_a_socket_is_left_alone(self):
        path = os.path.join(self.dir, "data")
        with open(path, "wb") as f:
            f.write(b"keep")
        r = run_mgrd(["--address", "unix:" + path])
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{path} exists and is not a socket".encode(), r.stderr)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"keep")

    def test_a_taken_port_is_named(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            r = run_mgrd(["--address", f"127.0.0.1:{port}"])
        self.assertEqual(r.returncode, 1)
        self.assertEqual(
            r.stderr.decode(),
            f"mgrd: 127.0.0.1:{port} is already in use (another server?)\n",
        )

    def test_a_missing_directory_is_named(self):
        missing = os.path.join(self.dir, "no", "such")
        r = run_mgrd(["--address", f"unix:{missing}/m.sock"])
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"directory {missing} does not exist".encode(), r.stderr)

    def test_an_empty_key_is_noted_and_works_with_an_empty_client_key(self):
        for env, said in (
            (env_without_key(), b"MGR_AUTHKEY is not set"),
            (env_without_key(MGR_AUTHKEY=""), b"MGR_AUTHKEY is empty"),
        ):
            with self.subTest(said=said):
                p = subprocess.Popen(
                    [MGRD, "--address", "127.0.0.1:0"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                try:
                    line = p.stdout.readline().decode()
                    host, _, port = line.split()[-1].rpartition(":")
                    notice = p.stderr.readline()
                    self.assertTrue(notice.startswith(b"mgrd: " + said), notice)
                    self.assertIn(b'clients must pass authkey=b""', notice)
                    self.assertEqual(served((host, int(port)), b""), {"k": 1})
                finally:
                    p.terminate()
                    self.assertEqual(p.wait(timeout=20), 0)
                    p.stdout.close()
                    p.stderr.close()

    def test_a_key_gives_no_notice(self):
        p = subprocess.Popen(
            [MGRD, "--address", "127.0.0.1:0"],
            env=dict(os.environ, MGR_AUTHKEY="k"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        p.stdout.readline()
        p.terminate()
        _, err = p.communicate(timeout=20)
        self.assertEqual(err, b"")

    def test_help_lists_h(self):
        r = subprocess.run([MGRD, "-h"], capture_output=True, timeout=20)
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"[-h]", r.stdout)
        self.assertIn(b"-h, --help", r.stdout)
        self.assertIn(b"LISTEN_FDS", r.stdout)


def activated(sock, args=(), env=None, notify=None):
    """Starts mgrd as systemd would: `sock` as fd 3, LISTEN_FDS=1 and
    LISTEN_PID set to mgrd's own pid (by the shell it execs from)."""
    env = dict(os.environ if env is None else env)
    env.setdefault("MGR_AUTHKEY", "secret")
    env["LISTEN_FDS"] = "1"
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify
    fd = sock.fileno()
    return subprocess.Popen(
        ["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', MGRD, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(fd,),
        preexec_fn=lambda: os.dup2(fd, 3),
    )


def finish(p, sig=signal.SIGTERM):
    """Stops a running mgrd: its exit code and stderr."""
    p.send_signal(sig)
    return refused(p)


def refused(p):
    """Waits for an mgrd that exits by itself: its exit code and stderr."""
    _, err = p.communicate(timeout=20)
    return p.returncode, err


class SystemdTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="mgrd-systemd-")
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_serves_an_inherited_tcp_socket(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            address = s.getsockname()
            p = activated(s)
            line = p.stdout.readline().decode()
            self.assertEqual(line, "mgrd listening on %s:%d\n" % address)
            self.assertEqual(served(address), {"k": 1})
            self.assertEqual(finish(p), (0, b""))

    def test_serves_an_inherited_unix_socket_and_leaves_its_file(self):
        path = os.path.join(self.dir, "a.sock")
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path)
            s.listen()
            p = activated(s)
            self.assertEqual(p.stdout.readline().decode(), f"mgrd listening on unix:{path}\n")
            self.assertEqual(served(path), {"k": 1})
            self.assertEqual(finish(p), (0, b""))
        self.assertTrue(os.path.exists(path), "the file belongs to whoever made it")

    def test_listen_pid_of_another_process_is_ignored(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            env = dict(os.environ, MGR_AUTHKEY="secret", LISTEN_FDS="1", LISTEN_PID="1")
            p = subprocess.Popen(
                [MGRD, "--address", "127.0.0.1:0"],
                env=env,
                stdout=subprocess.PIPE,
                pass_fds=(s.fileno(),),
            )
            line = p.stdout.readline().decode()
            p.terminate()
            p.communicate(timeout=20)
            self.assertNotIn(":%d\n" % s.getsockname()[1], line)
            self.assertTrue(line.startswith("mgrd listening on 127.0.0.1:"), line)

    def test_refuses_address_with_an_inherited_socket_and_bad_descriptors(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            p = activated(s, ["--address", "127.0.0.1:0"])
            code, err = refused(p)
            self.assertEqual(code, 1)
            self.assertIn(b"conflicts with the socket passed by socket activation", err)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            p = activated(s)
            code, err = refused(p)
            self.assertEqual(code, 1)
            self.assertIn(b"fd 3 is not a stream socket", err)
        with socket.socket() as s:
            p = activated(s)  # not listening
            code, err = refused(p)
            self.assertEqual(code, 1)
            self.assertIn(b"fd 3 is a socket that is not listening", err)

    def test_notifies_ready_and_stopping(self):
        for abstract in (False, True):
            with self.subTest(abstract=abstract), socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM
            ) as n:
                if abstract:
                    name = f"mgrd-notify-{os.getpid()}"
                    n.bind("\0" + name)
                    target = "@" + name
                else:
                    target = os.path.join(self.dir, "notify")
                    n.bind(target)
                n.settimeout(20)
                env = dict(os.environ, MGR_AUTHKEY="secret", NOTIFY_SOCKET=target)
                p = subprocess.Popen(
                    [MGRD, "--address", "127.0.0.1:0"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                line = p.stdout.readline().decode()
                address = line.split()[-1]
                self.assertEqual(
                    n.recv(4096).decode(), f"READY=1\nSTATUS=listening on {address}"
                )
                self.assertEqual(finish(p), (0, b""))
                self.assertEqual(n.recv(4096).decode(), "STOPPING=1\nSTATUS=signal received")

    def test_activation_and_notification_together(self):
        with socket.socket() as s, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
            s.bind(("127.0.0.1", 0))
            s.listen()
            target = os.path.join(self.dir, "notify")
            n.bind(target)
            n.settimeout(20)
            p = activated(s, notify=target)
            self.assertTrue(n.recv(4096).startswith(b"READY=1\n"))
            self.assertEqual(served(s.getsockname()), {"k": 1})
            self.assertEqual(finish(p), (0, b""))
            self.assertTrue(n.recv(4096).startswith(b"STOPPING=1\n"))


if __name__ == "__main__":
    unittest.main()
