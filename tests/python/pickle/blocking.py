"""A call that blocks (Mailbox.wait) is completed by another process
(Mailbox.post), while the server keeps serving everyone else."""
import gc
import multiprocessing
import time

from _support import connect


def poster(mailbox, counter):
    # Wait until the main process is blocked in wait(), then post.
    deadline = time.monotonic() + 30
    while mailbox.waiters() != 1:
        assert time.monotonic() < deadline, 'the waiter never arrived'
        time.sleep(0.01)
    # Other calls are served while wait() is pending.
    assert counter.incr() == 1
    assert mailbox.post('hello') == 1


m = connect()
mailbox = m.Mailbox()
counter = m.Counter()
ctx = multiprocessing.get_context('fork')
p = ctx.Process(target=poster, args=(mailbox, counter))
p.start()
got = mailbox.wait()
p.join(30)
assert p.exitcode == 0, p.exitcode
assert got == 'hello', got
assert counter.get() == 1
# A wait with a timeout that nobody answers raises the builtin TimeoutError.
try:
    mailbox.wait(0.05)
except TimeoutError as e:
    assert 'timed out' in str(e), str(e)
else:
    raise AssertionError('wait(0.05) did not time out')
del mailbox, counter
gc.collect()  # a raised remote error sits in a reference cycle with its frame
assert m._number_of_objects() == 0, m._debug_info()
print('blocking: ok')
