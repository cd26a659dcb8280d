"""CPython's SharedMemoryManager against mgrd: segments created by a stock client
are tracked by the server and unlinked when it shuts down."""

import os
import unittest
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.managers import SharedMemoryManager, dispatch

from mgrtest import Mgrd


def untrack(name):
    # The client's resource tracker would unlink the segment when this test
    # process exits; the server owns it here.
    resource_tracker.unregister("/" + name, "shared_memory")


class SharedMemoryManagerTest(unittest.TestCase):
    def test_segments_are_tracked_listed_released_and_unlinked_at_shutdown(self):
        server = Mgrd()
        try:
            smm = SharedMemoryManager(address=server.address, authkey=server.authkey)
            smm.connect()
            shm = smm.SharedMemory(128)
            untrack(shm.name)
            shm.buf[:5] = b"hello"
            sl = smm.ShareableList([1, "two", 3.0])
            untrack(sl.shm.name)
            with smm._Client(smm._address, authkey=smm._authkey) as conn:
                tracked = dispatch(conn, None, "list_segments")
            self.assertEqual(sorted(tracked), sorted([shm.name, sl.shm.name]))
            other = shared_memory.SharedMemory(name=shm.name)
            untrack(other.name)  # 3.11 registers attachments too
            self.assertEqual(bytes(other.buf[:5]), b"hello")
            other.close()
            self.assertEqual(sl[1], "two")
            path = "/dev/shm/" + shm.name
            self.assertTrue(os.path.exists(path))
            shm.close()
            sl.shm.close()
        finally:
            code = server.stop()
        self.assertEqual(code, 0)
        self.assertFalse(os.path.exists(path), "mgrd unlinked the tracked segment")
        self.assertFalse(os.path.exists("/dev/shm/" + sl.shm.name))


if __name__ == "__main__":
    unittest.main()
