"""asyncio ``await handle.read(n, off)`` of data the page cache holds: copied on the loop's thread.

``Coalescer.reader`` first asks the backend's ``read_cached`` (``preadv2(RWF_NOWAIT)``,
which never waits for the device): a read it copies in full is returned without a
future, a batch or a wake-up, up to ``core.aio_inline_read_budget`` bytes per handle.
What these tests pin down: such reads give the same bytes and make no ring batch; a
read not all cached (or short at end of file, or failing) goes to the ring whole and
gives what the ring gives; a task reading cached data still yields to the loop after
that budget (0: never copies); the handle's in-flight count stays balanced
(``close()`` does not wait) whatever raises.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.conftest import open_plain_uring
from tests.page_cache import evict
from tests.requires import skip_without
from tests.signal_points import Interrupt, code_of, signal_at, sweep
from uringstack.errors import RingClosedError
from uringstack.probe.tune_key import fs_type
from uringstack.ring.buffers import LeasedBuffer, RegisteredBuffer
from uringstack.ring.coalesce import FLUSH_ROUNDS, coalescer_for
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.uring_backend import UringFileIO

BLOCK = 4096
BLOCKS = 64
TAIL = 1808  # the file ends inside a block: a short read at its end


def _pattern(size: int) -> bytes:
    return bytes((i * 7 + i // 4096) & 0xFF for i in range(size))


@pytest.fixture
def data(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "data"
    path.write_bytes(_pattern(BLOCKS * BLOCK + TAIL))
    path.read_bytes()  # hot in the page cache
    return path


_PLAIN = {"core.cores": [0], "core.backend": "uring", "fixedbuf.mode": "off"}
BUDGET = 1 << 20  # (more than any test here reads; the test of the budget sets its own)


@pytest.fixture
def uring_stack() -> Iterator[Stack]:
    with open_stack(overrides={**_PLAIN, "core.aio_inline_read_budget": BUDGET}) as s:
        yield s


def _run(coro: Any, timeout: float = 10.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def _flushes(h: FileHandle) -> int:
    """Batches the coalescer of this thread's running loop submitted so far (call on the loop)."""
    assert h.ring is not None
    return coalescer_for(h.ring).flushes


@pytest.mark.timeout(60)
def test_cached_reads_of_32_tasks_are_copied_without_a_ring_batch(uring_stack: Stack, data: pathlib.Path) -> None:
    expect = data.read_bytes()
    with open_plain_uring(uring_stack, data, writable=False) as h:
        ring = h.ring
        assert ring is not None
        offsets = [((i * 37) % BLOCKS) * BLOCK for i in range(32)]

        async def main() -> tuple[list[bytes], int, dict[str, int], dict[str, int]]:
            assert await h.read(BLOCK, 0) == expect[:BLOCK]
            flushes = _flushes(h)
            before = ring.counters()
            got = await asyncio.gather(*(h.read(BLOCK, off) for off in offsets))
            return got, _flushes(h) - flushes, before, ring.counters()

        got, flushes, before, after = _run(main())
    assert got == [expect[off : off + BLOCK] for off in offsets]
    assert flushes == 0
    assert after["enters"] == before["enters"]
    assert after["submitted"] == before["submitted"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["override", "environment"])
