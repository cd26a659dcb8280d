"""A stock CPython SyncManager server, for the Rust pickle codec to talk to.

Prints its address ("host:port") on the first line of stdout, then serves
until a client sends `shutdown`.
"""
import os
from multiprocessing.managers import SyncManager

manager = SyncManager(address=('127.0.0.1', 0), authkey=os.environ['MGR_AUTHKEY'].encode())
server = manager.get_server()
print('%s:%d' % server.address, flush=True)
server.serve_forever()
