#!/usr/bin/env python3
"""Stress the polled-passthrough pattern that crashes Debian 12's 6.1 kernel (defect
``nvme-uring-cmd-iopoll-gpf``, see docs/nvme.md), WITHOUT the gate.

Run it only inside the throw-away NVMe VM: on an affected kernel it is meant to
oops the guest (``../shared/nvme-vm/run`` then exits 125 with the oops printed)::

    ../shared/nvme-vm/run -- .venv/bin/python scripts/kernel-defect-repro.py --iterations 3000

Each iteration submits *reads* polled NVMe Read commands and then a Flush on the
same IOPOLL ring (the Flush carries no data, so the 6.1 driver sends it on an
interrupt-driven queue while the ring still polls it), and waits for all.  It
prints a progress line every ``--every`` iterations so the last line before an
oops tells how far it got.  Exit 0: the kernel survived every iteration.
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import time

from uringstack.plugins.nvme_passthrough.device import PassthroughNamespace
from uringstack.probe.defects import KNOWN_DEFECTS, POLLED_PASSTHROUGH, running_kernel

DEFECT_IDS = [d.id for d in KNOWN_DEFECTS if d.rules_out == POLLED_PASSTHROUGH]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="/dev/ng0n1")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--reads", type=int, default=8, help="polled reads in flight before each Flush")
    ap.add_argument("--every", type=int, default=25, help="progress line every N iterations")
    args = ap.parse_args()
    kernel = running_kernel()
    print(f"repro: kernel {kernel.release} (Debian {kernel.debian}), {args.iterations} iterations, "
          f"{args.reads} polled reads + 1 Flush each", flush=True)
    # The gate would make this ring interrupt-driven; the point here is to bypass it.
    with PassthroughNamespace(args.device, writable=True, iopoll=True, accept_kernel_defects=DEFECT_IDS) as ns:
        buf = mmap.mmap(-1, max(1, args.reads) * ns.lba_size)
        lbas = list(range(args.reads))
        t0 = time.monotonic()
        for i in range(1, args.iterations + 1):
            pending = ns.submit_reads(lbas, buf) if args.reads else None
            ns.flush()
            if pending is not None:
                ns.complete(pending)
            if i % args.every == 0:
                print(f"repro: {i} iterations survived ({time.monotonic() - t0:.1f} s)", flush=True)
    print(f"repro: SURVIVED {args.iterations} iterations in {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
