"""IOPOLL and passthrough through the public API: ``open_stack()`` and ``Stack.open`` handles.

Runs inside ../shared/nvme-vm with the rest of tests/nvme (scripts/test-nvme.sh).
Each test writes the data it reads back.
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uringstack import open_stack
from uringstack.cli.probe_report import FeatureCheck
from uringstack.errors import AlignmentError, DeviceInUseError, UringIOError
from uringstack.plugins.nvme_passthrough.device import NamespaceInUseError
from uringstack.plugins.nvme_passthrough.status import NvmeStatusError
from uringstack.probe.defects import POLLED_FILE_READS, POLLED_PASSTHROUGH
from uringstack.probe.model import Capabilities
from uringstack.ring.buffers import aligned_buffer
from uringstack.stack import Stack
from uringstack.types import PlanError

from .conftest import BLK, NG

pytestmark = pytest.mark.nvme

BS = 4096


def _stack(**overrides: Any) -> Stack:
    # One worker keeps the VM's two emulated CPUs for the kernel and QEMU's device thread.
    return open_stack(overrides={"core.cores": [0], **overrides})


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with _stack() as s:
        yield s


def _pread(path: Path, offsets: list[int], size: int) -> list[bytes]:
    """The same ranges read with plain O_DIRECT preadv on the block device (another kernel path)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    page = mmap.mmap(-1, size)
    try:
        out = []
        for off in offsets:
            assert os.preadv(fd, [page], off) == size
            out.append(bytes(page))
        return out
    finally:
        os.close(fd)
        page.close()


def _buffers(rng: random.Random, n: int, size: int = BS) -> list[mmap.mmap]:
    bufs = []
    for _ in range(n):
        b = aligned_buffer(size)
        b[:] = rng.randbytes(size)
        bufs.append(b)
    return bufs


def test_plan_and_describe_show_iopoll_and_passthrough_rings(stack: Stack, passthrough_check: FeatureCheck) -> None:
    verdicts = {v.plugin: v for v in stack.plan.verdicts}
    assert verdicts["iopoll"].enabled, verdicts["iopoll"].reason
    planned = {r.role: r for r in stack.plan.workers[0].rings}
    assert "IOPOLL" in planned["iopoll"].flags and "IOPOLL" in planned["iopoll"].required
    targets = {t.target: t for t in stack.plan.targets}
    assert targets[str(BLK)].backend == "iopoll", targets[str(BLK)]  # direct=True in the plan's dry run
    # describe() reads the flags back from the rings the kernel created.
    rings = stack.describe()["workers"][0]["rings"]
    assert "IOPOLL" in rings["iopoll"]["flags"] and not rings["iopoll"]["dropped"]
    assert "IOPOLL" not in rings["storage"]["flags"]
    # Passthrough follows the probe's verdict for this kernel (5.10: no SQE128, no /dev/ng0n1).
    assert verdicts["nvme_passthrough"].enabled == passthrough_check.usable, verdicts["nvme_passthrough"]
    if not passthrough_check.usable:
        assert "passthrough" not in planned and "passthrough" not in rings
        return
    assert "/dev/ng0n1" in verdicts["nvme_passthrough"].reason
    assert {"SQE128", "CQE32"} <= set(planned["passthrough"].required)
    assert targets[str(NG)].backend == "nvme_passthrough", targets[str(NG)]
    assert {"SQE128", "CQE32"} <= set(rings["passthrough"]["flags"]) and not rings["passthrough"]["dropped"]


