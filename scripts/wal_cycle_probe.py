"""Where one asyncio group-commit cycle of the WAL goes (issue 14: 32 appenders x 256 B).

Runs, alternated in rounds in the same process:

* ``wal``: *N* asyncio tasks looping ``await wal.append_async(record)`` on one
  event loop, through the public API;
* ``model``: the same cycle with no WAL code: *N* tasks await plain futures,
  the first append of a loop tick schedules a ``call_soon`` kick that notifies
  a thread (``threading.Condition``), which does the same O_DIRECT
  ``pwritev(RWF_DSYNC)`` of the WAL's flush size on a pre-written file and
  resolves the futures with one ``call_soon_threadsafe``.  What ``wal`` costs
  beyond ``model`` is the log's own code; ``model`` itself is asyncio, the
  two thread hand-offs and the device.

Per mode: records/s, records per flush, wall time per flush cycle, time in the
durable write, CPU time (all threads) per flush and per record, and voluntary /
involuntary context switches per flush of the flushing thread and of the loop
thread (``/proc/self/task/*/status``).

With ``--steps`` a further ``wal`` run wraps the writer's internal steps
(``Writer._write``, ``_finish``, ``_resolved``, ``_kick``, ``_take_locked``,
``_stage``, the flusher's condition wait and notify, the loop's
``call_soon_threadsafe`` and its blocking ``select``) to record
``time.perf_counter_ns()`` into preallocated arrays, and prints the p50/p90/mean
of each step of a cycle.  The wrappers add about a microsecond per step: use
it to attribute the cycle, not for absolute numbers.  It reaches into the
writer's private methods on purpose (a diagnostic, not an API).

Example: ``python scripts/wal_cycle_probe.py --rounds 4 --slice 3 --steps``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import asyncio.base_events
import bisect
import errno
import mmap
import os
import selectors
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from uringstack.wal import Wal
from uringstack.wal import writer as wal_writer


def _switches(tid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of thread *tid* of this process."""
    fields: dict[str, str] = {}
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v
    return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])


def _thread_id(name: str) -> int:
    for t in threading.enumerate():
        if t.name == name and t.native_id is not None:
            return t.native_id
    raise RuntimeError(f"no thread named {name}")


async def _appenders(n: int, seconds: float, op: Callable[[bytes], Any], record: bytes, done: list[int]) -> None:
    stop = time.perf_counter() + seconds

    async def work() -> None:
        while time.perf_counter() < stop:
            await op(record)
            done[0] += 1

    await asyncio.gather(*(work() for _ in range(n)))


def _measure(
    flusher: Callable[[], int], counters: Callable[[], tuple[int, int]], run: Callable[[], int]
) -> dict[str, float]:
    """Run *run* (returns records) and report per flush; *counters* gives (flushes, write_ns)."""
    fl, me = flusher(), threading.get_native_id()
    f0, w0 = counters()
    sf0, sm0 = _switches(fl), _switches(me)
    c0, t0 = time.process_time(), time.perf_counter()
    records = run()
    t1, c1 = time.perf_counter(), time.process_time()
    sf1, sm1 = _switches(fl), _switches(me)
    f1, w1 = counters()
    n = max(1, f1 - f0)
    cycle = (t1 - t0) * 1e6 / n
    write = (w1 - w0) / 1e3 / n
    return {
        "records_per_s": records / (t1 - t0),
        "records_per_flush": records / n,
        "cycle_us": cycle,
        "write_us": write,
        "outside_us": cycle - write,
        "cpu_us_per_flush": (c1 - c0) * 1e6 / n,
        "cpu_us_per_record": (c1 - c0) * 1e6 / max(1, records),
        "flusher_vol": (sf1[0] - sf0[0]) / n,
        "flusher_invol": (sf1[1] - sf0[1]) / n,
        "loop_vol": (sm1[0] - sm0[0]) / n,
        "loop_invol": (sm1[1] - sm0[1]) / n,
    }


def run_wal(directory: str, appenders: int, seconds: float, record: bytes) -> dict[str, float]:
    with Wal.open(directory) as wal:
        wal.wait_spare()  # the first spare's zero-fill is not the cycle
        done = [0]

        def counters() -> tuple[int, int]:
            c = wal.counters()
            return c["flushes"], c["write_ns"]

        def run() -> int:
            asyncio.run(_appenders(appenders, seconds, wal.append_async, record, done))
            return done[0]

        return _measure(lambda: _thread_id("wal-flusher"), counters, run)