def test_a_task_reading_cached_data_yields_to_the_loop_once_per_budget(
    data: pathlib.Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """With a 16 KiB budget, every fifth 4 KiB read goes through the ring, and the ticker
    task runs at least once per flush callback (whose rounds may wake the reader
    ``FLUSH_ROUNDS`` times): never more than that many budgets of reads in a row without it."""
    overrides: dict[str, Any] = dict(_PLAIN)
    if source == "override":
        overrides["core.aio_inline_read_budget"] = 4 * BLOCK
    else:
        monkeypatch.setenv("URINGSTACK_CORE__AIO_INLINE_READ_BUDGET", str(4 * BLOCK))
    expect = data.read_bytes()
    reads = 40
    with open_stack(overrides=overrides) as stack, open_plain_uring(stack, data, writable=False) as h:

        async def main() -> tuple[list[int], list[bytes], int]:
            ticks = 0
            seen: list[int] = []
            got: list[bytes] = []
            stop = False

            async def ticker() -> None:
                nonlocal ticks
                while not stop:
                    ticks += 1
                    await asyncio.sleep(0)

            t = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            flushes = _flushes(h)
            for i in range(reads):
                got.append(await h.read(BLOCK, (i % BLOCKS) * BLOCK))
                seen.append(ticks)
            stop = True
            await t
            return seen, got, _flushes(h) - flushes

        seen, got, flushes = _run(main())
    assert got == [expect[(i % BLOCKS) * BLOCK : (i % BLOCKS + 1) * BLOCK] for i in range(reads)]
    assert flushes == reads // 5  # reads 5, 10, ...: each budget of four, then one through the ring
    streaks = [sum(1 for s in seen if s == v) for v in set(seen)]
    assert max(streaks) <= 5 * FLUSH_ROUNDS, streaks
    assert len(streaks) >= reads // (5 * FLUSH_ROUNDS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("offset", "size", "want"),
    [
        (BLOCKS * BLOCK - BLOCK, 2 * BLOCK, BLOCK + TAIL),  # across the end: short, as read(2)
        (BLOCKS * BLOCK + TAIL, BLOCK, 0),  # at the end
        (BLOCKS * BLOCK + 10 * BLOCK, BLOCK, 0),  # past it
    ],
)
def test_a_read_at_the_end_of_the_file_is_short_as_through_the_ring(
    uring_stack: Stack, data: pathlib.Path, offset: int, size: int, want: int
) -> None:
    expect = data.read_bytes()
    with open_plain_uring(uring_stack, data, writable=False) as h:

        async def main() -> tuple[bytes, int]:
            flushes = _flushes(h)
            got = await h.read(size, offset)
            return got, _flushes(h) - flushes

        got, flushes = _run(main())
    assert got == expect[offset : offset + size]
    assert len(got) == want
    assert flushes == 1  # the short copy is not the answer: the ring's read is


def _stub_cached(h: FileHandle, result: Any) -> list[tuple[int, int]]:
    """Make the backend's page-cache copy of *h* copy *result*'s first bytes (an int: that
    many of the real bytes; ``-errno``; None: nothing cached); the calls it got."""
    io = h._io
    assert isinstance(io, UringFileIO)
    real = io.read_cached
    calls: list[tuple[int, int]] = []

    def read_cached(buf: Any, want: int, offset: int = -1) -> int | None:
        calls.append((want, offset))
        if result is None or result < 0:
            return result  # type: ignore[no-any-return]
        n = real(memoryview(buf)[:result], result, offset)
        assert n == result
        return n

    io.read_cached = read_cached  # type: ignore[method-assign]
    return calls


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cached", [None, 0, BLOCK, 3 * BLOCK - 1], ids=["none", "zero", "first-block", "all-but-1"])
def test_a_read_not_all_cached_is_read_whole_through_the_ring(
    uring_stack: Stack, data: pathlib.Path, cached: int | None
) -> None:
    expect = data.read_bytes()
    with open_plain_uring(uring_stack, data, writable=False) as h:
        calls = _stub_cached(h, cached)

        async def main() -> tuple[bytes, int]:
            flushes = _flushes(h)
            got = await h.read(3 * BLOCK, 5 * BLOCK)
            return got, _flushes(h) - flushes

        got, flushes = _run(main())
    assert calls == [(3 * BLOCK, 5 * BLOCK)]
    assert got == expect[5 * BLOCK : 8 * BLOCK]
    assert flushes == 1


