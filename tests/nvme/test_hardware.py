"""NVMe passthrough on a real (emulated) namespace, through the public API only.

``open_stack`` + ``Stack.open`` handles: the rings are the plan's (no private
ring per namespace).  Run with scripts/test-nvme.sh (one VM call).  Every
test writes its own data first; the namespace is a throw-away 1 GiB disk in
../shared/nvme-vm.  The IOPOLL block path is covered in test_stack_api.py.
"""

from __future__ import annotations

import mmap
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uringstack import open_stack
from uringstack.plugins.nvme_passthrough.device import NamespaceInUseError
from uringstack.plugins.nvme_passthrough.status import NvmeStatusError
from uringstack.probe.defects import POLLED_PASSTHROUGH
from uringstack.probe.model import Capabilities
from uringstack.ring.flags import SetupFlag
from uringstack.stack import Stack

from .conftest import BLK, NG

pytestmark = pytest.mark.nvme


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # One worker keeps the VM's emulated CPUs for the kernel and QEMU's device thread.
    with open_stack(overrides={"core.cores": [0]}) as s:
        yield s


def _pread_direct(lbas: list[int], lba_size: int) -> bytes:
    """Read LBAs through the block device with plain O_DIRECT preadv (independent of our rings)."""
    fd = os.open(BLK, os.O_RDONLY | os.O_DIRECT)
    out = bytearray()
    page = mmap.mmap(-1, mmap.PAGESIZE)
    try:
        for lba in lbas:
            n = os.preadv(fd, [memoryview(page)[:lba_size]], lba * lba_size)
            assert n == lba_size
            out += page[:lba_size]
    finally:
        os.close(fd)
        page.close()
    return bytes(out)


def _slices(buf: mmap.mmap, size: int) -> list[memoryview]:
    view = memoryview(buf)
    return [view[i : i + size] for i in range(0, len(buf), size)]


def test_identity_comes_from_the_probe_and_the_ring_from_the_plan(passthrough: None, caps: Capabilities) -> None:
    # iopoll = true polls, except where a known defect of this kernel rules polled passthrough out.
    ruled_out = caps.defect_ruling_out(POLLED_PASSTHROUGH)
    with open_stack(overrides={"core.cores": [0], "nvme_passthrough.iopoll": True}) as s, s.open(NG) as h:
        io: Any = h.io
        assert (io.nsid, io.block_device) == (1, "nvme0n1")
        assert h.block_size == int(Path("/sys/block/nvme0n1/queue/logical_block_size").read_text())
        assert h.size() == int(Path("/sys/block/nvme0n1/size").read_text()) * 512
        max_kb = int(Path("/sys/block/nvme0n1/queue/max_hw_sectors_kb").read_text())
        assert h.block_size <= io.max_transfer <= max_kb * 1024
        ring = s.workers[0].rings["passthrough"]
        assert h.ring is ring
        # Every ring the worker has is one the plan declared (no ring made at open).
        assert set(s.workers[0].rings) == {r.role for r in s.plan.workers[0].rings}
        want = SetupFlag.SQE128 | SetupFlag.CQE32
        assert (ring.flags & want) == want and not ring.dropped
        if ruled_out is None:
            assert ring.flags & SetupFlag.IOPOLL, ring.flags
        else:
            assert not ring.flags & SetupFlag.IOPOLL, ring.flags
            assert ruled_out.id in {v.plugin: v for v in s.plan.verdicts}["nvme_passthrough"].reason


def test_round_trip_10000_random_lbas(stack: Stack, passthrough: None) -> None:
    rng = random.Random(10000)
    with stack.open(NG) as h:
        assert h.io.in_use == []  # type: ignore[attr-defined]
        lba = h.block_size
        n = 10_000
        lbas = rng.sample(range(h.size() // lba), n)
        data = mmap.mmap(-1, n * lba)
        data[:] = rng.randbytes(len(data))
        assert h.write_many([x * lba for x in lbas], _slices(data, lba)) == [lba] * n
        h.fdatasync()
        back = mmap.mmap(-1, n * lba)
        assert h.read_many([x * lba for x in lbas], _slices(back, lba)) == [lba] * n
        assert back[:] == data[:]
        assert stack.workers[0].rings["passthrough"].inflight == 0
    # Compare with the block device's view of the same LBAs (a different kernel path).
    assert _pread_direct(lbas, lba) == data[:]


def test_pending_batches_and_multi_block_commands(stack: Stack, passthrough: None) -> None:
    with stack.open(NG) as h:
        size = 8192  # several blocks per command
        lba = h.block_size
        offsets = [0, 1000 * lba, 50_000 * lba, h.size() - size]
        data = mmap.mmap(-1, len(offsets) * size)
        data[:] = os.urandom(len(data))
        assert h.start_write_many(offsets, _slices(data, size)).wait() == [size] * len(offsets)
        back = mmap.mmap(-1, len(data))
        pending = h.start_read_many(offsets, _slices(back, size))
        assert pending.wait() == [size] * len(offsets)
        assert back[:] == data[:]
    assert _pread_direct(list(range(1000, 1000 + size // lba)), lba) == data[size : 2 * size]


def test_fsync_is_one_flush_on_the_passthrough_ring(stack: Stack, passthrough: None) -> None:
    ring = stack.workers[0].rings["passthrough"]
    with stack.open(NG) as h:
        before = ring.counters()["reaped"]
        h.fsync()
        assert ring.counters()["reaped"] == before + 1


def test_a_range_ending_past_the_namespace_is_out_of_range(stack: Stack, passthrough: None) -> None:
    with stack.open(NG) as h:
        lba = h.block_size
        buf = mmap.mmap(-1, 2 * lba)
        with pytest.raises(NvmeStatusError, match="LBA Out of Range") as info:
            h.write_from(buf, h.size() - lba)  # starts inside, ends one block outside
        assert info.value.lba == h.size() // lba - 1
        assert stack.workers[0].rings["passthrough"].inflight == 0


def test_writes_refused_on_namespace_used_as_swap(stack: Stack, passthrough: None) -> None:
    mkswap, swapon, swapoff = (shutil.which(t) for t in ("mkswap", "swapon", "swapoff"))
    if not (mkswap and swapon and swapoff):
        pytest.skip("mkswap/swapon/swapoff not installed")
    subprocess.run([mkswap, str(BLK)], check=True, capture_output=True)
    subprocess.run([swapon, str(BLK)], check=True)
    try:
        # The stack's report was taken before swapon: the check at open is fresh.
        with pytest.raises(NamespaceInUseError) as info:
            stack.open(NG)
        assert "nvme0n1 is active swap" in info.value.reasons, info.value.reasons
        with stack.open(NG, writable=False) as ro:  # reads still fine
            assert ro.read_into(mmap.mmap(-1, ro.block_size), 0) == ro.block_size
    finally:
        subprocess.run([swapoff, str(BLK)], check=True)
