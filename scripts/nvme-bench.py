#!/usr/bin/env python3
"""4 KiB random-read benchmark: uringstack's IOPOLL / passthrough handles vs fio, in the same run.

Meant to run inside ../shared/nvme-vm (one VM call)::

    ../shared/nvme-vm/run --timeout 600 -- "$PWD/.venv/bin/python" scripts/nvme-bench.py

With ``NVME_VM_MODPROBE="null_blk queue_mode=2 poll_queues=2 gb=1"`` the VM
also has ``/dev/nullb0`` (RAM-backed, with poll queues: no device cost), and
the IOPOLL pair runs there too (issue 14's target device).

Everything on the uringstack side goes through the public API: ``open_stack``
with config overrides, ``Stack.open`` handles, prepared batches
(``prepare_reads``, restarted with ``start``) kept QD deep (waiting on the
oldest batch), i.e. what an application gets.  Each row also gives CPU time
per read: fio's user + system time, and the bench process's
``time.process_time``.
Pairs (same device, block size, queue depth and duration):

- ``Stack.open("/dev/nvme0n1", direct=True)`` (iopoll backend, the worker's
  IOPOLL ring) vs fio ``--ioengine=io_uring --hipri=1 --direct=1``, and the
  same on ``/dev/nullb0`` where it exists;
- ``Stack.open("/dev/ng0n1")`` (nvme_passthrough backend, interrupt-driven
  passthrough ring) vs fio ``--ioengine=io_uring_cmd --cmd_type=nvme``;
- the same with ``nvme_passthrough.iopoll = true`` (polled passthrough ring)
  vs fio ``io_uring_cmd --cmd_type=nvme --hipri=1``.

A pair the plan rules out on this kernel (passthrough on 6.12: the
``nvme-uring-cmd-lost-writes`` gate, docs/nvme.md) is reported with the
plan's reason instead of measured.  ``--batch`` sets the reads per
``start_read_many`` (default: QD/4).

The emulated device says nothing about real NVMe speed: only the ratios
(ours / fio, measured back to back in the same VM) mean something.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import time
from collections import deque
from typing import Any

from uringstack import open_stack
from uringstack.config.errors import ConfigError
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.pending import Pending
from uringstack.types import PlanError

BS = 4096
BLK = "/dev/nvme0n1"
NG = "/dev/ng0n1"
NULLB = "/dev/nullb0"


def fio_iops(engine_args: list[str], filename: str, qd: int, seconds: float) -> tuple[float, float, str]:
    """Run one fio job; return (read IOPS, CPU µs per read (user + system), the command line)."""
    cmd = [
        "fio", "--name=bench", f"--filename={filename}", "--rw=randread", f"--bs={BS}",
        f"--iodepth={qd}", f"--runtime={seconds}", "--time_based", "--numjobs=1",
        "--norandommap", "--randrepeat=0", "--output-format=json", "--size=1G",
        *engine_args,
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{") :])["jobs"][0]
    ios = max(1, int(job["read"]["total_ios"]))
    cpu_us = (float(job["usr_cpu"]) + float(job["sys_cpu"])) / 100 * float(job["job_runtime"]) * 1000
    return float(job["read"]["iops"]), cpu_us / ios, " ".join(cmd[1:])


def pipelined_reads(handle: Any, qd: int, seconds: float, batch: int = 0) -> tuple[float, float]:
    """Random 4 KiB reads through *handle* with ``qd`` in flight; return (IOPS, CPU µs per read).

    ``qd // chunk`` prepared batches (``handle.prepare_reads``) of ``chunk``
    reads (*batch*, default QD/4) are in flight; each turn waits for the
    oldest batch and restarts it at new offsets (the kernel is done with its
    buffers once its Pending completed).  Waiting on the oldest reaps every
    batch completed meanwhile, so the turns after it restart those without a
    call into the ring: the queue is refilled as fio refills it, a batch
    instead of an op at a time.
    """
    chunk = min(qd, batch) if batch > 0 else max(1, qd // 4)
    nchunks = max(1, qd // chunk)
    rng = random.Random(1)
    units = handle.size() // BS
    # Offsets are drawn before the clock starts: fio does not pay for Python's RNG either.
    pool = [[rng.randrange(units) * BS for _ in range(chunk)] for _ in range(256)]
    sets = [[aligned_buffer(BS) for _ in range(chunk)] for _ in range(nchunks)]
    preps = [handle.prepare_reads(bufs) for bufs in sets]
    try:
        for prep in preps:  # warm-up (ring, page tables, the interpreter's caches)
            prep.run(pool[0])
        inflight: deque[Pending] = deque()
        ios = i = 0
        start, cpu0 = time.perf_counter(), time.process_time()
        end = start + seconds
        while time.perf_counter() < end:
            if len(inflight) == nchunks:
                res = inflight.popleft().wait()
                if res.count(BS) != len(res):
                    raise RuntimeError(f"short or failed reads: {res}")
                ios += len(res)
            inflight.append(preps[i % nchunks].start(pool[i % len(pool)]))
            i += 1
        while inflight:
            ios += len(inflight.popleft().wait())
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    finally:
        for prep in preps:
            prep.close()
    return ios / wall, cpu * 1e6 / max(1, ios)


def _overrides(kind: str, qd: int) -> dict[str, Any]:
    """The config of the stack that serves *kind* (its plugin required: ``mode = on``)."""
    overrides: dict[str, Any] = {"core.cores": [0]}
    if kind == "iopoll":
        overrides["iopoll.mode"] = "on"
    else:
        overrides["nvme_passthrough.mode"] = "on"
        overrides["nvme_passthrough.iopoll"] = kind == "passthrough+iopoll"
        overrides["nvme_passthrough.entries"] = max(128, 2 * qd)
    return overrides


def _opened(kind: str, path: str, qd: int) -> tuple[Any, Any]:
    """A stack that requires *kind*'s plugin and the handle on *path* it serves."""
    stack = open_stack(overrides=_overrides(kind, qd))
    try:
        return stack, stack.open(path, writable=False, **({"direct": True} if kind == "iopoll" else {}))
    except BaseException:
        stack.close()
        raise


