#!/usr/bin/env bash
# Server instructions per call, by path, counted by callgrind (deterministic on a
# noisy machine, unlike time): mgrd runs under `valgrind --tool=callgrind` while a
# client makes N synchronous dict calls (alternately d[k] = v and d[k]); the run is
# repeated with 4N calls and the difference of the two totals, divided by 3N, is the
# server's user-space instructions per call, with start-up and shutdown cancelled out.
#
#   scripts/callgrind.sh [N]     (default 2000; needs valgrind and python3)
#
# Rows: the native client (mgr-bench --calls, one connection), a stock CPython
# SyncManager client (the pickle path), and per connection set-up (a stock client's
# m.dict(): its create, incref and per-thread connections, N of them). Not part of
# CI: it takes a minute or two and reports; it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
cargo build --release --quiet -p mgr-tools --bin mgrd --bin mgr-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs mgrd under callgrind, gives its address to the client command "$@"
# (which finds it in $ADDR), asks it to shut down, prints its instruction total.
measure() {
  local out="$work/cg.out" addr pid
  rm -f "$out" "$work/mgrd.out"
  MGR_AUTHKEY=bench valgrind --tool=callgrind --callgrind-out-file="$out" \
    target/release/mgrd --address 127.0.0.1:0 >"$work/mgrd.out" 2>"$work/mgrd.err" &
  pid=$!
  for _ in $(seq 600); do
    grep -q '^mgrd listening on ' "$work/mgrd.out" 2>/dev/null && break
    sleep 0.1
  done
  addr=$(sed -n 's/^mgrd listening on //p' "$work/mgrd.out")
  [ -n "$addr" ] || { echo "callgrind.sh: mgrd did not start" >&2; cat "$work/mgrd.err" >&2; exit 1; }
  ADDR="$addr" "$@" >/dev/null 2>&1
  python3 - "$addr" <<'PY'
import sys
from multiprocessing.connection import Client
host, port = sys.argv[1].rsplit(":", 1)
c = Client((host, int(port)), authkey=b"bench")
c.send((None, "shutdown", (), {}))
c.recv()
PY
  wait "$pid" || true
  awk '/^summary:/ {print $2}' "$out"
}

native() { target/release/mgr-bench --address "$ADDR" --authkey bench --call dict --calls "$1" --seconds 600; }

pickle_calls() {
  python3 - "$ADDR" "$1" <<'PY'
import sys
from multiprocessing.managers import SyncManager
host, port = sys.argv[1].rsplit(":", 1)
m = SyncManager(address=(host, int(port)), authkey=b"bench")
m.connect()
d = m.dict()
for i in range(int(sys.argv[2]) // 2):
    d["k"] = b"x" * 16
    d["k"]
PY
}

setups() {
  python3 - "$ADDR" "$1" <<'PY'
import sys
from multiprocessing.managers import SyncManager
host, port = sys.argv[1].rsplit(":", 1)
m = SyncManager(address=(host, int(port)), authkey=b"bench")
m.connect()
for i in range(int(sys.argv[2])):
    d = m.dict()
    del d
PY
}

per_call() {
  local name=$1 fn=$2 small=$3
  local big=$((small * 4)) a b
  a=$(measure "$fn" "$small")
  b=$(measure "$fn" "$big")
  echo "$name $(( (b - a) / (big - small) ))"
}

echo "server user-space instructions (callgrind, release mgrd), N=$n:"
native_ipc=$(per_call native native "$n" | awk '{print $2}')
pickle_ipc=$(per_call pickle pickle_calls "$n" | awk '{print $2}')
setup_n=$((n / 10))
setup_ipc=$(per_call setup setups "$setup_n" | awk '{print $2}')
printf '  native client, per dict call:          %8d\n' "$native_ipc"
printf '  stock CPython client, per dict call:   %8d   (%sx native)\n' "$pickle_ipc" \
  "$(awk -v a="$pickle_ipc" -v b="$native_ipc" 'BEGIN {printf "%.2f", a / b}')"
printf '  stock CPython m.dict(), per create:    %8d   (create, incref, connections, release)\n' "$setup_ipc"
