"""Prove the gate: the pattern that oopses Debian 12's 6.1 runs many times, safely, through the public API.

Without the gate, ``scripts/kernel-defect-repro.py`` (polled reads plus a Flush
on one IOPOLL passthrough ring) killed the 6.1 guest within ~25-125
iterations in every measured run (docs/nvme.md).  Here the same work runs
1,000 times and 300 write+fsync rounds, both through ``Stack.open`` with
``[nvme_passthrough] iopoll = true`` (reads, writes and the Flush share the
worker's passthrough ring): on 6.1 the gate makes that ring interrupt-driven
and the kernel survives; on kernels without the defect the ring really
polls, so the same test shows they survive the pattern itself.
"""

from __future__ import annotations

import time

import pytest

from uringstack import open_stack
from uringstack.probe.defects import POLLED_PASSTHROUGH
from uringstack.probe.model import Capabilities
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.flags import SetupFlag

from .conftest import NG

pytestmark = pytest.mark.nvme

NAMESPACE_ROUNDS = 1000
STACK_ROUNDS = 300
BS = 4096


def test_reads_and_flush_on_one_ring_1000_times(passthrough: None, caps: Capabilities) -> None:
    ruled_out = caps.defect_ruling_out(POLLED_PASSTHROUGH)
    with open_stack(overrides={"core.cores": [0], "nvme_passthrough.iopoll": True}) as s, s.open(NG) as h:
        ring = s.workers[0].rings["passthrough"]
        polled = bool(ring.flags & SetupFlag.IOPOLL)
        assert polled == (ruled_out is None), (ring.flags, caps.kernel_defects)
        if ruled_out is not None:
            assert ruled_out.id in {v.plugin: v for v in s.plan.verdicts}["nvme_passthrough"].reason
        assert h.ring is ring  # the Flush goes to the same ring as the reads
        lba = h.block_size
        bufs = [aligned_buffer(lba) for _ in range(8)]
        offsets = [i * lba for i in range(8)]
        t0 = time.monotonic()
        for _ in range(NAMESPACE_ROUNDS):
            pending = h.start_read_many(offsets, bufs)
            h.fsync()
            assert pending.wait() == [lba] * 8
        assert ring.inflight == 0
    print(f"{NAMESPACE_ROUNDS} rounds of 8 reads + Flush, polled={polled}: {time.monotonic() - t0:.1f} s")


def test_stack_iopoll_true_write_fsync_300_times(passthrough: None, caps: Capabilities) -> None:
    ruled_out = caps.defect_ruling_out(POLLED_PASSTHROUGH)
    with open_stack(overrides={"core.cores": [0], "nvme_passthrough.iopoll": True}) as s, s.open(NG) as h:
        ring = s.workers[0].rings["passthrough"]
        assert bool(ring.flags & SetupFlag.IOPOLL) == (ruled_out is None)
        buf = aligned_buffer(BS)
        for i in range(STACK_ROUNDS):
            buf[:8] = i.to_bytes(8, "little")
            assert h.write_many([i % 64 * BS], [buf]) == [BS]
            h.fsync()
        assert ring.inflight == 0
        back = aligned_buffer(BS)
        h.read_into(back, (STACK_ROUNDS - 1) % 64 * BS)
        assert back[:8] == (STACK_ROUNDS - 1).to_bytes(8, "little")
