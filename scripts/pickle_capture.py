#!/usr/bin/env python3
"""Captures the bytes a stock CPython client sends to a manager server.

mgr-bench's pickle client (tools/src/bin/mgr-bench/pickle_client.rs) embeds the
output of this script: the payloads CPython's own `multiprocessing.managers`
client writes (through `multiprocessing.reduction.ForkingPickler`, as
`Connection.send` does) for `m.dict()` (the `create` request), for the proxy's
connection (`accept_connection`), for `d[k] = v` and `d[k]`, and the replies a
CPython server sends back (their sizes set the raw ping-pong peer's frames).

The ident is a placeholder (`IDENT`, spliced by the Rust side with the real
object id) and the value is 16 bytes of b"x" (resized by the Rust side for
other --size values below 256 bytes); a second capture with other lengths lets
the Rust tests check the splice against CPython's own output.

    python3 scripts/pickle_capture.py     # prints Rust constants

Run it with the CPython whose client is to be imitated (3.11 here); paste the
output into pickle_client.rs when it changes.
"""

import sys
import threading
from multiprocessing import process
from multiprocessing.reduction import ForkingPickler


def dumps(obj):
    return bytes(ForkingPickler.dumps(obj))


def name():
    # What BaseProxy._connect sends for the main thread of the main process.
    n = process.current_process().name
    if threading.current_thread().name != "MainThread":
        n += "|" + threading.current_thread().name
    return n


def payloads(ident, value):
    return [
        ("CREATE", dumps((None, "create", ("dict",), {}))),
        ("ACCEPT", dumps((None, "accept_connection", (name(),), {}))),
        ("SETITEM", dumps((ident, "__setitem__", ("k", value), {}))),
        ("GETITEM", dumps((ident, "__getitem__", ("k",), {}))),
        ("REPLY_NONE", dumps(("#RETURN", None))),
        ("REPLY_VALUE", dumps(("#RETURN", value))),
    ]


def rust(prefix, items, attr=None):
    for label, b in items:
        if attr:
            print(attr)
        body = "".join(chr(c) if 0x20 <= c < 0x7f and chr(c) not in '"\\' else f"\\x{c:02x}"
                       for c in b)
        print(f'pub(crate) const {prefix}{label}: &[u8] = b"{body}";')


def main():
    print(f"// Captured by scripts/pickle_capture.py from CPython {sys.version.split()[0]}.")
    rust("", payloads("IDENT", b"x" * 16))
    print("// The same with the ident '2a' and a 40-byte value: the splice's check.")
    rust("CHECK_", [p for p in payloads("2a", b"x" * 40) if p[0] in ("SETITEM", "GETITEM")],
         "#[cfg(test)]")


if __name__ == "__main__":
    main()
