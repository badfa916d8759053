"""What a cancelled asyncio op on a caller's buffer waits for before its ``CancelledError``.

The contract (docs/api.md, asyncio, "Cancelling an await"): when ``CancelledError``
propagates out of an await of ``read_into_async``, ``write``, ``read_many_async``,
``write_many_async`` or ``PreparedIO.run_async``, neither the kernel nor a thread of
the library uses the caller's buffer any more.  An op cancelled before it was
submitted is never submitted (nothing to wait for).  One already submitted is asked
to stop (``IORING_OP_ASYNC_CANCEL`` by its user_data; the fallback pool drops its ops
not yet started), then its completion is awaited here, through further cancels of
the task, for at most the stack's ``core.close_timeout_s``; past that bound
:class:`~uringstack.errors.CancelTimeoutError` is raised instead, and the op keeps
its buffer until it completes (the ring holds its batch, and orphans it for the life
of the process if the ring is closed first).

Only the cancelled path runs any of this: an await that is not cancelled pays
nothing (a ``try`` costs no instruction in CPython 3.11 until it catches).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from typing import Any

from uringstack.errors import CancelTimeoutError

_POLL_S = 0.01
"""How often :func:`settle` looks at the op when its waiting task cannot tell (it failed)."""


async def settle(pending: Any, timeout: float, op: str, path: str | None, detail: str = "") -> None:
    """Wait until ``pending.done()`` (the op is over: the kernel, or the pool's thread, is
    done with its buffers), for at most *timeout* seconds, whatever cancels the calling
    task meanwhile (each cancel is absorbed: the caller re-raises its own
    ``CancelledError`` once this returns).

    The wait is ``pending.wait_async()`` run as a task of its own, so cancelling the
    caller never reaches it; what it raises (the op's own failure) is dropped: the caller
    was cancelled, and only the op's end matters.  A task cancelled by someone else
    (``asyncio.run`` cancels every task as it ends) is made again; one that failed
    before the op's end is replaced by a look at ``pending.done()`` every 10 ms.
    Raises :class:`CancelTimeoutError` when the op has not completed by then (*op*,
    *path* and *detail* name it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    task: asyncio.Task[Any] | None = None
    failed = False
    try:
        while not pending.done():
            left = deadline - loop.time()
            if left <= 0:
                raise CancelTimeoutError(
                    errno.ETIMEDOUT, op, path,
                    f"{detail}{', ' if detail else ''}cancelled after its submission: not complete within "
                    f"{timeout:g} s (core.close_timeout_s; a hung device?); the kernel may still use its buffer: "
                    "do not reuse it (the op keeps it until it completes, and the handle's close() waits for it)",
                )  # fmt: skip
            if task is not None and task.done():
                failed = failed or (not task.cancelled() and task.exception() is not None)
                task = None
            if task is None and not failed:
                task = loop.create_task(pending.wait_async())
            with contextlib.suppress(asyncio.CancelledError):  # a second cancel: keep waiting
                if task is not None:
                    await asyncio.wait((task,), timeout=left)
                else:
                    await asyncio.sleep(min(left, _POLL_S))
    finally:
        if task is not None:
            if task.done():
                _quiet(task)
            else:
                # Given up (the bound, or a BaseException out of the wait): the task keeps
                # waiting on its own; its outcome is not anyone's to see.
                task.add_done_callback(_quiet)


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # (retrieved: never logged as "exception was never retrieved")


async def settle_pending(pending: Any, timeout: float, op: str, path: str | None) -> None:
    """:func:`settle` for a backend's pending batch whose await was cancelled, after asking it
    to stop (its ``cancel()``, where the backend has one: a ring's async cancel of its ops,
    the fallback pool's drop of the ops not started; a batch whose ops were dropped is
    over once none runs)."""
    cancel = getattr(pending, "cancel", None)
    if cancel is not None:
        with contextlib.suppress(Exception):  # best effort: the wait below is what counts
            cancel()
    await settle(pending, timeout, op, path)
