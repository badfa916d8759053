#!/usr/bin/env python3
"""4 KiB random-read benchmark: uringstack's IOPOLL / passthrough handles vs fio, in the same run.

Meant to run inside ../shared/nvme-vm (one VM call)::

    ../shared/nvme-vm/run --timeout 600 -- "$PWD/.venv/bin/python" scripts/nvme-bench.py

Everything on the uringstack side goes through the public API: ``open_stack``
with config overrides, ``Stack.open`` handles, ``start_read_many`` batches
kept QD deep (waiting on the oldest batch), i.e. what an application gets.
Pairs (same device, block size, queue depth and duration):

- ``Stack.open("/dev/nvme0n1", direct=True)`` (iopoll backend, the worker's
  IOPOLL ring) vs fio ``--ioengine=io_uring --hipri=1 --direct=1``;
- ``Stack.open("/dev/ng0n1")`` (nvme_passthrough backend, interrupt-driven
  passthrough ring) vs fio ``--ioengine=io_uring_cmd --cmd_type=nvme``;
- the same with ``nvme_passthrough.iopoll = true`` (polled passthrough ring)
  vs fio ``io_uring_cmd --cmd_type=nvme --hipri=1``.

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
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.pending import Pending

BS = 4096
BLK = "/dev/nvme0n1"
NG = "/dev/ng0n1"


def fio_iops(engine_args: list[str], filename: str, qd: int, seconds: float) -> tuple[float, str]:
    """Run one fio job; return (read IOPS, the command line)."""
    cmd = [
        "fio", "--name=bench", f"--filename={filename}", "--rw=randread", f"--bs={BS}",
        f"--iodepth={qd}", f"--runtime={seconds}", "--time_based", "--numjobs=1",
        "--norandommap", "--randrepeat=0", "--output-format=json", "--size=1G",
        *engine_args,
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    data = json.loads(out[out.index("{") :])
    return float(data["jobs"][0]["read"]["iops"]), " ".join(cmd[1:])


def pipelined_reads(handle: Any, qd: int, seconds: float) -> float:
    """Random 4 KiB reads through *handle* with ``qd`` in flight; return IOPS.

    ``qd // chunk`` batches of ``chunk`` reads are in flight; each turn waits
    for the oldest batch and submits the next, reusing that batch's buffers
    (the kernel is done with them once its Pending completed).
    """
    chunk = max(1, qd // 4)
    nchunks = max(1, qd // chunk)
    rng = random.Random(1)
    units = handle.size() // BS
    # Offsets are drawn before the clock starts: fio does not pay for Python's RNG either.
    pool = [[rng.randrange(units) * BS for _ in range(chunk)] for _ in range(256)]
    sets = [[aligned_buffer(BS) for _ in range(chunk)] for _ in range(nchunks)]
    handle.read_many(pool[0], sets[0])  # warm-up (ring, page tables)
    inflight: deque[Pending] = deque()
    ios = i = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        if len(inflight) == nchunks:
            res = inflight.popleft().wait()
            if res.count(BS) != len(res):
                raise RuntimeError(f"short or failed reads: {res}")
            ios += len(res)
        inflight.append(handle.start_read_many(pool[i % len(pool)], sets[i % nchunks]))
        i += 1
    while inflight:
        ios += len(inflight.popleft().wait())
    return ios / (time.perf_counter() - start)


def ours(kind: str, qd: int, seconds: float) -> tuple[float, str]:
    """IOPS of one uringstack handle, and the backend that served it (checked, not assumed)."""
    overrides: dict[str, Any] = {"core.cores": [0]}
    if kind == "iopoll":
        overrides["iopoll.mode"] = "on"
        path, opts = BLK, {"direct": True}
    else:
        overrides["nvme_passthrough.mode"] = "on"
        overrides["nvme_passthrough.iopoll"] = kind == "passthrough+iopoll"
        overrides["nvme_passthrough.entries"] = max(128, 2 * qd)
        path, opts = NG, {}
    with open_stack(overrides=overrides) as stack, stack.open(path, writable=False, **opts) as h:
        want = "iopoll" if kind == "iopoll" else "nvme_passthrough"
        if h.backend != want:
            raise RuntimeError(f"{path} was served by {h.backend}, not {want}")
        return pipelined_reads(h, qd, seconds), h.backend


PAIRS = (
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
    ap.add_argument("--out", help="append a markdown section here")
    args = ap.parse_args()

    rows = []
    for qd in args.qd:
        for label, kind, engine, path in PAIRS:
            fio, cmd = fio_iops(engine, path, qd, args.seconds)
            our, _ = ours(kind, qd, args.seconds)
            rows.append((label, qd, fio, our, cmd))

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
        f"scripts/nvme-bench.py --seconds {args.seconds:g} --qd {' '.join(map(str, args.qd))}`",
        "",
        "| path | QD | fio IOPS | uringstack handle IOPS | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, qd, fio, mine, _ in rows:
        lines.append(f"| {name} | {qd} | {fio:,.0f} | {mine:,.0f} | {mine / fio:.2f} |")
    lines += ["", "fio jobs:", ""]
    lines += [f"- `fio {cmd}`" for _, _, _, _, cmd in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
