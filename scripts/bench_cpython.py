#!/usr/bin/env python3
"""CPython's own manager server under the mgr-bench scenarios (standard library only).

Starts a SyncManager (its server is a child process: CPU and memory are read from
/proc/<pid>) and drives it the way CPython users would: proxies from client
processes (up to 16, with threads inside them beyond that), and raw pipelined
requests on a proxy's connection for the pipelined scenario. Prints one JSON line
per run with the same fields as mgr-bench. Run time is bounded by --seconds; the
scale scenario uses fewer connections and objects (CPython's server spends a
thread per connection and opens a connection per create) and reports per-unit
figures.

usage: bench_cpython.py --scenario sync|create|queue|scale [--transport tcp|unix]
                        [--conns N] [--depth D] [--seconds T] [--size B]
                        [--server cpython|PATH-TO-MGRD]

With --server PATH-TO-MGRD the same stock clients drive that mgrd (started here,
its CPU and memory read the same way) instead of CPython's server: the figure
of libmgr's pickle path under real CPython client processes.
"""

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import tempfile
import threading
import time
from multiprocessing import connection as mpc
from multiprocessing.managers import SyncManager

KEY = "key:000000000000"
AUTHKEY = b"bench"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def quantile(sorted_ns, q):
    if not sorted_ns:
        return 0
    i = min(len(sorted_ns) - 1, max(0, int(q * len(sorted_ns) + 0.999999) - 1))
    return sorted_ns[i]


def client_thread(proxy, depth, seconds, size, go, ready, out, connecting):
    val = b"x" * size
    # Connects this thread and warms up; one thread per process at a time, so no
    # more than 16 connects are ever pending against the server's listen backlog
    # of 16 (beyond it, dropped SYNs cost seconds of retransmission on TCP).
    with connecting:
        proxy[KEY] = val
    conn = proxy._tls.connection
    ident = proxy._id
    lat = []
    n = 0
    ready.put(1)
    go.wait()
    deadline = time.perf_counter() + seconds
    perf = time.perf_counter_ns
    if depth == 1:
        while time.perf_counter() < deadline:
            t = perf()
            if n & 1:
                proxy[KEY]
            else:
                proxy[KEY] = val
            lat.append(perf() - t)
            n += 1
    else:
        reqs = [(ident, "__setitem__", (KEY, val), {}), (ident, "__getitem__", (KEY,), {})]
        while time.perf_counter() < deadline:
            t = perf()
            for j in range(depth):
                conn.send(reqs[j & 1])
            for _ in range(depth):
                kind, result = conn.recv()
                if kind != "#RETURN":
                    raise RuntimeError(result)
                lat.append(perf() - t)
            n += depth
    out.append((n, lat))


