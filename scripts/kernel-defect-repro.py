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
import mmap
import os
import random
import struct
import sys
import time

from uringstack import open_stack
from uringstack.probe.defects import (
    KNOWN_DEFECTS,
    LOST_WRITES_ID,
    POLLED_FILE_READS,
    POLLED_PASSTHROUGH,
    running_kernel,
)
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.flags import SetupFlag

DEFECT_IDS = [d.id for d in KNOWN_DEFECTS if d.rules_out == POLLED_PASSTHROUGH]
EOF_HOLE_ID = next(d.id for d in KNOWN_DEFECTS if d.rules_out == POLLED_FILE_READS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="/dev/ng0n1")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--reads", type=int, default=8, help="polled reads in flight before each Flush")
    ap.add_argument("--every", type=int, default=25, help="progress line every N iterations")
    ap.add_argument("--lost-writes", action="store_true", help=f"reproduce {LOST_WRITES_ID} instead")
    ap.add_argument("--block-device", default="/dev/nvme0n1", help="the namespace's block device (for --lost-writes)")
    ap.add_argument("--ops", type=int, default=10_000, help="Writes per batch (--lost-writes)")
    ap.add_argument("--rounds", type=int, default=4, help="batches, each on fresh LBAs (--lost-writes)")
    ap.add_argument("--chunk", type=int, default=0, help="at most this many Writes per write_many (0: all)")
    ap.add_argument(
        "--eof-hole", metavar="DIR", help=f"reproduce {EOF_HOLE_ID} in DIR (a file system on a pollable disk)"
    )
    args = ap.parse_args()
    if args.lost_writes:
        return lost_writes(args)
    if args.eof_hole:
        return eof_hole(args.eof_hole)
    kernel = running_kernel()
    print(
        f"repro: kernel {kernel.release} (Debian {kernel.debian}), {args.iterations} iterations, "
        f"{args.reads} polled reads + 1 Flush each",
        flush=True,
    )
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


EOF_HOLE_SIZE = 9_666_967  # (not a multiple of the block: the file ends inside one)


def eof_hole(directory: str) -> int:
    """O_DIRECT reads across the end of a file whose end lies in a hole, on the IOPOLL ring
    (the gate bypassed) and on the storage ring: exit 1 when a polled read comes back short."""
    kernel = running_kernel()
    print(f"repro: kernel {kernel.release} (Debian {kernel.debian}), {EOF_HOLE_ID}", flush=True)
    path = os.path.join(directory, "eof-hole")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, EOF_HOLE_SIZE)  # all hole: ext4 reads it without a bio
        os.fsync(fd)
    finally:
        os.close(fd)
    wrong = 0
    rings = [("iopoll", {"core.accept_kernel_defects": [EOF_HOLE_ID]}), ("storage", {"iopoll.mode": "off"})]
    for name, overrides in rings:
        with open_stack(overrides={"core.cores": [0], **overrides}) as stack, stack.open(path, direct=True) as h:
            if name == "iopoll" and h.backend != "iopoll":
                print(f"repro: {path} is not served by the IOPOLL ring ({h.backend_reason}): nothing to reproduce")
                return 2
            for offset, size in ((8 << 20, 4 << 20), (9_617_408, 100 << 10), (8 << 20, 1 << 20)):
                got = h.start_read_many([offset], [aligned_buffer(size)]).wait()[0]
                want = min(size, EOF_HOLE_SIZE - offset)
                wrong += got != want
                print(
                    f"repro: {h.backend:7s} read of {size} at {offset}: {got}"
                    + ("" if got == want else f" (want {want})")
                )
    os.unlink(path)
    print(f"repro: {'REPRODUCED' if wrong else 'not reproduced'} ({wrong} wrong read(s))", flush=True)
    return 1 if wrong else 0


TAG = struct.Struct("<8sIIQ")  # magic, round, batch position, LBA: the head of every block written
MAGIC = b"LOSTWRIT"


def _runs(idx: list[int]) -> list[str]:
    out: list[list[int]] = []
    for i in idx:
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return [f"{a}-{b} ({b - a + 1})" for a, b in out]


def _what(block: bytes) -> str:
    if block == bytes(len(block)):
        return "zeros"
    if block[:8] == MAGIC:
        _, rnd, pos, _lba = TAG.unpack_from(block)
        return f"an older write (round {rnd}, position {pos})"
    return "other data"


def lost_writes(args: argparse.Namespace) -> int:
    kernel = running_kernel()
    print(
        f"repro: kernel {kernel.release} (Debian {kernel.debian}), {args.rounds} rounds of {args.ops} "
        f"Writes{f' in batches of {args.chunk}' if args.chunk else ' in one batch'}",
        flush=True,
    )
    overrides = {"core.cores": [0], "core.accept_kernel_defects": [LOST_WRITES_ID]}
    rng = random.Random(612)
    lost_rounds = 0
    with open_stack(overrides=overrides) as stack, stack.open(args.device) as h:
        bs, n = h.block_size, args.ops
        sq = stack.workers[0].rings["passthrough"].sq_entries
        chunk = args.chunk or n
        fd = os.open(args.block_device, os.O_RDONLY | os.O_DIRECT)
        page = mmap.mmap(-1, mmap.PAGESIZE)
        try:
            for rnd in range(1, args.rounds + 1):
                lbas = rng.sample(range(h.size() // bs), n)
                data = mmap.mmap(-1, n * bs)
                data[:] = rng.randbytes(len(data))
                for i, lba in enumerate(lbas):
                    TAG.pack_into(data, i * bs, MAGIC, rnd, i, lba)
                view = memoryview(data)
                for a in range(0, n, chunk):
                    part = range(a, min(n, a + chunk))
                    res = h.write_many([lbas[i] * bs for i in part], [view[i * bs : (i + 1) * bs] for i in part])
                    assert res == [bs] * len(part), res
                h.fdatasync()
                lost: list[int] = []
                kinds: dict[str, int] = {}
                for i, lba in enumerate(lbas):
                    assert os.preadv(fd, [memoryview(page)[:bs]], lba * bs) == bs
                    if page[:bs] != data[i * bs : (i + 1) * bs]:
                        lost.append(i)
                        kind = _what(page[:bs])
                        kinds[kind] = kinds.get(kind, 0) + 1
                view.release()
                data.close()
                if lost:
                    lost_rounds += 1
                    print(
                        f"repro: round {rnd}: {len(lost)} of {n} Writes LOST (each reported success); "
                        f"batch positions {', '.join(_runs(lost)[:12])}; the SQ has {sq} entries; "
                        f"on the namespace instead: {kinds}",
                        flush=True,
                    )
                else:
                    print(f"repro: round {rnd}: all {n} Writes on the namespace", flush=True)
        finally:
            os.close(fd)
            page.close()
    print(f"repro: writes lost in {lost_rounds} of {args.rounds} rounds", flush=True)
    return 1 if lost_rounds else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
