#!/usr/bin/env python3
"""File objects beside the built-ins, ratios measured in one run (issue 16).

    .venv/bin/python scripts/bench-fileobj.py [--size 1g] [--dir DIR] [--reps 3] [--json]

- sha256 of a ``--size`` file (``hashlib.file_digest``), hot page cache and cold
  (``posix_fadvise(DONTNEED)`` before each run): built-in ``open()`` vs
  ``uringstack.open()`` (buffered, and ``direct=True`` for cold);
- ``shutil.copyfileobj`` of that file to a new one, closed (hot source);
- random 4 KiB reads from 32 asyncio tasks (seek + read, hot cache):
  ``aiofiles.open`` vs ``uringstack.aio.open``.

Each pair runs alternately, ``--reps`` times; the median of each side gives
the ratio (>1: uringstack faster), and the median CPU time of each side
(user + system of the whole process, io_uring's kernel workers included) is
printed beside it.  Absolute numbers on a shared VM are noise, the ratios in
one run and the CPU times are what to read.  ``--only`` picks benchmarks
(``sha-hot,sha-cold,copy,aio``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import uringstack
import uringstack.aio

_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size_arg(text: str) -> int:
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = _SUFFIX.get(t[-1:], 1)
    try:
        n = int(t[:-1] if t[-1:] in _SUFFIX else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 256m, 1g)") from None
    if n < 1 << 20:
        raise argparse.ArgumentTypeError(f"--size {text!r}: at least 1m")
    return n


BENCHES = ("sha-hot", "sha-cold", "copy", "aio")


def only_arg(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in BENCHES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--only {text!r}: pick from {','.join(BENCHES)}")
    return names


def make_file(path: str, size: int) -> None:
    block = os.urandom(8 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def cpu_seconds() -> float:
    """User + system time of the process, its threads and io_uring workers included."""
    t = os.times()
    return t.user + t.system


def timed(fn: Callable[[], Any], before: Callable[[], None] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call of *fn*, after *before*."""
    if before is not None:
        before()
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_seconds() - c0


def pair(
    name: str, reps: int, sides: dict[str, Callable[[], Any]], before: Callable[[], None] | None = None
) -> dict[str, Any]:
    times: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(reps):
        for key, fn in sides.items():
            wall, used = timed(fn, before)
            times[key].append(wall)
            cpu[key].append(used)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = next(iter(sides))
    return {
        "bench": name,
        "seconds": med,
        "cpu_seconds": {k: statistics.median(v) for k, v in cpu.items()},
        "ratios": {k: med[base] / med[k] for k in sides if k != base},
    }


def sha_builtin(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha_uring(path: str, stack: Any, direct: bool = False) -> str:
    with uringstack.open(path, "rb", stack=stack, direct=direct) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def copy_with(opener: Callable[..., Any], src: str, dst: str) -> None:
    with opener(src, "rb") as fi, opener(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo)


async def random_reads(open_fn: Callable[..., Any], path: str, size: int, tasks: int, per_task: int) -> int:
    blocks = size // 4096

    async def one(seed: int) -> int:
        rnd = random.Random(seed)
        async with open_fn(path, "rb") as f:
            for _ in range(per_task):
                await f.seek(rnd.randrange(blocks) * 4096)
                data = await f.read(4096)
                assert len(data) == 4096
        return per_task

    return sum(await asyncio.gather(*(one(i) for i in range(tasks))))


def aio_pair(path: str, size: int, reps: int, stack: Any, per_task: int) -> dict[str, Any]:
    import aiofiles

    def ours(p: str, mode: str) -> Any:
        return uringstack.aio.open(p, mode, stack=stack)

    rates: dict[str, list[float]] = {"aiofiles": [], "uringstack.aio": []}
    for _ in range(reps):
        for key, fn in (("aiofiles", aiofiles.open), ("uringstack.aio", ours)):
            t0 = time.perf_counter()
            n = asyncio.run(random_reads(fn, path, size, 32, per_task))
            rates[key].append(n / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "bench": "random 4 KiB reads, 32 tasks (reads/s)",
        "rate": med,
        "ratios": {"uringstack.aio": med["uringstack.aio"] / med["aiofiles"]},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=size_arg, default=1 << 30, help="file size (default 1g)")
    ap.add_argument("--dir", default=None, help="directory for the test files (default: a temp dir)")
    ap.add_argument("--reps", type=int, default=3, help="runs per side, median taken (default 3)")
    ap.add_argument("--reads-per-task", type=int, default=2000, help="random reads per task (default 2000)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument(
        "--only", type=only_arg, default=BENCHES, help=f"comma-separated subset of {','.join(BENCHES)} (default all)"
    )
    args = ap.parse_args()
    if "aio" in args.only:
        try:
            import aiofiles  # noqa: F401
        except ImportError:
            print("aiofiles is not installed: pip install -e '.[dev]'", file=sys.stderr)
            return 2
    workdir = tempfile.mkdtemp(prefix="bench-fileobj-", dir=args.dir)
    src, dst = os.path.join(workdir, "src"), os.path.join(workdir, "dst")
    results: list[dict[str, Any]] = []
    try:
        make_file(src, args.size)
        with uringstack.open_stack() as stack:
            assert sha_builtin(src) == sha_uring(src, stack) == sha_uring(src, stack, direct=True)
            warm(src)
            if "sha-hot" in args.only:
                results.append(pair("sha256 hot", args.reps, {
                    "builtin": lambda: sha_builtin(src),
                    "uringstack": lambda: sha_uring(src, stack),
                }, before=lambda: warm(src)))
            if "sha-cold" in args.only:
                results.append(pair("sha256 cold", args.reps, {
                    "builtin": lambda: sha_builtin(src),
                    "uringstack": lambda: sha_uring(src, stack),
                    "uringstack direct": lambda: sha_uring(src, stack, direct=True),
                }, before=lambda: drop_cache(src)))

            def rm_dst() -> None:
                if os.path.exists(dst):
                    os.unlink(dst)
                warm(src)

            if "copy" in args.only:
                results.append(pair("shutil.copyfileobj", args.reps, {
                    "builtin": lambda: copy_with(open, src, dst),
                    "uringstack": lambda: copy_with(lambda p, m: uringstack.open(p, m, stack=stack), src, dst),
                }, before=rm_dst))
            if "aio" in args.only:
                warm(src)
                results.append(aio_pair(src, args.size, args.reps, stack, args.reads_per_task))
            backend = stack.open(src, writable=False)
            backend_name = backend.backend
            backend.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {"size": args.size, "reps": args.reps, "backend": backend_name, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return 0
    print(f"file objects vs built-ins: size {args.size >> 20} MiB, {args.reps} reps (median), backend {backend_name}")
    for r in results:
        if "seconds" in r:
            cells = ", ".join(f"{k} {v:.3f}s (cpu {r['cpu_seconds'][k]:.3f}s)" for k, v in r["seconds"].items())
        else:
            cells = ", ".join(f"{k} {v:,.0f}/s" for k, v in r["rate"].items())
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items())
        print(f"  {r['bench']:<40} {cells}  ->  {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
