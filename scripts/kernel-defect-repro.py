#!/usr/bin/env python3
"""Stress the polled-passthrough pattern that crashes Debian 12's 6.1 kernel (defect
``nvme-uring-cmd-iopoll-gpf``, see docs/nvme.md), WITHOUT the gate.

Run it only inside the throw-away NVMe VM: on an affected kernel it is meant to
oops the guest (``../shared/nvme-vm/run`` then exits 125 with the oops printed)::

    ../shared/nvme-vm/run -- .venv/bin/python scripts/kernel-defect-repro.py --iterations 3000

It goes through the public API: ``open_stack`` with ``[nvme_passthrough]
iopoll = true`` and ``[core] accept_kernel_defects`` naming the defect (the
override that bypasses the gate, and nothing else), then ``Stack.open`` of
the char device.  Each iteration submits *reads* polled NVMe Read commands
(``start_read_many``) and then a Flush (``fsync``) on the same IOPOLL ring,
the worker's passthrough ring (the Flush carries no data, so the 6.1 driver
sends it on an interrupt-driven queue while the ring still polls it), and
waits for all.  It
prints a progress line every ``--every`` iterations so the last line before an
oops tells how far it got.  Exit 0: the kernel survived every iteration.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from uringstack import open_stack
from uringstack.probe.defects import KNOWN_DEFECTS, POLLED_PASSTHROUGH, running_kernel
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.flags import SetupFlag

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
    overrides = {
        "core.cores": [0],
        "core.accept_kernel_defects": DEFECT_IDS,
        "nvme_passthrough.mode": "on",
        "nvme_passthrough.iopoll": True,
    }
    with open_stack(overrides=overrides) as stack, stack.open(args.device) as h:
        ring = stack.workers[0].rings["passthrough"]
        if not ring.flags & SetupFlag.IOPOLL or h.ring is not ring:
            print(f"repro: the passthrough ring does not poll here ({ring.flags!r}): nothing to reproduce")
            return 2
        lba = h.block_size
        bufs = [aligned_buffer(lba) for _ in range(args.reads)]
        offsets = [i * lba for i in range(args.reads)]
        t0 = time.monotonic()
        for i in range(1, args.iterations + 1):
            pending = h.start_read_many(offsets, bufs) if args.reads else None
            h.fsync()
            if pending is not None:
                pending.wait()
            if i % args.every == 0:
                print(f"repro: {i} iterations survived ({time.monotonic() - t0:.1f} s)", flush=True)
    print(f"repro: SURVIVED {args.iterations} iterations in {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
