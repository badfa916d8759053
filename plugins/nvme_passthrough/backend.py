"""The nvme_passthrough backend: a FileHandle whose I/O is NVMe commands on ``/dev/ngXnY``.

Byte offsets and lengths become NVMe Read (0x02) / Write (0x01) commands,
``fsync``/``fdatasync`` an NVMe Flush (0x00), all sent with
``IORING_OP_URING_CMD`` on the worker's shared ``rings["passthrough"]``
(SQE128|CQE32, built once per core by the plan; never a ring per handle).

What the handle sees, compared with a block device:

- everything is direct: buffers, offsets and lengths must be multiples of
  the logical block size (:class:`AlignmentError` before submission);
- one buffer larger than the controller's transfer limit becomes several
  commands; its result is its length once all of them succeeded;
- a CQE result is ``0`` on success, ``-errno`` when the kernel refused the
  request, and a positive NVMe status when the controller failed it.  The
  Pending maps a status to ``-EIO`` in its results (so code that checks
  results sees an ordinary I/O error) and :meth:`PassthroughPending.wait`
  raises :class:`NvmeStatusError` with the decoded status, LBA and batch
  position of the first such command, after every command completed;
- reads past the end of the namespace are the device's "LBA Out of Range",
  not a short read.
"""

from __future__ import annotations

import errno
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uringstack.errors import AlignmentError, RingClosedError, UringIOError
from uringstack.plugins.nvme_passthrough.commands import (
    MAX_BLOCKS_PER_COMMAND,
    NVME_CMD_READ,
    NVME_CMD_WRITE,
    NVME_URING_CMD_IO,
    NVME_URING_CMD_SIZE,
    build_rw_commands,
    flush_command,
)
from uringstack.plugins.nvme_passthrough.device import (
    identify_namespace,
    open_char_device,
)
from uringstack.plugins.nvme_passthrough.status import NvmeStatusError
from uringstack.ring import Batch, Ring
from uringstack.ring.buffers import address_of, pin_buffers, pins_released_on_error, release_pins
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import Op, SqeFlag
from uringstack.ring.io_backend import PreparedRW, RestartingPrepared, SyncMethod
from uringstack.ring.native import ffi
from uringstack.ring.pending import CompletedPending
from uringstack.ring.pipeline import filled, from_bytes
from uringstack.ring.polling import is_polled, polled_done, wait_polled
from uringstack.stack.targets import close_opened

if TYPE_CHECKING:
    from uringstack.stack import Worker
    from uringstack.types import Target

ROLE = "passthrough"
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- pure parts: byte ranges -> commands -------------------------------------------


def max_transfer_bytes(
    max_hw_sectors_kb: int | None, max_segments: int | None, lba_size: int, page_size: int = PAGE
) -> int:
    """Largest data transfer one passthrough command may carry, in bytes (a multiple of *lba_size*).

    The kernel maps a passthrough buffer page by page into one request, so
    the request is bounded by the queue's ``max_hw_sectors_kb`` and by
    ``max_segments`` pages (NVMe's virt boundary makes every page its own
    segment); NLB's 16 bits bound it too.  Unknown limits count as no limit.
    """
    limits = [MAX_BLOCKS_PER_COMMAND * lba_size]
    if max_hw_sectors_kb:
        limits.append(max_hw_sectors_kb * 1024)
    if max_segments:
        # A buffer that does not start on a page boundary spans one page more.
        limits.append(max(1, max_segments - 1) * page_size)
    limit = min(limits)
    return max(lba_size, limit - limit % lba_size)


@dataclass(frozen=True)
class CommandPlan:
    """NVMe commands for a batch of byte-range ops.

    ``slbas``/``nlbs``/``addrs`` describe each command; ``owner[i]`` is the op
    (index into the caller's offsets/buffers) command *i* belongs to.
    ``owner`` is None when every op is exactly one command (the common case);
    an op split into several commands, or of length 0 (no command), sets it.
    """

    slbas: array[int]
    nlbs: array[int]
    addrs: array[int]
    owner: array[int] | None

    @property
    def n(self) -> int:
        return len(self.slbas)


