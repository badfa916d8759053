"""Run the ladder and fio for one spec: the engine behind ``uringstack bench``.

Each rung gets its own stack (built from the rung's config overrides), one
handle per worker on the same file, and its hot loop on the pinned worker
threads; then fio runs the equivalent job; then every row gets its ratio to
fio's io_uring row.  Progress is reported through a callback so the CLI
decides how (or whether) to show it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import os
import platform
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uringstack.bench import fio as fio_mod
from uringstack.bench import syscalls
from uringstack.bench.api_loops import asyncio_batch_loop, asyncio_loop, handle_loop
from uringstack.bench.children import terminate_raises
from uringstack.bench.datafile import write_random_file
from uringstack.bench.interleave import (
    ORDER,
    REFERENCE,
    Slot,
    apply_ratios,
    combine,
    paired_medians,
    round_spec,
    run_rounds,
    slice_spec,
)
from uringstack.bench.ladder import Rung, select
from uringstack.bench.loops import uring_loop
from uringstack.bench.metrics import LoopResult, ModeResult, merge, result_from_loop, wait_loops
from uringstack.bench.prewarm import warm_device, warm_file
from uringstack.bench.processes import START_DELAY_S, run_processes
from uringstack.bench.spec import BenchSpec
from uringstack.bench.tool_loops import aiofiles_available, aiofiles_loop, thread_loop
from uringstack.bench.tuned import DEFAULT_TUNE_BUDGET_S, TUNED, calibrate, tuned_row, why_not
from uringstack.bench.tuned import summary as tuned_summary
from uringstack.probe.blockdev import device_size
from uringstack.probe.irq import device_irq_cpus

if TYPE_CHECKING:
    from uringstack.probe.model import Capabilities

SCHEMA = "uringstack.bench/2"
DEFAULT_DIR = ".uringstack-bench"

Tick = Callable[[], None]


def default_file(file_size: int) -> str:
    """A reusable data file under the current directory (so on cwd's file system, not tmpfs)."""
    return os.path.join(os.getcwd(), DEFAULT_DIR, f"data-{file_size}.bin")


def prepare_file(path: str, size: int, tick: Tick | None = None) -> bool:
    """Create *path* filled with non-zero data (every block allocated and written), unless a
    file of exactly *size* bytes is already there.  Returns True when it was written.
    A block device is used as it is (never written: see :func:`check_target`).

    An existing file of another size is refused (``ValueError``), not rewritten: it may be
    anyone's (``--file`` names any path), and a read benchmark must not destroy it.  Only
    the bench's own directory (:data:`DEFAULT_DIR`) is rewritten freely, where a file of the
    wrong size is one an interrupted run left."""
    if is_block_device(path):
        return False
    try:
        existing = os.stat(path).st_size
    except FileNotFoundError:
        existing = None
    if existing == size:
        return False
    if existing is not None and not bench_owned(path):
        raise ValueError(
            f"{path} exists and holds {existing} bytes, not --file-size {size}: the bench writes "
            f"its data only into a file it creates (or one under {DEFAULT_DIR}/); pass "
            f"--file-size {existing} to use this one as it is, or remove it"
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_random_file(path, size, tick)
    with contextlib.suppress(OSError):  # (no user xattrs there: a write workload then refuses it)
        os.setxattr(path, BENCH_XATTR, b"1")
    return True


BENCH_XATTR = "user.uringstack.bench"
"""Marks a data file :func:`prepare_file` created, which a write workload may write over."""


def bench_owned(path: str) -> bool:
    """Whether the bench made *path* (under :data:`DEFAULT_DIR`, or marked by :func:`prepare_file`)."""
    if os.path.basename(os.path.dirname(os.path.abspath(path))) == DEFAULT_DIR:
        return True
    try:
        return os.getxattr(path, BENCH_XATTR) == b"1"
    except OSError:
        return False


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def check_target(spec: BenchSpec) -> BenchSpec:
    """The spec to run on *spec.file*: a block device is benchmarked read-only, over at
    most its capacity.  Raises ValueError for a write workload on a block device, and
    for a character device (an NVMe ``/dev/ngXnY``: the file preparation would
    overwrite it, and only the passthrough rung could read it; the block namespace
    ``/dev/nvmeXnY`` is the target, its ``+passthrough`` rung reaches the char device)."""
    if is_char_device(spec.file):
        raise ValueError(
            f"{spec.file} is a character device: benchmark the block device instead (for an NVMe "
            "namespace /dev/nvmeXnY, whose +passthrough rung and fio io_uring_cmd job use its /dev/ngXnY)"
        )
    if not is_block_device(spec.file):
        if spec.wl.write and os.path.exists(spec.file) and not bench_owned(spec.file):
            # (prepare_file keeps a file of the right size as it is: for a read that is the
            # point, a write workload wrote over the caller's data)
            raise ValueError(
                f"{spec.file} exists and the bench did not create it: {spec.workload} would write over "
                f"its data; name a path that does not exist (the bench creates it) or one under {DEFAULT_DIR}/"
            )
        return spec
    if spec.wl.write:
        raise ValueError(
            f"{spec.file} is a block device: only read workloads run on one ({spec.workload} would overwrite its data)"
        )
    try:
        size = device_size(spec.file)
    except OSError as exc:
        raise ValueError(f"{spec.file}: cannot open the block device: {exc.strerror}") from exc
    if size < spec.block_size * spec.workers:
        raise ValueError(f"{spec.file}: {size} bytes is smaller than one block per worker")
    return dataclasses.replace(spec, file_size=min(spec.file_size, size))


def machine_info() -> dict[str, Any]:
    """Kernel, CPUs and the device backing the benchmark file, for the record."""
    info: dict[str, Any] = {
        "kernel": platform.release(),
        "nproc": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def device_of(path: str) -> dict[str, Any]:
    """The block device and file system type holding *path* (from /proc/self/mountinfo)."""
    st = os.stat(path)
    # a block device target is its own device (st_dev would be devtmpfs's)
    num = st.st_rdev if stat.S_ISBLK(st.st_mode) else st.st_dev
    dev = f"{os.major(num)}:{os.minor(num)}"
    out: dict[str, Any] = {"dev": dev}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if left.split()[2] == dev:
                    fstype, source = right.split()[:2]
                    out.update(fs=fstype, source=source)
        name = os.path.basename(os.path.realpath(f"/sys/dev/block/{dev}"))
        out["block"] = name
        for attr in ("queue/rotational", "queue/io_poll", "device/model"):
            for base in (f"/sys/block/{name}", f"/sys/dev/block/{dev}/.."):
                try:
                    with open(f"{base}/{attr}") as f:
                        out[attr.split("/")[-1]] = f.read().strip()
                    break
                except OSError:
                    continue
    except (OSError, IndexError, ValueError):
        pass
    return out


def choose_worker_cpus(spec: BenchSpec) -> tuple[BenchSpec, str]:
    """Pin workers where the file's device delivers its completion interrupts, unless
    ``--cpus`` chose; returns the spec to run and why.  fio is pinned to the same CPUs
    (fio_args), so the comparison stays like for like."""
    if spec.cpus:
        return spec, "given with --cpus"
    block = device_of(spec.file).get("block")
    irq = device_irq_cpus(str(block)) if block else []
    allowed = sorted(os.sched_getaffinity(0))
    preferred = [c for c in irq if c in allowed]
    if not preferred:
        return spec, "first allowed CPUs (the device's interrupt CPUs are unknown)"
    chosen = dataclasses.replace(spec, cpus=preferred + [c for c in allowed if c not in preferred])
    cpus = ",".join(map(str, preferred))
    return chosen, f"{block} completes its I/O with interrupts on CPU {cpus}: waiting there saves an IPI"


def _overrides(spec: BenchSpec, rung: Rung) -> dict[str, Any]:
    cpus = spec.worker_cpus()
    if len(set(cpus)) != len(cpus):
        raise ValueError(f"{spec.workers} workers need as many CPUs; this process may use {len(set(cpus))}")
    buf = -(-spec.block_size // 4096) * 4096
    return {
        "core.cores": cpus,
        "fallback.threads": spec.queue_depth,
        "fixedbuf.buffer_size": max(4096, buf),
        "fixedbuf.count": rung.buffer_count(spec.queue_depth),
        "fixedbuf.min_count": 1,
        **({"core.max_in_flight": spec.queue_depth} if rung.streamed else {}),
        **rung.overrides,
    }


_HANDLE_LOOPS: dict[str, Callable[..., LoopResult]] = {
    "api": handle_loop,
    "asyncio": asyncio_loop,
    "asyncio-batch": asyncio_batch_loop,
    "raw": uring_loop,
}


_RING_OF = {"iopoll": "iopoll", "nvme_passthrough": "passthrough"}  # backend -> worker ring role


def fixed_modes(caps: Capabilities | None) -> Capabilities:
    """*caps* (probed when None) with no tune measurement: a rung fixes its modes, and one left
    in ``auto`` (``+iopoll``) must measure the technique it names, whatever the tune cache says."""
    from uringstack.probe import probe
    from uringstack.probe.tuning import TuneState

    return (caps or probe()).model_copy(
        update={"tuning": TuneState(searched="not used by the ladder's rungs: each fixes its modes")}
    )


SQPOLL_REFERENCE = "fio io_uring" + fio_mod.SQPOLL
"""fio's SQPOLL job: the like-for-like reference of the rows whose ring ran with SQPOLL."""


@dataclasses.dataclass(frozen=True)
class Poller:
    """A selected rung whose plan puts SQPOLL on its worker's storage ring, and the CPU the
    plan pins that ring's poller to (None: unpinned, where the kernel puts it)."""

    rung: str
    cpu: int | None


def planned_poller(spec: BenchSpec, rungs: list[Rung], caps: Capabilities | None) -> Poller | None:
    """The first of *rungs* whose plan (the one :func:`run_mode` builds, as ``uringstack plan``
    prints it) puts SQPOLL on the first worker's storage ring, or None.  fio's SQPOLL job
    pins its SQ thread where that plan pins the poller."""
    from uringstack.config import ConfigError, load_config
    from uringstack.plan import make_plan
    from uringstack.types import PlanError

    for rung in rungs:
        if rung.overrides.get("sqpoll.mode", "auto") == "off":
            continue
        try:
            loaded = load_config(None, overrides=_overrides(spec, rung))
            plan = make_plan(fixed_modes(caps), loaded.config, loaded.plugin_manager)
        except (ConfigError, PlanError, ValueError):
            continue  # the row itself fails and says why
        ring = next((r for r in plan.workers[0].rings if r.role == "storage"), None) if plan.workers else None
        if ring is not None and "SQPOLL" in ring.flags:
            return Poller(rung.name, ring.sq_thread_cpu)
    return None


def _skipped(rung: Rung, why: str) -> ModeResult:
    return ModeResult(mode=rung.name, kind="uringstack", status="skipped", reason=why, api=rung.api)


def run_mode(
    spec: BenchSpec,
    rung: Rung,
    caps: Capabilities | None = None,
    tick: Tick | None = None,
    io: bool = True,
) -> ModeResult:
    """Build the rung's stack, run its loop on every worker, and return its row.

    Every loop runs on its worker's pinned thread, so the threads a row starts
    (the fallback plugin's pool, a ThreadPoolExecutor, aiofiles' executor)
    inherit the worker's CPU: one pinning rule for every row, and fio gets the
    same CPUs.  With ``io=False`` the stack and handles are built and torn
    down without any I/O (the start-up baseline of ``--syscalls``).
    """
    from uringstack.stack import open_stack

    if rung.loop == "aiofiles" and (why := aiofiles_available()):
        return _skipped(rung, why)
    stack = open_stack(caps=fixed_modes(caps), overrides=_overrides(spec, rung))
    try:
        if rung.requires:
            verdict = next((v for v in stack.plan.verdicts if v.plugin == rung.requires), None)
            if verdict is None or not verdict.enabled:
                return _skipped(rung, verdict.reason if verdict else f"plugin {rung.requires} is not loaded")
        handles = [
            stack.open(spec.file, direct=spec.direct, writable=spec.wl.write, **dict(rung.open_options))
            for _ in range(spec.workers)
        ]
        backend = handles[0].backend
        if rung.expect_backend and backend != rung.expect_backend:
            # "auto" let another backend take the file (e.g. its device cannot poll):
            # measuring that under this rung's name would mislabel it
            return _skipped(
                rung, f"{spec.file} is served by {backend}, not {rung.expect_backend} (see `uringstack plan`)"
            )
        if not io:
            return ModeResult(mode=rung.name, kind="uringstack", status="ok", details={"backend": backend})
        loops: list[concurrent.futures.Future[LoopResult]] = []
        for i, h in enumerate(handles):
            if rung.loop == "threadpool":
                loops.append(h.worker.submit(thread_loop, h, spec, i))
            elif rung.loop == "aiofiles":
                loops.append(h.worker.submit(aiofiles_loop, h, spec, i))
            else:
                if rung.loop == "raw" and not hasattr(h.io, "ring"):
                    raise RuntimeError(f"{rung.name}: the handle is served by {backend}, not an io_uring ring")
                loops.append(h.worker.submit(_HANDLE_LOOPS[rung.loop], h, spec, rung, i))
        merged = merge(wait_loops(loops, tick))
        row = result_from_loop(rung.name, merged)
        row.api = rung.api
        w0 = stack.describe()["workers"][0]
        # the ring the rung's handle runs on (IOPOLL and passthrough handles have their own)
        ring = w0["rings"].get(_RING_OF.get(backend, "storage"), {})
        row.details = {
            "backend": "thread pool (not uringstack)" if rung.api == "tool" else backend,
            "loop": rung.loop,
            "batch": spec.batch_size if rung.batched else 1,
            "ring_flags": ring.get("flags", []) if rung.api != "tool" else [],
            "registered_buffers": ring.get("registered_buffers", 0) if rung.api != "tool" else 0,
            "registered_files": ring.get("registered_files", 0) if rung.api != "tool" else 0,
            "workers": [{"cpu": w["cpu"], "affinity": w["affinity"]} for w in stack.describe()["workers"]],
        }
        return row
    finally:
        stack.close()


def _total_ratios(r: ModeResult, base: ModeResult) -> dict[str, float | None]:
    """IOPS, p50 and p99 of *r* over *base*'s (a run without --rounds: the totals)."""
    out: dict[str, float | None] = {"iops": r.iops / base.iops if base.iops else None, "p50": None, "p99": None}
    if r.lat_us and base.lat_us:
        for k in ("p50", "p99"):
            out[k] = r.lat_us[k] / base.lat_us[k] if base.lat_us.get(k) else None
    return out


def _ratios(rows: list[ModeResult], base_mode: str) -> None:
    base = next((r for r in rows if r.mode == base_mode and r.status == "ok"), None)
    if base is None:
        return
    for r in rows:
        if r.status != "ok":
            continue
        got = _total_ratios(r, base)
        r.ratio_iops, r.ratio_p50, r.ratio_p99 = got["iops"], got["p50"], got["p99"]


def vs_reference(r: ModeResult, ref: ModeResult, interleaved: bool) -> dict[str, Any]:
    """*r*'s IOPS, p50 and p99 over *ref*'s: with --rounds the medians of the per-round
    pairs (and the pairs, ``ratio_rounds``), else the totals'."""
    out: dict[str, Any] = {"reference": ref.mode}
    if interleaved:
        meds, pairs = paired_medians(r, ref)
        out.update({k: None if v is None else round(v, 4) for k, v in meds.items()}, ratio_rounds=pairs)
    else:
        out.update({k: None if v is None else round(v, 4) for k, v in _total_ratios(r, ref).items()})
    return out


def sqpoll_ratios(rows: list[ModeResult], reference: str, interleaved: bool) -> None:
    """Each ok row whose ring ran with SQPOLL, over fio's SQPOLL job *reference*, in
    ``details.vs_fio_sqpoll`` (the row's ``ratio_to_fio`` stays its ratio to fio io_uring)."""
    ref = next((r for r in rows if r.mode == reference and r.status == "ok"), None)
    if ref is None:
        return
    for r in rows:
        if r.status != "ok" or r.kind != "uringstack" or "SQPOLL" not in r.details.get("ring_flags", []):
            continue
        r.details["vs_fio_sqpoll"] = vs_reference(r, ref, interleaved)


ROW_REFERENCES = {"asyncio read": "aiofiles", "asyncio batch": "batched"}
"""Issue 14's row-against-row targets: a row and the row it is judged against (``details.vs_row``)."""


def row_ratios(rows: list[ModeResult], interleaved: bool) -> None:
    """Each ok row of :data:`ROW_REFERENCES` over its reference row, when that ran (ok), in
    ``details.vs_row``: with --rounds the medians of the pairs from the same round, as the
    ratios to fio (the two rows measured one after the other in a drifting host's windows
    would compare two hosts)."""
    by_mode = {r.mode: r for r in rows if r.status == "ok"}
    for mode, reference in ROW_REFERENCES.items():
        if mode in by_mode and reference in by_mode:
            by_mode[mode].details["vs_row"] = vs_reference(by_mode[mode], by_mode[reference], interleaved)


def summarize(rows: list[ModeResult], interleaved: bool = False) -> dict[str, Any]:
    """The best public-API row and its ratios to fio io_uring and to the fallback rung
    (*interleaved*: the median of the per-round pairs), plus the raw ring's ratio (not
    counted as a uringstack result: it is not the API)."""
    ours = [r for r in rows if r.kind == "uringstack" and r.api == "public" and r.status == "ok"]
    out: dict[str, Any] = {
        "best_mode": None,
        "best_iops": None,
        "best_vs_fio": None,
        "best_vs_fallback": None,
        "raw_ring_vs_fio": None,
    }
    raw = next((r for r in rows if r.api == "raw" and r.status == "ok"), None)
    if raw is not None and raw.ratio_iops is not None:
        out["raw_ring_vs_fio"] = round(raw.ratio_iops, 4)
    if not ours:
        return out
    best = max(ours, key=lambda r: r.iops)
    fallback = next((r for r in ours if r.mode == "fallback"), None)
    out.update(
        best_mode=best.mode,
        best_iops=round(best.iops, 1),
        best_vs_fio=None if best.ratio_iops is None else round(best.ratio_iops, 4),
        best_vs_fallback=None if fallback is None else vs_reference(best, fallback, interleaved)["iops"],
    )
    return out


def scaled_name(mode: str, workers: int) -> str:
    return f"{mode} x{workers}"


PROCESSES = " (processes)"
"""Suffix of a scaled row whose workers ran as processes (and of its key in ``scaling``)."""


def scaling(rows: list[ModeResult], workers: int) -> dict[str, float]:
    """IOPS with *workers* workers over the same row with the run's own worker count.

    Keyed by the row's mode; workers run as processes under ``MODE (processes)``."""
    by_mode = {r.mode: r for r in rows if r.status == "ok"}
    out: dict[str, float] = {}
    for r in rows:
        base = r.details.get("scaled_from")
        if r.status == "ok" and base in by_mode and by_mode[base].iops:
            key = base + PROCESSES if r.details.get("workers_as") == "processes" else base
            out[key] = round(r.iops / by_mode[base].iops, 4)
    return out


def _run_processes(spec: BenchSpec, rungs: list[Rung], on_step: Any) -> list[ModeResult]:
    """The scaled rows again with each worker a process of its own (threads of one process share a GIL)."""
    rows: list[ModeResult] = []
    for rung in rungs:
        if rung.api != "public" or spec.wl.sequential:
            continue
        name = scaled_name(rung.name, spec.workers) + PROCESSES
        if on_step:
            on_step(name, spec.ramp_s + spec.duration + START_DELAY_S)
        try:
            row = run_processes(spec, rung.name)
        except Exception as exc:
            row = ModeResult(mode=rung.name, kind="uringstack", api=rung.api, status="failed",
                             reason=f"{type(exc).__name__}: {exc}")  # fmt: skip
        row.details["scaled_from"] = rung.name
        row.details["workers_as"] = "processes"
        row.mode = name
        rows.append(row)
    return rows


def passthrough_char(spec: BenchSpec, caps: Capabilities | None) -> str | None:
    """The generic char device (``/dev/ngXnY``) of the NVMe namespace *spec.file*, as the probe
    matched it and could open it, or None (not an NVMe block namespace, or not usable)."""
    if caps is None or not is_block_device(spec.file):
        return None
    dev = caps.device_for_path(spec.file)
    if dev is None or not dev.generic_char or not dev.generic_char_accessible:
        return None
    return dev.generic_char


def fio_engines(spec: BenchSpec, caps: Capabilities | None = None, poller: Poller | None = None) -> list[str]:
    """io_uring always; libaio as a second reference for random reads; io_uring with
    --sqthread_poll=1 when a selected rung runs on an SQPOLL ring (*poller*: the +sqpoll
    rung's reference); io_uring with --hipri=1 where the file's device has poll queues
    (the +iopoll rung's reference); io_uring_cmd on the generic char device of an NVMe
    namespace read with O_DIRECT (the +passthrough rung's reference)."""
    engines = ["io_uring", "libaio"] if spec.workload == "randread" else ["io_uring"]
    if poller is not None:
        engines.append("io_uring" + fio_mod.SQPOLL)
    if spec.direct and device_of(spec.file).get("io_poll") == "1":
        engines.append("io_uring" + fio_mod.HIPRI)  # the device polls: fio's IOPOLL job too
    if spec.direct and not spec.wl.write and passthrough_char(spec, caps):
        engines.append(fio_mod.URING_CMD)
    return engines


def _run_rows(spec: BenchSpec, rungs: list[Rung], caps: Any, on_step: Any, tick: Tick | None) -> list[ModeResult]:
    rows: list[ModeResult] = []
    step = spec.ramp_s + spec.duration
    for rung in rungs:
        if on_step:
            on_step(rung.name, step)
        if not spec.direct:
            warm_file(spec.file, spec.file_size)  # others' I/O may have evicted some of it
        try:
            rows.append(run_mode(spec, rung, caps, tick))
        except Exception as exc:
            rows.append(
                ModeResult(
                    mode=rung.name,
                    kind="uringstack",
                    api=rung.api,
                    status="failed",
                    reason=f"{type(exc).__name__}: {exc}",
                )
            )
    return rows


def _run_fio_job(fio: str, job: BenchSpec, engine: str, tick: Tick | None, poller: Poller | None) -> ModeResult:
    """fio's job with *engine*; the SQPOLL job's SQ thread goes where *poller* says."""
    if engine.endswith(fio_mod.SQPOLL):
        return fio_mod.run_fio(fio, job, engine, tick, sqpoll_cpu=poller.cpu if poller else None)
    return fio_mod.run_fio(fio, job, engine, tick)


def _run_fio(
    spec: BenchSpec,
    fio: str,
    on_step: Any,
    tick: Tick | None,
    suffix: str = "",
    caps: Capabilities | None = None,
    poller: Poller | None = None,
) -> list[ModeResult]:
    rows = []
    for engine in fio_engines(spec, caps, poller):
        if on_step:
            on_step(f"fio {engine}{suffix}", spec.ramp_s + spec.duration)
        if not spec.direct:
            warm_file(spec.file, spec.file_size)
        job = spec
        if engine == fio_mod.URING_CMD:  # NVMe commands go to the namespace's char device
            job = dataclasses.replace(spec, file=passthrough_char(spec, caps) or spec.file)
        row = _run_fio_job(fio, job, engine, tick, poller)
        if suffix:
            row.mode += suffix
        rows.append(row)
    return rows


def interleave_usage(spec: BenchSpec, rounds: int, *, with_fio: bool, scale_workers: int, tuned: bool) -> None:
    """Raise ValueError when *rounds* > 1 cannot be run with the other options."""
    if rounds <= 1:
        return
    if not with_fio:
        raise ValueError("--rounds interleaves the rows with fio's job: it cannot run with --no-fio")
    if scale_workers or tuned:
        raise ValueError("--rounds does not combine with --scale-workers or --tuned (run those without it)")
    if spec.duration / rounds < 0.05:
        raise ValueError(f"--duration {spec.duration:g} over {rounds} rounds: slices under 0.05 s measure nothing")


def _interleaved(
    spec: BenchSpec,
    rungs: list[Rung],
    caps: Capabilities | None,
    fio: str,
    rounds: int,
    settle: float,
    on_step: Callable[[str, float], None] | None,
    tick: Tick | None,
    poller: Poller | None = None,
) -> tuple[list[ModeResult], dict[str, Any]]:
    """fio's jobs and the rows in *rounds* interleaved slices (:mod:`uringstack.bench.interleave`),
    after one sequential pass over the file (O_DIRECT runs: the device's cache then holds it
    for both sides) and *settle* seconds of fio's job, not counted (a device that bursts after
    idling drains its burst before round 0)."""
    one = slice_spec(spec, rounds)
    info: dict[str, Any] = {
        "rounds": rounds,
        "slice_s": one.duration,
        "ramp_s": one.ramp_s,
        "order": ORDER,
        "reference": REFERENCE,
        "device_warm": None,
        "settle": None,
    }
    if spec.direct:
        if on_step:
            on_step("device warm-up", 0.0)
        info["device_warm"] = warm_device(spec.file, spec.file_size)
    if settle > 0:
        if on_step:
            on_step("settle (fio)", settle)
        drained = fio_mod.run_fio(fio, dataclasses.replace(spec, duration=settle, ramp=0.0), "io_uring", tick)
        info["settle"] = {"seconds": settle, "status": drained.status, "iops": round(drained.iops, 1)}
    # libaio is a second reference only: the rounds keep to the jobs the ratios use
    engines = [e for e in fio_engines(spec, caps, poller) if e != "libaio"]

    def fio_slot(engine: str) -> Slot:
        job = one
        if engine == fio_mod.URING_CMD:
            job = dataclasses.replace(one, file=passthrough_char(spec, caps) or spec.file)

        def run(_rnd: int) -> ModeResult:
            if not spec.direct:
                warm_file(spec.file, spec.file_size)
            return _run_fio_job(fio, job, engine, tick, poller)

        return Slot(f"fio {engine}", run)

    def row_slot(rung: Rung) -> Slot:
        return Slot(rung.name, lambda rnd: _run_rows(round_spec(one, rnd), [rung], caps, None, tick)[0])

    slots = [*(fio_slot(e) for e in engines), *(row_slot(r) for r in rungs)]
    step = one.ramp_s + one.duration

    def on_slice(rnd: int, name: str) -> None:
        if on_step:
            on_step(f"{rnd + 1}/{rounds} {name}", step)

    done = run_rounds(slots, rounds, on_slice)
    info["sequence"] = done.sequence
    # the table lists the rows first, then fio's jobs, as a run without --rounds does
    names = [r.name for r in rungs] + [s.name for s in slots if s.name.startswith("fio ")]
    return [combine(n, done.slices[n]) for n in names if done.slices[n]], info


@terminate_raises()
def run_bench(
    spec: BenchSpec,
    modes: list[str] | None = None,
    *,
    with_fio: bool = True,
    with_syscalls: bool = False,
    scale_workers: int = 0,
    command: str = "",
    on_step: Callable[[str, float], None] | None = None,
    tick: Tick | None = None,
    tuned: bool = False,
    tune_budget: float = DEFAULT_TUNE_BUDGET_S,
    rounds: int = 1,
    settle: float = 0.0,
) -> dict[str, Any]:
    """Run every selected rung, then fio; return the JSON document (schema in docs/bench.md).

    *scale_workers* > 0 re-runs every row that worked (and fio) with that many
    workers; ``summary.scaling`` is each row's IOPS ratio to its own run.

    *tuned* first calibrates the file (``uringstack tune``, *tune_budget* seconds)
    and adds the ``tuned (auto)`` row (:mod:`uringstack.bench.tuned`);
    ``summary.tuned.vs_best`` is its IOPS over the best rung's.

    *rounds* > 1 interleaves: fio's jobs and the rows take turns in *rounds* slices of
    ``duration / rounds`` seconds, after *settle* seconds of fio's job not counted; each
    ratio is the median of the per-round paired ratios (:mod:`uringstack.bench.interleave`).

    *on_step(label, seconds)* is called before each step with its expected
    length; *tick* is called a few times a second while a step runs.
    """
    from uringstack.probe import probe

    spec.validate()
    spec = check_target(spec)
    interleave_usage(spec, rounds, with_fio=with_fio, scale_workers=scale_workers, tuned=tuned)
    rungs = select(modes)
    started = datetime.datetime.now(datetime.UTC)
    if on_step:
        on_step("preparing file", 0.0)
    created = prepare_file(spec.file, spec.file_size, tick)
    warm_s = None if spec.direct else warm_file(spec.file, spec.file_size)
    caps = probe()
    spec, cpu_choice = choose_worker_cpus(spec)
    step = spec.ramp_s + spec.duration
    calibration: dict[str, Any] | None = None
    if tuned and not why_not(spec):
        if on_step:
            on_step("uringstack tune", tune_budget)
        try:
            calibration = calibrate(spec, tune_budget)
        except Exception as exc:  # the ladder still runs; the tuned row says why it did not
            calibration = {"error": f"{type(exc).__name__}: {exc}"}
    fio_info: dict[str, Any] = {"available": False, "version": None, "reason": ""}
    fio = fio_mod.fio_path()
    if not with_fio:
        fio_info["reason"] = "--no-fio"
    elif fio is None:
        fio_info["reason"] = "fio is not installed (apt-get install -y fio)"
    else:
        fio_info.update(available=True, version=fio_mod.fio_version(fio))
    # a row on an SQPOLL ring gets fio's SQPOLL job beside the plain one, its poller pinned alike
    poller = planned_poller(spec, rungs, caps) if fio_info["available"] else None
    if fio_info["available"]:
        fio_info["sqpoll_job"] = None if poller is None else {"rung": poller.rung, "sq_thread_cpu": poller.cpu}
    interleave_info: dict[str, Any] | None = None
    scaled_spec = None
    if rounds > 1:
        if fio is None:
            raise ValueError(f"--rounds interleaves the rows with fio's job: {fio_info['reason']}")
        rows, interleave_info = _interleaved(spec, rungs, caps, fio, rounds, settle, on_step, tick, poller)
    else:
        rows = _run_rows(spec, rungs, caps, on_step, tick)
        if scale_workers and scale_workers != spec.workers:
            scaled_spec = dataclasses.replace(spec, workers=scale_workers)
            if len(scaled_spec.worker_cpus()) < scale_workers:
                raise ValueError(f"--scale-workers {scale_workers}: this process may use fewer CPUs")
            ok = [r for r in rungs if any(x.mode == r.name and x.status == "ok" for x in rows)]
            for row in _run_rows(scaled_spec, ok, caps, on_step, tick):
                row.details["scaled_from"] = row.mode
                row.mode = scaled_name(row.mode, scale_workers)
                rows.append(row)
            rows.extend(_run_processes(scaled_spec, ok, on_step))
        if fio is not None and with_fio:
            rows.extend(_run_fio(spec, fio, on_step, tick, caps=caps, poller=poller))
            if scaled_spec is not None:
                scaled_poller = planned_poller(scaled_spec, rungs, caps) if poller else None
                for row in _run_fio(scaled_spec, fio, on_step, tick, f" x{scale_workers}", caps, scaled_poller):
                    row.details["scaled_from"] = row.mode.removesuffix(f" x{scale_workers}")
                    rows.append(row)
    strace_info: dict[str, Any] = {
        "requested": with_syscalls,
        "available": syscalls.strace_path() is not None,
    }
    if with_syscalls:
        strace = syscalls.strace_path()
        if strace is None:
            strace_info["reason"] = "strace is not installed"
        else:
            for row in rows:
                if row.kind != "uringstack" or row.status != "ok" or "scaled_from" in row.details:
                    continue
                if on_step:
                    on_step(f"strace {row.mode}", 2 * step + 2)
                try:
                    row.syscalls_per_io, raw = syscalls.syscalls_per_io(strace, spec, row.mode)
                    row.details["strace"] = raw
                except (RuntimeError, ValueError) as exc:
                    row.details["strace_error"] = str(exc)
    if tuned:
        if on_step:
            on_step(TUNED, step)
        rows.append(tuned_row(spec, caps, tick, calibration))
    if interleave_info is not None:
        apply_ratios(rows)  # medians of the per-round paired ratios
    else:
        _ratios([r for r in rows if "scaled_from" not in r.details], "fio io_uring")
    sqpoll_ratios([r for r in rows if "scaled_from" not in r.details], SQPOLL_REFERENCE, interleave_info is not None)
    if scaled_spec is not None:
        scaled_rows = [r for r in rows if "scaled_from" in r.details]
        _ratios(scaled_rows, f"fio io_uring x{scale_workers}")
        sqpoll_ratios(scaled_rows, f"{SQPOLL_REFERENCE} x{scale_workers}", False)
    row_ratios([r for r in rows if "scaled_from" not in r.details], interleave_info is not None)
    summary = summarize([r for r in rows if "scaled_from" not in r.details], interleave_info is not None)
    if scaled_spec is not None:
        summary["scaling"] = {"workers": scale_workers, "ratios": scaling(rows, scale_workers)}
    if tuned:
        summary["tuned"] = tuned_summary(rows, summary["best_mode"], calibration)
    return {
        "schema": SCHEMA,
        "started_at": started.isoformat(timespec="seconds"),
        "command": command or "uringstack bench " + spec.workload,
        "spec": spec.to_json(),
        "file": {
            "path": spec.file,
            "created": created,
            "block_device": is_block_device(spec.file),
            # buffered runs read a hot page cache: the file is read once before the ladder,
            # and again before every row and fio job (cheap once hot)
            "prewarmed_s": None if warm_s is None else round(warm_s, 3),
            "device": device_of(spec.file),
        },
        "worker_cpus": {"cpus": spec.worker_cpus(), "reason": cpu_choice},
        "machine": machine_info(),
        "fio": fio_info,
        "strace": strace_info,
        # --rounds: how the rows and fio took turns, the device warm-up and the settle run
        "interleave": interleave_info,
        "results": [r.to_json(spec.block_size) for r in rows],
        "summary": summary,
    }
