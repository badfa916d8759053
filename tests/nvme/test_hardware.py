"""IOPOLL and NVMe passthrough on a real (emulated) NVMe namespace.

Run with scripts/test-nvme.sh (one VM call).  Every test writes its own data
first; the namespace is a throw-away 1 GiB disk in ../shared/nvme-vm.
"""

from __future__ import annotations

import mmap
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from uringstack.flags import SetupFlag
from uringstack.plugins.iopoll.poll import IopollFile, device_supports_poll
from uringstack.plugins.nvme_passthrough.device import NamespaceInUseError, PassthroughNamespace
from uringstack.plugins.nvme_passthrough.status import NvmeStatusError
from uringstack.probe.defects import POLLED_PASSTHROUGH
from uringstack.probe.model import Capabilities

from .conftest import BLK, NG

pytestmark = pytest.mark.nvme


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


def test_iopoll_ring_really_polls_and_reaps() -> None:
    ok, why = device_supports_poll(BLK)
    assert ok, why
    n, size = 256, 4096
    rng = random.Random(7)
    offsets = [o * size for o in rng.sample(range(1 << 18), n)]  # first 1 GiB in 4 KiB units
    data = mmap.mmap(-1, n * size)
    data[:] = rng.randbytes(n * size)
    with IopollFile(BLK, writable=True) as f:
        assert f.ring.flags & SetupFlag.IOPOLL, f.ring.flags
        assert all(flag != SetupFlag.IOPOLL for flag, _ in f.ring.dropped)
        f.write_from(offsets, data, size, depth=16, chunk=4)
        back = mmap.mmap(-1, n * size)
        f.read_into(offsets, back, size, depth=32, chunk=8)
        counters = f.ring.counters()
        assert counters["submitted"] == counters["reaped"] == 2 * n, counters
        assert f.ring.inflight == 0
        assert back[:] == data[:]
    # The data really is on the device, as another path sees it.
    fd = os.open(BLK, os.O_RDONLY | os.O_DIRECT)
    try:
        page = mmap.mmap(-1, size)
        assert os.preadv(fd, [page], offsets[17]) == size
        assert page[:] == data[17 * size : 18 * size]
    finally:
        os.close(fd)


def test_passthrough_ring_flags_and_identity(passthrough: None, caps: Capabilities) -> None:
    # Polled by default, except where a known defect of this kernel rules polled passthrough out.
    ruled_out = caps.defect_ruling_out(POLLED_PASSTHROUGH)
    with PassthroughNamespace(NG) as ns:
        assert ns.nsid == 1
        assert ns.block_device == "nvme0n1"
        assert ns.lba_size == int(Path("/sys/block/nvme0n1/queue/logical_block_size").read_text())
        assert ns.size_bytes == int(Path("/sys/block/nvme0n1/size").read_text()) * 512
        want = SetupFlag.SQE128 | SetupFlag.CQE32 | SetupFlag.IOPOLL
        if ruled_out is None:
            assert ns.iopoll and (ns.ring.flags & want) == want and not ns.ring.dropped
        else:
            assert not ns.iopoll and not ns.ring.flags & SetupFlag.IOPOLL, ns.ring.flags
            assert ruled_out.id in ns.iopoll_reason


def test_round_trip_10000_random_lbas(passthrough: None) -> None:
    rng = random.Random(10000)
    with PassthroughNamespace(NG, writable=True) as ns:
        assert ns.in_use == [], ns.in_use
        n = 10_000
        lbas = rng.sample(range(ns.nblocks), n)
        data = mmap.mmap(-1, n * ns.lba_size)
        data[:] = rng.randbytes(len(data))
        ns.write_blocks(lbas, data, depth=32, chunk=16)
        ns.flush()
        back = mmap.mmap(-1, n * ns.lba_size)
        ns.read_blocks(lbas, back, depth=32, chunk=16)
        assert back[:] == data[:]
        assert ns.ring.inflight == 0
        lba_size = ns.lba_size
    # Compare with the block device's view of the same LBAs (a different kernel path).
    assert _pread_direct(lbas, lba_size) == data[:]