def split_into_commands(
    op: str,
    path: str,
    offsets: Sequence[int],
    addrs: Sequence[int],
    lengths: Sequence[int],
    lba_size: int,
    max_bytes: int,
) -> CommandPlan:
    """Turn ops (byte offset, buffer address, byte length) into NVMe command fields.

    Raises :class:`AlignmentError` naming the first op whose offset, length
    or buffer address is not a multiple of *lba_size*, before anything is
    built or submitted.  An op of length 0 gets no command (NVMe has no
    empty transfer) and moves 0 bytes, as a zero-length O_DIRECT read or
    write does on every other backend; its offset and address are checked
    all the same.
    """
    if not (len(offsets) == len(addrs) == len(lengths)):
        raise ValueError(f"{len(offsets)} offsets, {len(addrs)} addresses, {len(lengths)} lengths")
    max_blocks = max(1, max_bytes // lba_size)
    slbas: array[int] = array("Q")
    nlbs: array[int] = array("Q")
    caddrs: array[int] = array("Q")
    owner: array[int] = array("I")
    split = False
    for i, (off, addr, length) in enumerate(zip(offsets, addrs, lengths, strict=True)):
        if off < 0 or off % lba_size or length < 0 or length % lba_size or addr % lba_size:
            bad = []
            if off < 0 or off % lba_size:
                bad.append(f"offset {off} is not a multiple of {lba_size}")
            if length < 0 or length % lba_size:
                bad.append(f"length {length} is not a multiple of {lba_size}")
            if addr % lba_size:
                bad.append(f"buffer address {addr:#x} is not a multiple of {lba_size}")
            raise AlignmentError(
                f"{op} on {path} (NVMe passthrough, logical block size {lba_size}), op {i}: "
                + "; ".join(bad)
                + ". Use uringstack.aligned_buffer() and block-aligned offsets."
            )
        lba, blocks = off // lba_size, length // lba_size
        if blocks > max_blocks or not blocks:
            split = True  # (ops and commands no longer one to one: owner maps them)
        while blocks > 0:
            k = min(blocks, max_blocks)
            slbas.append(lba)
            nlbs.append(k)
            caddrs.append(addr)
            owner.append(i)
            lba += k
            blocks -= k
            addr += k * lba_size
    return CommandPlan(slbas, nlbs, caddrs, owner if split else None)


def fold_results(
    raw: Sequence[int], plan_owner: Sequence[int] | None, lengths: Sequence[int]
) -> tuple[list[int], int | None]:
    """Per-command CQE results -> per-op results, and the index of the first failed-status command.

    An op's result is its byte length when all its commands returned 0, the
    first ``-errno`` among them, or ``-EIO`` for an NVMe status (> 0).
    """
    first_status: int | None = None
    if plan_owner is None:
        out = []
        for i, res in enumerate(raw):
            if res == 0:
                out.append(lengths[i])
            elif res < 0:
                out.append(res)
            else:
                out.append(-errno.EIO)
                if first_status is None:
                    first_status = i
        return out, first_status
    folded = list(lengths)
    for c, res in enumerate(raw):
        if res == 0:
            continue
        op = plan_owner[c]
        if folded[op] >= 0:
            folded[op] = res if res < 0 else -errno.EIO
        if res > 0 and first_status is None:
            first_status = c
    return folded, first_status


# --- the Pending ----------------------------------------------------------------------------


class PassthroughPending:
    """NVMe commands in flight on the passthrough ring, reported per op.

    ``results`` (after completion): bytes per op, or ``-errno`` (``-EIO`` for an
    NVMe status).  ``status_error``: the :class:`NvmeStatusError` of the first
    command the controller failed, or None.
    """

    __slots__ = (
        "_lengths", "_results", "batch", "n", "nlbs", "op", "owner", "path", "ring", "slbas", "status_error", "tail",
    )  # fmt: skip

    def __init__(
        self,
        ring: Ring,
        batch: Batch,
        op: str,
        path: str,
        plan: CommandPlan | None,
        lengths: list[int],
        tail: int = 0,
        *,
        slbas: Sequence[int] | None = None,
    ) -> None:
        self.ring = ring
        self.batch = batch
        self.op = op
        self.path = path
        # What _finish needs of the commands: which op each belongs to (None: one each)
        # and their LBAs, for the error (a prepared batch passes its own SLBAs, no plan).
        self.owner = plan.owner if plan is not None else None
        self.slbas = plan.slbas if plan is not None else slbas
        self.nlbs = plan.nlbs if plan is not None else None
        self._lengths = lengths
        # tail: trailing commands (a Flush) reported as their own results after the ops'.
        self.tail = tail
        self.n = len(lengths) + tail
        self._results: list[int] | None = None
        self.status_error: NvmeStatusError | None = None

    def done(self) -> bool:
        if self.batch.finished:
            return True
        if is_polled(self.ring):
            return polled_done(self.ring, self.batch)
        if not self.ring.closed:
            self.ring.try_reap()
        return self.batch.finished

    def _finish(self, raw: list[int]) -> list[int]:
        if self._results is not None:
            if self.status_error is not None:
                raise self.status_error
            return self._results
        if not self.tail and not any(raw):  # every command succeeded: each op moved its length
            self._results = list(self._lengths)
            return self._results
        body, tail = (raw[: len(raw) - self.tail], raw[len(raw) - self.tail :]) if self.tail else (raw, [])
        folded, bad = fold_results(body, self.owner, self._lengths)
        tail_out = [r if r <= 0 else -errno.EIO for r in tail]
        self._results = folded + tail_out
        if bad is None and any(r > 0 for r in tail):
            self.status_error = NvmeStatusError(next(r for r in tail if r > 0), "nvme flush", self.path)
        elif bad is not None:
            lba = int(self.slbas[bad]) if self.slbas is not None else None
            # (bad is a command; the caller's op is its owner: "command 2" of a 2-op batch
            # named an op that did not exist)
            op_index = int(self.owner[bad]) if self.owner is not None else bad
            self.status_error = NvmeStatusError(body[bad], self.op, self.path, lba=lba, index=op_index)
            if self.owner is not None and self.nlbs is not None and not self.tail:
                self.status_error.transferred = self._done_before(bad, body)
        if self.status_error is not None:
            raise self.status_error
        return self._results

    def _done_before(self, bad: int, body: list[int]) -> int:
        """Bytes of the failed command's op that its earlier commands moved, back to back
        from the op's offset: what ``write(2)`` would have returned (docs/api.md,
        ``transferred``; 0 for a durable write, which promises no part).  It said 0 with
        the first half of a split write on the device."""
        assert self.owner is not None and self.nlbs is not None
        op = self.owner[bad]
        commands = [c for c in range(len(self.owner)) if self.owner[c] == op]
        block = self._lengths[op] // sum(int(self.nlbs[c]) for c in commands)
        done = 0
        for c in commands:
            if c >= bad or body[c] != 0:
                break
            done += int(self.nlbs[c]) * block
        return done

    @property
    def results(self) -> list[int] | None:
        """Per-op results once :meth:`wait` (or :meth:`wait_async`) ran, else None."""
        return self._results

    def wait(self) -> list[int]:
        """Block until every command completed; raise :class:`NvmeStatusError` for a failed status."""
        return self._finish(self.ring.wait(self.batch))

    def cancel(self) -> None:
        """Ask the kernel to cancel the commands still in flight, without waiting (not on an
        IOPOLL ring, whose commands polling completes: :meth:`Ring.cancel_ops`); each still
        completes, and only then is its buffer free (a cancelled asyncio await waits for it)."""
        self.ring.cancel_ops(self.batch)

    async def wait_async(self) -> list[int]:
        from uringstack.ring import aio

        if is_polled(self.ring):
            raw = await wait_polled(self.ring, self.batch)
        else:
            raw = await aio.wait_batch(self.ring, self.batch)
        return self._finish(raw)


# --- the FileIO -----------------------------------------------------------------------------


class PassthroughFileIO:
    """One NVMe namespace served through its generic char device on the worker's passthrough ring."""

    backend = "nvme_passthrough"

    def __init__(
        self,
        ring: Ring,
        target: Target,
        char_path: str,
        *,
        worker: Worker | None = None,
    ) -> None:
        # Reads, writes and Flushes all go to this one ring, so write_durable can link
        # them.  A Flush carries no data, and kernels 6.0-6.4 oops when one sits on an
        # IOPOLL ring (defect nvme-uring-cmd-iopoll-gpf, docs/nvme.md): the plan's gate
        # never makes this ring polled there unless [core] accept_kernel_defects says
        # the kernel carries the fix, so no second ring outside the plan is needed.
        self.ring = ring
        self.path = target.path
        self.char_path = char_path
        self.direct = True  # passthrough never goes through the page cache
        self.writable = target.writable
        self.fixed_index: int | None = None
        self.completion_hook = worker.completion_hook if worker is not None else None
        self._const: dict[int, tuple[Any, Any, Any, Any]] = {}
        # In target.descriptors until Stack.open hands it to this object (see Target.descriptors).
        self.fd = open_char_device(char_path, target.writable, target.descriptors)
        try:
            device = target.device
            ident = identify_namespace(self.fd, char_path, device)
            assert device is not None  # identify_namespace raised otherwise
            self.nsid = ident.nsid
            self.block_device = ident.block_device
            self.block_size = ident.lba_size
            self.nblocks = ident.nblocks
            # What used the namespace when it was opened writable anyway: the core's rule for
            # devices in use (Stack.open, [core] allow_writes_in_use) found and allowed it.
            self.in_use: list[str] = list(target.in_use)
            self.max_transfer = max_transfer_bytes(device.max_hw_sectors_kb, device.max_segments, self.block_size)
        except BaseException:
            close_opened(target, self.fd)
            raise

    def _constant_columns(self, n: int) -> tuple[Any, Any, Any, Any]:
        """opcode, fd, length and cmd_op columns for *n* commands, built once per batch size.

        They are the same for every batch of this handle and the C side only
        reads them while preparing SQEs, so batches may share them; this
        saves four allocations per batch (the submit path is per batch).
        """
        cols = self._const.get(n)
        if cols is None:
            cols = (
                filled("uint8_t", int(Op.URING_CMD), n),
                filled("int32_t", self.fd, n),
                filled("uint32_t", NVME_URING_CMD_SIZE, n),
                filled("uint32_t", NVME_URING_CMD_IO, n),
            )
            if len(self._const) < 64:
                self._const[n] = cols
        return cols

    def _columns(self, cmds: bytearray, n: int, sqe_flags: Sequence[int] | None) -> tuple[BatchColumns, Any]:
        cmd_pin = ffi.from_buffer(cmds)
        base = address_of(cmd_pin)
        cmd_addrs = array("Q", range(base, base + n * NVME_URING_CMD_SIZE, NVME_URING_CMD_SIZE))
        opcodes, fds, lens, cmd_ops = self._constant_columns(n)
        cols = BatchColumns(n)
        cols.adopt("opcodes", opcodes)
        cols.adopt("fds", fds)
        cols.adopt("addrs", from_bytes("uint64_t", memoryview(cmd_addrs).cast("B"), n))
        cols.adopt("lens", lens)
        cols.adopt("op_flags", cmd_ops)
        if sqe_flags is not None:
            cols.set("sqe_flags", sqe_flags)
        return cols, cmd_pin

    def _check_open(self, op: str) -> None:
        # The same error as every other backend's closed FileIO (docs/api.md), so callers
        # handle "used after close" once, whichever backend serves the file.
        if self.fd < 0:
            raise RingClosedError(f"{self.path} is closed ({op} refused)")

    def _plan(
        self, write: bool, offsets: Sequence[int], buffers: Sequence[Any]
    ) -> tuple[CommandPlan, list[Any], list[int]]:
        op = "nvme write" if write else "nvme read"
        self._check_open(op)
        if write and not self.writable:
            raise UringIOError(errno.EBADF, op, self.path, "opened read-only; open it with writable=True")
        if len(offsets) != len(buffers):
            raise ValueError(f"{len(offsets)} offsets but {len(buffers)} buffers")
        if not offsets:
            raise ValueError("a batch needs at least one op")
        keep, addrs, lens = pin_buffers(buffers, writable=not write)
        with pins_released_on_error(keep):
            plan = split_into_commands(op, self.path, offsets, addrs, lens, self.block_size, self.max_transfer)
        return plan, keep, lens

    def start_rw(
        self, write: bool, offsets: Sequence[int], buffers: Sequence[Any], *, wait: bool = False
    ) -> PassthroughPending | CompletedPending:
        plan, keep, lens = self._plan(write, offsets, buffers)
        if not plan.n:  # every op of length 0: nothing to send, nothing moved
            release_pins(keep)
            return CompletedPending([0] * len(lens))
        opcode = NVME_CMD_WRITE if write else NVME_CMD_READ
        cmds = build_rw_commands(opcode, self.nsid, plan.slbas, plan.nlbs, plan.addrs, self.block_size)
        columns, cmd_pin = self._columns(cmds, plan.n, None)
        batch = self.ring.submit_columns(columns, plan.n, (*keep, *buffers, cmds, cmd_pin), wait=wait)
        name = "write" if write else "read"
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook(name, self.ring))
        return PassthroughPending(self.ring, batch, f"nvme {name}", self.path, plan, lens)

    def prepare_rw(self, write: bool, buffers: Sequence[Any]) -> PreparedRW:
        """Commands for *buffers* built once, only their LBAs written per start (:mod:`.prepared`).

        A buffer longer than one command may carry is split per start by
        :meth:`start_rw` instead (the generic restarting form)."""
        from uringstack.plugins.nvme_passthrough.prepared import PassthroughPrepared

        pins, _, lens = pin_buffers(buffers, writable=not write)
        release_pins(pins)  # (only measured here)
        if lens and (max(lens) > self.max_transfer or not min(lens)):  # (a length 0 has no command)
            return RestartingPrepared(self, write, buffers)
        return PassthroughPrepared(self, write, buffers)

    def start_sync(self, datasync: bool, *, wait: bool = False) -> PassthroughPending:
        # fsync and fdatasync are the same on a namespace (no file metadata): one Flush,
        # which commits the controller's volatile write cache.
        self._check_open("nvme flush")
        cmd = bytearray(flush_command(self.nsid))
        columns, cmd_pin = self._columns(cmd, 1, None)
        batch = self.ring.submit_columns(columns, 1, (cmd, cmd_pin), wait=wait)
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook("fdatasync" if datasync else "fsync", self.ring))
        return PassthroughPending(self.ring, batch, "nvme flush", self.path, None, [], tail=1)

    def start_write_durable(
        self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False
    ) -> PassthroughPending | CompletedPending:
        """A durable write: Writes with FUA (``dsync``), or Writes then a Flush (``fdatasync``).

        For ``fdatasync`` every Write is linked (IOSQE_IO_LINK) to the next and
        the last to the Flush, so the Flush starts after all of them
        completed.  A write refused by the kernel (-errno) cancels the rest of
        the chain (-ECANCELED); an NVMe status does not break a link, so the
        Flush still runs, which is harmless, and
        :meth:`PassthroughPending.wait` raises for the write.  A chain must
        reach the kernel in one submission (it ends at each one), so one longer
        than the ring can queue at once (a write of more commands than the
        ring's entries) is not linked: its Flush carries IOSQE_IO_DRAIN and
        starts once everything submitted before it, its Writes included,
        completed.
        """
        plan, keep, lens = self._plan(True, [offset], [buffer])
        fua = sync == "dsync"
        if fua and not plan.n:  # nothing to write: a zero-length RWF_DSYNC write syncs nothing either
            release_pins(keep)
            return CompletedPending([0])
        cmds = build_rw_commands(NVME_CMD_WRITE, self.nsid, plan.slbas, plan.nlbs, plan.addrs, self.block_size, fua=fua)
        n, tail = plan.n, 0
        sqe_flags: list[int] | None = None
        if not fua:
            n, tail = n + 1, 1
            cmds += flush_command(self.nsid)
            if n <= min(self.ring.sq_entries, self.ring.cq_cap):
                link = int(SqeFlag.IO_LINK)
                sqe_flags = [link] * (n - 1) + [0]
            else:
                # (the ring would refuse the chain, E2BIG: it cannot stay one, see above)
                sqe_flags = [0] * (n - 1) + [int(SqeFlag.IO_DRAIN)]
        columns, cmd_pin = self._columns(cmds, n, sqe_flags)
        batch = self.ring.submit_columns(columns, n, (*keep, buffer, cmds, cmd_pin), wait=wait)
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook("write_durable", self.ring))
        return PassthroughPending(self.ring, batch, "nvme write", self.path, plan, lens, tail=tail)

    def size(self) -> int:
        return self.nblocks * self.block_size

    def close(self) -> None:
        if self.fd >= 0:
            # Commands still in flight hold their own reference to the file in the
            # kernel, and their buffers are owned by their Batch until reaped.
            os.close(self.fd)
            self.fd = -1


class PassthroughBackend:
    """Factory: serve a namespace through *char_path* on the worker's passthrough ring."""

    name = "nvme_passthrough"

    def __init__(self, reason: str, char_path: str) -> None:
        self.reason = reason
        self.char_path = char_path

    def open(self, target: Target, worker: Worker) -> PassthroughFileIO:
        ring = worker.rings.get(ROLE)
        if ring is None:
            raise UringIOError(
                errno.EOPNOTSUPP, "open", target.path,
                f"worker {worker.index} has no passthrough ring (rings: {sorted(worker.rings)}); the plan "
                "builds one only where the nvme_passthrough verdict is enabled",
            )  # fmt: skip
        return PassthroughFileIO(ring, target, self.char_path, worker=worker)