@pytest.mark.timeout(60)
def test_a_failed_cached_copy_is_left_to_the_ring_which_gives_its_own_answer(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    """The copy said EIO; the ring's read of the same bytes succeeds here, and that is the
    answer: the copy's error is not raised on its own (nor its bytes kept)."""
    expect = data.read_bytes()
    with open_plain_uring(uring_stack, data, writable=False) as h:
        calls = _stub_cached(h, -errno.EIO)
        assert _run(h.read(BLOCK, BLOCK)) == expect[BLOCK : 2 * BLOCK]
    assert calls == [(BLOCK, BLOCK)]


def _evicted(path: pathlib.Path, block: int) -> int:
    """Drop *path* from the page cache until ``mincore`` finds *block* gone; an fd open on it."""
    fd = os.open(path, os.O_RDONLY)
    # (CI failed here once with the block still cached: DONTNEED drops only pages
    # nobody holds, so eviction is checked with mincore and asked again)
    if not evict(fd, block * BLOCK, BLOCK):
        os.close(fd)
        skip_without(f"a page cache that lets go of {path} (DONTNEED left block {block} cached 20 times)")
    return fd


def _kernel_misses(fd: int, block: int) -> bool:
    """Whether the kernel's own ``preadv2(RWF_NOWAIT)`` of the evicted *block* missed."""
    buf = bytearray(BLOCK)
    try:
        return os.preadv(fd, [buf], block * BLOCK, os.RWF_NOWAIT) < BLOCK
    except BlockingIOError:
        return True


# the kernel's own RWF_NOWAIT must miss this many of the evicted blocks before a copy that
# missed none of them is called a failure: below it a copy that never missed is likely by
# chance (at the worst miss rate about 1 run in 10,000 fails wrongly)
KERNEL_MISSES_TO_FAIL = 8


@pytest.mark.timeout(60)
def test_a_file_evicted_from_the_page_cache_is_read_through_the_ring(uring_stack: Stack, data: pathlib.Path) -> None:
    """What the page cache does not hold is read by the ring, not on the loop's thread.

    ``RWF_NOWAIT`` starts the readahead of a block it misses and may find it read by
    the time it looks again (6.12 in the NVMe VM under TCG: once, then in every one of
    15 tries in stop 56's CI run): the copy was right to take it, and another evicted
    block is tried. Beside each, the kernel's own ``preadv2(RWF_NOWAIT)`` of another
    evicted block says how often a miss can be seen here at all: a copy that never
    missed while the kernel's own call often did waited for the device; where the
    kernel's call never misses either, no miss can be made and the test is skipped."""
    kind = fs_type(os.stat(data).st_dev)
    if kind in ("tmpfs", "ramfs"):  # (their pages are the file: POSIX_FADV_DONTNEED cannot evict them)
        skip_without(f"a temporary directory on a file system whose page cache can be evicted ({data} is on {kind})")
    expect = data.read_bytes()
    blocks = range(7, BLOCKS - 2, 4)  # (apart: one block's readahead never reaches the next)
    kernel_misses = 0
    with open_plain_uring(uring_stack, data, writable=False) as h:
        io = h._io
        assert isinstance(io, UringFileIO)
        real = io.read_cached
        copied: list[int | None] = []

        def read_cached(buf: Any, want: int, offset: int = -1) -> int | None:
            copied.append(real(buf, want, offset))
            return copied[-1]

        io.read_cached = read_cached  # type: ignore[method-assign]
        for block in blocks:
            os.close(_evicted(data, block))

            async def main(block: int) -> tuple[bytes, int]:
                flushes = _flushes(h)
                got = await h.read(BLOCK, block * BLOCK)
                return got, _flushes(h) - flushes

            copied.clear()
            got, flushes = _run(main(block))
            assert got == expect[block * BLOCK : (block + 1) * BLOCK]
            if copied != [BLOCK]:  # the copy found nothing cached (None): the ring read it all
                assert copied == [None] and flushes == 1, copied
                return
            assert flushes == 0  # its readahead was done in time: the copy took the block
            fd = _evicted(data, block + 2)
            try:
                kernel_misses += _kernel_misses(fd, block + 2)
            finally:
                os.close(fd)
    if kernel_misses < KERNEL_MISSES_TO_FAIL:
        skip_without(
            "a device slower than the kernel's own RWF_NOWAIT readahead: here that call missed only "
            f"{kernel_misses} of {len(blocks)} evicted blocks (it finished their readahead in time), "
            "so a copy that missed none proves nothing"
        )
    pytest.fail(
        f"every evicted block was copied on the loop's thread ({len(blocks)} of them) while the kernel's "
        f"own RWF_NOWAIT missed {kernel_misses}: the copy must have waited for the device"
    )


@pytest.mark.timeout(60)
def test_a_budget_of_0_sends_every_read_through_the_ring(data: pathlib.Path) -> None:
    expect = data.read_bytes()
    with (
        open_stack(overrides={**_PLAIN, "core.aio_inline_read_budget": 0}) as stack,
        open_plain_uring(stack, data, writable=False) as h,
    ):

        async def main() -> tuple[list[bytes], int]:
            flushes = _flushes(h)
            got = [await h.read(BLOCK, i * BLOCK) for i in range(8)]
            return got, _flushes(h) - flushes

        got, flushes = _run(main())
    assert got == [expect[i * BLOCK : (i + 1) * BLOCK] for i in range(8)]
    assert flushes == 8


@pytest.mark.parametrize("budget", [1, BLOCK - 1])
def test_a_read_larger_than_what_is_left_of_the_budget_goes_through_the_ring(data: pathlib.Path, budget: int) -> None:
    """docs/config.md: each handle copies "at most this many bytes" on the loop's
    thread. Any budget left let a whole read be copied: with a budget of 1 byte,
    half of the 4 KiB reads and half of the batches were copied inline."""
    expect = data.read_bytes()
    with (
        open_stack(overrides={**_PLAIN, "core.aio_inline_read_budget": budget}) as stack,
        open_plain_uring(stack, data, writable=False) as h,
    ):
        bufs = [bytearray(BLOCK) for _ in range(2)]

        async def main() -> tuple[list[bytes], int, int]:
            flushes = _flushes(h)
            got = [await h.read(BLOCK, i * BLOCK) for i in range(8)]
            reads = _flushes(h) - flushes
            for i in range(4):
                assert await h.read_many_async([i * BLOCK, (i + 1) * BLOCK], bufs) == [BLOCK] * 2
            return got, reads, _flushes(h) - flushes - reads

        got, reads, batches = _run(main())
    assert got == [expect[i * BLOCK : (i + 1) * BLOCK] for i in range(8)]
    assert (reads, batches) == (8, 4)


def test_the_default_budget_copies_cached_reads(data: pathlib.Path) -> None:
    assert Stack.aio_inline_read_budget.__doc__
    with open_stack(overrides=_PLAIN) as stack:
        assert stack.aio_inline_read_budget == 16 * 1024
        with open_plain_uring(stack, data, writable=False) as h:

            async def main() -> int:
                flushes = _flushes(h)
                for i in range(4):
                    await h.read(BLOCK, i * BLOCK)
                return _flushes(h) - flushes

            assert _run(main()) == 0


@pytest.mark.timeout(60)
def test_a_closed_handle_refuses_a_cached_read(uring_stack: Stack, data: pathlib.Path) -> None:
    h = open_plain_uring(uring_stack, data, writable=False)

    async def main() -> None:
        assert await h.read(BLOCK, 0) == data.read_bytes()[:BLOCK]  # (the reader is set up)
        h.close()
        with pytest.raises(RingClosedError):
            await h.read(BLOCK, 0)

    _run(main())


# --- read_many_async -------------------------------------------------------------------------


def _lease_kind(stack: Stack, h: FileHandle, kind: str, count: int) -> list[Any]:
    if kind == "bytearray":
        return [bytearray(BLOCK) for _ in range(count)]
    bufs = h.lease_buffers(count, BLOCK)
    # fixedbuf.mode "on" builds the registered pool or fails the plan; "off" never builds one
    want = RegisteredBuffer if kind == "registered" else LeasedBuffer
    assert {type(b) for b in bufs} == {want}
    return bufs


def _contents(b: Any) -> bytes:
    return bytes(b.view) if isinstance(b, RegisteredBuffer) else bytes(b)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["plain", "registered", "bytearray"])
