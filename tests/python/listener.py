"""A CPython `multiprocessing.connection.Listener` for the Rust client's handshake
tests: prints its address, accepts connections, echoes each message back with a
prefix. `--modern` answers and delivers the Python >= 3.12 handshake instead of
3.11's. Run by tests/handshake_interop.rs; standard library only.

usage: listener.py KEY [--modern]
"""

import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Listener

from mgrtest import answer_challenge_312, deliver_challenge_312


def main():
    key = sys.argv[1].encode()
    modern = "--modern" in sys.argv
    # With --modern the handshake is done by hand, so the Listener gets no key.
    listener = Listener(("127.0.0.1", 0), authkey=None if modern else key)
    print("%s:%d" % listener.address, flush=True)
    while True:
        try:
            conn = listener.accept()
            if modern:
                deliver_challenge_312(conn, key)
                answer_challenge_312(conn, key)
        except AuthenticationError as e:
            print("refused:", e, flush=True)
            continue
        with conn:
            while True:
                try:
                    msg = conn.recv_bytes()
                except EOFError:
                    break
                if msg == b"quit":
                    return
                conn.send_bytes(b"echo:" + msg)


if __name__ == "__main__":
    main()