def client_process(proxies, depth, seconds, size, go, ready, results):
    out = []
    connecting = threading.Lock()
    threads = [
        threading.Thread(target=client_thread, args=(p, depth, seconds, size, go, ready, out, connecting))
        for p in proxies
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n = sum(c for c, _ in out)
    lat = [x for _, l in out for x in l]
    # Keep the result message small: a sample is enough for p50/p99.
    step = max(1, len(lat) // 20000)
    results.put((n, lat[::step]))


def producer(q, seconds, size, go, ready):
    val = b"x" * size
    q.qsize()
    ready.put(1)
    go.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        q.put(val)
    q.put(None)


def consumer(q, go, ready, results):
    q.qsize()
    ready.put(1)
    go.wait()
    lat = []
    n = 0
    perf = time.perf_counter_ns
    while True:
        t = perf()
        v = q.get()
        lat.append(perf() - t)
        if v is None:
            break
        n += 1
    results.put((n, lat))


def run_clients(pid, targets, n_ready):
    """Starts processes, waits for them to be ready, releases them, collects."""
    procs, ready, go, results, consumers = targets
    for p in procs:
        p.start()
    for _ in range(n_ready):
        ready.get(timeout=120)
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    go.set()
    got = [results.get(timeout=120) for _ in range(consumers)]
    secs = time.perf_counter() - t0
    for p in procs:
        p.join()
    cpu1 = cpu_seconds(pid)
    calls = sum(n for n, _ in got)
    lat = sorted(x for _, l in got for x in l)
    return calls, secs, lat, cpu1 - cpu0


def emit(args, call, calls, secs, lat, cpu, pid, **extra):
    d = {
        "scenario": args.scenario,
        "peer": "cpython" if args.server == "cpython" else "mgrd",
        "client": "cpython",
        "transport": args.transport,
        "conns": args.conns,
        "depth": args.depth,
        "call": call,
        "calls": calls,
        "secs": round(secs, 3),
        "calls_per_s": round(calls / max(secs, 1e-9)),
        "p50_us": round(quantile(lat, 0.5) / 1000, 1),
        "p99_us": round(quantile(lat, 0.99) / 1000, 1),
        "server_cpu_s": round(cpu, 3),
        "cpu_s_per_m": round(cpu / max(calls, 1) * 1e6, 3),
        "peak_rss_kib": status_kib(pid, "VmHWM:"),
    }
    d.update(extra)
    print(json.dumps(d), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="sync")
    ap.add_argument("--transport", default="tcp")
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--idle", type=int, default=500)
    ap.add_argument("--objects", type=int, default=5000)
    ap.add_argument("--server", default="cpython", help="cpython, or the path of an mgrd to start")
    args = ap.parse_args()

    ctx = mp.get_context("fork")
    tmp = tempfile.mkdtemp(prefix="mgr-bench-py-")
    address = os.path.join(tmp, "mgr.sock") if args.transport == "unix" else ("127.0.0.1", 0)
    mgrd = None
    if args.server == "cpython":
        manager = SyncManager(address=address, authkey=AUTHKEY, ctx=ctx)
        manager.start()
        pid = manager._process.pid
    else:
        listen = "unix:" + address if args.transport == "unix" else "127.0.0.1:0"
        mgrd = subprocess.Popen([args.server, "--address", listen, "--max-connections", "2000"],
                                stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, MGR_AUTHKEY=AUTHKEY.decode()))
        bound = mgrd.stdout.readline().strip().removeprefix("mgrd listening on ")
        if args.transport == "unix":
            address = bound.removeprefix("unix:")
        else:
            host, port = bound.rsplit(":", 1)
            address = (host, int(port))
        manager = SyncManager(address=address, authkey=AUTHKEY, ctx=ctx)
        manager.connect()
        pid = mgrd.pid
    try:
        if args.scenario == "sync":
            # One dict per client process, shared by its threads (each thread still
            # has its own connection): creating one per connection would take
            # minutes on TCP, where each CPython create costs ~200 ms of Nagle and
            # delayed-ACK stalls.
            nproc = min(args.conns, 16)
            dicts = [manager.dict() for _ in range(nproc)]
            procs = []
            ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
            for i in range(nproc):
                share = [dicts[i]] * len(range(i, args.conns, nproc))
                procs.append(ctx.Process(
                    target=client_process,
                    args=(share, args.depth, args.seconds, args.size, go, ready, results),
                ))
            calls, secs, lat, cpu = run_clients(pid, (procs, ready, go, results, nproc), args.conns)
            emit(args, "dict", calls, secs, lat, cpu, pid)
        elif args.scenario == "create":
            d = manager.Event()
            del d
            cpu0 = cpu_seconds(pid)
            t0 = time.perf_counter()
            deadline = t0 + args.seconds
            lat = []
            perf = time.perf_counter_ns
            while time.perf_counter() < deadline:
                t = perf()
                e = manager.Event()
                del e
                lat.append(perf() - t)
            secs = time.perf_counter() - t0
            emit(args, "Event", len(lat), secs, sorted(lat), cpu_seconds(pid) - cpu0, pid)
        elif args.scenario == "queue":
            pairs = max(1, args.conns // 2)
            queues = [manager.Queue(1024) for _ in range(pairs)]
            ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
            procs = []
            for q in queues:
                procs.append(ctx.Process(target=producer, args=(q, args.seconds, args.size, go, ready)))
                procs.append(ctx.Process(target=consumer, args=(q, go, ready, results)))
            calls, secs, lat, cpu = run_clients(pid, (procs, ready, go, results, pairs), 2 * pairs)
            emit(args, "Queue put/get", calls, secs, lat, cpu, pid)
        elif args.scenario == "scale":
            keep = [manager.Event()]
            rss0 = status_kib(pid, "VmRSS:")
            t0 = time.perf_counter()
            keep += [manager.Event() for _ in range(args.objects)]
            create_secs = time.perf_counter() - t0
            rss1 = status_kib(pid, "VmRSS:")
            conns = []
            for _ in range(args.idle):
                c = mpc.Client(manager.address, authkey=AUTHKEY)
                c.send((None, "accept_connection", ("idle",), {}))  # as a proxy's connection does
                c.recv()
                conns.append(c)
            time.sleep(0.2)
            rss2 = status_kib(pid, "VmRSS:")
            print(json.dumps({
                "scenario": "scale", "peer": "cpython", "transport": args.transport,
                "typeid": "Event", "objects": args.objects,
                "bytes_per_object": round((rss1 - rss0) * 1024 / args.objects, 1),
                "creates_per_s": round(args.objects / create_secs),
                "idle": args.idle,
                "bytes_per_conn": round((rss2 - rss1) * 1024 / args.idle, 1),
                "peak_rss_kib": status_kib(pid, "VmHWM:"),
            }), flush=True)
            for c in conns:
                c.close()
            del keep
        else:
            raise SystemExit(f"unknown scenario {args.scenario}")
    finally:
        if mgrd:
            mgrd.terminate()
            mgrd.wait()
        else:
            manager.shutdown()
        try:
            os.unlink(os.path.join(tmp, "mgr.sock"))
        except OSError:
            pass
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
