#!/usr/bin/env python3
"""CPU cost per batch of the sync public API at the bench's default batch, with 1 or N workers.

What ``uringstack bench``'s ``batched`` rung runs, stripped of the bench's
metering: each worker (a pinned stack worker thread, or with ``--processes``
a process with its own stack) keeps QD/batch prepared batches of ``--batch``
buffered reads in flight on a hot file (``prepared.start(offsets)``, waited
oldest first) for ``--batches`` batches, and reports per batch and per op:
wall time, the worker thread's CPU time, the process's CPU time, and the
ring's io_uring_enter calls.  Run it under ``strace -c -f`` for syscalls per
batch (futex calls are GIL handoffs between worker threads), or py-spy.

    .venv/bin/python scripts/batch-cost.py --file F --workers 2 --batches 200000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import random
import resource
import sys
import threading
import time
from collections import deque
from typing import Any


def _loop(handle: Any, batch: int, qd: int, batches: int, fixed: bool, seed: int) -> dict[str, float]:
    size = handle.size()
    blocks = size // 4096
    rnd = random.Random(seed)
    pool = [rnd.randrange(blocks) * 4096 for _ in range(1 << 14)]
    bufs = handle.lease_buffers(qd, size=4096)
    if fixed and not all(type(b).__name__ == "RegisteredBuffer" for b in bufs):
        raise SystemExit("no registered buffers")
    groups = [bufs[i : i + batch] for i in range(0, qd, batch)]
    preps = [handle.prepare_reads(g) for g in groups]
    ring = handle.ring
    enters0 = ring.counters()["enters"] if ring is not None else 0
    pos = 0

    def take() -> list[int]:
        nonlocal pos
        if pos + batch > len(pool):
            pos = 0
        out = pool[pos : pos + batch]
        pos += batch
        return out

    fifo: deque[tuple[int, Any]] = deque()
    for j in range(len(preps)):
        fifo.append((j, preps[j].start(take())))
    t0, c0 = time.perf_counter(), time.thread_time()
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    p0 = time.process_time()
    done = 0
    while done < batches:
        j, pending = fifo.popleft()
        res = pending.wait()
        for r in res:
            if r != 4096:
                raise SystemExit(f"result {r}")
        done += 1
        fifo.append((j, preps[j].start(take())))
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    pcpu = time.process_time() - p0
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    sys_s = r1.ru_stime - r0.ru_stime
    csw = (r1.ru_nvcsw - r0.ru_nvcsw, r1.ru_nivcsw - r0.ru_nivcsw)
    while fifo:
        fifo.popleft()[1].wait()
    enters = (ring.counters()["enters"] - enters0) if ring is not None else 0
    for p in preps:
        p.close()
    handle.release_buffers(bufs)
    return {
        "wall": wall,
        "cpu": cpu,
        "pcpu": pcpu,
        "batches": done,
        "enters": enters,
        "sys": sys_s,
        "vcsw": csw[0],
        "ivcsw": csw[1],
    }


def _profiled(*args: Any) -> dict[str, float]:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    out = prof.runcall(_loop, *args)
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    return out


def _stack_run(args: argparse.Namespace, cpus: list[int], seed: int) -> list[dict[str, float]]:
    from uringstack.stack import open_stack

    overrides: dict[str, Any] = {
        "core.cores": cpus,
        "fixedbuf.mode": "on" if args.fixed else "off",
        "sqpoll.mode": "off",
        "fixedbuf.count": args.qd,
        "fixedbuf.min_count": 1,
        "fixedbuf.buffer_size": 4096,
    }
    for kv in args.override:
        key, _, value = kv.partition("=")
        try:
            overrides[key] = json.loads(value)
        except ValueError:  # a bare word: a string
            overrides[key] = value
    stack = open_stack(overrides=overrides)
    try:
        handles = [stack.open(args.file, direct=args.direct, writable=False) for _ in cpus]
        loop = _profiled if args.profile else _loop
        futs = [
            h.worker.submit(loop if i == 0 else _loop, h, args.batch, args.qd, args.batches, args.fixed, seed + i)
            for i, h in enumerate(handles)
        ]
        out = [f.result() for f in futs]
        for h in handles:
            h.close()
        return out
    finally:
        stack.close()


def _proc(args: argparse.Namespace, cpu: int, seed: int, q: Any) -> None:
    q.put(_stack_run(args, [cpu], seed)[0])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--processes", action="store_true", help="one process (own stack) per worker")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--qd", type=int, default=32)
    ap.add_argument("--batches", type=int, default=100_000)
    ap.add_argument("--fixed", action="store_true", help="registered buffers (the +fixedbuf rung)")
    ap.add_argument("--direct", action="store_true", help="O_DIRECT (the file is not pre-read)")
    ap.add_argument("--override", action="append", default=[], help="config KEY=JSON (repeatable)")
    ap.add_argument("--profile", action="store_true", help="cProfile the first worker's loop (top 25 by own time)")
    ap.add_argument("--switch", type=float, default=None, help="sys.setswitchinterval(S)")
    ap.add_argument("--cpus", default="", help="comma list (default: the first N allowed)")
    args = ap.parse_args(argv)
    if args.switch is not None:
        sys.setswitchinterval(args.switch)
    cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else sorted(os.sched_getaffinity(0))[: args.workers]
    if not args.direct:
        with open(args.file, "rb") as f:  # hot page cache
            while f.read(1 << 20):
                pass
    p0 = time.process_time()
    t0 = time.perf_counter()
    if args.processes:
        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=_proc, args=(args, c, i, q)) for i, c in enumerate(cpus)]
        for p in procs:
            p.start()
            rows = []
        try:
            for _ in procs:  # bounded: a process that died never puts its row
                rows.append(q.get(timeout=max(60.0, args.batches / 1000)))
        except queue.Empty:
            codes = [p.exitcode for p in procs]
            raise SystemExit(f"a worker process gave no result (exit codes {codes})") from None
        finally:
            for p in procs:
                p.join(5)
                if p.is_alive():
                    p.kill()
    else:
        rows = _stack_run(args, cpus, 0)
    elapsed = time.perf_counter() - t0
    ops = sum(r["batches"] for r in rows) * args.batch
    wall = max(r["wall"] for r in rows)
    out = {
        "workers": args.workers,
        "processes": args.processes,
        "batch": args.batch,
        "fixed": args.fixed,
        "iops": round(ops / wall),
        "wall_us_per_batch": [round(r["wall"] / r["batches"] * 1e6, 2) for r in rows],
        "thread_cpu_us_per_batch": [round(r["cpu"] / r["batches"] * 1e6, 2) for r in rows],
        "thread_cpu_us_per_op": [round(r["cpu"] / r["batches"] / args.batch * 1e6, 2) for r in rows],
        "sys_us_per_batch": [round(r["sys"] / r["batches"] * 1e6, 2) for r in rows],
        "vol_switches_per_batch": [round(r["vcsw"] / r["batches"], 3) for r in rows],
        "invol_switches_per_batch": [round(r["ivcsw"] / r["batches"], 3) for r in rows],
        "enters_per_batch": [round(r["enters"] / r["batches"], 3) for r in rows],
        "cpu_busy": [round(r["cpu"] / r["wall"], 2) for r in rows],
        "elapsed_s": round(elapsed, 2),
        "main_cpu_s": round(time.process_time() - p0, 2),
        "threads": threading.active_count(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