def test_a_cached_batch_is_copied_without_a_ring_batch(data: pathlib.Path, kind: str) -> None:
    expect = data.read_bytes()
    fixedbuf = "on" if kind == "registered" else "off"
    overrides = {**_PLAIN, "fixedbuf.mode": fixedbuf, "core.aio_inline_read_budget": BUDGET}
    with open_stack(overrides=overrides) as stack, open_plain_uring(stack, data, writable=False) as h:
        bufs = _lease_kind(stack, h, kind, 4)
        offsets = [9 * BLOCK, 2 * BLOCK, 40 * BLOCK, 0]

        async def main() -> tuple[list[int], int]:
            await h.read(BLOCK, 0)  # (the handle's coalescer is set up)
            flushes = _flushes(h)
            got = await h.read_many_async(offsets, bufs)
            return got, _flushes(h) - flushes

        try:
            got, flushes = _run(main())
            assert got == [BLOCK] * 4
            assert [_contents(b) for b in bufs] == [expect[o : o + BLOCK] for o in offsets]
        finally:
            if kind != "bytearray":
                h.release_buffers(bufs)
    assert flushes == 0


@pytest.mark.timeout(60)
def test_read_and_read_many_async_share_the_handles_budget(data: pathlib.Path) -> None:
    """Budget 16 KiB: three 4 KiB reads leave 4 KiB, so a batch of four (16 KiB, over what
    is left) goes through the ring and the budget starts again: the next read is copied.
    (Until session 28 any budget left let the whole batch be copied.)"""
    expect = data.read_bytes()
    with (
        open_stack(overrides={**_PLAIN, "core.aio_inline_read_budget": 4 * BLOCK}) as stack,
        open_plain_uring(stack, data, writable=False) as h,
    ):
        bufs = [bytearray(BLOCK) for _ in range(4)]

        async def main() -> list[int]:
            await h.read(BLOCK, 0)  # (the coalescer is set up, the budget starts; this read is copied)
            steps = [_flushes(h)]
            for i in range(2):
                assert await h.read(BLOCK, i * BLOCK) == expect[i * BLOCK : (i + 1) * BLOCK]
            steps.append(_flushes(h))
            assert await h.read_many_async([4 * BLOCK, 5 * BLOCK, 6 * BLOCK, 7 * BLOCK], bufs) == [BLOCK] * 4
            steps.append(_flushes(h))
            assert await h.read(BLOCK, 8 * BLOCK) == expect[8 * BLOCK : 9 * BLOCK]
            steps.append(_flushes(h))
            return steps

        steps = _run(main())
    assert [bytes(b) for b in bufs] == [expect[i * BLOCK : (i + 1) * BLOCK] for i in range(4, 8)]
    assert [b - steps[0] for b in steps] == [0, 0, 1, 1]


