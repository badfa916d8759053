"""A stack closed from another thread while its event loop runs: the eventfd is let go on the loop's thread.

Closed from the closing thread, the eventfd's number could be reused by an
``open()`` elsewhere before the loop ran a read of it it had already scheduled,
and that read would consume 8 bytes of an unrelated file or socket."""

from __future__ import annotations

import asyncio
import os
import pathlib
import threading

import pytest

from uringstack.ring import aio
from uringstack.stack import open_stack


@pytest.mark.timeout(60)
def test_the_eventfd_is_closed_by_the_loops_thread_not_the_closing_one(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(8192))
    closes: list[tuple[int, int]] = []
    real_close = os.close

    def close(fd: int) -> None:
        closes.append((fd, threading.get_ident()))
        real_close(fd)

    monkeypatch.setattr(aio.os, "close", close)
    stack = open_stack(overrides={"core.backend": "uring", "core.cores": [0]})
    handle = stack.open(path)
    ring = handle.ring
    assert ring is not None
    started = threading.Event()
    loop_thread: list[int] = []
    efd: list[int] = []
    got: list[bytes] = []

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        got.append(await handle.read(4096, 0))
        efd.append(aio.bridge_for(ring).efd)
        started.set()
        while not any(fd == efd[0] for fd, _ in closes):  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)

    runner = threading.Thread(target=asyncio.run, args=(main(),))
    runner.start()
    try:
        assert started.wait(10)
        stack.close()  # from this thread, while the loop runs in the other
        runner.join(10)
        assert not runner.is_alive(), "the eventfd was never closed"
    finally:
        stack.close()
        runner.join(10)
    assert got == [path.read_bytes()[:4096]]
    assert [t for fd, t in closes if fd == efd[0]] == loop_thread, "closed by the closing thread"
