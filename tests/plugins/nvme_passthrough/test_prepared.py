"""Prepared NVMe reads/writes: commands built once, only their SLBAs rewritten per start (host side, fake ring)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from uringstack.errors import AlignmentError, BatchInFlightError, RingClosedError
from uringstack.plugins.nvme_passthrough.backend import PassthroughFileIO, PassthroughPending
from uringstack.plugins.nvme_passthrough.commands import (
    NVME_CMD_READ,
    NVME_CMD_WRITE,
    NVME_URING_CMD_SIZE,
    decode_command,
)
from uringstack.plugins.nvme_passthrough.prepared import PassthroughPrepared
from uringstack.plugins.nvme_passthrough.status import NvmeStatusError
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import Op
from uringstack.ring.io_backend import RestartingPrepared, prepare_rw
from uringstack.ring.native import ffi


class _Batch:
    def __init__(self, n: int, raw: list[int]) -> None:
        self.n = n
        self.finished = False
        self.raw = raw

    def add_done_callback(self, fn: Any) -> None:  # the fake worker has no hook
        raise AssertionError("no completion hook was configured")


class _Ring:
    """Records what a submission would hand the kernel: the commands the columns point at."""

    flags = 0
    closed = False

    def __init__(self) -> None:
        self.submitted: list[list[dict[str, int]]] = []
        self.raw: list[int] | None = None

    def submit_columns(self, cols: BatchColumns, n: int, keep: object, *, wait: bool = False) -> _Batch:
        assert cols.get("opcodes")[:n] == [int(Op.URING_CMD)] * n
        cmds = []
        for addr in cols.get("addrs")[:n]:
            raw = bytes(ffi.buffer(ffi.cast("char *", addr), NVME_URING_CMD_SIZE))
            cmds.append(decode_command(raw))
        self.submitted.append(cmds)
        batch = _Batch(n, self.raw if self.raw is not None else [0] * n)
        cols.batch = batch  # type: ignore[assignment]  # what Ring.submit_columns records
        return batch

    def wait(self, batch: _Batch) -> list[int]:
        batch.finished = True
        return batch.raw


def _io(ring: _Ring, *, writable: bool = False, max_transfer: int = 1 << 20) -> PassthroughFileIO:
    # A PassthroughFileIO without a device: what __init__ would have learnt from the namespace.
    io = object.__new__(PassthroughFileIO)
    io.ring = ring  # type: ignore[assignment]
    io.path = "/dev/ng0n1"
    io.char_path = "/dev/ng0n1"
    io.fd = 99
    io.writable = writable
    io.direct = True
    io.fixed_index = None
    io.completion_hook = None
    io._const = {}
    io.nsid = 1
    io.block_size = 512
    io.nblocks = 1 << 21
    io.max_transfer = max_transfer
    return io


def test_each_start_rewrites_only_the_slbas_of_the_same_commands() -> None:
    ring = _Ring()
    bufs = [aligned_buffer(4096) for _ in range(3)]
    prep = prepare_rw(_io(ring), False, bufs)
    assert isinstance(prep, PassthroughPrepared)
    first = prep.start([0, 8192, 1 << 33])
    assert first.wait() == [4096, 4096, 4096]
    prep.start([4096, 512, 0]).wait()
    a, b = ring.submitted
    assert [c["cdw10"] | c["cdw11"] << 32 for c in a] == [0, 16, (1 << 33) // 512]  # byte offset / LBA size
    assert [c["cdw10"] for c in b] == [8, 1, 0]
    for before, after in zip(a, b, strict=True):  # everything but the LBA is the prepared command
        assert before["opcode"] == after["opcode"] == NVME_CMD_READ
        assert before["nsid"] == after["nsid"] == 1
        assert before["data_len"] == after["data_len"] == 4096 and after["cdw12"] == 4096 // 512 - 1
        assert before["addr"] == after["addr"]
    assert [c["addr"] for c in b] == [ffi.cast("uintptr_t", ffi.from_buffer(x)) for x in bufs]


def test_writes_are_write_commands_and_need_a_writable_handle() -> None:
    ring = _Ring()
    prep = prepare_rw(_io(ring, writable=True), True, [aligned_buffer(512)])
    prep.start([1024]).wait()
    assert ring.submitted[0][0]["opcode"] == NVME_CMD_WRITE and ring.submitted[0][0]["cdw10"] == 2
    with pytest.raises(Exception, match="opened read-only"):
        prepare_rw(_io(_Ring()), True, [aligned_buffer(512)])


def test_bad_offsets_are_refused_before_anything_is_submitted() -> None:
    ring = _Ring()
    prep = prepare_rw(_io(ring), False, [aligned_buffer(512), aligned_buffer(512)])
    with pytest.raises(AlignmentError, match="op 1: offset 100 is not a multiple of 512"):
        prep.start([0, 100])
    with pytest.raises(ValueError, match=r"offset -512 \(op 0 of the batch\) is negative"):
        prep.start([-512, 0])
    with pytest.raises(ValueError, match="1 offsets for 2 prepared buffers"):
        prep.start([0])
    assert ring.submitted == []


def test_a_start_while_the_last_batch_is_in_flight_is_refused() -> None:
    ring = _Ring()
    prep = prepare_rw(_io(ring), False, [aligned_buffer(512)])
    pending = prep.start([0])
    with pytest.raises(BatchInFlightError, match="still in flight"):
        prep.start([512])  # its command is the kernel's until the batch completed
    pending.wait()
    prep.start([512]).wait()
    prep.close()
    with pytest.raises(ValueError, match="closed"):
        prep.start([0])


def test_a_failed_status_names_the_lba_of_that_start() -> None:
    ring = _Ring()
    prep = prepare_rw(_io(ring), False, [aligned_buffer(512), aligned_buffer(512)])
    ring.raw = [0, 0x80]  # LBA Out of Range on the second command
    pending = prep.start([0, 1 << 30])
    assert isinstance(pending, PassthroughPending)
    with pytest.raises(NvmeStatusError) as info:
        pending.wait()
    assert info.value.lba == (1 << 30) // 512 and info.value.index == 1
    assert pending.results == [512, -errno.EIO]


def test_buffers_longer_than_one_command_fall_back_to_restarting_start_rw() -> None:
    prep = prepare_rw(_io(_Ring(), max_transfer=4096), False, [aligned_buffer(8192)])
    assert isinstance(prep, RestartingPrepared)


def test_closed_handle_refuses_to_start() -> None:
    ring = _Ring()
    io = _io(ring)
    prep = prepare_rw(io, False, [aligned_buffer(512)])
    io.fd = -1
    with pytest.raises(RingClosedError, match="is closed"):
        prep.start([0])