@pytest.mark.timeout(60)
def test_batches_alternate_once_each_spends_the_budget(data: pathlib.Path) -> None:
    """Budget 16 KiB, batches of four 4 KiB reads after one copied read (12 KiB left):
    through the ring (the budget starts again), copied (it is spent), through the ring,
    copied."""
    with (
        open_stack(overrides={**_PLAIN, "core.aio_inline_read_budget": 4 * BLOCK}) as stack,
        open_plain_uring(stack, data, writable=False) as h,
    ):
        bufs = [bytearray(BLOCK) for _ in range(4)]

        async def main() -> list[int]:
            await h.read(BLOCK, 0)
            steps = []
            for i in range(4):
                before = _flushes(h)
                assert await h.read_many_async([(i + k) * BLOCK for k in range(4)], bufs) == [BLOCK] * 4
                steps.append(_flushes(h) - before)
            return steps

        assert _run(main()) == [1, 0, 1, 0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["mixed-kinds", "not-cached", "end-of-file", "memoryview"], ids=lambda c: str(c))
def test_a_batch_this_path_does_not_copy_whole_goes_through_the_ring(
    uring_stack: Stack, data: pathlib.Path, case: str
) -> None:
    expect = data.read_bytes()
    size = len(expect)
    with open_plain_uring(uring_stack, data, writable=False) as h:
        bufs: list[Any] = [bytearray(BLOCK) for _ in range(3)]
        offsets = [BLOCK, 3 * BLOCK, 5 * BLOCK]
        if case == "mixed-kinds":
            bufs[1] = memoryview(bytearray(BLOCK))
        elif case == "memoryview":
            bufs = [memoryview(bytearray(BLOCK)) for _ in range(3)]
        elif case == "end-of-file":
            offsets[2] = size - 100
        elif case == "not-cached":
            # the first op copied, then a miss (after the first read below sets the reader up)
            calls = _stub_cached(h, BLOCK)
            io = h._io
            assert isinstance(io, UringFileIO)
            stubbed = io.read_cached

            def half(buf: Any, want: int, offset: int = -1) -> int | None:
                return stubbed(buf, want, offset) if len(calls) < 2 else None

            io.read_cached = half  # type: ignore[method-assign]

        async def main() -> tuple[list[int], int]:
            await h.read(BLOCK, 0)
            flushes = _flushes(h)
            got = await h.read_many_async(offsets, bufs)
            return got, _flushes(h) - flushes

        got, flushes = _run(main())
    want = [min(BLOCK, size - o) for o in offsets]
    assert got == want
    assert [bytes(b)[:n] for b, n in zip(bufs, want, strict=True)] == [
        expect[o : o + n] for o, n in zip(offsets, want, strict=True)
    ]
    assert flushes == 1