class _Model:
    """The WAL's asyncio cycle with none of its code (see the module docstring)."""

    def __init__(self, path: str, write_bytes: int, file_bytes: int = 64 << 20) -> None:
        with open(path, "wb") as f:
            f.write(bytes(file_bytes))
            f.flush()
            os.fsync(f.fileno())
        self.span = (file_bytes - write_bytes) // 8192 * 8192  # write offsets: multiples of 8 KiB below it
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.fd = os.open(path, os.O_RDWR)  # no O_DIRECT here (tmpfs), as the log falls back
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        self.buf = mmap.mmap(-1, write_bytes)
        self.view = memoryview(self.buf)
        self.cond = threading.Condition()
        self.pending: list[asyncio.Future[int]] = []
        self.kicked = self.stop = False
        self.flushes = self.write_ns = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._flusher, name="model-flusher", daemon=True)
        self.thread.start()

    def _flusher(self) -> None:
        off = 0
        while True:
            with self.cond:
                while not self.pending and not self.stop:
                    self.cond.wait()
                if self.stop:
                    return
                batch, self.pending, self.kicked = self.pending, [], False
            t0 = time.perf_counter_ns()
            os.pwritev(self.fd, [self.view], off, os.RWF_DSYNC)
            self.write_ns += time.perf_counter_ns() - t0
            self.flushes += 1
            off = (off + 8192) % self.span
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._resolve, batch)

    @staticmethod
    def _resolve(batch: list[asyncio.Future[int]]) -> None:
        for fut in batch:
            if not fut.done():
                fut.set_result(1)

    def _kick(self) -> None:
        with self.cond:
            if self.pending and not self.kicked:
                self.kicked = True
                self.cond.notify()

    def append(self, record: bytes) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        self.loop = loop
        fut = loop.create_future()
        with self.cond:
            first = not self.pending
            self.pending.append(fut)
        if first:
            loop.call_soon(self._kick)
        return fut

    def close(self) -> None:
        with self.cond:
            self.stop = True
            self.cond.notify()
        self.thread.join()
        self.view.release()
        self.buf.close()
        os.close(self.fd)


def run_model(
    directory: str, appenders: int, seconds: float, record: bytes, write_bytes: int, file_bytes: int = 64 << 20
) -> dict[str, float]:
    m = _Model(os.path.join(directory, "model.dat"), write_bytes, file_bytes)
    try:
        done = [0]

        def run() -> int:
            asyncio.run(_appenders(appenders, seconds, m.append, record, done))
            return done[0]

        return _measure(lambda: _thread_id("model-flusher"), lambda: (m.flushes, m.write_ns), run)
    finally:
        m.close()


_STEPS = (
    ("write", "write_in", "write_out"),
    ("write returned -> _finish", "write_out", "ack_in"),
    ("_finish -> call_soon_threadsafe", "ack_in", "cst_in"),
    ("call_soon_threadsafe (self-pipe)", "cst_in", "cst_out"),
    ("-> _finish returned", "cst_out", "ack_out"),
    ("-> loop runs _resolved", "ack_out", "res_in"),
    ("_resolved (futures set)", "res_in", "res_out"),
    ("tasks run and append -> _kick", "res_out", "kick_in"),
    ("_kick -> notify", "kick_in", "notify"),
    ("notify -> loop blocks in select", "notify", "sel_in"),
    ("loop blocks -> flusher awake", "sel_in", "woke"),
    ("flusher awake -> batch taken", "woke", "take"),
    ("taken -> staged", "take", "stage_in"),
    ("staged -> next write", "stage_in", "write_in"),
)