def test_ng_round_trip_through_filehandle(stack: Stack, passthrough: None) -> None:
    rng = random.Random(1)
    with stack.open(NG) as h:
        assert h.backend == "nvme_passthrough" and h.direct
        assert h.size() == int((Path("/sys/block/nvme0n1/size")).read_text()) * 512
        ring = stack.workers[0].rings["passthrough"]
        assert h.io.ring is ring  # type: ignore[attr-defined]  # the worker's ring, not one per handle
        units = h.size() // BS
        n = 2000
        offsets = [u * BS for u in rng.sample(range(units), n)]
        data = _buffers(rng, n)
        assert h.write_many(offsets, data) == [BS] * n
        h.fdatasync()
        back = [aligned_buffer(BS) for _ in range(n)]
        assert h.read_many(offsets, back) == [BS] * n
        assert all(b[:] == d[:] for b, d in zip(back, data, strict=True))
        # A buffer larger than one command may carry is split and reported as one op.
        big = aligned_buffer(4 << 20)
        big[:] = rng.randbytes(len(big))
        assert h.io.max_transfer < len(big)  # type: ignore[attr-defined]
        assert h.write_from(big, 64 << 20) == len(big)
        big_back = aligned_buffer(len(big))
        assert h.read_into(big_back, 64 << 20) == len(big)
        assert big_back[:] == big[:]
        # write_durable: Write linked to a Flush, both complete.
        one = _buffers(rng, 1)[0]
        assert h.write_durable(one, 8 * BS) == BS
        # sync="dsync": Writes with FUA, no Flush.
        fua = _buffers(rng, 1)[0]
        assert h.write_durable(fua, 9 * BS, sync="dsync") == BS
        assert ring.inflight == 0
    # The block device sees the same bytes.
    sample = random.Random(2).sample(range(n), 50)
    assert _pread(BLK, [offsets[i] for i in sample], BS) == [bytes(data[i]) for i in sample]
    assert _pread(BLK, [8 * BS, 9 * BS], BS) == [bytes(one), bytes(fua)]


