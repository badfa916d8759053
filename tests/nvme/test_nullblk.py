"""IOPOLL on /dev/nullb0 (null_blk with poll queues, loaded at boot by scripts/test-nvme.sh).

Far faster than the emulated NVMe, so these tests push more I/O through a
polled ring.  Loaded without ``memory_backed=1`` it keeps no data (reads
return whatever the driver hands back), so the tests check that every
command was submitted, polled and reaped with its full length, not contents.  Where the kernel's null_blk cannot poll
(5.10), the same I/O must still work, on the storage ring, for the reason
the probe gives.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from uringstack import open_stack
from uringstack.probe.model import Capabilities
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.flags import SetupFlag

pytestmark = pytest.mark.nvme

BS = 4096


def test_stack_serves_nullb_by_polling_where_the_probe_says_so(caps: Capabilities, nullb: Path) -> None:
    dev = caps.device_for_path(str(nullb))
    assert dev is not None
    rng = random.Random(12)
    with open_stack(overrides={"core.cores": [0]}) as s, s.open(nullb, direct=True) as h:
        assert h.backend == ("iopoll" if dev.io_poll else "uring"), (h.backend, dev.io_poll_reason)
        ring = s.workers[0].rings["iopoll" if dev.io_poll else "storage"]
        assert h.ring is ring and bool(ring.flags & SetupFlag.IOPOLL) == dev.io_poll, ring.flags
        before = ring.counters()["reaped"]
        n = 2048
        offsets = [u * BS for u in rng.sample(range(h.size() // BS), n)]
        bufs = [aligned_buffer(BS) for _ in range(n)]
        for b in bufs:
            b[:] = rng.randbytes(BS)
        assert h.write_many(offsets, bufs) == [BS] * n
        back = [aligned_buffer(BS) for _ in range(n)]
        assert h.read_many(offsets, back) == [BS] * n
        assert ring.counters()["reaped"] - before >= 2 * n
        assert ring.inflight == 0
