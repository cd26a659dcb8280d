#!/bin/sh
# Runs the whole libmgr comparison in one go and prints one table:
# libmgr (mgrd) vs a raw socket ping-pong, CPython's manager and Redis, on TCP
# loopback and a Unix socket. Extra arguments go to scripts/bench_run.py
# (e.g. --seconds 1 --no-scale for a quick look). See BENCHMARKS.md.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin mgrd --bin mgr-bench
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "bench: installing redis-server and redis-tools" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools; } >/dev/null 2>&1; then
        echo "bench: could not install Redis; its columns will be empty" >&2
    fi
fi
exec python3 scripts/bench_run.py "$@"
