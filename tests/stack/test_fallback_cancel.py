"""A cancelled await on the fallback gives its buffer back (docs/api.md, asyncio, "Cancelling an await").

The pool cannot stop a ``preadv``/``pwritev`` that a thread runs: the cancelled await
waits for it (without blocking the loop) before ``CancelledError`` propagates.  An op
still queued for a thread is dropped: it never runs.  Until session 34 the
``CancelledError`` came at once and the op ran on into (or from) a buffer its caller
had taken back; until session 32 a cancel reached a pool future not yet started and
dropped a write with the caller's await still pending.
"""

from __future__ import annotations

import asyncio
import errno
import pathlib
import threading
import time
from typing import Any

import pytest

from tests.waiting import wait_until
from uringstack.config import load_config
from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import make_plugin_manager
from uringstack.ring import Ring
from uringstack.stack import Worker, open_stack

from .conftest import GatedReads

BLOCK = 4096
LATE = 0.4  # when a timer opens the gate the pool's op waits at (s)
_ONE_THREAD = {"core.backend": "fallback", "core.cores": [0], "fallback.threads": 1}


def _later(seconds: float, fn: Any) -> None:
    threading.Timer(seconds, fn).start()


@pytest.mark.timeout(60)
def test_a_cancelled_write_waiting_for_a_pool_thread_never_runs(
    tmp_path: pathlib.Path, gated_fallback_reads: GatedReads
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"." * 8192)
    buf = bytearray(b"w" * BLOCK)
    with open_stack(overrides=_ONE_THREAD) as stack, stack.open(path) as h:
        busy = h.start_read_many([BLOCK], [bytearray(BLOCK)])  # holds the pool's one thread at the gate

        async def main() -> float:
            task = asyncio.ensure_future(h.write(buf, 0))
            await asyncio.sleep(0)  # submitted: queued behind the gated read
            began = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - began

        waited = asyncio.run(main())
        assert waited < 1.0, "the cancel waited for an op that never started"
        buf[:] = b"m" * BLOCK  # the caller's buffer again
        gated_fallback_reads.gate.set()
        assert busy.wait() == [BLOCK]
    # the handle's close waited for what ran: the dropped write never did
    assert path.read_bytes()[:BLOCK] == b"." * BLOCK


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cancels", [1, 2])
def test_a_cancelled_read_running_on_a_pool_thread_is_waited_for(
    tmp_path: pathlib.Path, gated_fallback_reads: GatedReads, cancels: int
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"d" * BLOCK)
    buf = bytearray(BLOCK)
    with open_stack(overrides=_ONE_THREAD) as stack, stack.open(path) as h:

        async def main() -> float:
            task = asyncio.create_task(h.read_into_async(buf, 0))
            await asyncio.sleep(0.1)  # a pool thread runs it: held at the gate
            _later(LATE, gated_fallback_reads.gate.set)
            began = time.monotonic()
            task.cancel()
            for _ in range(cancels - 1):  # a second cancel does not cut the wait short
                await asyncio.sleep(0.1)
                assert not task.done()
                task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - began

        waited = asyncio.run(main())
        assert waited >= LATE - 0.1, f"CancelledError after {waited:.3f} s, before the read ended"
        assert bytes(buf) == b"d" * BLOCK  # it ended before the CancelledError
        buf[:] = b"S" * BLOCK
        time.sleep(0.2)
        assert bytes(buf) == b"S" * BLOCK


