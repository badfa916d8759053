"""fio's equivalent job in the same run, and a parser for its JSON output.

The job mirrors the spec: same file, block size, queue depth, jobs (one per
worker), O_DIRECT, duration and warm-up, with latency percentiles of the
whole submit-to-completion time (``lat``, not only ``clat``) at exactly the
percentiles the uringstack rows report.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import time
from typing import Any

from uringstack.bench.children import run_child
from uringstack.bench.metrics import ModeResult
from uringstack.bench.spec import BenchSpec

PERCENTILES = ("50", "99", "99.9")
HIPRI = " hipri"  # engine suffix: the io_uring job with --hipri=1 (IOPOLL)
SQPOLL = " sqpoll"  # engine suffix: the io_uring job with --sqthread_poll=1 (the +sqpoll rung's reference)
URING_CMD = "io_uring_cmd"  # NVMe passthrough on /dev/ngXnY (the spec's file is the char device)


def fio_path() -> str | None:
    """The fio executable, or None when it is not installed."""
    return shutil.which("fio")


def fio_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def engine_name(engine: str) -> str:
    """fio's ``--ioengine`` of *engine* (the bench's name, with its HIPRI or SQPOLL suffix)."""
    return engine.removesuffix(HIPRI).removesuffix(SQPOLL)


def fio_args(spec: BenchSpec, engine: str, sqpoll_cpu: int | None = None) -> list[str]:
    """Command-line arguments (without the executable) of fio's equivalent job.

    The SQPOLL job (*engine* ending in :data:`SQPOLL`) pins fio's SQ thread to
    *sqpoll_cpu* (``--sqthread_poll_cpu``; None: where the kernel puts it), as the
    plan pins the stack's poller."""
    wl = spec.wl
    length = spec.region(0)[1]
    args = [
        f"--name=uringstack-{wl.name}",
        f"--filename={spec.file}",
        f"--rw={wl.fio_rw}",
        f"--bs={spec.block_size}",
        f"--iodepth={spec.queue_depth}",
        f"--ioengine={engine_name(engine)}",
        f"--size={length}",
        f"--numjobs={spec.workers}",
        "--group_reporting=1",
        "--time_based=1",
        f"--runtime={int(spec.duration * 1000)}ms",
        f"--ramp_time={int(spec.ramp_s * 1000)}ms",
        # uringstack draws offsets uniformly with replacement, as fio does without its random map
        "--norandommap=1",
        "--randrepeat=0",
        "--lat_percentiles=1",
        "--percentile_list=" + ":".join(PERCENTILES),
        "--output-format=json",
    ]
    if engine == URING_CMD:
        # NVMe Read/Write commands: no page cache, and a char device refuses O_DIRECT opens
        args.append("--cmd_type=nvme")
    else:
        args.append(f"--direct={int(spec.direct)}")
    # pinned like uringstack's workers, so both wait on the same CPUs
    args.append("--cpus_allowed=" + ",".join(str(c) for c in spec.worker_cpus()))
    if spec.workers > 1:
        args.append("--cpus_allowed_policy=split")
    if wl.sequential and spec.workers > 1:
        args.append(f"--offset_increment={length}")
    if wl.durable:
        args.append("--sync=dsync" if spec.durability == "dsync" else "--fdatasync=1")
    if engine.endswith(HIPRI):
        args.append("--hipri=1")  # polled completions, what the +iopoll rung does
    if engine.endswith(SQPOLL):
        # what the +sqpoll rung does: a kernel thread polls the SQ, on registered buffers (fio
        # registers the file itself with sqthread_poll).  fio 3.33 then never enters the kernel
        # to wait: its getevents spins on the CQ ring, so its job thread is busy as well
        args += ["--sqthread_poll=1", "--fixedbufs=1"]
        if sqpoll_cpu is not None:
            args.append(f"--sqthread_poll_cpu={sqpoll_cpu}")
    if not spec.direct:
        # fio drops the file's page cache before the job by default (invalidate=1); the
        # uringstack rows read the file the bench pre-read, so fio must keep it hot too
        args.append("--invalidate=0")
    if not wl.write and (engine == URING_CMD or _is_block_device(spec.file)):
        args.append("--readonly")
    return args


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _pct(lat: dict[str, Any], p: str) -> float | None:
    table = lat.get("percentile") or {}
    for key, value in table.items():
        if abs(float(key) - float(p)) < 1e-6:
            return float(value) / 1000.0
    return None