def test_a_durable_write_longer_than_the_ring_flushes_after_every_write(
    stack: Stack, passthrough: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More Write commands than the ring's entries cannot stay one link chain (the kernel
    ends a chain at each submission): the 64 MiB write's chain was cut after 128
    commands and its Flush ran before most Writes completed (session 28). Such a
    write is not linked; its Flush waits for everything before it (IO_DRAIN)."""
    from uringstack.ring.flags import SqeFlag

    with stack.open(NG) as h:
        ring = stack.workers[0].rings["passthrough"]
        commands = (64 << 20) // h.io.max_transfer  # type: ignore[attr-defined]
        assert commands + 1 > ring.sq_entries, "the write fits one chain: it tests nothing here"
        seen: list[list[int]] = []
        submit = ring.submit_columns

        def spy(columns: Any, n: int, *args: Any, **kwargs: Any) -> Any:
            seen.append(columns.get("sqe_flags")[:n])
            return submit(columns, n, *args, **kwargs)

        monkeypatch.setattr(ring, "submit_columns", spy)
        big = aligned_buffer(64 << 20)
        big[:] = random.Random(3).randbytes(len(big))
        assert h.write_durable(big, 128 << 20) == len(big)
        [flags] = seen
        assert not any(f & int(SqeFlag.IO_LINK) for f in flags)
        assert flags[-1] & int(SqeFlag.IO_DRAIN) and not any(f & int(SqeFlag.IO_DRAIN) for f in flags[:-1])
        # a short one stays linked
        seen.clear()
        assert h.write_durable(_buffers(random.Random(4), 1)[0], 10 * BS) == BS
        assert seen == [[int(SqeFlag.IO_LINK), 0]]
    assert _pread(BLK, [128 << 20], 1 << 20) == [bytes(big[: 1 << 20])]


def test_ng_asyncio_gather_1000_reads(stack: Stack, passthrough: None) -> None:
    rng = random.Random(3)
    with stack.open(NG) as h:
        offsets = [u * BS for u in rng.sample(range(h.size() // BS), 1000)]
        data = _buffers(rng, 1000)
        h.write_many(offsets, data)

        async def main() -> list[bytes]:
            return await asyncio.wait_for(asyncio.gather(*(h.read(BS, off) for off in offsets)), 120)

        got = asyncio.run(main())
        assert got == [bytes(d) for d in data]
        assert stack.workers[0].rings["passthrough"].inflight == 0


def test_block_device_with_passthrough_auto_is_served_by_passthrough(stack: Stack, passthrough: None) -> None:
    with stack.open(BLK, passthrough="auto") as h:
        assert h.backend == "nvme_passthrough"
        assert h.io.char_path == str(NG)  # type: ignore[attr-defined]
        buf = _buffers(random.Random(4), 1)[0]
        h.write_from(buf, 3 * BS)
        back = aligned_buffer(BS)
        h.read_into(back, 3 * BS)
        assert back[:] == buf[:]
    with stack.open(BLK, passthrough="on", writable=False) as h:
        assert h.backend == "nvme_passthrough"
    # Without the option a block device keeps the block path.
    with stack.open(BLK, direct=False) as h:
        assert h.backend == "uring"


def test_block_device_direct_is_served_by_iopoll(stack: Stack) -> None:
    rng = random.Random(5)
    worker = stack.workers[0]
    iopoll, storage = worker.rings["iopoll"], worker.rings["storage"]
    with stack.open(BLK, direct=True) as h:
        assert h.backend == "iopoll"
        before, storage_before = iopoll.counters(), storage.counters()
        n = 256
        offsets = [u * BS for u in rng.sample(range(h.size() // BS), n)]
        data = _buffers(rng, n)
        assert h.write_many(offsets, data) == [BS] * n
        h.fdatasync()  # on the storage ring: the IOPOLL ring refuses fsync
        back = [aligned_buffer(BS) for _ in range(n)]
        assert h.read_many(offsets, back) == [BS] * n
        assert all(b[:] == d[:] for b, d in zip(back, data, strict=True))
        after = iopoll.counters()
        assert after["submitted"] - before["submitted"] == 2 * n, (before, after)
        assert after["reaped"] - before["reaped"] == 2 * n, (before, after)
        assert storage.counters()["reaped"] - storage_before["reaped"] == 1
        # Write then flush across the two rings: flush only after the write's CQE.
        one = _buffers(rng, 1)[0]
        assert h.write_durable(one, 5 * BS) == BS
        assert storage.counters()["reaped"] - storage_before["reaped"] == 2
        # sync="dsync": one RWF_DSYNC write on the storage ring (not a polled request).
        dsync = _buffers(rng, 1)[0]
        assert h.write_durable(dsync, 6 * BS, sync="dsync") == BS
        assert storage.counters()["reaped"] - storage_before["reaped"] == 3
        back = aligned_buffer(BS)
        assert h.read_into(back, 6 * BS) == BS and back[:] == dsync[:]
        # done() makes progress on a polled ring (a CQ peek alone never would).
        pending = h.start_read_many([0], [aligned_buffer(BS)])
        for _ in range(100_000):
            if pending.done():
                break
        assert pending.done() and pending.wait() == [BS]

        # asyncio: completions come from the poller task, not an eventfd.
        async def main() -> list[bytes]:
            return await asyncio.wait_for(asyncio.gather(*(h.read(BS, off) for off in offsets)), 120)

        assert asyncio.run(main()) == [bytes(d) for d in data]
        assert iopoll.inflight == 0 and storage.inflight == 0
        with pytest.raises(AlignmentError, match=r"offset 100 is not a multiple of (4096|512)"):
            h.read_into(aligned_buffer(BS), 100)
    assert _pread(BLK, [5 * BS], BS) == [bytes(one)]


def test_out_of_range_lba_through_the_handle(stack: Stack, passthrough: None) -> None:
    with stack.open(NG) as h:
        end = h.size()
        buf = aligned_buffer(BS)
        with pytest.raises(NvmeStatusError) as info:
            h.read_into(buf, end)
        err = info.value
        assert isinstance(err, UringIOError) and err.errno == errno.EIO
        assert err.status_name == "LBA Out of Range" and err.lba == end // h.block_size
        # In a batch: the Pending reports -EIO for the bad op, the good ones completed.
        pending = h.start_read_many([0, end + 10 * BS, BS], [buf, aligned_buffer(BS), aligned_buffer(BS)])
        with pytest.raises(NvmeStatusError, match="LBA Out of Range"):
            pending.wait()
        assert pending.results == [BS, -errno.EIO, BS]  # type: ignore[attr-defined]
        with pytest.raises(AlignmentError, match="offset 100"):
            h.read_into(buf, 100)
        # The error names the op, not the command: an op over one command's limit is several
        # commands, and "command 2 of the batch" named an op a 2-op batch did not have
        big = aligned_buffer(2 * h.io.max_transfer)  # type: ignore[attr-defined]
        with pytest.raises(NvmeStatusError, match="op 1 of the batch") as info:
            h.read_many([0, end + 10 * BS], [big, aligned_buffer(BS)])
        assert info.value.index == 1
    with stack.open(NG, writable=True) as h:
        # A split write whose second command fails past the end: the first is on the device,
        # and transferred says so (it said 0), as write(2) would
        first = h.io.max_transfer  # type: ignore[attr-defined]
        crossing = aligned_buffer(first + BS)
        with pytest.raises(NvmeStatusError) as info:
            h.write_many([end - first], [crossing])
        assert info.value.transferred == first
    with pytest.raises(PlanError, match="only passthrough"):
        stack.open(NG, passthrough="off")


def test_passthrough_ring_with_iopoll(passthrough: None, caps: Capabilities) -> None:
    ruled_out = caps.defect_ruling_out(POLLED_PASSTHROUGH)
    with _stack(**{"nvme_passthrough.iopoll": True}) as s:
        ring = s.workers[0].rings["passthrough"]
        flags = s.describe()["workers"][0]["rings"]["passthrough"]["flags"]
        if ruled_out is not None:
            # The gate: on this kernel iopoll = true gets an interrupt-driven ring, and the plan says why.
            assert "IOPOLL" not in flags
            assert ruled_out.id in {v.plugin: v for v in s.plan.verdicts}["nvme_passthrough"].reason
        else:
            assert "IOPOLL" in flags
        rng = random.Random(6)
        with s.open(NG) as h:
            offsets = [u * BS for u in rng.sample(range(h.size() // BS), 300)]
            data = _buffers(rng, 300)
            h.write_many(offsets, data)
            h.fsync()
            # The Flush shares the passthrough ring (polled only where the gate allows
            # it); the worker has no ring the plan did not declare.
            assert h.ring is ring
            assert set(s.workers[0].rings) == {r.role for r in s.plan.workers[0].rings}
            h.write_durable(data[0], offsets[0])
            back = [aligned_buffer(BS) for _ in range(300)]
            h.read_many(offsets, back)
            assert all(b[:] == d[:] for b, d in zip(back, data, strict=True))

            async def main() -> list[bytes]:
                return await asyncio.wait_for(asyncio.gather(*(h.read(BS, off) for off in offsets)), 120)

            assert asyncio.run(main()) == [bytes(d) for d in data]
            assert ring.inflight == 0


def test_file_on_ext4_over_the_pollable_namespace_is_polled(
    stack: Stack, mounted_ext4: Path, caps: Capabilities
) -> None:
    # (not where a known defect rules polled file reads out: tests/nvme/test_eof_hole.py)
    polled = caps.defect_ruling_out(POLLED_FILE_READS) is None
    with stack.open(mounted_ext4 / "data", direct=True, create=True) as f:
        assert f.backend == ("iopoll" if polled else "uring"), f.backend_reason
        buf = _buffers(random.Random(7), 1)[0]
        f.write_durable(buf, 0)
        back = aligned_buffer(BS)
        f.read_into(back, 0)
        assert back[:] == buf[:]
    with stack.open(mounted_ext4 / "buffered", create=True) as f:  # buffered: the storage ring
        assert f.backend == "uring"
        assert f.write_durable(b"x" * BS, 0) == BS
        got = bytearray(BS)
        assert f.read_into(got, 0) == BS and got == b"x" * BS


def test_mounted_namespace_refuses_writes_through_stack_open(
    stack: Stack, passthrough: None, mounted_ext4: Path
) -> None:
    mounted = mounted_ext4
    with pytest.raises(NamespaceInUseError) as info:
        stack.open(NG)
    assert any(f"mounted at {mounted}" in r for r in info.value.reasons), info.value.reasons
    fd = os.open(NG, os.O_RDWR | os.O_CLOEXEC)
    try:
        with pytest.raises(NamespaceInUseError):  # a descriptor handed over (adopt_fd) too
            stack.open(NG, adopt_fd=fd)
    finally:
        os.close(fd)  # (a refused open leaves it to the caller)
    with pytest.raises(DeviceInUseError) as core_refused:
        stack.open(BLK, passthrough="auto")  # a safety refusal is not silently "fallen back"
    assert any(f"mounted at {mounted}" in r for r in core_refused.value.reasons)
    with pytest.raises(DeviceInUseError):
        stack.open(BLK, passthrough="off")  # nor served writable by the block backends (IOPOLL here)
    # Read-only is always allowed: the ext4 magic at 1024 + 56.
    with stack.open(NG, writable=False) as ro:
        sb = aligned_buffer(BS)
        ro.read_into(sb, 0)
        assert sb[1024 + 56 : 1024 + 58] == b"\x53\xef"
    # A file on the filesystem over the pollable namespace is polled too (where no known
    # defect rules it out: tests/nvme/test_eof_hole.py).
    with stack.open(mounted / "data", direct=True, create=True) as f:
        assert f.backend in ("iopoll", "uring") and (f.backend == "iopoll") == (
            stack.caps.defect_ruling_out(POLLED_FILE_READS) is None
        ), f.backend_reason
        buf = _buffers(random.Random(7), 1)[0]
        f.write_durable(buf, 0)
        back = aligned_buffer(BS)
        f.read_into(back, 0)
        assert back[:] == buf[:]
    # The passthrough plugin's old switch lifts nothing now ([core]'s is the one switch).
    with pytest.warns(FutureWarning):
        old_switch = _stack(**{"nvme_passthrough.allow_writes_in_use": True})
    with old_switch, pytest.raises(NamespaceInUseError):
        old_switch.open(NG)
    with _stack(**{"core.allow_writes_in_use": True}) as forced, forced.open(NG) as rw:
        assert any(f"mounted at {mounted}" in r for r in rw.io.in_use)  # type: ignore[attr-defined]
        blk = aligned_buffer(BS)
        rw.read_into(blk, 8 * BS)  # rewrite a block with its own content: the fs stays intact
        rw.write_durable(blk, 8 * BS)


def test_passthrough_entries_sizes_the_ring_and_bigger_batches_still_complete(passthrough: None) -> None:
    """``nvme_passthrough.entries``: the passthrough ring's SQ size (the kernel's own
    count, read back); a batch of several times that many commands is sent in
    pieces and every read returns what the block device holds."""
    with _stack(**{"nvme_passthrough.entries": 8}) as s:
        ring = s.workers[0].rings["passthrough"]
        assert ring.sq_entries == 8
        rng = random.Random(8)
        with s.open(NG) as h:
            offsets = [u * BS for u in rng.sample(range(h.size() // BS), 64)]
            bufs = _buffers(rng, 64)
            assert h.read_many(offsets, bufs) == [BS] * 64
            assert [bytes(b) for b in bufs] == _pread(BLK, offsets, BS)


@pytest.mark.parametrize("backend", ["nvme_passthrough", "iopoll"])
def test_a_zero_length_op_moves_zero_bytes_on_every_nvme_backend(
    stack: Stack, backend: str, request: pytest.FixtureRequest
) -> None:
    """One I/O contract: a zero-length read or write returns 0, as on the storage ring and
    the fallback (O_DIRECT included; its offset and address are still checked).  The
    passthrough handle refused it with an AlignmentError (NVMe has no empty transfer)."""
    if backend == "nvme_passthrough":
        request.getfixturevalue("passthrough")
    rng = random.Random(9)
    with stack.open(NG if backend == "nvme_passthrough" else BLK, direct=True) as h:
        assert h.backend == backend
        ring = h.io.ring  # type: ignore[attr-defined]
        data = _buffers(rng, 1)[0]
        empty = memoryview(aligned_buffer(BS))[:0]
        before = ring.counters()["submitted"]
        assert h.read_into(empty, 0) == 0
        assert h.write_from(empty, 0) == 0
        assert h.read_many([0, BS], [empty, empty]) == [0, 0]
        assert h.write_durable(empty, 0, sync="dsync") == 0
        if backend == "nvme_passthrough":
            assert ring.counters()["submitted"] == before  # nothing reached the device
        # beside a real op in one batch: each op its own result, the data where it belongs
        assert h.write_many([3 * BS, 4 * BS], [empty, data]) == [0, BS]
        assert h.write_durable(empty, 0) == 0  # (fdatasync: the flush still runs)
        back = aligned_buffer(BS)
        assert h.read_many([0, 4 * BS], [empty, back]) == [0, BS] and back[:] == data[:]
        assert h.prepare_reads([empty, back]).run([0, 4 * BS]) == [0, BS]

        async def main() -> list[int]:
            return await asyncio.wait_for(h.read_many_async([0], [empty]), 60)

        assert asyncio.run(main()) == [0]
        with pytest.raises(AlignmentError, match="offset 100"):
            h.read_into(empty, 100)
        assert ring.inflight == 0