@pytest.mark.timeout(60)
def test_a_cancelled_write_running_on_a_pool_thread_is_waited_for(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uringstack.plugins.fallback import backend as fallback_backend

    gate = threading.Event()
    real = fallback_backend._pwritev

    def pwritev(fd: int, buf: Any, offset: int, flags: int = 0) -> int:
        gate.wait(5.0)
        return real(fd, buf, offset, flags)

    monkeypatch.setattr(fallback_backend, "_pwritev", pwritev)
    path = tmp_path / "f"
    path.write_bytes(b"." * BLOCK)
    buf = bytearray(b"A" * BLOCK)
    with open_stack(overrides=_ONE_THREAD) as stack, stack.open(path, writable=True) as h:

        async def main() -> float:
            task = asyncio.create_task(h.write(buf, 0))
            await asyncio.sleep(0.1)  # a pool thread runs it: held at the gate
            _later(LATE, gate.set)
            began = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - began

        waited = asyncio.run(main())
        buf[:] = b"B" * BLOCK  # the caller's buffer again
        assert waited >= LATE - 0.1, f"CancelledError after {waited:.3f} s, before the write ended"
    assert path.read_bytes() == b"A" * BLOCK


@pytest.mark.timeout(60)
def test_a_cancelled_prepared_read_running_on_a_pool_thread_is_waited_for(
    tmp_path: pathlib.Path, gated_fallback_reads: GatedReads
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"p" * BLOCK)
    buf = bytearray(BLOCK)
    with open_stack(overrides=_ONE_THREAD) as stack, stack.open(path) as h, h.prepare_reads([buf]) as prepared:

        async def main() -> float:
            task = asyncio.create_task(prepared.run_async([0]))
            await asyncio.sleep(0.1)  # a pool thread runs it: held at the gate
            _later(LATE, gated_fallback_reads.gate.set)
            began = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - began

        waited = asyncio.run(main())
        assert waited >= LATE - 0.1, f"CancelledError after {waited:.3f} s, before the read ended"
        assert bytes(buf) == b"p" * BLOCK
        buf[:] = b"S" * BLOCK
        time.sleep(0.2)
        assert bytes(buf) == b"S" * BLOCK


class _Recorder:
    """A plugin that records each batch the completion hook reports."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[int]]] = []

    @hookimpl
    def uringstack_completion_batch(self, worker: Worker, op: str, results: list[int], ring: Ring | None) -> None:
        self.seen.append((op, list(results)))


@pytest.mark.timeout(60)
def test_a_cancelled_batch_is_still_reported_to_the_completion_hook(
    tmp_path: pathlib.Path, gated_fallback_reads: GatedReads
) -> None:
    """One hook call per submitted batch (the hook spec), a cancelled one included: an op it
    never started as ``-ECANCELED`` (a ring's cancelled op's result), one that ran as its
    result.  Until session 35 a batch the pool gave up with an op not started was never
    reported."""
    recorder = _Recorder()
    pm = make_plugin_manager()
    pm.register(recorder, "recorder")
    loaded = load_config(env={}, plugin_manager=pm, overrides=_ONE_THREAD)
    path = tmp_path / "f"
    path.write_bytes(b"." * 8192)
    with open_stack(loaded.config, plugin_manager=pm) as stack, stack.open(path, writable=True) as h:
        bufs = [bytearray(BLOCK), bytearray(BLOCK)]

        async def main() -> None:
            read = asyncio.create_task(h.read_many_async([0, BLOCK], bufs))
            await asyncio.sleep(0.1)  # the pool's one thread runs its first op, held at the gate
            write = asyncio.ensure_future(h.write(bytearray(b"w" * BLOCK), BLOCK))
            await asyncio.sleep(0)  # submitted: queued behind the gated read
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            assert recorder.seen == [("write", [-errno.ECANCELED])]  # never started: reported at once
            _later(LATE, gated_fallback_reads.gate.set)
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read

        asyncio.run(main())
    # the read's second op never started: reported once its first ended
    assert recorder.seen == [("write", [-errno.ECANCELED]), ("read", [BLOCK, -errno.ECANCELED])]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("given_up", [False, True], ids=["waiting-for-the-batch", "waiting-for-its-running-op"])
def test_a_task_cancelled_after_its_wake_up_was_queued_logs_nothing(
    tmp_path: pathlib.Path, gated_fallback_reads: GatedReads, given_up: bool
) -> None:
    """The pool thread that ends a batch queues each waiter's wake-up on its loop; a cancel
    between that and the wake-up's run (a timeout's) must not make the loop log
    ``InvalidStateError`` from ``Future.set_result``.  *given_up*: the batch was cancelled
    first, so its awaiting task waits until its running op is over (the idle waiter)."""
    path = tmp_path / "f"
    path.write_bytes(b"d" * BLOCK)
    buf = bytearray(BLOCK)
    logged: list[dict[str, Any]] = []
    with open_stack(overrides=_ONE_THREAD) as stack, stack.open(path) as h:

        async def main() -> None:
            asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: logged.append(ctx))
            pending = h.start_read_many([0], [buf])
            time.sleep(0.1)  # a pool thread runs it: held at the gate
            if given_up:
                pending.cancel()
            task = asyncio.create_task(pending.wait_async())
            await asyncio.sleep(0.05)
            assert not task.done()
            # the loop blocked here: the op ends and its wake-up is queued behind this step
            gated_fallback_reads.gate.set()
            wait_until(lambda: gated_fallback_reads.ended, 5.0, "the end of the pool's op")
            time.sleep(0.1)  # (the pool thread goes on from the op to the wake-ups)
            assert pending.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)  # any other callback queued has run

        asyncio.run(main())
    assert [c.get("message") for c in logged] == []
    assert bytes(buf) == b"d" * BLOCK
