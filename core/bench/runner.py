"""Run the ladder and fio for one spec: the engine behind ``uringstack bench``.

Each rung gets its own stack (built from the rung's config overrides), one
handle per worker on the same file, and its hot loop on the pinned worker
threads; then fio runs the equivalent job; then every row gets its ratio to
fio's io_uring row.  Progress is reported through a callback so the CLI
decides how (or whether) to show it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import os
import platform
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uringstack.bench import fio as fio_mod
from uringstack.bench import syscalls
from uringstack.bench.children import terminate_raises
from uringstack.bench.ladder import Rung, select
from uringstack.bench.loops import pending_loop, thread_loop, uring_loop
from uringstack.bench.metrics import LoopResult, ModeResult, merge, result_from_loop
from uringstack.bench.spec import BenchSpec
from uringstack.probe.irq import device_irq_cpus

if TYPE_CHECKING:
    from uringstack.probe.model import Capabilities

SCHEMA = "uringstack.bench/1"
DEFAULT_DIR = ".uringstack-bench"

Tick = Callable[[], None]


def default_file(file_size: int) -> str:
    """A reusable data file under the current directory (so on cwd's file system, not tmpfs)."""
    return os.path.join(os.getcwd(), DEFAULT_DIR, f"data-{file_size}.bin")


def prepare_file(path: str, size: int, tick: Tick | None = None) -> bool:
    """Create *path* filled with non-zero data (every block allocated and written), unless a
    file of exactly *size* bytes is already there.  Returns True when it was (re)written."""
    try:
        if os.stat(path).st_size == size:
            return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    chunk = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        done = 0
        while done < size:
            n = os.write(fd, chunk[: min(len(chunk), size - done)])
            done += n
            if tick is not None and done % (64 << 20) == 0:
                tick()
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


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
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
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
        "fixedbuf.count": spec.queue_depth,
        "fixedbuf.min_count": 1,
        **rung.overrides,
    }


def _wait(futures: list[concurrent.futures.Future[LoopResult]], tick: Tick | None) -> list[LoopResult]:
    while True:
        _, pending = concurrent.futures.wait(futures, timeout=0.2)
        if not pending:
            return [f.result() for f in futures]
        if tick is not None:
            tick()


def run_mode(
    spec: BenchSpec,
    rung: Rung,
    caps: Capabilities | None = None,
    tick: Tick | None = None,
    io: bool = True,
) -> ModeResult:
    """Build the rung's stack, run its loop on every worker, and return its row.

    With ``io=False`` the stack and handles are built and torn down without
    any I/O (the start-up baseline of ``--syscalls``).
    """
    from uringstack.stack import open_stack

    stack = open_stack(caps=caps, overrides=_overrides(spec, rung))
    try:
        if rung.requires:
            verdict = next((v for v in stack.plan.verdicts if v.plugin == rung.requires), None)
            if verdict is None or not verdict.enabled:
                why = verdict.reason if verdict else f"plugin {rung.requires} is not loaded"
                return ModeResult(mode=rung.name, kind="uringstack", status="skipped", reason=why)
        handles = [stack.open(spec.file, direct=spec.direct, **dict(rung.open_options)) for _ in range(spec.workers)]
        backend = handles[0].backend
        if rung.expect_backend and backend != rung.expect_backend:
            # "auto" let another backend take the file (e.g. its device cannot poll):
            # measuring that under this rung's name would mislabel it
            return ModeResult(
                mode=rung.name,
                kind="uringstack",
                status="skipped",
                reason=f"{spec.file} is served by {backend}, not {rung.expect_backend} (see `uringstack plan`)",
            )
        if not io:
            return ModeResult(mode=rung.name, kind="uringstack", status="ok", details={"backend": backend})
        loops: list[concurrent.futures.Future[LoopResult]] = []
        for i, h in enumerate(handles):
            if rung.loop == "threads":
                loops.append(h.worker.submit(thread_loop, h, spec, i))
            elif rung.loop == "uring":
                if not hasattr(h.io, "ring"):
                    raise RuntimeError(f"{rung.name}: the handle is served by {backend}, not an io_uring ring")
                loops.append(h.worker.submit(uring_loop, h, spec, rung, i))
            else:
                loops.append(h.worker.submit(pending_loop, h, spec, rung, i))
        merged = merge(_wait(loops, tick))
        row = result_from_loop(rung.name, merged)
        w0 = stack.describe()["workers"][0]
        ring = w0["rings"].get("storage", {})
        row.details = {
            "backend": backend,
            "batch": spec.batch_size if rung.batched else 1,
            "ring_flags": ring.get("flags", []),
            "registered_buffers": ring.get("registered_buffers", 0),
            "registered_files": ring.get("registered_files", 0),
            "workers": [{"cpu": w["cpu"], "affinity": w["affinity"]} for w in stack.describe()["workers"]],
        }
        return row
    finally:
        stack.close()


