"""``uringstack bench fileobj``: the file objects beside the built-ins, ratios in one run (issue 16).

Four comparisons, each side run alternately ``reps`` times on the same file:

- ``sha256-hot``: ``hashlib.file_digest(f, "sha256")`` with the file in the page
  cache, built-in ``open()`` vs ``uringstack.open()``;
- ``sha256-cold``: the same after ``posix_fadvise(DONTNEED)`` before every run
  (preceded by an untimed read that caches the file and a pause of
  :data:`SETTLE_SECONDS`, see there why); the built-in, ``uringstack.open()``
  buffered, and ``direct=True`` (O_DIRECT read-ahead), the ratio judged is the last one's; beside them the floor no
  reader can go below (:func:`sha_floor`: the hash and the one copy into
  ``file_digest``'s buffer, from memory, no I/O), whose ratio is the best any
  reader of that file could reach in that run;
- ``copyfileobj``: ``shutil.copyfileobj`` of the (hot) file to a new file, both
  closed inside the timing; before each run the bench pauses
  :data:`SETTLE_SECONDS`, then deletes the last run's copy (see there why);
- ``aio-random``: random 4 KiB reads (seek + read) from 32 asyncio tasks,
  ``aiofiles.open`` vs ``uringstack.aio.open`` (needs the ``bench`` extra).

Each row keeps every run's wall and CPU seconds (user + system of the whole
process: threads and io_uring's kernel workers included); the ratio is the
median of the per-run ratios (built-in time over uringstack time, or rate over
aiofiles' rate), > 1 meaning uringstack is faster.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uringstack.bench.datafile import write_random_file
from uringstack.bench.metrics import cpu_seconds
from uringstack.bench.runner import device_of, machine_info
from uringstack.fileobj.default_stack import default_stack
from uringstack.ring.interrupts import with_descriptor

SCHEMA = "uringstack.bench-fileobj/1"
BENCHES = ("sha256-hot", "sha256-cold", "copyfileobj", "aio-random")
TASKS = 32
MIN_FILE_SIZE = 1 << 20
ALIGN = 4096  # the file size is a whole number of blocks for the O_DIRECT side
FLOOR = "floor: sha256 + copy, no I/O"
SETTLE_SECONDS = 2.5
"""Pause before the free that precedes each ``copyfileobj`` and ``sha256-cold`` run (:func:`settle_then_free`).

