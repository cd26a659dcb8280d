"""CPython 3.11's own manager tests (the `WithManager*` classes of
`test._test_multiprocessing`) run against mgrd instead of CPython's server.

`multiprocessing.Manager()` — what the suite's ManagerMixin calls for each test
class — is replaced by one that starts a fresh mgrd on a Unix socket and
returns a stock `SyncManager` connected to it; its `shutdown()` stops that
mgrd. Any "Shared objects which still exist at manager shutdown" warning
(the suite's check that every object was released, which CPython's own server
fails where a test leaves a reference cycle or a killed process behind) fails
the run.

Skipped, with a message, when CPython's `test` package is missing (Debian
ships it as libpython3.X-testsuite; scripts/install-deps.sh installs it).
Tests that fail against mgrd for reasons outside the object lifetime work are
listed in EXPECTED_FAILURES with the reason.
"""

import gc
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import unittest
from multiprocessing.managers import SyncManager

from mgrtest import Mgrd

try:
    from test import _test_multiprocessing as suite
    from test import support
except ImportError as e:  # the test package is not installed
    suite = None
    MISSING = f"CPython's test package is missing ({e}): install libpython3.X-testsuite"

AUTHKEY = b"cpython-suite"

# test id (class.method) -> why it fails against mgrd.
EXPECTED_FAILURES = {
    "WithManagerTestBarrier.test_action": (
        "Barrier(action=callable): mgrd accepts data-only pickles, so a callable "
        "cannot be sent to the server (refused with UnpicklingError)"
    ),
}

# Test classes that cannot run against mgrd at all -> why.
UNSUPPORTED_CLASSES = {
    "WithManagerTestPool": (
        "SyncManager.Pool: mgrd has no 'Pool' typeid (a process pool cannot live "
        "in a server that runs no Python); setUpClass's create fails with KeyError"
    ),
}
EXPECTED_FAILURES["TestSyncManagerTypes.test_pool"] = UNSUPPORTED_CLASSES["WithManagerTestPool"]

# Classes of the suite that never use the manager under test: they start
# CPython managers of their own (MyManager, RemoteManager …), so running them
# here tests CPython against itself.
NOT_OURS = {
    "WithManagerTestMyManager",
    "WithManagerTestRemoteManager",
    "WithManagerTestManagerRestart",
}


class MgrdManager(SyncManager):
    """A SyncManager connected to an mgrd it started; `shutdown` stops it."""

    def __init__(self):
        # Proxies nested in values authenticate with the process's key (other
        # test modules run in the same process set theirs).
        multiprocessing.current_process().authkey = AUTHKEY
        self._dir = tempfile.mkdtemp(prefix="mgr-suite-")
        path = os.path.join(self._dir, "mgr.sock")
        self._mgrd = Mgrd("unix:" + path, AUTHKEY, ("--reply-grace", "0.2"))
        super().__init__(address=path, authkey=AUTHKEY)
        self.connect()

    def shutdown(self):
        try:
            code = self._mgrd.stop()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        if code != 0:
            raise AssertionError(f"mgrd exited with {code}")

    def start(self, *args, **kwargs):
        pass  # started (and connected) by __init__

    def join(self, timeout=None):
        pass


WARNINGS = []


def _record_warning(msg):
    WARNINGS.append(msg)
    for line in msg.splitlines():
        print(f"Warning -- {line}", file=sys.__stderr__, flush=True)


if suite is not None:
    support.print_warning = _record_warning
    multiprocessing.current_process().authkey = AUTHKEY
    suite.multiprocessing.Manager = MgrdManager
    # Each ManagerMixin class starts its manager with `multiprocessing.Manager()`.
    suite.install_tests_in_module_dict(globals(), "fork", only_type="manager")

    class TestSyncManagerTypes(suite.TestSyncManagerTypes):
        """The suite's parent/child tests of every SyncManager type (a plain
        TestCase there, not a ManagerMixin class), each with a fresh mgrd; the
        count of objects must come back to zero before the manager stops."""

        manager_class = MgrdManager

        def tearDown(self):
            if self.proc is not None and self.proc.is_alive():
                self.proc.terminate()
                self.proc.join()
            gc.collect()
            deadline = time.monotonic() + 5
            while self.manager._number_of_objects() and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.manager._number_of_objects():
                _record_warning(
                    "Shared objects which still exist at manager shutdown:\n"
                    + self.manager._debug_info()
                )
            super().tearDown()

    for _name in NOT_OURS:
        globals().pop(_name, None)
    for _cls, _why in UNSUPPORTED_CLASSES.items():
        globals()[_cls] = unittest.skip(f"expected to fail against mgrd: {_why}")(
            globals()[_cls]
        )
    for _test_id, _why in EXPECTED_FAILURES.items():
        _cls, _method = _test_id.split(".")
        _t = globals()[_cls]
        setattr(_t, _method, unittest.expectedFailure(getattr(_t, _method)))
    del _t  # a class left in a module global would be loaded twice

    _suite_tear_down_module = globals()["tearDownModule"]

    def tearDownModule():
        _suite_tear_down_module()
        leaks = [w for w in WARNINGS if "Shared objects which still exist" in w]
        if leaks:
            raise AssertionError(
                "shared objects were left at manager shutdown: "
                + " | ".join(WARNINGS)
            )
else:

    class CPythonSuiteMissing(unittest.TestCase):
        def test_skipped(self):
            raise unittest.SkipTest(MISSING)


if __name__ == "__main__":
    unittest.main()
