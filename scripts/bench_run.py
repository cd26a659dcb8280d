#!/usr/bin/env python3
"""Runs the whole libmgr comparison and prints one table (standard library only).

Called by scripts/bench.sh after the release build. For each scenario and
transport it runs mgr-bench against mgrd, the raw ping-pong peer (mgr-bench
--peer echo), CPython's manager (scripts/bench_cpython.py) and Redis
(redis-server + redis-benchmark, SET/GET at the same client count and pipeline
depth) when they are installed, all in this one run, and prints every libmgr
figure next to its ratios against those peers.
"""

import argparse
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "release", "mgr-bench")
PYBENCH = os.path.join(ROOT, "scripts", "bench_cpython.py")

# (label, mgr-bench scenario, conns, depth, peers compared)
SCENARIOS = [
    ("1 sync, 1 conn", "sync", 1, 1),
    ("2 sync, 16 conns", "sync", 16, 1),
    ("2 sync, 256 conns", "sync", 256, 1),
    ("3 pipelined 16x16", "sync", 16, 16),
    ("4 create+release", "create", 1, 1),
    ("4 create+release, 16 deep", "create", 1, 16),
    ("5 Queue put/get", "queue", 2, 1),
    ("5 Queue put/get, 16 deep", "queue", 2, 16),
]

