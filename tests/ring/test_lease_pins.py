"""Plain leases of ``lease_buffers`` carry their pin: the asyncio batch path pins nothing per op.

``await handle.read_many_async(offsets, leases)`` used to call
``ffi.from_buffer`` on every lease of every batch (0.5-0.7 us per op, about a
sixth of the path).  A :class:`~uringstack.ring.buffers.LeasedBuffer` is
pinned once when leased; ``release_buffers`` drops the pin, and a batch in
flight keeps its own reference, so the kernel never writes into freed memory.
"""

from __future__ import annotations

import asyncio
import gc
import mmap
import pathlib
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import open_plain_uring
from uringstack.ring.buffers import LeasedBuffer
from uringstack.stack import Stack, handle, open_stack
from uringstack.stack.handle import FileHandle

BLOCK = 4096


def _pattern(size: int) -> bytes:
    return bytes((i * 13 + i // BLOCK) & 0xFF for i in range(size))


def _data(tmp_path: pathlib.Path, blocks: int) -> tuple[pathlib.Path, bytes]:
    path = tmp_path / "data"
    want = _pattern(blocks * BLOCK)
    path.write_bytes(want)
    return path, want


@pytest.fixture
def stack() -> Iterator[Stack]:
    # No registered pool: lease_buffers hands out plain (pinned) buffers.
    with open_stack(overrides={"core.cores": [0], "core.backend": "uring", "fixedbuf.mode": "off"}) as s:
        yield s


def _handle(stack: Stack, path: pathlib.Path) -> FileHandle:
    return open_plain_uring(stack, path)


class _CountingFFI:
    """The handle module's ffi, counting ``from_buffer`` calls."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.pinned = 0

    def from_buffer(self, *args: Any) -> Any:
        self.pinned += 1
        return self.real.from_buffer(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 10.0)

    return asyncio.run(bounded())


@pytest.mark.timeout(60)
def test_read_many_async_and_write_many_async_of_leases_pin_nothing_per_call(
    stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, want = _data(tmp_path, 64)
    with _handle(stack, path) as h:
        bufs = h.lease_buffers(8, BLOCK)
        assert all(isinstance(b, LeasedBuffer) and isinstance(b, mmap.mmap) for b in bufs)
        counting = _CountingFFI(handle.ffi)
        monkeypatch.setattr(handle, "ffi", counting)

        async def main() -> list[Any]:
            groups = [bufs[:4], bufs[4:]]
            got = []
            for rnd in range(3):
                offs = [[((rnd * 8 + g * 4 + i) * 5 % 64) * BLOCK for i in range(4)] for g in range(2)]
                res = await asyncio.gather(*(h.read_many_async(offs[g], groups[g]) for g in range(2)))
                assert res == [[BLOCK] * 4] * 2
                got.append(([bytes(b) for b in bufs], [o for g in offs for o in g]))
            for b in bufs[4:]:
                b[:] = b"\x5a" * BLOCK
            assert await h.write_many_async([60 * BLOCK + i * BLOCK for i in range(4)], bufs[4:]) == [BLOCK] * 4
            return got

        rounds = _run(main())
        monkeypatch.undo()
        h.release_buffers(bufs)
    for data, offs in rounds:
        assert data == [want[o : o + BLOCK] for o in offs]
    assert path.read_bytes()[60 * BLOCK :] == b"\x5a" * (4 * BLOCK)
    assert counting.pinned == 0  # before: one from_buffer per lease per call (28 here)


def test_release_drops_the_pin_and_an_unreleased_lease_is_collected(stack: Stack, tmp_path: pathlib.Path) -> None:
    path, _ = _data(tmp_path, 4)
    with _handle(stack, path) as h:
        bufs = h.lease_buffers(2, BLOCK)
        with pytest.raises(BufferError):
            bufs[0].close()  # pinned while leased: its memory cannot go away under a batch
        h.release_buffers(bufs[:1])
        bufs[0].close()  # released: the caller's again
        # A lease dropped without release_buffers (its pin refers back to it) is still freed.
        gone = weakref.ref(bufs[1])
        del bufs
        gc.collect()
        assert gone() is None


@pytest.mark.timeout(60)
def test_a_lease_released_while_its_read_is_in_flight_stays_mapped(stack: Stack, tmp_path: pathlib.Path) -> None:
    path, want = _data(tmp_path, 8)
    with _handle(stack, path) as h:
        bufs = h.lease_buffers(4, BLOCK)

        async def main() -> list[int]:
            task = asyncio.ensure_future(h.read_many_async([i * BLOCK for i in range(4)], bufs))
            await asyncio.sleep(0)  # queued; the flush runs before the next iteration
            h.release_buffers(bufs)  # the caller gives the leases back with the batch queued or in flight
            return await task

        assert _run(main()) == [BLOCK] * 4
        assert [bytes(b) for b in bufs] == [want[i * BLOCK : (i + 1) * BLOCK] for i in range(4)]


@pytest.mark.timeout(60)
def test_a_bad_offset_fails_its_own_await_only(stack: Stack, tmp_path: pathlib.Path) -> None:
    path, want = _data(tmp_path, 4)
    with _handle(stack, path) as h:
        bufs = h.lease_buffers(4, BLOCK)

        async def main() -> list[Any]:
            await h.read(BLOCK, 0)  # the handle's fast path is set up by the first await
            out = []
            for bad in ([1.5, 0], [1 << 63, 0], [1 << 64, 0]):
                out.append(
                    await asyncio.gather(
                        h.read_many_async(bad, bufs[:2]),
                        h.read_many_async([2 * BLOCK, 3 * BLOCK], bufs[2:]),  # the same flush
                        return_exceptions=True,
                    )
                )
            return out

        got = _run(main())
        assert bytes(bufs[2]) + bytes(bufs[3]) == want[2 * BLOCK :]
        h.release_buffers(bufs)
    assert [type(g[0]) for g in got] == [TypeError, ValueError, ValueError]  # refused before queuing
    assert [g[1] for g in got] == [[BLOCK, BLOCK]] * 3  # the neighbour's reads are not failed with it


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("reads_through_ring")  # (a cached batch copied at once makes no future at all)
def test_a_loop_with_its_own_create_future_gets_its_own_futures(stack: Stack, tmp_path: pathlib.Path) -> None:
    # The coalescer makes asyncio.Future directly only for loops whose create_future is
    # asyncio's own; a loop that overrides it (uvloop, instrumented loops) keeps its futures.
    path, want = _data(tmp_path, 8)
    made: list[asyncio.Future[Any]] = []

    class Loop(asyncio.SelectorEventLoop):
        def create_future(self) -> asyncio.Future[Any]:
            fut = super().create_future()
            made.append(fut)
            return fut

    with _handle(stack, path) as h:
        bufs = h.lease_buffers(2, BLOCK)

        async def main() -> tuple[list[Any], int]:
            await h.read(BLOCK, 0)  # the coalescer is made
            before = len(made)
            got = await asyncio.gather(h.read(BLOCK, BLOCK), h.read_many_async([0, 2 * BLOCK], bufs))
            return got, len(made) - before

        with asyncio.Runner(loop_factory=Loop) as runner:
            got, futures = runner.run(asyncio.wait_for(main(), 10.0))
        h.release_buffers(bufs)
    assert got == [want[BLOCK : 2 * BLOCK], [BLOCK, BLOCK]]
    assert futures == 2  # the read's and the batch's futures came from the loop's create_future
