#!/usr/bin/env python3
"""Per-batch cost of a prepared restart, layer by layer, on one thread (for cachegrind and cProfile).

The bench's handle loop without its metering: QD/batch groups of buffered 4 KiB
reads of a hot file kept in flight, the oldest waited first, for ``--batches``
batches.  ``--layer`` picks what each restart goes through:

- ``public``: ``prepared.start(offsets)`` and ``pending.wait()`` (the public API);
- ``backend``: the backend's prepared object (``handle.io.prepare_rw``) and its pending,
  without :class:`~uringstack.stack.prepared.PreparedIO`;
- ``ring``: ``Ring.submit_columns`` of prebuilt columns and ``Ring.wait(batch)``;
- ``raw``: the raw bench loop's calls (``submit_columns``, ``Ring.wait_any``).

Instructions per batch: run under ``valgrind --tool=cachegrind --cache-sim=no`` at two
``--batches`` and divide the difference of the totals (start-up cancels)::

    for n in 2000 6000; do PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no \\
        --cachegrind-out-file=/dev/null .venv/bin/python scripts/prepared-cost.py \\
        --file F --layer public --batches $n 2>&1 | grep 'I *refs'; done

Without valgrind it prints the thread's CPU µs per batch; ``--profile`` prints cProfile's top.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from itertools import cycle
from typing import Any


def _offsets(size: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    return [rnd.randrange(size // 4096) * 4096 for _ in range(1 << 14)]


def run(handle: Any, layer: str, batch: int, qd: int, batches: int) -> float:
    from uringstack.ring.buffers import pin_buffers
    from uringstack.ring.columns import BatchColumns
    from uringstack.ring.flags import Op

    pool = _offsets(handle.size(), 1)
    # the batches' offsets sliced once and cycled (a C step per batch, the same for every layer)
    take = cycle([pool[i : i + batch] for i in range(0, len(pool) - batch + 1, batch)]).__next__

    bufs = handle.lease_buffers(qd, size=4096)
    groups = [bufs[i : i + batch] for i in range(0, qd, batch)]
    ring = handle.io.ring
    cols_of: list[BatchColumns] = []
    keep: list[Any] = []
    if layer == "public":
        preps: list[Any] = [handle.prepare_reads(g) for g in groups]
        starts = [p.start for p in preps]
    elif layer == "backend":
        preps = [handle.io.prepare_rw(False, g) for g in groups]
        starts = [p.start for p in preps]
    else:
        preps = []
        for g in groups:
            pins, addrs, lens = pin_buffers(g, writable=True)
            c = BatchColumns(len(g))
            c.fill("opcodes", int(Op.READ))
            c.fill("fds", handle.fd)
            c.set("addrs", addrs)
            c.set("lens", lens)
            c.column("offs")
            cols_of.append(c)
            keep.append((pins, g))
    submit = ring.submit_columns
    t = time.thread_time()
    done = 0
    if layer in ("public", "backend"):
        fifo: deque[tuple[int, Any]] = deque()
        for j in range(len(groups)):
            fifo.append((j, starts[j](take())))
        while done < batches:
            j, pending = fifo.popleft()
            res = pending.wait()
            if res.count(4096) != batch:
                raise SystemExit(f"results {res}")
            done += 1
            fifo.append((j, starts[j](take())))
        while fifo:
            fifo.popleft()[1].wait()
    elif layer == "ring":
        bfifo: deque[tuple[int, Any]] = deque()
        for j, c in enumerate(cols_of):
            c.column("offs")[0:batch] = take()
            bfifo.append((j, submit(c, batch, keep[j])))
        while done < batches:
            j, b = bfifo.popleft()
            res = ring.wait(b)
            if res.count(4096) != batch:
                raise SystemExit(f"results {res}")
            done += 1
            c = cols_of[j]
            c.column("offs")[0:batch] = take()
            bfifo.append((j, submit(c, batch, keep[j])))
        while bfifo:
            ring.wait(bfifo.popleft()[1])
    else:  # raw: the raw bench loop's calls
        offs = [c.column("offs") for c in cols_of]
        for j, c in enumerate(cols_of):
            offs[j][0:batch] = take()
            submit(c, batch, keep[j]).tag = j
        while done < batches:
            for b in ring.wait_any():
                res = b.results
                if res.count(4096) != batch:
                    raise SystemExit(f"results {res}")
                done += 1
                j = b.tag
                offs[j][0:batch] = take()
                submit(cols_of[j], batch, keep[j]).tag = j
        while ring.inflight and ring.wait_any():
            pass
    cpu = time.thread_time() - t
    for p in preps:
        p.close()
    handle.release_buffers(bufs)
    return cpu / done * 1e6


def bench(handle: Any, args: argparse.Namespace) -> float:
    """The bench's own loops (``handle_loop`` of the batched row, ``uring_loop`` of the raw
    row) for ``--duration`` s without a warm-up: prints the ops (instructions per op = the
    difference of two durations' instructions over the difference of their ops)."""
    from uringstack.bench.api_loops import handle_loop
    from uringstack.bench.ladder import RAW_RING, RUNGS
    from uringstack.bench.loops import uring_loop
    from uringstack.bench.spec import BenchSpec

    spec = BenchSpec(
        "randread", file=args.file, file_size=handle.size(), duration=args.duration, ramp=0.0,
        direct=False, batch=args.batch, queue_depth=args.qd,
    )  # fmt: skip
    if args.layer == "bench":
        res = handle_loop(handle, spec, RUNGS["+fixedbuf" if args.fixed else "batched"], 0)
    else:
        res = uring_loop(handle, spec, RUNGS[RAW_RING], 0)
    print(f"ops {res.ops} cpu_us_per_op {res.cpu / res.ops * 1e6:.3f}")
    return res.cpu / res.ops * args.batch * 1e6


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", required=True)
    ap.add_argument("--layer", choices=("public", "backend", "ring", "raw", "bench", "benchraw"), default="public")
    ap.add_argument("--duration", type=float, default=1.0, help="bench layers: the window (no warm-up)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--qd", type=int, default=32)
    ap.add_argument("--batches", type=int, default=20_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--fixed", action="store_true", help="fixedbuf on: registered buffers and file (the raw row's)")
    ap.add_argument(
        "--direct", action="store_true",
        help="O_DIRECT reads (the +iopoll row's offset checks per start), from the device, not the page cache",
    )  # fmt: skip
    args = ap.parse_args(argv)
    from uringstack.stack import open_stack

    with open(args.file, "rb") as f:  # hot page cache
        while f.read(1 << 20):
            pass
    stack = open_stack(
        overrides={
            "core.cores": [0],
            "fixedbuf.mode": "on" if args.fixed else "off",
            "fixedbuf.count": args.qd,
            "fixedbuf.min_count": 1,
            "fixedbuf.buffer_size": 4096,
            "sqpoll.mode": "off",
        }
    )
    try:
        h = stack.open(args.file, writable=False, direct=args.direct)

        def go() -> float:
            if not args.profile:
                return (
                    bench(h, args)
                    if args.layer.startswith("bench")
                    else run(h, args.layer, args.batch, args.qd, args.batches)
                )
            import cProfile
            import pstats

            prof = cProfile.Profile()
            if args.layer.startswith("bench"):
                us = prof.runcall(bench, h, args)
            else:
                us = prof.runcall(run, h, args.layer, args.batch, args.qd, args.batches)
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(30)
            return float(us)

        us = h.worker.submit(go).result()
        h.close()
    finally:
        stack.close()
    print(f"{args.layer} batch={args.batch}: {us:.2f} cpu us/batch")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