def test_async_batch_form_and_multi_block_commands(passthrough: None) -> None:
    with PassthroughNamespace(NG, writable=True) as ns:
        nblocks = 4096 // ns.lba_size * 2  # 8 KiB per command
        lbas = [0, 1000, 50_000, ns.nblocks - nblocks]
        data = mmap.mmap(-1, len(lbas) * nblocks * ns.lba_size)
        data[:] = os.urandom(len(data))
        ns.complete(ns.submit_writes(lbas, data, nblocks))
        back = mmap.mmap(-1, len(data))
        pending = ns.submit_reads(lbas, back, nblocks)
        ns.complete(pending)
        assert back[:] == data[:]
        size = ns.lba_size
    first = _pread_direct(list(range(1000, 1000 + nblocks)), size)
    assert first == data[nblocks * size : 2 * nblocks * size]


def test_flush(passthrough: None) -> None:
    with PassthroughNamespace(NG, writable=True) as ns:
        before = ns.ring.counters()["reaped"]
        ns.flush()
        assert ns.ring.counters()["reaped"] == before + 1
    with PassthroughNamespace(NG) as ro, pytest.raises(OSError, match="read-only"):
        ro.flush()


def test_out_of_range_lba_is_a_decoded_nvme_error(passthrough: None) -> None:
    with PassthroughNamespace(NG, writable=True) as ns:
        buf = mmap.mmap(-1, 3 * ns.lba_size)
        with pytest.raises(NvmeStatusError) as info:
            ns.read_blocks([ns.nblocks], buf)
        err = info.value
        assert err.status_name == "LBA Out of Range"
        assert err.nvme_status.sct == 0 and err.nvme_status.sc == 0x80
        assert err.lba == ns.nblocks and err.errno == 5
        assert "LBA Out of Range" in str(err) and str(NG) in str(err)
        # In a batch: the bad command is named, the good ones still completed.
        buf[:] = b"\xaa" * len(buf)
        ns.write_blocks([5, 6, 7], buf)
        with pytest.raises(NvmeStatusError) as info:
            ns.read_blocks([5, ns.nblocks + 10, 7], buf)
        assert info.value.index == 1 and info.value.lba == ns.nblocks + 10
        # A range that starts inside and ends outside is out of range too.
        with pytest.raises(NvmeStatusError, match="LBA Out of Range"):
            ns.write_blocks([ns.nblocks - 1], buf, nblocks=2)
        assert ns.ring.inflight == 0


def test_writes_refused_on_mounted_namespace(passthrough: None, mounted_ext4: Path) -> None:
    with pytest.raises(NamespaceInUseError) as info:
        PassthroughNamespace(NG, writable=True)
    assert any(f"mounted at {mounted_ext4}" in r for r in info.value.reasons), info.value.reasons
    assert "allow_writes_in_use" in str(info.value)

    # Read-only use is always allowed: the ext4 superblock magic is at byte 1024 + 56.
    with PassthroughNamespace(NG) as ro:
        per = max(1, 4096 // ro.lba_size)
        buf = mmap.mmap(-1, per * ro.lba_size)
        ro.read_blocks([0], buf, per)
        assert buf[1024 + 56 : 1024 + 58] == b"\x53\xef"

    # Forced: writes allowed.  Rewrite a block with its own content so the fs stays intact.
    with PassthroughNamespace(NG, writable=True, allow_writes_in_use=True) as rw:
        assert rw.in_use
        blk = mmap.mmap(-1, rw.lba_size)
        rw.read_blocks([2], blk)
        rw.write_blocks([2], blk)
        rw.flush()


def test_writes_refused_on_namespace_used_as_swap(passthrough: None) -> None:
    mkswap, swapon, swapoff = (shutil.which(t) for t in ("mkswap", "swapon", "swapoff"))
    if not (mkswap and swapon and swapoff):
        pytest.skip("mkswap/swapon/swapoff not installed")
    subprocess.run([mkswap, str(BLK)], check=True, capture_output=True)
    subprocess.run([swapon, str(BLK)], check=True)
    try:
        with pytest.raises(NamespaceInUseError) as info:
            PassthroughNamespace(NG, writable=True)
        assert "nvme0n1 is in use as swap" in info.value.reasons
        with PassthroughNamespace(NG) as ro:  # reads still fine
            ro.read_blocks([0], mmap.mmap(-1, ro.lba_size))
    finally:
        subprocess.run([swapoff, str(BLK)], check=True)