def ours(kind: str, path: str, qd: int, seconds: float, batch: int = 0) -> tuple[float, float]:
    """(IOPS, CPU µs per read) of one uringstack handle (the backend that serves it is checked)."""
    stack, h = _opened(kind, path, qd)
    with stack, h:
        want = "iopoll" if kind == "iopoll" else "nvme_passthrough"
        if h.backend != want:
            raise RuntimeError(f"{path} was served by {h.backend}, not {want}")
        return pipelined_reads(h, qd, seconds, batch)


def ruled_out(kind: str, path: str, qd: int) -> str | None:
    """Why the plan refuses *kind* on *path* on this kernel (it is required: ``mode = on``), or None."""
    try:
        stack, h = _opened(kind, path, qd)
    except (PlanError, ConfigError) as exc:
        return str(exc).splitlines()[0]
    h.close()
    stack.close()
    return None


PAIRS = (
    ("IOPOLL /dev/nullb0", "iopoll", ["--ioengine=io_uring", "--hipri=1", "--direct=1"], NULLB),
    ("IOPOLL /dev/nvme0n1", "iopoll", ["--ioengine=io_uring", "--hipri=1", "--direct=1"], BLK),
    ("passthrough /dev/ng0n1", "passthrough", ["--ioengine=io_uring_cmd", "--cmd_type=nvme"], NG),
    (
        "passthrough+IOPOLL /dev/ng0n1",
        "passthrough+iopoll",
        ["--ioengine=io_uring_cmd", "--cmd_type=nvme", "--hipri=1"],
        NG,
    ),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--qd", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--batch", type=int, default=0, help="reads per start_read_many (default: QD/4)")
    ap.add_argument("--out", help="append a markdown section here")
    args = ap.parse_args()

    rows = []
    skipped: dict[str, str] = {}
    for qd in args.qd:
        for label, kind, engine, path in PAIRS:
            if not os.path.exists(path):
                skipped[label] = f"no {path} here"
                continue
            why = skipped.get(label) or ruled_out(kind, path, qd)
            if why is not None:
                skipped[label] = why
                continue
            fio, fio_cpu, cmd = fio_iops(engine, path, qd, args.seconds)
            our, our_cpu = ours(kind, path, qd, args.seconds, args.batch)
            rows.append((label, qd, fio, our, fio_cpu, our_cpu, cmd))

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    # The guest has no hostname of its own; /etc/hostname is the host's (shared root).
    try:
        with open("/etc/hostname") as fh:
            host = fh.read().strip()
    except OSError:
        host = platform.node()
    machine = (
        f"nvme-vm on host {host} (guest {platform.release()}, {os.cpu_count()} vCPU, QEMU TCG, "
        "emulated NVMe 1 GiB zeroed, 1 poll queue)"
    )
    lines = [
        "## NVMe: IOPOLL and passthrough handles (Stack.open) vs fio (4 KiB random read)",
        "",
        f"Date: {stamp}. Machine: {machine}. {args.seconds:g} s per job, jobs back to back",
        "in one VM call. Emulated device: only the ratios mean anything.",
        "",
        'Command: `../shared/nvme-vm/run --timeout 600 -- "$PWD/.venv/bin/python" '
        f"scripts/nvme-bench.py --seconds {args.seconds:g} --qd {' '.join(map(str, args.qd))}"
        + (f" --batch {args.batch}" if args.batch else "")
        + "`",
        "",
        "| path | QD | fio IOPS | uringstack handle IOPS | ratio | CPU µs/read fio | CPU µs/read ours |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, qd, fio, mine, fio_cpu, our_cpu, _ in rows:
        lines.append(f"| {name} | {qd} | {fio:,.0f} | {mine:,.0f} | {mine / fio:.2f} | {fio_cpu:.1f} | {our_cpu:.1f} |")
    lines += [f"| {name} | - | - | not run: {why} | - | - | - |" for name, why in skipped.items()]
    lines += ["", "fio jobs:", ""]
    lines += [f"- `fio {row[-1]}`" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
