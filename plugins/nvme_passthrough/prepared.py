"""Prepared NVMe Reads or Writes: the commands of a fixed buffer set built once, restarted at new LBAs.

What :meth:`PassthroughFileIO.prepare_rw` returns (the optional fast path of
:class:`~uringstack.ring.io_backend.PreparesRW`, used by
:meth:`uringstack.stack.handle.FileHandle.prepare_reads`).  Built once: the
buffers' pins, the check of their addresses and lengths, one
``struct nvme_uring_cmd`` per buffer (opcode, nsid, data address and length,
block count) and the batch's columns (URING_CMD, fd, command addresses,
command size, cmd_op).  Each :meth:`PassthroughPrepared.start` turns the
offsets into LBAs (checking them) and writes the SLBA field of each command,
then submits the same columns: no command building, no column allocation.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from uringstack.errors import BatchInFlightError
from uringstack.plugins.nvme_passthrough.backend import PassthroughPending
from uringstack.plugins.nvme_passthrough.commands import (
    NVME_CMD_READ,
    NVME_CMD_WRITE,
    build_rw_commands,
    lba_shift,
    slba_fields,
)
from uringstack.ring.arguments import OFFSET_LIMIT, check_offsets

if TYPE_CHECKING:
    from uringstack.plugins.nvme_passthrough.backend import PassthroughFileIO


class PassthroughPrepared:
    """NVMe Reads (Writes) of *buffers*, one command per buffer, started at new offsets.

    Buffers longer than one command may carry are not prepared here
    (:meth:`PassthroughFileIO.prepare_rw` falls back to restarting
    ``start_rw``, which splits them).  One batch at a time: the commands are
    rewritten by the next start, so a start while the last batch is in flight
    raises :class:`~uringstack.errors.BatchInFlightError`.
    """

    def __init__(self, io: PassthroughFileIO, write: bool, buffers: Sequence[Any]) -> None:
        # offsets 0: checks the buffers now (none, or an AlignmentError naming the op)
        plan, pins, lens = io._plan(write, [0] * len(buffers), buffers)
        self.io, self.write, self.n = io, write, len(buffers)
        self.name = "write" if write else "read"
        self.op = f"nvme {self.name}"
        if plan.owner is not None:
            raise ValueError(f"{io.path}: a buffer exceeds one command's {io.max_transfer} bytes; use start_rw")
        self._lens = lens
        self._addrs = plan.addrs
        self._shift = lba_shift(io.block_size)
        self._to_lba = self._shift.__rrshift__  # off -> off >> shift
        self._misaligned = (io.block_size - 1).__and__  # off -> its bytes past a block boundary
        self._cmds = build_rw_commands(
            NVME_CMD_WRITE if write else NVME_CMD_READ, io.nsid, plan.slbas, plan.nlbs, plan.addrs, io.block_size
        )
        self._slba = slba_fields(self._cmds)
        self._cols, cmd_pin = io._columns(self._cmds, self.n, None)
        self._keep: tuple[Any, ...] = (pins, tuple(buffers), self._cmds, cmd_pin)
        self._closed = False

    @property
    def finished(self) -> bool:
        """True unless a batch started from this object is in flight (its commands are the kernel's)."""
        return self._cols.batch is None or self._cols.batch.finished

    def start(self, offsets: Sequence[int], *, wait: bool = False) -> PassthroughPending:
        """Read (write) buffer *i* at ``offsets[i]``; see :class:`~uringstack.ring.io_backend.PreparedRW`."""
        io, n = self.io, self.n
        if not self.finished or self._closed:
            if self._closed:
                raise ValueError(f"{io.path}: this prepared I/O was closed")
            raise BatchInFlightError(
                f"{io.path}: the prepared {self.op}s are still in flight ({n} command(s)); "
                "wait for them before starting again"
            )
        if len(offsets) != n:
            raise ValueError(f"{io.path}: {len(offsets)} offsets for {n} prepared buffers")
        if io.fd < 0:
            io._check_open(self.op)
        # C-level loops (map of a bound int method), no Python frame per op: under
        # emulation every bytecode of the per-batch path shows in the IOPS
        try:
            slbas = array("Q", map(self._to_lba, offsets))  # a negative offset stays negative: refused
            if max(offsets) >= OFFSET_LIMIT:
                # (its LBA fits 64 bits: without this the device got it, "LBA Out of Range",
                # where every backend raises ValueError before anything is submitted)
                raise OverflowError
        except (OverflowError, TypeError):
            # raises what is wrong (as on every backend), or makes ints of index objects
            offsets = check_offsets(io.path, offsets)
            slbas = array("Q", map(self._to_lba, offsets))
        if any(map(self._misaligned, offsets)):
            io._plan(self.write, offsets, self._keep[1])  # raises the AlignmentError naming the op
        self._slba[:] = slbas
        ring = io.ring
        batch = ring.submit_columns(self._cols, n, self._keep, wait=wait)
        if io.completion_hook is not None:
            batch.add_done_callback(io.completion_hook(self.name, ring))
        return PassthroughPending(ring, batch, self.op, io.path, None, self._lens, slbas=slbas)

    def close(self) -> None:
        """Forget the pins and commands (a batch still in flight holds them until it completes)."""
        self._closed = True
        self._keep = ((), (), bytearray(), None)