def run_steps(directory: str, appenders: int, seconds: float, record: bytes) -> list[tuple[str, float, float, float]]:
    """Timestamps at each step of the cycles of one ``wal`` run (see the module docstring)."""
    size = 1 << 18
    names = sorted({k for _, a, b in _STEPS for k in (a, b)})
    ts = {k: array.array("q", bytes(8 * size)) for k in names}
    idx = dict.fromkeys(names, 0)
    clock = time.perf_counter_ns

    def mark(k: str) -> None:
        i = idx[k]
        if i < size:
            ts[k][i] = clock()
            idx[k] = i + 1

    W = wal_writer.Writer
    saved = {m: getattr(W, m) for m in ("_write", "_finish", "_resolved", "_kick", "_take_locked", "_stage")}
    cst = asyncio.base_events.BaseEventLoop.call_soon_threadsafe
    select = selectors.EpollSelector.select

    def around(orig: Callable[..., Any], before: str, after: str | None) -> Callable[..., Any]:
        def f(*a: Any, **k: Any) -> Any:
            mark(before)
            r = orig(*a, **k)
            if after:
                mark(after)
            return r

        return f

    def take(self: Any) -> Any:
        if threading.current_thread().name == "wal-flusher":
            mark("take")
        return saved["_take_locked"](self)

    def sel(self: Any, timeout: float | None = None) -> Any:
        if timeout is None:
            mark("sel_in")
        return select(self, timeout)

    patches: dict[str, Any] = {
        "_write": around(saved["_write"], "write_in", "write_out"),
        "_finish": around(saved["_finish"], "ack_in", "ack_out"),
        "_resolved": around(saved["_resolved"], "res_in", "res_out"),
        "_kick": around(saved["_kick"], "kick_in", None),
        "_take_locked": take,
        "_stage": around(saved["_stage"], "stage_in", None),
    }
    for m, f in patches.items():
        setattr(W, m, f)
    asyncio.base_events.BaseEventLoop.call_soon_threadsafe = around(cst, "cst_in", "cst_out")
    selectors.EpollSelector.select = sel
    try:
        with Wal.open(directory) as wal:
            wal.wait_spare()
            cond = wal._writer._work
            wait, notify = cond.wait, cond.notify

            def cwait(timeout: float | None = None) -> bool:
                r = wait(timeout)
                if threading.current_thread().name == "wal-flusher":
                    mark("woke")
                return r

            def cnotify(n: int = 1) -> None:
                mark("notify")
                notify(n)

            cond.wait, cond.notify = cwait, cnotify
            asyncio.run(_appenders(appenders, seconds, wal.append_async, record, [0]))
    finally:
        for m, f in saved.items():
            setattr(W, m, f)
        asyncio.base_events.BaseEventLoop.call_soon_threadsafe = cst
        selectors.EpollSelector.select = select
    seq = {k: list(ts[k][: idx[k]]) for k in names}

    def after(k: str, t: int) -> int | None:
        j = bisect.bisect_right(seq[k], t)
        return seq[k][j] if j < len(seq[k]) else None

    # One cycle: from a write's start, each step's first mark after the previous one; cycles
    # where a step is missing (the flusher chained two writes, a kick ran before the tasks) skipped.
    order = ["write_in"] + [b for _, _, b in _STEPS]
    cycles: list[list[int]] = []
    for start in seq["write_in"][len(seq["write_in"]) // 10 :]:
        marks, t = [start], start
        for k in order[1:]:
            nt = after(k, t) if k != "write_out" else after(k, t - 1)
            if nt is None:
                break
            marks.append(nt)
            t = nt
        if len(marks) == len(order):
            cycles.append(marks)
    rows = []
    for i, (label, _, _) in enumerate(_STEPS):
        d = sorted(c[i + 1] - c[i] for c in cycles)
        if d:
            rows.append((label, d[len(d) // 2] / 1e3, d[int(len(d) * 0.9)] / 1e3, statistics.fmean(d) / 1e3))
    tot = sorted(c[-1] - c[0] for c in cycles)
    if tot:
        rows.append((f"CYCLE ({len(cycles)} matched)", tot[len(tot) // 2] / 1e3, tot[int(len(tot) * 0.9)] / 1e3,
                     statistics.fmean(tot) / 1e3))  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--appenders", type=int, default=32)
    ap.add_argument("--record-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="alternated wal/model rounds")
    ap.add_argument("--slice", type=float, default=3.0, help="seconds per mode per round")
    ap.add_argument("--write-bytes", type=int, default=12288, help="the model's write (the WAL's flush of 32 x 256 B)")
    ap.add_argument("--steps", action="store_true", help="also time each step of the wal cycle (instrumented)")
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    record = bytes(args.record_size)
    results: dict[str, list[dict[str, float]]] = {"wal": [], "model": []}
    for r in range(args.rounds):
        for mode in ("wal", "model") if r % 2 == 0 else ("model", "wal"):
            with tempfile.TemporaryDirectory(dir=args.dir) as d:
                if mode == "wal":
                    res = run_wal(d, args.appenders, args.slice, record)
                else:
                    res = run_model(d, args.appenders, args.slice, record, args.write_bytes)
            results[mode].append(res)
            print(f"round {r} {mode:5s} " + " ".join(f"{k} {v:.1f}" for k, v in res.items()), flush=True)
    print("medians of the rounds:")
    for mode, rows in results.items():
        print(f"  {mode:5s} " + " ".join(f"{k} {statistics.median(x[k] for x in rows):.1f}" for k in rows[0]))
    if args.steps:
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            steps = run_steps(d, args.appenders, args.slice, record)
        print("steps of one wal cycle (us):            p50      p90     mean")
        for label, p50, p90, mean in steps:
            print(f"  {label:38s} {p50:7.1f}  {p90:7.1f}  {mean:7.1f}")


if __name__ == "__main__":
    main()