def parse_fio(doc: dict[str, Any], spec: BenchSpec, mode: str) -> ModeResult:
    """A result row from fio's ``--output-format=json`` document (group-reported job)."""
    jobs = doc.get("jobs") or []
    if not jobs:
        raise ValueError("fio JSON has no jobs")
    job = jobs[0]
    side = job["write" if spec.wl.write else "read"]
    runtime_s = float(side.get("runtime", job.get("job_runtime", 0))) / 1000.0
    ops = int(side.get("total_ios", 0))
    iops = float(side.get("iops", 0.0))
    lat = side.get("lat_ns") or {}
    lat_us: dict[str, float] = {}
    for name, p in (("p50", "50"), ("p99", "99"), ("p99_9", "99.9")):
        v = _pct(lat, p)
        if v is not None:
            lat_us[name] = v
    if lat.get("mean") is not None:
        lat_us["mean"] = float(lat["mean"]) / 1000.0
    details: dict[str, Any] = {}
    # completion latency (submit to completion, without the submit call): kept beside lat for
    # the record (the interleaved QD1 rounds show both); the ratios use lat, as the rows time it
    clat_ns = side.get("clat_ns") or {}
    clat = {name: v for name, p in (("p50", "50"), ("p99", "99")) if (v := _pct(clat_ns, p)) is not None}
    if clat:
        details["clat_us"] = clat
    sync = job.get("sync") or {}
    if spec.wl.durable and spec.durability == "fdatasync" and sync.get("lat_ns"):
        # fio reports the flush apart from the write; uringstack times the linked pair,
        # so add the flush's percentiles (an approximation: percentiles do not add exactly)
        for name, p in (("p50", "50"), ("p99", "99"), ("p99_9", "99.9")):
            v = _pct(sync["lat_ns"], p)
            if v is not None and name in lat_us:
                lat_us[name] += v
        details["latency"] = "write + fdatasync percentiles added"
    cpu = float(job.get("usr_cpu", 0.0)) + float(job.get("sys_cpu", 0.0))
    return ModeResult(
        mode=mode,
        kind="fio",
        status="ok" if ops > 0 else "failed",
        reason="" if ops > 0 else "fio completed no I/O",
        api="fio",
        ops=ops,
        bytes=int(side.get("io_bytes", 0)),
        seconds=runtime_s,
        iops=iops,
        mb_s=float(side.get("bw_bytes", 0.0)) / 1e6,
        lat_us=lat_us,
        cpu_pct=cpu,
        details={**details, "fio_version": doc.get("fio version", "")},
    )


def run_fio(path: str, spec: BenchSpec, engine: str, poll: Any = None, sqpoll_cpu: int | None = None) -> ModeResult:
    """Run fio's job with *engine*; *poll* is called about 5 times a second while it runs;
    *sqpoll_cpu*: see :func:`fio_args`."""
    mode = f"fio {engine}"
    cmd = [path, *fio_args(spec, engine, sqpoll_cpu)]
    cpu0, t0 = _children_cpu_s(), time.monotonic()
    proc = run_child(cmd, poll)  # stopped and reaped if the bench is interrupted
    cpu_s, wall_s = _children_cpu_s() - cpu0, time.monotonic() - t0
    out, err = proc.stdout, proc.stderr
    if proc.returncode != 0:
        return ModeResult(mode=mode, kind="fio", status="failed", reason=_failure(out, err))
    # fio may print warnings before the JSON document
    text = out[out.find("{") :] if "{" in out else out
    try:
        row = parse_fio(json.loads(text), spec, mode)
    except (ValueError, KeyError) as exc:
        return ModeResult(mode=mode, kind="fio", status="failed", reason=f"unreadable fio output: {exc}")
    row.details["command"] = " ".join(cmd)
    if engine.endswith(SQPOLL) and wall_s > 0:
        # fio's usr_cpu + sys_cpu are its job thread's (getrusage RUSAGE_THREAD), not its SQ
        # thread's, which the uringstack rows count (their process, every thread): so this
        # row's CPU is fio's whole process tree over its run (start-up and ramp included)
        row.details["fio_cpu_pct"] = round(row.cpu_pct, 1)
        row.details["cpu"] = "fio's processes and threads (its SQ thread included) over its whole run"
        row.cpu_pct = 100.0 * cpu_s / wall_s
    return row


def _failure(out: str, err: str) -> str:
    """Why fio failed, in one line: its stderr, else what it printed before its JSON document
    (with --output-format=json fio prints a job's error to stdout, then the JSON: the reason
    was the JSON's last two lines, "] }", until session 32)."""
    text = err.strip() or (out[: out.find("{")] if "{" in out else out).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines and "{" in out:
        try:
            jobs = json.loads(out[out.find("{") :]).get("jobs") or [{}]
            lines = [f"job error {jobs[0].get('error', '?')}"]
        except ValueError:
            pass
    return " ".join(lines[-2:])[:300] or "no output"


def _children_cpu_s() -> float:
    """User + system seconds of the reaped children (fio's processes and their threads)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
