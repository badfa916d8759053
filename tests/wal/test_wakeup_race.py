"""The flusher thread must never sleep while appends wait for it (a lost wake-up hangs ``append_async``).

Found by the 32-appender benchmark (a run hung with both the event loop and
the flusher idle): ``_kicked`` ("the flusher was notified and has not looked
yet") was cleared only when the flusher came back from ``wait()``.  An append
that kicked while the flusher was outside the lock with ``_busy`` clear (just
after a flush, or before its first look at start-up) set ``_kicked`` and
notified nobody; the flusher then found the record without waiting, so
``_kicked`` stayed set and every later kick was suppressed: its next idle
wait never ended.

The window is a few bytecodes wide, so the test does not hope for it: a trace
function pauses the flusher thread exactly there (outside the writer's lock,
``_busy`` clear) while the event loop appends; every append is awaited with
a deadline, so a lost wake-up fails in seconds.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
from types import FrameType
from typing import Any

from uringstack.wal import Wal, WalConfig
from uringstack.wal import writer as writer_mod

TracerFn = Any  # sys.settrace's callable type is not public
_NO_TRACE: Any = None  # threading.settrace(None) removes the hook (typeshed only admits a function)


def test_kick_while_the_flusher_is_between_looks(tmp_path: pathlib.Path) -> None:
    armed = threading.Event()
    paused = threading.Event()
    resume = threading.Event()

    def in_run(frame: FrameType, event: str, arg: object) -> TracerFn:
        w = frame.f_locals.get("self")
        # outside the lock with _busy clear: the flusher is about to look for work
        if event == "line" and armed.is_set() and isinstance(w, writer_mod.Writer) and not (w._busy or w.lock.locked()):
            armed.clear()
            paused.set()
            assert resume.wait(10), "test never resumed the flusher"
        return in_run

    def tracer(frame: FrameType, event: str, arg: object) -> TracerFn:
        if frame.f_code.co_name == "_run" and frame.f_code.co_filename == writer_mod.__file__:
            return in_run
        return None

    threading.settrace(tracer)  # threads started from now on: the log's flusher
    try:
        wal = Wal.open(tmp_path / "wal", WalConfig(), backend="fallback")
    finally:
        threading.settrace(_NO_TRACE)
    try:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            assert await asyncio.wait_for(wal.append_async(b"a"), 5) == 1
            # Pause the flusher the next time it is between looks: still finishing the flush
            # of "a" (then "b" waits in the queue) or after flushing "b".  Either way the kicks
            # of "b" and "c" run while it is paused there, not waiting.
            armed.set()
            fut_b = wal.append_async(b"b")
            assert await loop.run_in_executor(None, paused.wait, 10), (
                "the flusher never reached the window (a lost wake-up leaves it waiting)"
            )
            fut_c = wal.append_async(b"c")
            for _ in range(3):
                await asyncio.sleep(0)
            resume.set()
            assert await asyncio.wait_for(fut_b, 5) == 2
            assert await asyncio.wait_for(fut_c, 5) == 3
            # the flusher found "c" without waiting; the next kick must still wake it
            for lsn in range(4, 8):
                assert await asyncio.wait_for(wal.append_async(b"d"), 5) == lsn

        asyncio.run(main())
    finally:
        resume.set()
        wal.close()
