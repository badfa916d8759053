"""The backend side of a file handle: what every backend implements.

A backend (the core's io_uring backend, the fallback plugin's thread pool,
NVMe passthrough, IOPOLL) opens a target and returns a :class:`FileIO`.  The
public :class:`uringstack.handle.FileHandle` sits on top and gives every
backend the same semantics: short transfers retried or reported, errors as
:class:`~uringstack.errors.UringIOError` with errno, operation and file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from uringstack.pending import Pending

SyncMethod = Literal["dsync", "fdatasync"]
"""How a durable write reaches stable storage (see :meth:`FileIO.start_write_durable`)."""

SYNC_METHODS: tuple[SyncMethod, ...] = ("dsync", "fdatasync")


class FileIO(Protocol):
    """One open target on one backend.

    ``buffers`` are objects supporting the writable buffer protocol (for
    reads) or any buffer (for writes), or
    :class:`~uringstack.buffers.RegisteredBuffer` leases.  The backend must
    keep every buffer alive until its op completed.
    """

    backend: str
    path: str
    fd: int
    direct: bool
    block_size: int
    fixed_index: int | None

    def start_rw(self, write: bool, offsets: Sequence[int], buffers: Sequence[Any], *, wait: bool = False) -> Pending:
        """Start one batch of reads (or writes) at *offsets* into (from) *buffers*.

        ``wait=True`` is a hint that the caller waits for the batch right away:
        an io_uring backend then submits and waits in one syscall."""
        ...

    def start_sync(self, datasync: bool, *, wait: bool = False) -> Pending:
        """Start an fsync (or fdatasync) of the whole file."""
        ...

    def start_write_durable(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> Pending:
        """Start one write of *buffer* at *offset* that is durable once it completed.

        ``sync="dsync"``: one write that is itself durable (``RWF_DSYNC`` on
        io_uring and the fallback, FUA on an NVMe namespace); the results are
        ``[written]``.  ``sync="fdatasync"``: the write, then a flush ordered
        after it (``IOSQE_IO_LINK`` on io_uring: SQEs are unordered, an
        unlinked flush may run first); the results are ``[written, flush
        result]``, and a flush after a write that failed or came back short
        does not run and reports ``-ECANCELED``.  The backend submits the
        write once: completing a short write and checking the results is
        :meth:`uringstack.handle.FileHandle.write_durable`'s job, the same for
        every backend.  The completion hook sees the op ``"write_durable"``.
        """
        ...

    def size(self) -> int:
        """Current size in bytes (file size, or device capacity)."""
        ...

    def close(self) -> None:
        """Release the target; in-flight ops complete first."""
        ...