Both rows fill ``--file-size`` bytes of newly allocated page cache (the copy
writes it; the cold built-in and buffered ``uringstack.open()`` read into it),
so their kernel time depends on the state of the free memory they get.  Where
the guest reports free memory to its host (Linux free page reporting through
virtio-balloon, as on this project's Firecracker VMs: "Free page reporting
enabled" at boot), the kernel reports free blocks to the host 2 s after a
large free and the host discards them; a run filling memory at that moment, or
memory free for long (already reported), costs 2-4x the system time.  Pausing
past that delay and then freeing lets every earlier report run first; the run
then starts on the memory just freed and ends before the next report (for runs
shorter than ~2 s).  Every side of a row gets the same pause; it is not timed.
Elsewhere it only costs time.

``copyfileobj``: deleting the last run's copy frees 1 GiB, so the reports fired
within the bench's own runs (measured with the built-in alone: 0.36-0.47 s of
CPU per GiB, 0.6-3.5 s in the runs hit, whichever side ran then; in a fresh
process the fourth copy, started ~1.6-2.3 s after the first free, was slowed
every time).  An untimed copy before the first run gives that run the same
start (with ``--only copyfileobj`` the built-in's first run, always first,
took 1.9-3.5 s of CPU against ~0.5 s, on main's bench).

``sha256-cold``: ``POSIX_FADV_DONTNEED`` is the free, and the run right after
it reads into the memory it freed, but only if the file was cached: after
the ``direct`` and floor sides (no page cache) the built-in's drop freed
nothing, so it read into memory freed seconds before and reported.  So each run
is preceded by an untimed read that caches the file, the pause, then the drop.
Measured (1 GiB, the four sides alternating in one process, drop only and
cache + pause + drop alternating by round, 3 invocations of 3-4 rounds, load
0.8-1.9): the system CPU of the built-in and buffered ``uringstack.open()``
runs was 0.09-2.25 s with the drop only (the built-in's runs hit took 1.2-2.9 s
wall, against 0.8-0.9 s), 0.11-0.31 s with cache + pause + drop."""


@dataclass(frozen=True)
class Target:
    """An issue-16 target: *side*'s ratio to the built-in (or aiofiles) must be at least *min_ratio*."""

    side: str
    min_ratio: float
    text: str


TARGETS: dict[str, Target] = {
    "sha256-hot": Target("uringstack", 1.0, "sha256 of a 1 GiB file, hot: uringstack.open ≥ 1.0x open()"),
    "sha256-cold": Target(
        "uringstack direct", 1.3, "sha256 of a 1 GiB file, cold: uringstack.open(direct=True) ≥ 1.3x open()"
    ),
    "copyfileobj": Target("uringstack", 1.0, "shutil.copyfileobj of 1 GiB: ≥ 1.0x open()"),
    "aio-random": Target("uringstack.aio", 10.0, "random 4 KiB reads, 32 tasks: uringstack.aio.open ≥ 10x aiofiles"),
}


def check_size(file_size: int) -> None:
    """Raise ``ValueError`` naming ``--file-size`` when the bench cannot use it."""
    if file_size < MIN_FILE_SIZE or file_size % ALIGN:
        raise ValueError(f"--file-size {file_size}: needs at least 1 MiB and a multiple of {ALIGN} bytes")


def make_file(path: str, size: int) -> None:
    """Write *size* random bytes to *path*, durably (so dropping its cache really drops it)."""
    write_random_file(path, size)


def drop_cache(path: str) -> None:
    """Evict *path*'s pages from the page cache (clean pages only: it was fsynced)."""
    with_descriptor(path, os.O_RDONLY | os.O_CLOEXEC, _drop_clean_pages)


def _drop_clean_pages(fd: int) -> None:
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def warm(path: str) -> None:
    """Read *path* once so its pages are cached."""
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def settle_then_free(free: Callable[[], None]) -> None:
    """Pause :data:`SETTLE_SECONDS`, then *free*: the next timed run starts on memory just freed (see there)."""
    time.sleep(SETTLE_SECONDS)
    free()


def cold_start(path: str) -> None:
    """Before a ``sha256-cold`` run: cache *path*, pause, drop it (so the run reads into just-freed memory)."""
    warm(path)
    settle_then_free(lambda: drop_cache(path))


def sha_builtin(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha_uring(path: str, direct: bool = False) -> str:
    import uringstack

    with uringstack.open(path, "rb", direct=direct) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


FLOOR_SOURCE = 64 << 20
"""Bytes the floor copies from, cycled: larger than the CPU's caches, as data a device just wrote by DMA is."""
DIGEST_BUFFER = 1 << 18
"""``hashlib.file_digest``'s buffer (its ``_bufsize``): one ``readinto`` per 256 KiB."""


def floor_source(file_size: int) -> memoryview:
    """What :func:`sha_floor` copies from: built before the timing, which must not include it."""
    return memoryview(bytearray(os.urandom(1 << 20)) * (min(file_size, FLOOR_SOURCE) >> 20))


def sha_floor(source: memoryview, file_size: int) -> str:
    """The cold sha256's floor: what ``file_digest`` costs on *file_size* bytes with no I/O at all.

    Its loop exactly (``readinto`` of a 256 KiB ``bytearray``, then ``update``),
    the read replaced by a copy from memory.  The copy cannot be avoided by an
    O_DIRECT reader either: ``file_digest``'s ``bytearray`` is not aligned for
    DMA (malloc gives 16 bytes past a page; a virtio disk needs 512), so the
    device writes an aligned buffer and ``readinto`` copies.  A cold read can
    only approach this time, never beat it, so its ratio to the built-in is
    the ceiling of the ``direct`` side's (measured in the same run).  *source*:
    :func:`floor_source`."""
    period = len(source)
    buf = bytearray(DIGEST_BUFFER)
    view = memoryview(buf)
    digest = hashlib.sha256()
    done = 0
    while done < file_size:
        n = min(DIGEST_BUFFER, file_size - done)
        at = done % period
        view[:n] = source[at : at + n]
        digest.update(view[:n])
        done += n
    return digest.hexdigest()


def copy_with(opener: Callable[[str, str], Any], src: str, dst: str) -> None:
    with opener(src, "rb") as fi, opener(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo)


async def random_reads(open_fn: Callable[..., Any], path: str, size: int, per_task: int) -> int:
    """*per_task* seek + 4 KiB reads in each of 32 tasks, each task its own open file."""
    blocks = size // 4096

    async def one(seed: int) -> int:
        rnd = random.Random(seed)
        async with open_fn(path, "rb") as f:
            for _ in range(per_task):
                await f.seek(rnd.randrange(blocks) * 4096)
                data = await f.read(4096)
                if len(data) != 4096:
                    raise RuntimeError(f"{path}: a 4 KiB read returned {len(data)} bytes")
        return per_task

    return sum(await asyncio.gather(*(one(i) for i in range(TASKS))))


def _medians(runs: dict[str, list[dict[str, float]]], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per side: the median of each of *keys* over its runs, and the runs themselves."""
    return {side: {**{k: statistics.median(r[k] for r in v) for k in keys}, "runs": v} for side, v in runs.items()}


def _timed_pair(
    name: str, reps: int, sides: dict[str, Callable[[], Any]], before: Callable[[], None] | None
) -> dict[str, Any]:
    """Run the sides alternately *reps* times; per side every run's wall and CPU seconds."""
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
    for _ in range(reps):
        for key, fn in sides.items():
            if before is not None:
                before()
            c0, t0 = cpu_seconds(), time.perf_counter()
            fn()
            runs[key].append({"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - c0})
    base = next(iter(sides))
    out_sides = _medians(runs, ("seconds", "cpu_seconds"))
    ratios = {
        k: statistics.median(b["seconds"] / o["seconds"] for b, o in zip(runs[base], runs[k], strict=True))
        for k in sides
        if k != base
    }
    return {"bench": name, "status": "ok", "unit": "seconds", "base": base, "sides": out_sides, "ratios": ratios}


def _aio_pair(path: str, size: int, reps: int, per_task: int) -> dict[str, Any]:
    try:
        import aiofiles
    except ImportError:
        return {"bench": "aio-random", "status": "skipped", "reason": "aiofiles is not installed (the bench extra)"}
    import uringstack.aio

    runs: dict[str, list[dict[str, float]]] = {"aiofiles": [], "uringstack.aio": []}
    for _ in range(reps):
        for key, fn in (("aiofiles", aiofiles.open), ("uringstack.aio", uringstack.aio.open)):
            c0, t0 = cpu_seconds(), time.perf_counter()
            n = asyncio.run(random_reads(fn, path, size, per_task))
            wall = time.perf_counter() - t0
            runs[key].append({"rate": n / wall, "seconds": wall, "cpu_us_per_read": 1e6 * (cpu_seconds() - c0) / n})
    sides = _medians(runs, ("rate", "cpu_us_per_read"))
    ratio = statistics.median(
        o["rate"] / b["rate"] for b, o in zip(runs["aiofiles"], runs["uringstack.aio"], strict=True)
    )
    return {
        "bench": "aio-random",
        "status": "ok",
        "unit": "reads/s",
        "base": "aiofiles",
        "reads_per_task": per_task,
        "tasks": TASKS,
        "sides": sides,
        "ratios": {"uringstack.aio": ratio},
    }


def judge(result: dict[str, Any]) -> dict[str, Any]:
    """Add the row's issue-16 target and whether this run met it."""
    t = TARGETS[result["bench"]]
    ratio = result.get("ratios", {}).get(t.side)
    result["target"] = {"side": t.side, "min_ratio": t.min_ratio, "text": t.text}
    result["met"] = None if ratio is None else ratio >= t.min_ratio
    return result


def run_fileobj_bench(
    file_size: int,
    reps: int = 3,
    directory: str | None = None,
    only: tuple[str, ...] = BENCHES,
    reads_per_task: int = 2000,
    command: str = "",
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the chosen comparisons on a fresh file of *file_size* bytes; the result document."""
    import uringstack

    check_size(file_size)
    bad = [b for b in only if b not in BENCHES]
    if bad or not only:
        raise ValueError(f"--only {','.join(only)}: pick from {','.join(BENCHES)}")
    step = on_step or (lambda _label: None)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    workdir = tempfile.mkdtemp(prefix="uringstack-bench-fileobj-", dir=directory)
    src, dst = os.path.join(workdir, "src"), os.path.join(workdir, "dst")
    results: list[dict[str, Any]] = []
    try:
        step("writing the file")
        make_file(src, file_size)
        device = device_of(src)
        # uringstack's sides use the default stack, as `uringstack.open(path)` does
        stack = default_stack()
        ring_flags = sorted({f for w in stack.plan.workers for r in w.rings for f in r.flags})
        # the three readers must agree before any of them is timed
        digests = {sha_builtin(src), sha_uring(src), sha_uring(src, direct=True)}
        if len(digests) != 1:
            raise RuntimeError(f"{src}: sha256 differs between open() and uringstack.open(): {digests}")
        probe = stack.open(src, writable=False)
        backend = probe.backend
        probe.close()
        if "sha256-hot" in only:
            step("sha256 hot")
            results.append(_timed_pair("sha256-hot", reps, {
                "builtin": lambda: sha_builtin(src),
                "uringstack": lambda: sha_uring(src),
            }, before=lambda: warm(src)))  # fmt: skip
        if "sha256-cold" in only:
            step("sha256 cold")
            source = floor_source(file_size)
            results.append(_timed_pair("sha256-cold", reps, {
                "builtin": lambda: sha_builtin(src),
                "uringstack": lambda: sha_uring(src),
                "uringstack direct": lambda: sha_uring(src, direct=True),
                FLOOR: lambda: sha_floor(source, file_size),
            }, before=lambda: cold_start(src)))  # fmt: skip

        def remove_dst() -> None:
            if os.path.exists(dst):
                os.unlink(dst)

        def fresh_dst() -> None:
            settle_then_free(remove_dst)  # past the free-page report of what was freed before
            warm(src)

        if "copyfileobj" in only:
            step("copyfileobj")
            # untimed: so the first timed run, as every later one, writes into the memory
            # a copy just freed (SETTLE_SECONDS), not into memory free for long
            copy_with(open, src, dst)
            results.append(_timed_pair("copyfileobj", reps, {
                "builtin": lambda: copy_with(open, src, dst),
                "uringstack": lambda: copy_with(uringstack.open, src, dst),
            }, before=fresh_dst))  # fmt: skip
            if sha_builtin(dst) != sha_builtin(src):
                raise RuntimeError(f"{dst}: the copy made by uringstack.open differs from its source")
        if "aio-random" in only:
            step("aio random reads")
            warm(src)
            results.append(_aio_pair(src, file_size, reps, reads_per_task))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for r in results:
        judge(r)
    return {
        "schema": SCHEMA,
        "workload": "fileobj",
        "started_at": started,
        "command": command,
        "spec": {"workload": "fileobj", "file_size": file_size, "reps": reps, "reads_per_task": reads_per_task},
        "machine": machine_info(),
        "file": {"dir": workdir, "device": device},
        "backend": backend,
        "ring_flags": ring_flags,
        "results": results,
    }