def _ratios(rows: list[ModeResult]) -> None:
    base = next((r for r in rows if r.mode == "fio io_uring" and r.status == "ok"), None)
    if base is None:
        return
    for r in rows:
        if r.status != "ok":
            continue
        r.ratio_iops = r.iops / base.iops if base.iops else None
        if r.lat_us and base.lat_us:
            r.ratio_p50 = r.lat_us["p50"] / base.lat_us["p50"] if base.lat_us.get("p50") else None
            r.ratio_p99 = r.lat_us["p99"] / base.lat_us["p99"] if base.lat_us.get("p99") else None


def summarize(rows: list[ModeResult]) -> dict[str, Any]:
    """The best uringstack mode and its ratios to fio io_uring and to the fallback."""
    ours = [r for r in rows if r.kind == "uringstack" and r.status == "ok"]
    out: dict[str, Any] = {
        "best_mode": None,
        "best_iops": None,
        "best_vs_fio": None,
        "best_vs_fallback": None,
    }
    if not ours:
        return out
    best = max(ours, key=lambda r: r.iops)
    fallback = next((r for r in ours if r.mode == "fallback"), None)
    out.update(
        best_mode=best.mode,
        best_iops=round(best.iops, 1),
        best_vs_fio=None if best.ratio_iops is None else round(best.ratio_iops, 4),
        best_vs_fallback=round(best.iops / fallback.iops, 4) if fallback and fallback.iops else None,
    )
    return out


def fio_engines(spec: BenchSpec) -> list[str]:
    """io_uring always; libaio as a second reference for random reads."""
    return ["io_uring", "libaio"] if spec.workload == "randread" else ["io_uring"]


@terminate_raises()
def run_bench(
    spec: BenchSpec,
    modes: list[str] | None = None,
    *,
    with_fio: bool = True,
    with_syscalls: bool = False,
    on_step: Callable[[str, float], None] | None = None,
    tick: Tick | None = None,
) -> dict[str, Any]:
    """Run every selected rung, then fio; return the JSON document (schema in docs/bench.md).

    *on_step(label, seconds)* is called before each step with its expected
    length; *tick* is called a few times a second while a step runs.
    """
    from uringstack.probe import probe

    spec.validate()
    rungs = select(modes)
    started = datetime.datetime.now(datetime.UTC)
    if on_step:
        on_step("preparing file", 0.0)
    created = prepare_file(spec.file, spec.file_size, tick)
    caps = probe()
    spec, cpu_choice = choose_worker_cpus(spec)
    rows: list[ModeResult] = []
    step = spec.ramp_s + spec.duration
    for rung in rungs:
        if on_step:
            on_step(rung.name, step)
        try:
            rows.append(run_mode(spec, rung, caps, tick))
        except Exception as exc:
            rows.append(
                ModeResult(
                    mode=rung.name,
                    kind="uringstack",
                    status="failed",
                    reason=f"{type(exc).__name__}: {exc}",
                )
            )
    fio_info: dict[str, Any] = {"available": False, "version": None, "reason": ""}
    fio = fio_mod.fio_path()
    if not with_fio:
        fio_info["reason"] = "--no-fio"
    elif fio is None:
        fio_info["reason"] = "fio is not installed (apt-get install -y fio)"
    else:
        fio_info.update(available=True, version=fio_mod.fio_version(fio))
        for engine in fio_engines(spec):
            if on_step:
                on_step(f"fio {engine}", step)
            rows.append(fio_mod.run_fio(fio, spec, engine, tick))
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
                if row.kind != "uringstack" or row.status != "ok":
                    continue
                if on_step:
                    on_step(f"strace {row.mode}", 2 * step + 2)
                try:
                    row.syscalls_per_io, raw = syscalls.syscalls_per_io(strace, spec, row.mode)
                    row.details["strace"] = raw
                except (RuntimeError, ValueError) as exc:
                    row.details["strace_error"] = str(exc)
    _ratios(rows)
    return {
        "schema": SCHEMA,
        "started_at": started.isoformat(timespec="seconds"),
        "command": "uringstack bench " + spec.workload,
        "spec": spec.to_json(),
        "file": {"path": spec.file, "created": created, "device": device_of(spec.file)},
        "worker_cpus": {"cpus": spec.worker_cpus(), "reason": cpu_choice},
        "machine": machine_info(),
        "fio": fio_info,
        "strace": strace_info,
        "results": [r.to_json() for r in rows],
        "summary": summarize(rows),
    }
