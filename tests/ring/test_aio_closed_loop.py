"""A completion whose event loop is gone is dropped where it belongs, never raised in another caller.

A task awaiting I/O is cancelled and ``asyncio.run`` closes its loop while the
op is still in flight; whichever thread later reaps that completion (a sync
``read_many`` in another thread, ``stack.close()``) used to get
``RuntimeError: Event loop is closed`` from the callback that resolves the
dead loop's future.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import threading
import time

import pytest

from uringstack.ring import Ring, aio
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi
from uringstack.stack import open_stack

ANY_POS = -1 & 0xFFFFFFFFFFFFFFFF  # "current position": a pipe has no offsets


def _pipe_read(ring: Ring, fd: int, buf: bytearray) -> object:
    pin = ffi.from_buffer(buf, require_writable=True)
    return ring.submit(Op.READ, fd, addrs=int(ffi.cast("uintptr_t", pin)), lens=len(buf), offsets=ANY_POS, keep=[pin])


@pytest.mark.timeout(30)
def test_completion_for_a_closed_loop_is_dropped_not_raised_in_the_reaper() -> None:
    r, w = os.pipe()
    ring = Ring(entries=8)
    try:
        buf = bytearray(1)
        batch = _pipe_read(ring, r, buf)

        async def main() -> None:
            task = asyncio.create_task(aio.wait_batch(ring, batch))  # type: ignore[arg-type]
            await asyncio.sleep(0)  # the task installs its completion callback
            task.cancel()

        asyncio.run(main())  # the awaiting loop is closed; the read is still in flight
        os.write(w, b"x")
        # An unrelated synchronous caller reaps the completion.
        assert ring.wait(batch) == [1]  # type: ignore[arg-type]
        assert buf == b"x"
        assert ring.run(Op.NOP, -1) == [0]  # the ring is still usable
    finally:
        ring.close()
        os.close(r)
        os.close(w)


@pytest.mark.timeout(120)
def test_cancelled_awaits_on_sqpoll_never_break_other_threads(tmp_path: pathlib.Path) -> None:
    """The report's scenario: SQPOLL on, cancelled ``await f.read`` tasks, a sync reader in another thread."""
    path = tmp_path / "f"
    path.write_bytes(os.urandom(1 << 20))
    errors: list[BaseException] = []
    stop = threading.Event()
    with open_stack(overrides={"sqpoll.mode": "on", "core.cores": [0]}) as stack:
        f = stack.open(path)
        g = stack.open(path)

        def reader() -> None:
            buf = bytearray(4096)
            while not stop.is_set():
                try:
                    g.read_many([0], [buf])
                except RuntimeError as exc:
                    errors.append(exc)

        async def cycle() -> None:
            tasks = [asyncio.create_task(f.read(4096, 4096 * i)) for i in range(16)]
            await asyncio.sleep(0)
            for t in tasks:
                t.cancel()

        t = threading.Thread(target=reader)
        t.start()
        try:
            deadline = time.monotonic() + 20
            cycles = 0
            while cycles < 150 and time.monotonic() < deadline:
                asyncio.run(cycle())
                cycles += 1
        finally:
            stop.set()
            t.join(10)
        assert not t.is_alive(), "the reader thread hung"
        assert not errors, f"{len(errors)} unrelated read_many calls raised: {errors[0]!r}"
        f.close()
        g.close()
    # stack.close() (which reaps what is left, including in the fixedbuf teardown) raised nothing
