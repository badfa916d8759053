"""One candidate's short run, through the public API only.

A stack is opened with the candidate's config overrides, one read-only handle
per worker on the target, and each worker keeps its share of the queue depth
in flight with ``start_read_many`` on buffers from ``lease_buffers`` (so
registered buffers are used exactly when the candidate's stack registered
them, as an application's would be).  Completions are counted in a window
after a short warm-up; CPU time is the whole process's (every thread,
including an SQPOLL poller) over the same window.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from uringstack.probe.threadlimits import start_thread
from uringstack.probe.tuning import Measurement, TuneTarget

if TYPE_CHECKING:
    from uringstack.pluginmanager import UringstackPluginManager
    from uringstack.probe.model import Capabilities
    from uringstack.stack import Worker
    from uringstack.stack.handle import FileHandle

OFFSETS_PER_WORKER = 1 << 15
DRAIN_TIMEOUT_S = 10.0
"""After the window, in-flight reads must complete within this; a lost completion fails the run."""
MIN_WINDOW_S = 0.05
"""Shortest window measured when the stack's set-up ate into the run's time; less is a skip."""


def _cpu() -> float:
    # CLOCK_PROCESS_CPUTIME_ID, as the bench's cpu_seconds: every thread of the process
    # (io_uring's included) in nanoseconds, not os.times()'s 10 ms ticks
    return time.process_time()


def _offsets(target: TuneTarget, worker: int) -> list[int]:
    bs = target.workload.block_size
    blocks = max(1, target.size_bytes // bs)
    rng = random.Random(7919 + worker)
    return [rng.randrange(blocks) * bs for _ in range(OFFSETS_PER_WORKER)]


def drive(
    handle: FileHandle, offsets: list[int], depth: int, batch: int, size: int, measure_from: float, until: float
) -> tuple[int, str]:
    """Keep *depth* reads in flight in batches of *batch* until *until*; count those
    completing from *measure_from*.  Returns (ops counted, first error or "")."""
    bufs = handle.lease_buffers(depth, size)
    fifo: deque[tuple[list[Any], Any]] = deque()
    pos = 0
    n_off = len(offsets)
    ops = 0
    error = ""

    def start(group: list[Any]) -> None:
        nonlocal pos
        offs = [offsets[(pos + k) % n_off] for k in range(len(group))]
        pos += len(group)
        fifo.append((group, handle.start_read_many(offs, group)))

    try:
        for first in range(0, depth, batch):
            start(bufs[first : first + batch])
        while fifo:
            group, pending = fifo.popleft()
            now = time.perf_counter()
            if now >= until:
                deadline = now + DRAIN_TIMEOUT_S
                while not pending.done():
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"a read on {handle.path} did not complete within {DRAIN_TIMEOUT_S:.0f} s")
                    time.sleep(0.0005)
            results = pending.wait()
            now = time.perf_counter()
            bad = [r for r in results if r != size]
            if bad and not error:
                res = bad[0]
                error = f"read returned {res}" + (f" ({os.strerror(-res)})" if res < 0 else f", want {size}")
            if measure_from <= now < until:
                ops += len(group)
            if now < until and not error:
                start(group)
    finally:
        handle.release_buffers(bufs)
    return ops, error


def measure(
    target: TuneTarget,
    settings: dict[str, str],
    overrides: dict[str, Any],
    batch: int,
    seconds: float,
    caps: Capabilities,
    plugin_manager: UringstackPluginManager | None = None,
    *,
    deadline: float | None = None,
    teardown_s: float = 0.0,
) -> Measurement:
    """Open the candidate's stack and measure it for *seconds* (plus a short warm-up).

    Pass the *plugin_manager* of the tuning run: reusing it saves loading
    every plugin again for each candidate (a tenth of a second each).

    *deadline* (``time.perf_counter()`` time) is when the run must be over,
    *teardown_s* the expected time to close the stack: a set-up slower than
    foreseen (the first stack of a process, an emulated machine) shortens the
    window to what is left, and with less than :data:`MIN_WINDOW_S` left the
    run is ``skipped`` rather than overrunning the budget.
    """
    from uringstack import stack as stack_mod

    result = Measurement(settings=dict(settings), overrides=dict(overrides))
    t_setup = time.perf_counter()
    try:
        stack = stack_mod.open_stack(
            caps=caps, plugin_manager=plugin_manager, overrides={**overrides, "core.tune": "off"}
        )
    except Exception as exc:
        result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        return result
    t_close = 0.0
    try:
        wl = target.workload
        workers = stack.workers
        handles = {w.index: stack.open(target.path, direct=wl.direct, writable=False, core=w.cpu) for w in workers}
        depth = max(1, wl.queue_depth // len(workers))
        per = max(1, min(batch, depth))
        offsets = {w.index: _offsets(target, w.index) for w in workers}
        ramp = min(0.3, max(0.05, seconds * 0.15))
        start = time.perf_counter()
        result.setup_s = round(start - t_setup, 3)
        if deadline is not None:
            room = deadline - start - teardown_s
            ramp = min(ramp, max(0.0, room) * 0.2)
            seconds = min(seconds, room - ramp)
            if seconds < MIN_WINDOW_S:
                result.status = "skipped"
                result.reason = f"budget exhausted while the stack was set up ({result.setup_s:.2f} s)"
                return result
        measure_from, until = start + ramp, start + ramp + seconds
        out: list[Any] = []

        def run(w: Worker) -> tuple[int, str]:
            return drive(handles[w.index], offsets[w.index], depth, per, wl.block_size, measure_from, until)

        runner = threading.Thread(target=lambda: out.append(_collect(stack.run_on_workers, run)), daemon=True)
        start_thread(runner)
        time.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu0, t0 = _cpu(), time.perf_counter()
        time.sleep(max(0.0, until - time.perf_counter()))
        cpu1, t1 = _cpu(), time.perf_counter()
        runner.join(DRAIN_TIMEOUT_S + seconds + 5)
        if runner.is_alive() or not out:
            raise TimeoutError("the measuring threads did not finish")
        if isinstance(out[0], BaseException):
            raise out[0]
        ops = sum(n for n, _ in out[0])
        errors = [e for _, e in out[0] if e]
        result.ops, result.seconds = ops, t1 - t0
        result.iops = ops / result.seconds if result.seconds > 0 else 0.0
        result.cpu_us_per_io = (cpu1 - cpu0) / ops * 1e6 if ops else 0.0
        if errors:
            result.status, result.reason = "failed", errors[0]
        elif not ops:
            result.reason = "no read completed in the window"  # a measurement too: this mode starves here
        elif not wl.direct:
            result.reason = "buffered (the file system refuses O_DIRECT)"
    except Exception as exc:
        result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        t_close = time.perf_counter()
        stack.close()
        result.teardown_s = round(time.perf_counter() - t_close, 3)
    return result


def _collect(fn: Any, arg: Any) -> Any:
    try:
        return fn(arg)
    except BaseException as exc:  # handed to the measuring thread, which re-raises it
        return exc
