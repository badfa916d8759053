#!/usr/bin/env python3
"""4 KiB random-read benchmark: uringstack IOPOLL / passthrough vs fio, in the same run.

Meant to run inside ../shared/nvme-vm (one VM call)::

    ../shared/nvme-vm/run --timeout 600 -- "$PWD/.venv/bin/python" scripts/nvme-bench.py

Pairs (same device, block size, queue depth and duration):

- fio ``--ioengine=io_uring --hipri=1 --direct=1`` on /dev/nvme0n1
  vs :class:`uringstack.plugins.iopoll.poll.IopollFile` reads;
- fio ``--ioengine=io_uring_cmd --cmd_type=nvme --hipri=1`` on /dev/ng0n1
  vs :class:`uringstack.plugins.nvme_passthrough.device.PassthroughNamespace`
  reads (its ring uses IOPOLL because queue/io_poll is 1, hence hipri=1).

The emulated device says nothing about real NVMe speed: only the ratios
(ours / fio, measured back to back in the same VM) mean something.
"""

from __future__ import annotations

import argparse
import datetime
import json
import mmap
import os
import platform
import random
import subprocess
import time
from collections.abc import Callable

from uringstack.plugins.iopoll.poll import IopollFile
from uringstack.plugins.nvme_passthrough.device import PassthroughNamespace

BS = 4096


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


def timed(read_batch: Callable[[list[int]], None], nunits: int, seconds: float) -> float:
    """Call *read_batch* with fresh random unit numbers until *seconds* pass; return IOPS."""
    rng = random.Random(1)
    batch = 1024
    # Offsets are drawn before the clock starts: fio does not pay for Python's RNG either.
    pool = [[rng.randrange(nunits) for _ in range(batch)] for _ in range(16)]
    ios = 0
    read_batch(pool[0])  # warm-up (ring, page tables)
    start = time.perf_counter()
    end = start + seconds
    i = 0
    while time.perf_counter() < end:
        read_batch(pool[i % len(pool)])
        i += 1
        ios += batch
    return ios / (time.perf_counter() - start)


def ours_iopoll(qd: int, seconds: float) -> float:
    buf = mmap.mmap(-1, 1024 * BS)
    with IopollFile("/dev/nvme0n1", entries=max(64, qd)) as f:
        units = f.size_bytes // BS
        return timed(
            lambda u: f.read_into([x * BS for x in u], buf, BS, depth=qd, chunk=max(1, qd // 4)),
            units,
            seconds,
        )


def ours_passthrough(qd: int, seconds: float) -> float:
    buf = mmap.mmap(-1, 1024 * BS)
    with PassthroughNamespace("/dev/ng0n1", entries=max(64, qd)) as ns:
        per = BS // ns.lba_size
        assert ns.iopoll, ns.iopoll_reason
        return timed(
            lambda u: ns.read_blocks(
                [x * per for x in u], buf, per, depth=qd, chunk=max(1, qd // 4)
            ),
            ns.nblocks // per,
            seconds,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--qd", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--out", help="append a markdown section here")
    args = ap.parse_args()

    rows = []
    for qd in args.qd:
        fio_poll, cmd_poll = fio_iops(
            ["--ioengine=io_uring", "--hipri=1", "--direct=1"], "/dev/nvme0n1", qd, args.seconds
        )
        our_poll = ours_iopoll(qd, args.seconds)
        fio_pt, cmd_pt = fio_iops(
            ["--ioengine=io_uring_cmd", "--cmd_type=nvme", "--hipri=1"],
            "/dev/ng0n1",
            qd,
            args.seconds,
        )
        our_pt = ours_passthrough(qd, args.seconds)
        rows.append(("IOPOLL /dev/nvme0n1", qd, fio_poll, our_poll, cmd_poll))
        rows.append(("passthrough /dev/ng0n1", qd, fio_pt, our_pt, cmd_pt))

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
        "## NVMe: IOPOLL and passthrough vs fio (4 KiB random read)",
        "",
        f"Date: {stamp}. Machine: {machine}. {args.seconds:g} s per job, jobs back to back",
        "in one VM call. Emulated device: only the ratios mean anything.",
        "",
        'Command: `../shared/nvme-vm/run --timeout 600 -- "$PWD/.venv/bin/python" '
        f"scripts/nvme-bench.py --seconds {args.seconds:g} --qd {' '.join(map(str, args.qd))}`",
        "",
        "| path | QD | fio IOPS | uringstack IOPS | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, qd, fio, ours, _ in rows:
        lines.append(f"| {name} | {qd} | {fio:,.0f} | {ours:,.0f} | {ours / fio:.2f} |")
    lines += ["", "fio jobs:", ""]
    lines += [f"- `fio {cmd}`" for _, _, _, _, cmd in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