# Scenario 6, the pickle path: mgr-bench --codec pickle sends exactly a stock
# CPython 3.11 client's bytes (label, conns, depth); Redis and CPython are the
# figures of the native rows of the same shape in this run (the same workload
# for them). The last row is real CPython client processes (bench_cpython.py
# --server mgrd) against CPython's own server at 16 connections.
PICKLE = [
    ("6 stock client, 1 conn", 1, 1),
    ("6 stock client, 16 conns", 16, 1),
    ("6 stock client, 256 conns", 256, 1),
    ("6 stock client, pipelined 16x16", 16, 16),
]
PY_PROCS = "6 16 CPython client processes"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_json(cmd, timeout):
    log("  $ " + " ".join(cmd))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log("    timed out")
        return None
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        log("    failed: " + (p.stderr.strip().splitlines() or ["?"])[-1])
        return None
    return json.loads(lines[-1])


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Redis:
    """A private redis-server on a free port and a Unix socket."""

    def __init__(self, tmp):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.sock = os.path.join(tmp, "redis.sock")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--unixsocket", self.sock, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(self.sock):
                break
            time.sleep(0.05)

    def bench(self, transport, conns, depth, n, size):
        where = ["-s", self.sock] if transport == "unix" else ["-h", "127.0.0.1", "-p", str(self.port)]
        cmd = ["redis-benchmark", *where, "-t", "set,get", "-c", str(conns), "-P", str(depth),
               "-n", str(n), "-d", str(size), "--csv"]
        log("  $ " + " ".join(cmd))
        cpu0 = cpu_seconds(self.proc.pid)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        cpu = cpu_seconds(self.proc.pid) - cpu0
        rows = [r for r in csv.DictReader(io.StringIO(p.stdout)) if r.get("test") in ("SET", "GET")]
        if len(rows) != 2:
            log("    redis-benchmark failed: " + p.stderr.strip()[-200:])
            return None
        # Two runs of n requests each: the combined rate is the harmonic mean.
        secs = sum(n / float(r["rps"]) for r in rows)
        return {
            "calls_per_s": round(2 * n / secs),
            "p50_us": max(float(r["p50_latency_ms"]) for r in rows) * 1000,
            "p99_us": max(float(r["p99_latency_ms"]) for r in rows) * 1000,
            "cpu_s_per_m": round(cpu / (2 * n) * 1e6, 3),
            "peak_rss_kib": peak_kib(self.proc.pid),
        }

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def median(runs):
    """The run with the median calls/s (None if every run failed)."""
    ok = sorted((r for r in runs if r), key=lambda r: r["calls_per_s"])
    return ok[len(ok) // 2] if ok else None


def ratio(a, b):
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    return f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="runs of each peer, taking turns")
    ap.add_argument("--seconds", type=float, default=1.5, help="run time of each libmgr/raw run")
    ap.add_argument("--py-seconds", type=float, default=1.0, help="run time of each CPython run")
    ap.add_argument("--transports", default="tcp,unix")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--no-cpython", action="store_true")
    ap.add_argument("--no-scale", action="store_true")
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--objects", type=int, default=1000000)
    ap.add_argument("--json", help="also write every raw result here (one JSON per line)")
    args = ap.parse_args()
    size = 16
    secs = str(args.seconds)
    t_start = time.time()

    have_redis = not args.no_redis and shutil.which("redis-server") and shutil.which("redis-benchmark")
    if not args.no_redis and not have_redis:
        log("bench: Redis is not installed: its columns are skipped")
    tmp = tempfile.mkdtemp(prefix="mgr-bench-")
    redis = Redis(tmp) if have_redis else None
    results = []
    rows = []
    native = {}  # (transport, conns, depth) -> the sync rows' (libmgr, Redis, CPython)
    try:
        for transport in args.transports.split(","):
            echo1 = None
            py_sync = {}  # CPython's figure per scenario, for the pipelined rows
            for label, scen, conns, depth in SCENARIOS:
                log(f"bench: {label} over {transport}")
                base = [BENCH, "--transport", transport, "--seconds", secs, "--size", str(size)]
                runs = {"mgr": [], "raw": [], "redis": [], "cpython": []}
                # Peers take turns, round after round, so that drift in the machine's
                # speed hits them alike; each figure is the median round's.
                for _ in range(args.rounds):
                    runs["mgr"].append(run_json(
                        base + ["--scenario", scen, "--conns", str(conns), "--depth", str(depth)]
                        + (["--typeid", "dict"] if scen == "create" else []), 120))
                    if scen == "sync":
                        runs["raw"].append(run_json(
                            base + ["--peer", "echo", "--conns", str(conns), "--depth", str(depth)], 120))
                    if redis and scen == "sync":
                        n = 20000 if conns == 1 else (400000 if depth > 1 else 60000)
                        runs["redis"].append(redis.bench(transport, conns, depth, n, size))
                    # CPython's proxies cannot pipeline (and its client opens a
                    # connection per create): the pipelined rows of 4 and 5 reuse
                    # its one figure for the scenario.
                    if not args.no_cpython and not (scen in ("create", "queue") and depth > 1):
                        runs["cpython"].append(run_json(
                            [sys.executable, PYBENCH, "--scenario", scen, "--transport", transport,
                             "--conns", str(conns), "--depth", str(depth),
                             "--seconds", str(args.py_seconds), "--size", str(size)], 180))
                mgr, raw, rds, py = (median(runs[k]) for k in ("mgr", "raw", "redis", "cpython"))
                if scen == "sync" and conns == 1:
                    echo1 = raw
                if scen == "create" and depth == 1:
                    raw = echo1  # one round trip per create, as a sync call
                if scen in ("create", "queue"):
                    if depth == 1:
                        py_sync[scen] = py
                    else:
                        py = py_sync.get(scen)
                for peer, rs in runs.items():
                    for i, r in enumerate(rs):
                        if r:
                            results.append(dict(r, label=label, peer=peer, transport=transport, round=i))
                rows.append((label, depth, transport, mgr, raw, rds, py))
                if scen == "sync":
                    native[(transport, conns, depth)] = (mgr, rds, py)
            for label, conns, depth in PICKLE:
                log(f"bench: {label} over {transport}")
                base = [BENCH, "--transport", transport, "--seconds", secs, "--size", str(size),
                        "--codec", "pickle", "--conns", str(conns), "--depth", str(depth)]
                runs = {"mgr": [], "raw": []}
                for _ in range(args.rounds):
                    runs["mgr"].append(run_json(base, 120))
                    runs["raw"].append(run_json(base + ["--peer", "echo"], 120))
                mgr, raw = median(runs["mgr"]), median(runs["raw"])
                _, rds, py = native.get((transport, conns, depth), (None, None, None))
                for peer, rs in runs.items():
                    for i, r in enumerate(rs):
                        if r:
                            results.append(dict(r, label=label, peer=peer, transport=transport, round=i))
                rows.append((label, depth, transport, mgr, raw, rds, py))
            if not args.no_cpython:
                log(f"bench: {PY_PROCS} over {transport}")
                rs = [run_json([sys.executable, PYBENCH, "--scenario", "sync", "--transport", transport,
                                "--conns", "16", "--seconds", str(args.py_seconds), "--size", str(size),
                                "--server", os.path.join(ROOT, "target", "release", "mgrd")], 180)
                      for _ in range(args.rounds)]
                results += [dict(r, label=PY_PROCS, peer="mgrd", transport=transport, round=i)
                            for i, r in enumerate(rs) if r]
                py = native.get((transport, 16, 1), (None, None, None))[2]
                rows.append((PY_PROCS, 1, transport, median(rs), None, None, py))
        scale = []
        if not args.no_scale:
            for transport in args.transports.split(","):
                log(f"bench: scale over {transport}")
                r = run_json([BENCH, "--scenario", "scale", "--transport", transport,
                              "--idle", str(args.idle), "--objects", str(args.objects)], 300)
                if r:
                    scale.append(("libmgr", transport, r))
            r = run_json([BENCH, "--scenario", "scale", "--transport", "unix", "--typeid", "dict",
                          "--idle", "0", "--objects", str(args.objects)], 300)
            if r:
                scale.append(("libmgr", "unix", r))
            if not args.no_cpython:
                r = run_json([sys.executable, PYBENCH, "--scenario", "scale", "--transport", "unix",
                              "--idle", "500", "--objects", "300"], 180)
                if r:
                    scale.append(("CPython", "unix", r))
            results += [dict(r, who=w) for w, _, r in scale]
    finally:
        if redis:
            redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        with open(args.json, "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")

    head = ["scenario", "transport", "libmgr/s", "p50 us", "p99 us", "x raw", "x Redis", "x CPython",
            "raw/s", "Redis/s", "CPython/s", "CPU s/M libmgr", "raw", "Redis", "CPython",
            "peak RSS MiB libmgr", "CPython"]
    table = []
    for label, depth, transport, mgr, raw, rds, py in rows:
        g = lambda r, k: (r or {}).get(k)
        cps = g(mgr, "calls_per_s")
        mib = lambda r: f"{r['peak_rss_kib'] / 1024:.1f}" if r and r.get("peak_rss_kib") else "-"
        cpu = lambda r: f"{r['cpu_s_per_m']:.2f}" if r and r.get("cpu_s_per_m") is not None else "-"
        table.append([
            label, transport, fmt_rate(cps),
            f"{g(mgr, 'p50_us'):.1f}" if mgr else "-", f"{g(mgr, 'p99_us'):.1f}" if mgr else "-",
            ratio(cps, g(raw, "calls_per_s")), ratio(cps, g(rds, "calls_per_s")),
            ratio(cps, g(py, "calls_per_s")),
            fmt_rate(g(raw, "calls_per_s")), fmt_rate(g(rds, "calls_per_s")), fmt_rate(g(py, "calls_per_s")),
            cpu(mgr), cpu(raw), cpu(rds), cpu(py), mib(mgr), mib(py),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for t in table:
        print(line(t))
    print()
    print(f"Each figure: the median of {args.rounds} runs per peer, the peers taking turns.")
    print("Units: calls/s (create+release pairs/s for 4, items moved/s for 5); p50/p99 of one call's round trip")
    print("(of a whole batch for pipelined calls); 'x raw' etc. = libmgr calls/s divided by the peer's in this run;")
    print("'x raw' for 4 is against the 1-connection ping-pong; 'x CPython' for the 16-deep rows of 4 and 5 is")
    print("against CPython's one (synchronous) path: its proxies cannot pipeline;")
    print("CPU s/M = server CPU seconds per million calls.")
    print("6: mgr-bench --codec pickle (a stock CPython 3.11 client's bytes; 'raw' = the ping-pong of those")
    print("sizes); its Redis and CPython columns repeat the native rows of the same shape; the last row")
    print("is 16 real CPython client processes against mgrd, its CPython column the same against CPython.")
    for who, transport, r in scale:
        conns = (f"{r['idle']} idle connections: {r['bytes_per_conn'] / 1024:.1f} KiB each; "
                 if r["idle"] else "")
        print(f"Scale ({who}, {transport}): {conns}"
              f"{r['objects']} live {r['typeid']} objects: {r['bytes_per_object']:.0f} B each; "
              f"server peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB")
    print()
    print("Targets (from this run):")
    floor1 = {t: r for label, _, t, _, r, _, _ in rows if label.startswith("1 ") and r}
    for label, depth, transport, mgr, raw, rds, py in rows:
        if not mgr:
            continue
        cps = mgr["calls_per_s"]
        one = (floor1.get(transport) or {}).get("calls_per_s")
        checks = []
        if label.startswith("1 ") and raw:
            checks.append(("0.9x raw ping-pong", cps >= 0.9 * raw["calls_per_s"], ""))
        if label.startswith(("2 ", "3 ", "6 stock client, 16", "6 stock client, 256")) and rds:
            checks.append(("1x Redis", cps >= rds["calls_per_s"], ""))
        if label.startswith("4 create+release") and transport == "unix":
            why = (f" (one synchronous round trip per pair: the raw ping-pong floor is {fmt_rate(one)}/s here)"
                   if depth == 1 and one else "")
            checks.append(("50,000/s on a Unix socket", cps >= 50000, why))
        if label.startswith("6 stock client, pipelined"):
            nat = (native.get((transport, 16, 16)) or (None,))[0]
            if nat:
                checks.append(("0.8x the native pipelined row", cps >= 0.8 * nat["calls_per_s"],
                               f" ({cps / nat['calls_per_s']:.2f}x)"))
        if label == PY_PROCS and py and mgr.get("cpu_s_per_m") and py.get("cpu_s_per_m"):
            x = py["cpu_s_per_m"] / mgr["cpu_s_per_m"]
            checks.append(("10x less server CPU per call than CPython's server",
                           x >= 10, f" ({x:.1f}x less)"))
        if label.startswith("6 "):
            py = None  # the native rows check libmgr against CPython
        if py:
            pcps = py["calls_per_s"]
            deep = depth > 1 and label.startswith(("4 ", "5 "))
            what = "5x CPython" + (" (pipelined vs its sync path)" if deep else "")
            why = ""
            if raw and raw.get("calls_per_s") and raw["calls_per_s"] < 5 * pcps:
                why = f" (the raw ping-pong itself is only {raw['calls_per_s'] / pcps:.2f}x CPython here)"
            elif label.startswith("5 ") and depth == 1 and one and 2 * one < 5 * pcps:
                why = (f" (each item is a synchronous put and a get, two chains of round trips at the"
                       f" raw floor of {fmt_rate(one)}/s: at most {2 * one / pcps:.2f}x CPython here)")
            checks.append((what, cps >= 5 * pcps, why))
        for what, ok, why in checks:
            print(f"  {label} ({transport}): >= {what}: {'met' if ok else 'MISSED' + why}")
    for who, transport, r in scale:
        if who != "libmgr":
            continue
        if r["idle"]:
            print(f"  idle connection ({transport}) < 16 KiB: {'met' if r['bytes_per_conn'] < 16384 else 'MISSED'}")
        print(f"  live {r['typeid']} ({transport}) < 200 B: {'met' if r['bytes_per_object'] < 200 else 'MISSED'}")
    print(f"Total run time: {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