@pytest.mark.timeout(60)
def test_a_bad_batch_raises_as_before_and_leaves_the_copy_on(uring_stack: Stack, data: pathlib.Path) -> None:
    """A negative offset is the queued path's ``ValueError``, not a preadv EINVAL that the
    copy would take for the file system refusing RWF_NOWAIT (and stop copying for good)."""
    with open_plain_uring(uring_stack, data, writable=False) as h:
        bufs = [bytearray(BLOCK), bytearray(BLOCK)]

        async def main() -> int:
            await h.read(BLOCK, 0)
            with pytest.raises(ValueError, match="negative"):
                await h.read_many_async([0, -BLOCK], bufs)
            with pytest.raises(ValueError):
                await h.read_many_async([0], bufs)
            flushes = _flushes(h)
            assert await h.read_many_async([0, BLOCK], bufs) == [BLOCK, BLOCK]
            return _flushes(h) - flushes

        assert _run(main()) == 0


# --- a signal anywhere in a copy ----------------------------------------------------------


async def _one_read(h: FileHandle, expect: bytes) -> bool:
    return await h.read(BLOCK, 3 * BLOCK) == expect[3 * BLOCK : 4 * BLOCK]


async def _one_batch(h: FileHandle, expect: bytes) -> bool:
    bufs = [bytearray(BLOCK), bytearray(BLOCK)]
    offsets = [3 * BLOCK, 7 * BLOCK]
    got = await h.read_many_async(offsets, bufs)
    return got == [BLOCK, BLOCK] and [bytes(b) for b in bufs] == [expect[o : o + BLOCK] for o in offsets]


def _interrupted_once(
    stack: Stack, data: pathlib.Path, at: int, op: Callable[[FileHandle, bytes], Awaitable[bool]]
) -> str | None:
    """*op* with a signal at its *at*-th point: it raises or gives the right bytes, does so again
    after, and ``close()`` does not wait for anything it left counted."""
    expect = data.read_bytes()
    h = open_plain_uring(stack, data, writable=False)
    chosen = code_of(files=("ring/coalesce.py", "stack/handle.py", "stack/uring_backend.py", "ring/inflight.py"))

    async def main() -> str | None:
        await h.read(BLOCK, 0)  # (the coalescer is set up, not traced)
        armed = True
        with signal_at(chosen, at, lambda: armed) as sent:
            try:
                right: bool | None = await op(h, expect)
            except Interrupt:
                right = None
            finally:
                armed = False
        assert right is not False, sent.where
        assert await op(h, expect), sent.where
        return sent.where

    try:
        where = _run(main())
    finally:
        t0 = time.monotonic()
        h.close()
        waited = time.monotonic() - t0
    assert waited < 2.0, f"close() waited {waited:.1f} s for a copy the signal cut short ({where})"
    return where


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", [_one_read, _one_batch], ids=["read", "read_many_async"])
def test_a_signal_anywhere_in_a_cached_copy_leaves_the_handle_closable(
    uring_stack: Stack, data: pathlib.Path, op: Callable[[FileHandle, bytes], Awaitable[bool]]
) -> None:
    points = sweep(lambda at: _interrupted_once(uring_stack, data, at, op), most=400)
    assert points >= 3
