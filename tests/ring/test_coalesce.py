"""The asyncio path: single awaits of one loop iteration go to the kernel as one batch.

Each test also pins down a semantic the coalescing must keep: short reads at
end of file, errors as ``OSError`` with errno (one failing op does not fail
the others of its batch), cancellation never freeing memory the kernel still
owns, closing with awaits in flight failing them with a clear error within
seconds, and the same results on the fallback backend.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import os
import pathlib
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar

import pytest

from tests.conftest import open_plain_uring
from uringstack.errors import RingClosedError, UringIOError
from uringstack.ring.coalesce import FLUSH_ROUNDS, Coalescer, coalescer_for
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle

# These tests are about the ring's batches: cached reads go through them too (no inline copy).
pytestmark = pytest.mark.usefixtures("reads_through_ring")

BLOCK = 4096


def _pattern(size: int) -> bytes:
    return bytes((i * 7 + i // 4096) & 0xFF for i in range(size))


@pytest.fixture
def data(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "data"
    path.write_bytes(_pattern(64 * BLOCK + 1808))  # ends inside a block: a short read at EOF
    path.read_bytes()  # hot in the page cache
    return path


@pytest.fixture(params=["auto", "fallback"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with open_stack(overrides={"core.cores": [0], "core.backend": request.param}) as s:
        yield s


@pytest.fixture
def uring_stack() -> Iterator[Stack]:
    # iopoll off: an O_DIRECT open stays on the storage ring (the coalescer's), also where
    # tmp_path is on a device with poll queues (the NVMe VM)
    with open_stack(overrides={"core.cores": [0], "iopoll.mode": "off"}) as s:
        yield s


def _uring_handle(stack: Stack, path: pathlib.Path, writable: bool = False) -> FileHandle:
    h: FileHandle = open_plain_uring(stack, path, writable)
    return h


def _run(coro: Any, timeout: float = 10.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.mark.timeout(60)
def test_single_reads_of_32_tasks_go_out_in_one_io_uring_enter(uring_stack: Stack, data: pathlib.Path) -> None:
    expect = data.read_bytes()
    with _uring_handle(uring_stack, data) as h:
        ring = h.ring
        assert ring is not None
        offsets = [((i * 37) % 64) * BLOCK for i in range(32)]

        async def main() -> tuple[list[bytes], dict[str, int], dict[str, int]]:
            await h.read(BLOCK, 0)  # the eventfd bridge is set up by the first await
            before = ring.counters()
            got = await asyncio.gather(*(h.read(BLOCK, off) for off in offsets))
            return got, before, ring.counters()

        got, before, after = _run(main())
    assert got == [expect[off : off + BLOCK] for off in offsets]
    assert after["submitted"] - before["submitted"] == 32
    # One batch for all 32 awaits (before: one io_uring_enter per await, 32 in all).
    assert after["enters"] - before["enters"] == 1, (before, after)


@pytest.mark.timeout(60)
def test_read_many_async_of_several_tasks_and_single_writes_share_submissions(
    uring_stack: Stack, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "rw"
    path.write_bytes(_pattern(32 * BLOCK))
    with _uring_handle(uring_stack, path, writable=True) as h:
        ring = h.ring
        assert ring is not None

        async def main() -> tuple[list[Any], int]:
            await h.read(BLOCK, 0)
            before = ring.counters()["enters"]
            bufs = [[bytearray(BLOCK) for _ in range(4)] for _ in range(4)]
            reads = [h.read_many_async([(4 * t + i) * BLOCK for i in range(4)], bufs[t]) for t in range(4)]
            writes = [h.write(bytes([0xA0 + t]) * BLOCK, (16 + t) * BLOCK) for t in range(8)]
            got = await asyncio.gather(*reads, *writes)
            want = _pattern(32 * BLOCK)
            assert [b"".join(b) for b in bufs] == [want[t * 4 * BLOCK : (t + 1) * 4 * BLOCK] for t in range(4)]
            return got, ring.counters()["enters"] - before

        got, enters = _run(main())
    assert got == [[BLOCK] * 4] * 4 + [BLOCK] * 8
    assert enters == 2, enters  # one batch of reads, one of writes (before: 12)
    on_disk = path.read_bytes()
    for t in range(8):
        assert on_disk[(16 + t) * BLOCK : (17 + t) * BLOCK] == bytes([0xA0 + t]) * BLOCK


@pytest.mark.timeout(60)
def test_short_reads_at_end_of_file(stack: Stack, data: pathlib.Path) -> None:
    expect = data.read_bytes()
    size = len(expect)
    with stack.open(data) as h:

        async def main() -> list[Any]:
            buf = bytearray(BLOCK)
            many = [bytearray(BLOCK), bytearray(BLOCK)]
            return await asyncio.gather(
                h.read(BLOCK, 64 * BLOCK),  # 1808 bytes left
                h.read(BLOCK, size),  # at EOF
                h.read(BLOCK, size + 10 * BLOCK),  # past EOF
                h.read(3 * BLOCK, 62 * BLOCK),  # spans the end
                h.read_into_async(buf, 64 * BLOCK),
                h.read_many_async([63 * BLOCK, 64 * BLOCK], many),
                h.read(BLOCK, 5),
            )

        got = _run(main())
    assert got[0] == expect[64 * BLOCK :] and len(got[0]) == 1808
    assert got[1] == b"" and got[2] == b""
    assert got[3] == expect[62 * BLOCK :]
    assert got[4] == 1808
    assert got[5] == [BLOCK, 1808]
    assert got[6] == expect[5 : 5 + BLOCK]


@pytest.mark.timeout(60)
def test_a_failing_op_raises_with_errno_and_the_rest_of_its_batch_succeeds(
    stack: Stack, data: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    other = tmp_path / "w"
    other.write_bytes(b"\0" * BLOCK)
    with stack.open(data, writable=False) as ro, stack.open(other, writable=True) as rw:

        async def main() -> list[Any]:
            return await asyncio.gather(
                ro.write(b"x" * BLOCK, 0),  # read-only descriptor: EBADF from the kernel (or pwritev)
                rw.write(b"y" * BLOCK, 0),
                ro.read(BLOCK, BLOCK),
                ro.read(BLOCK, -1),  # bad input: refused before submission, alone
                return_exceptions=True,
            )

        got = _run(main())
    assert isinstance(got[0], UringIOError) and isinstance(got[0], OSError)
    assert got[0].errno == errno.EBADF, got[0]
    assert got[1] == BLOCK
    assert got[2] == data.read_bytes()[BLOCK : 2 * BLOCK]
    assert isinstance(got[3], ValueError) and "offset -1" in str(got[3])
    assert other.read_bytes() == b"y" * BLOCK


class _PipeBacked:
    """A uring handle whose descriptor is swapped for a pipe's read end: its reads stay in
    flight until the test writes to the pipe (a file read completes too fast to catch)."""

    def __init__(self, handle: FileHandle) -> None:
        self.handle = handle
        self.r, self.w = os.pipe()
        self.file_fd = handle.io.fd
        self.fixed_index = handle.io.fixed_index
        handle.io.fd = self.r
        handle.io.fixed_index = None  # a registered-file slot would still name the file

    def restore(self) -> None:
        self.handle.io.fd = self.file_fd
        self.handle.io.fixed_index = self.fixed_index
        os.close(self.r)
        os.close(self.w)


@pytest.mark.timeout(60)
def test_a_cancelled_await_returns_once_the_kernel_let_go_of_its_buffer(uring_stack: Stack, data: pathlib.Path) -> None:
    """The buffer is never freed while the kernel holds it, and a cancelled await returns
    only once the kernel let go of it (its op cancelled there: docs/api.md, asyncio,
    "Cancelling an await"; until session 34 the await returned with the op in flight)."""
    h = _uring_handle(uring_stack, data)
    pipe = _PipeBacked(h)
    ring = h.ring
    assert ring is not None
    try:
        holder = [(ctypes.c_char * 16)()]  # the only reference the test keeps
        alive = weakref.ref(holder[0])

        async def main() -> None:
            task = asyncio.create_task(h.read_into_async(holder[0], 0))
            for _ in range(3):
                await asyncio.sleep(0)  # queued, flushed: in the kernel now
            assert ring.inflight == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert ring.inflight == 0, "the cancelled read is still in the kernel"

        _run(main())
        holder.clear()
        gc.collect()
        assert alive() is None  # released: its completion was reaped before the CancelledError
    finally:
        pipe.restore()
        h.close()


@pytest.mark.timeout(60)
def test_an_await_cancelled_before_its_flush_is_never_submitted(uring_stack: Stack, data: pathlib.Path) -> None:
    with _uring_handle(uring_stack, data) as h:
        ring = h.ring
        assert ring is not None

        async def main() -> int:
            await h.read(BLOCK, 0)
            before = ring.counters()["submitted"]
            task = asyncio.create_task(h.read(BLOCK, BLOCK))
            await asyncio.sleep(0)  # the task queued its read; the flush has not run yet
            task.cancel()
            kept = await h.read(BLOCK, 2 * BLOCK)  # flushed in the same iteration as the cancelled one
            assert kept == data.read_bytes()[2 * BLOCK : 3 * BLOCK]
            return ring.counters()["submitted"] - before

        assert _run(main()) == 1


@pytest.mark.timeout(60)
def test_closing_the_handle_fails_awaits_still_queued_with_a_clear_error(stack: Stack, data: pathlib.Path) -> None:
    h = stack.open(data)

    async def main() -> list[Any]:
        tasks = [asyncio.create_task(h.read(BLOCK, i * BLOCK)) for i in range(4)]
        await asyncio.sleep(0)  # queued (io_uring: not yet submitted)
        h.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    got = _run(main())
    for res in got:
        # io_uring: refused at the flush; fallback: already running on the pool, so it completes
        assert isinstance(res, RingClosedError | bytes), res
        if isinstance(res, RingClosedError):
            assert "closed" in str(res) and str(data) in str(res)


@pytest.mark.timeout(60)
def test_closing_the_ring_under_an_await_in_flight_fails_it_with_ecanceled(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    h = _uring_handle(uring_stack, data)
    pipe = _PipeBacked(h)
    ring = h.ring
    assert ring is not None
    try:

        async def main() -> BaseException | None:
            task = asyncio.create_task(h.read(BLOCK, 0))
            for _ in range(3):
                await asyncio.sleep(0)
            assert ring.inflight == 1
            ring.close()  # what stack.close() does last: cancels what is in flight
            try:
                await asyncio.wait_for(task, 5)
            except Exception as exc:
                return exc
            return None

        exc = _run(main())
        assert isinstance(exc, UringIOError), exc
        assert exc.errno in (errno.ECANCELED, errno.EINTR), exc
        with pytest.raises(RingClosedError):
            _run(h.read(BLOCK, 0))
    finally:
        pipe.restore()
        h.close()


@pytest.mark.timeout(60)
def test_stack_close_with_an_await_stuck_in_flight_fails_within_seconds(
    data: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uringstack.ring import inflight

    monkeypatch.setattr(inflight, "CLOSE_TIMEOUT_S", 0.5)
    stack = open_stack(overrides={"core.cores": [0]})
    h = _uring_handle(stack, data)
    pipe = _PipeBacked(h)

    async def main() -> tuple[BaseException | None, BaseException | None]:
        task = asyncio.create_task(h.read(BLOCK, 0))
        for _ in range(3):
            await asyncio.sleep(0)
        close_error: BaseException | None = None
        try:
            stack.close()
        except Exception as exc:
            close_error = exc
        try:
            await asyncio.wait_for(task, 5)
        except Exception as exc:
            return close_error, exc
        return close_error, None

    try:
        close_error, read_error = _run(main())
    finally:
        pipe.restore()
    # The handle's close names the stuck op (and leaves the descriptor open); the ring's close
    # then cancels it, and the await fails with the cancellation instead of hanging.
    assert isinstance(close_error, TimeoutError | UringIOError), close_error
    assert isinstance(read_error, UringIOError), read_error
    assert read_error.errno in (errno.ECANCELED, errno.EINTR), read_error


@pytest.mark.timeout(60)
def test_aio_open_random_reads_are_coalesced_across_files(uring_stack: Stack, data: pathlib.Path) -> None:
    import uringstack.aio

    expect = data.read_bytes()
    with _uring_handle(uring_stack, data) as h:
        ring = h.ring
        assert ring is not None

    async def main() -> tuple[list[bytes], int]:
        files = [await uringstack.aio.open(data, "rb", stack=uring_stack) for _ in range(16)]
        await files[0].read(1)
        for i, f in enumerate(files):
            await f.seek(i * BLOCK)
        before = ring.counters()["enters"]
        got = await asyncio.gather(*(f.read(BLOCK) for f in files))
        enters = ring.counters()["enters"] - before
        for f in files:
            await f.close()
        return got, enters

    got, enters = _run(main())
    assert got == [expect[i * BLOCK : (i + 1) * BLOCK] for i in range(16)]
    assert enters == 1, enters


@pytest.mark.timeout(60)
def test_flushes_while_an_earlier_batch_is_in_flight_get_their_own_columns_and_arena(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # The coalescer reuses column sets and read arenas across flushes: one whose
    # batch is still in the kernel must never be refilled (the kernel would write
    # a later read's bytes into an arena another batch has not delivered yet).
    expect = data.read_bytes()
    stuck = _uring_handle(uring_stack, data)
    pipe = _PipeBacked(stuck)
    try:
        with _uring_handle(uring_stack, data) as h:
            assert h.ring is stuck.ring

            async def main() -> tuple[bytes, list[list[bytes]]]:
                late = asyncio.create_task(stuck.read(4, 0))
                for _ in range(3):
                    await asyncio.sleep(0)  # flushed: in the kernel, waiting on the pipe
                rounds = []
                for r in range(6):
                    offs = [((i * 11 + r * 5) % 64) * BLOCK for i in range(32)]
                    rounds.append(list(await asyncio.gather(*(h.read(BLOCK, o) for o in offs))))
                    assert not late.done()
                os.write(pipe.w, b"late")
                return await asyncio.wait_for(late, 5), rounds

            late, rounds = _run(main())
        assert late == b"late"
        for r, got in enumerate(rounds):
            offs = [((i * 11 + r * 5) % 64) * BLOCK for i in range(32)]
            assert got == [expect[o : o + BLOCK] for o in offs], f"round {r}"
    finally:
        pipe.restore()
        stuck.close()


@pytest.mark.timeout(60)
def test_a_read_from_a_second_running_loop_is_refused_not_queued_on_the_first(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # The hot path of ``await read`` skips asyncio's running-loop lookup: it must
    # still see that another thread's loop is calling, and refuse (never queue the
    # op on a loop that is not the caller's, where its await would hang).
    import threading

    with _uring_handle(uring_stack, data) as h:
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                asyncio.run(asyncio.wait_for(h.read(BLOCK, 0), 5))
            except BaseException as exc:
                errors.append(exc)

        async def main() -> None:
            assert await h.read(BLOCK, 0) == data.read_bytes()[:BLOCK]  # this loop owns the ring now
            t = threading.Thread(target=other_thread)
            t.start()
            while t.is_alive():
                await asyncio.sleep(0.01)
            t.join()

        _run(main())
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
        assert "another running event loop" in str(errors[0])


@pytest.mark.timeout(60)
def test_an_arena_is_reused_only_after_its_bytes_were_delivered(uring_stack: Stack, data: pathlib.Path) -> None:
    # A completes in the kernel (its bytes are in its arena) but is not reaped yet
    # when B is flushed; B must not read into A's arena, or A delivers B's bytes.
    expect = data.read_bytes()
    stuck = _uring_handle(uring_stack, data)
    pipe = _PipeBacked(stuck)
    try:
        with _uring_handle(uring_stack, data) as h:

            async def main() -> tuple[bytes, bytes]:
                a = asyncio.create_task(stuck.read(4, 0))
                for _ in range(3):
                    await asyncio.sleep(0)  # A is in the kernel, waiting on the pipe
                os.write(pipe.w, b"late")  # A completes now: its CQE waits to be reaped
                b = await h.read(4, 8)  # flushed before the loop's eventfd reader reaps A
                return await asyncio.wait_for(a, 5), b

            got_a, got_b = _run(main())
        assert got_b == expect[8:12]
        assert got_a == b"late", "A's arena was refilled by a later flush before A's bytes were copied out"
    finally:
        pipe.restore()
        stuck.close()


@pytest.mark.timeout(60)
def test_flushes_of_changing_read_sizes_each_read_into_their_own_arena_places(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # Reads of one size keep their arena addresses in the pooled columns across
    # flushes; a flush of another size, a bigger arena (a new address) or mixed
    # sizes must write them again, or the kernel reads into the wrong places.
    expect = data.read_bytes()
    rounds = [[BLOCK] * 8, [2 * BLOCK] * 8, [BLOCK] * 8, [100] * 8, [BLOCK, 512] * 4, [BLOCK] * 8, [3 * BLOCK] * 8]
    with _uring_handle(uring_stack, data) as h:

        async def main() -> list[tuple[list[int], list[int], list[bytes], int]]:
            await h.read(BLOCK, 0)
            out = []
            for r, sizes in enumerate(rounds):
                offsets = [((i * 5 + r * 3) % 48) * BLOCK + r * 64 for i in range(len(sizes))]
                co = h._fast_reads
                assert co is not None
                before = co.flushes
                got = await asyncio.gather(*(h.read(n, off) for n, off in zip(sizes, offsets, strict=True)))
                out.append((sizes, offsets, got, co.flushes - before))
            return out

        for sizes, offsets, got, flushes in _run(main()):
            assert flushes == 1
            assert got == [expect[off : off + n] for n, off in zip(sizes, offsets, strict=True)], sizes


@pytest.mark.timeout(60)
def test_a_close_waits_for_a_flush_still_being_submitted(uring_stack: Stack, data: pathlib.Path) -> None:
    """The flush's pending is tracked before submission: until it has a batch (or
    failed to submit), a close() in another thread must wait for it, then refuse new flushes."""
    from uringstack.ring.coalesce import FlushPending
    from uringstack.ring.inflight import InflightTracker

    with _uring_handle(uring_stack, data) as h:
        assert h.ring is not None
        tracker = InflightTracker("f")
        pending = FlushPending(h.ring)
        tracker.track(pending)
        with pytest.raises(TimeoutError, match="1 op"):
            pending.n = 1
            tracker.close(timeout=0.2)  # submission "under way": the close must not return
        with pytest.raises(RingClosedError):
            tracker.track(FlushPending(h.ring))
        pending.failed = True  # nothing was submitted after all
        tracker.close(timeout=5)


@pytest.mark.timeout(60)
def test_a_batch_wakes_its_awaiting_tasks_without_a_loop_handle_per_await(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # fut.set_result schedules the task's wake-up with loop.call_soon (a Handle and a
    # loop turn per await); the coalescer runs the wake-ups of a delivered batch in place.
    expect = data.read_bytes()
    with _uring_handle(uring_stack, data) as h:

        async def main() -> tuple[int, int]:
            loop = asyncio.get_running_loop()
            await h.read(BLOCK, 0)
            calls = [0]
            plain = loop.call_soon

            def counting(*args: Any, **kwargs: Any) -> Any:
                calls[0] += 1
                return plain(*args, **kwargs)

            loop.call_soon = counting  # type: ignore[method-assign]

            async def one(t: int) -> int:
                n = 0
                for i in range(20):
                    off = ((t * 31 + i * 7) % 64) * BLOCK
                    assert await h.read(BLOCK, off) == expect[off : off + BLOCK]
                    n += 1
                return n

            try:
                reads = sum(await asyncio.gather(*(one(t) for t in range(32))))
            finally:
                del loop.call_soon
            return reads, calls[0]

        reads, calls = _run(main())
    assert reads == 640
    # One call_soon per flush (a batch of up to 32 reads), not one per await (>= 640).
    assert calls < reads // 4, calls


@pytest.mark.timeout(60)
def test_a_task_woken_by_a_batch_runs_in_its_own_context(uring_stack: Stack, data: pathlib.Path) -> None:
    import contextvars

    who: contextvars.ContextVar[int] = contextvars.ContextVar("who")
    with _uring_handle(uring_stack, data) as h:

        async def one(t: int) -> list[int]:
            who.set(t)
            seen = []
            for i in range(10):
                await h.read(BLOCK, ((t + i) % 64) * BLOCK)
                seen.append(who.get())
            return seen

        async def main() -> list[list[int]]:
            return await asyncio.gather(*(one(t) for t in range(16)))

        got = _run(main())
    assert got == [[t] * 10 for t in range(16)]


@pytest.mark.timeout(60)
def test_a_task_woken_by_a_reap_may_use_the_ring_synchronously(uring_stack: Stack, data: pathlib.Path) -> None:
    # The wake-ups run after the reap released the ring's lock: a woken task that
    # submits and waits synchronously on the same ring must not deadlock on it.
    expect = data.read_bytes()
    with _uring_handle(uring_stack, data) as h:
        ring = h.ring
        assert ring is not None

        async def one(t: int) -> None:
            buf = bytearray(BLOCK)
            for i in range(10):
                off = ((t * 5 + i) % 64) * BLOCK
                assert await h.read(BLOCK, off) == expect[off : off + BLOCK]
                # Woken with the ring's lock held, the read_many below would deadlock on it.
                assert not ring._lock.locked()
                assert h.read_many([off], [buf]) == [BLOCK]
                assert buf == expect[off : off + BLOCK]

        async def main() -> None:
            await asyncio.gather(*(one(t) for t in range(8)))

        _run(main())


def test_a_wake_up_that_raises_still_lets_the_rest_of_its_batch_resolve() -> None:
    # A task's step re-raises SystemExit and KeyboardInterrupt, out of the wake-up the
    # coalescer runs in place; the later futures of the batch must still get their results.
    # (Driven through resolve with a raising callback: a real task raising SystemExit
    # upsets pytest's later imports on CPython 3.11, with or without the coalescer.)
    from uringstack.ring.wakeups import resolve

    loop = asyncio.new_event_loop()
    try:
        futures = [loop.create_future() for _ in range(4)]
        woken: list[int] = []

        def boom(_: asyncio.Future[Any]) -> None:
            raise SystemExit(3)

        futures[0].add_done_callback(boom)
        for fut in futures[1:]:
            fut.add_done_callback(lambda f: woken.append(f.result()))
        with pytest.raises(SystemExit):
            resolve(futures, [10, 11, 12, 13], True)
        assert [f.result() for f in futures] == [10, 11, 12, 13]
        loop.run_until_complete(asyncio.sleep(0))  # the rest wake up through the loop
        assert woken == [11, 12, 13]
    finally:
        loop.close()


def test_wake_ups_on_exact_futures_run_once_and_one_that_raises_still_lets_the_rest_resolve() -> None:
    # On exact asyncio.Futures (asyncio's own loops) resolve calls the future's methods
    # unbound: each task's wake-up is taken off (so it runs once, in place, not again
    # from the loop) and a wake-up that raises still leaves the rest of the batch resolved.
    from uringstack.ring.wakeups import resolve

    loop = asyncio.new_event_loop()
    try:
        for plain in (True, False):
            futures = [asyncio.Future(loop=loop) for _ in range(4)]
            woken: list[Any] = []

            def boom(f: asyncio.Future[Any], woken: list[Any] = woken) -> None:
                woken.append("boom")
                if woken.count("boom") == 1:
                    raise KeyboardInterrupt

            futures[1].add_done_callback(boom)
            for fut in (futures[0], *futures[2:]):
                fut.add_done_callback(lambda f, woken=woken: woken.append(f.result()))
            with pytest.raises(KeyboardInterrupt):
                resolve(futures, [b"a", b"b", -errno.EIO, b"d"], True, plain)
            assert [f.result() for f in futures] == [b"a", b"b", -errno.EIO, b"d"]
            assert woken == [b"a", "boom"]  # woken in place, up to the raise
            loop.run_until_complete(asyncio.sleep(0))  # the rest wake up through the loop
            assert woken == [b"a", "boom", -errno.EIO, b"d"]  # and none a second time
    finally:
        loop.close()


class _OwnFuture(asyncio.Future[Any]):
    """A loop's own kind of future, whose set_result must be the one called."""

    results: ClassVar[list[Any]] = []

    def set_result(self, result: Any) -> None:
        _OwnFuture.results.append(result)
        super().set_result(result)


class _OwnFutureLoop(asyncio.SelectorEventLoop):
    def create_future(self) -> asyncio.Future[Any]:
        return _OwnFuture(loop=self)


@pytest.mark.timeout(60)
def test_a_loop_that_makes_its_own_futures_has_their_own_set_result_called(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # The in-place wake-up calls asyncio.Future's methods unbound only on exact
    # asyncio.Futures: a loop's own future class keeps its overrides.
    expect = data.read_bytes()
    _OwnFuture.results.clear()
    with _uring_handle(uring_stack, data) as h:

        async def main() -> list[bytes]:
            return await asyncio.gather(*(h.read(BLOCK, i * BLOCK) for i in range(8)))

        with asyncio.Runner(loop_factory=_OwnFutureLoop) as runner:
            got = runner.run(asyncio.wait_for(main(), 10))
    assert got == [expect[i * BLOCK : (i + 1) * BLOCK] for i in range(8)]
    # (gather and wait_for make their own futures of the loop too: only the reads' bytes counted)
    assert sorted(r for r in _OwnFuture.results if type(r) is bytes) == sorted(got)


def _coalescer_of(h: FileHandle) -> Coalescer:
    """The running loop's coalescer of *h*'s ring."""
    ring = h.ring
    assert ring is not None
    return coalescer_for(ring)


@pytest.mark.timeout(60)
def test_reads_of_tasks_woken_in_place_go_out_in_the_same_loop_callback_for_a_bounded_number_of_rounds(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # Page-cache hits complete inside their submission and their tasks, woken in place,
    # queue their next reads at once: those go out in the next round of the same flush
    # callback (no loop turn per flush), but at most FLUSH_ROUNDS rounds per callback, so
    # a task that is not reading still runs at least once every FLUSH_ROUNDS rounds.
    expect = data.read_bytes()
    with _uring_handle(uring_stack, data) as h:

        async def main() -> tuple[int, int, int, bool]:
            co = _coalescer_of(h)
            callbacks = 0
            flush = co.flush

            def counted() -> None:
                nonlocal callbacks
                callbacks += 1
                flush()

            co.__dict__["flush"] = counted
            ticks = 0
            reading = True

            async def ticker() -> None:
                nonlocal ticks
                while reading:
                    ticks += 1
                    await asyncio.sleep(0)

            async def reader(k: int) -> bool:
                ok = True
                for i in range(64):
                    off = ((k * 64 + i) % 64) * BLOCK
                    ok &= await h.read(BLOCK, off) == expect[off : off + BLOCK]
                return ok

            tick = asyncio.create_task(ticker())
            first = co.flushes
            oks = await asyncio.gather(*(reader(k) for k in range(8)))
            reading = False
            await tick
            return co.flushes - first, callbacks, ticks, all(oks)

        batches, callbacks, ticks, ok = _run(main())
    assert ok
    assert batches >= 2 * callbacks, f"{batches} batches in {callbacks} flush callbacks: one loop turn per batch"
    assert batches <= FLUSH_ROUNDS * (ticks + 2), f"{batches} batches while another task ran {ticks} times"


@pytest.mark.timeout(60)
def test_a_flush_round_that_raises_still_sends_what_its_woken_tasks_queued(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # An error out of a round (after its batch woke its tasks, which queued their next
    # reads) must leave those reads a flush of their own, not a coalescer that believes
    # one is scheduled: the loop reports the error and the reads complete.
    expect = data.read_bytes()
    errors: list[Any] = []
    with _uring_handle(uring_stack, data) as h:

        async def main() -> list[bytes]:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
            co = _coalescer_of(h)
            one_round = co._flush_round
            raised = False

            def round_then_raise() -> bool:
                nonlocal raised
                fresh = one_round()
                if not raised:
                    raised = True
                    raise RuntimeError("boom")
                return fresh

            co.__dict__["_flush_round"] = round_then_raise

            async def two_reads(k: int) -> bytes:
                return await h.read(BLOCK, k * BLOCK) + await h.read(BLOCK, (k + 8) * BLOCK)

            return await asyncio.gather(*(two_reads(k) for k in range(4)))

        got = _run(main(), timeout=5)
    assert got == [expect[k * BLOCK : (k + 1) * BLOCK] + expect[(k + 8) * BLOCK : (k + 9) * BLOCK] for k in range(4)]
    assert [type(e) for e in errors] == [RuntimeError]


@pytest.mark.timeout(60)
def test_one_flush_mixing_arena_reads_caller_buffers_and_lists_reads_each_into_its_own_memory(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # The caller buffers' addresses are written into the batch's columns by position
    # (runs of pins between arena reads): each op must land in its own buffer.
    expect = data.read_bytes()
    with _uring_handle(uring_stack, data) as h:
        ring = h.ring
        assert ring is not None
        singles = [bytearray(BLOCK) for _ in range(3)]
        lists = [[bytearray(BLOCK) for _ in range(3)] for _ in range(2)]

        async def main() -> tuple[list[Any], int]:
            await h.read(BLOCK, 0)
            before = ring.counters()["enters"]
            got = await asyncio.gather(
                h.read(BLOCK, 1 * BLOCK),
                h.read_into_async(singles[0], 2 * BLOCK),
                h.read_many_async([3 * BLOCK, 4 * BLOCK, 5 * BLOCK], lists[0]),
                h.read_into_async(singles[1], 6 * BLOCK),
                h.read(BLOCK, 7 * BLOCK),
                h.read_many_async([8 * BLOCK, 9 * BLOCK, 10 * BLOCK], lists[1]),
                h.read_into_async(singles[2], 11 * BLOCK),
            )
            return got, ring.counters()["enters"] - before

        got, enters = _run(main())
    blocks = [expect[k * BLOCK : (k + 1) * BLOCK] for k in range(12)]
    assert enters == 1
    assert got == [blocks[1], BLOCK, [BLOCK] * 3, BLOCK, blocks[7], [BLOCK] * 3, BLOCK]
    assert singles == [blocks[2], blocks[6], blocks[11]]
    assert lists == [blocks[3:6], blocks[8:11]]


@pytest.mark.timeout(60)
def test_a_delivery_that_raises_leaves_the_later_deliveries_to_the_next_drain(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # A delivery that raises (a SystemExit out of a task it woke, a signal) stays first in
    # the drain list, with those after it: the next drain runs it again (a delivery is
    # safe to run again: it resolves what it has not), then the rest.
    from uringstack.ring.coalesce import coalescer_for

    with _uring_handle(uring_stack, data) as h:
        ring = h.ring
        assert ring is not None
        delivered: list[Any] = []

        def boom() -> None:
            delivered.append("boom")
            if delivered.count("boom") == 1:
                raise SystemExit(3)

        async def main() -> Any:
            await h.read(BLOCK, 0)
            return coalescer_for(ring)

        loop = asyncio.new_event_loop()
        try:
            co = loop.run_until_complete(main())
            co._ready.extend([lambda: delivered.append(1), boom, lambda: delivered.append(2)])
            with pytest.raises(SystemExit):
                co.drain()  # (outside the loop: as its callback)
            assert delivered == [1, "boom"]
            loop.run_until_complete(asyncio.sleep(0))  # the next drain runs within a loop turn
            assert delivered == [1, "boom", "boom", 2]
        finally:
            loop.close()


@pytest.mark.timeout(60)
def test_a_reap_that_raises_still_delivers_what_it_reaped_first(
    uring_stack: Stack, data: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A completion callback that raises makes the reap raise after it took the
    # completions: the awaits of the reaped batches still get their results.
    expect = data.read_bytes()
    with _uring_handle(uring_stack, data) as h:
        ring = h.ring
        assert ring is not None

        async def main() -> list[bytes]:
            await h.read(BLOCK, 0)
            plain = ring.try_reap

            def raising() -> Any:
                plain()
                raise RuntimeError("a completion callback failed")

            monkeypatch.setattr(ring, "try_reap", raising)
            try:
                return await asyncio.gather(*(h.read(BLOCK, k * BLOCK) for k in range(4)))
            finally:
                monkeypatch.undo()

        got = _run(main())
    assert got == [expect[k * BLOCK : (k + 1) * BLOCK] for k in range(4)]


def _registered_leases(h: FileHandle, count: int) -> list[Any]:
    """*count* registered-buffer leases of *h* (the default config's fixedbuf pool), or a skip."""
    from tests.requires import skip_without
    from uringstack.ring.buffers import RegisteredBuffer

    leases = h.lease_buffers(count)
    if not all(isinstance(b, RegisteredBuffer) for b in leases):
        h.release_buffers(leases)
        skip_without("no registered-buffer pool serves this handle (fixedbuf could not register: memlock?)")
    return leases


def _flushed_columns(h: FileHandle, lease: Any) -> Any:
    """The coalescer's column set that submitted *lease*'s last batch."""
    co = h._coalescer_cache
    assert co is not None
    batch = (lease.parent or lease).batch
    assert batch is not None, "a registered lease submitted by the coalescer was not marked in flight"
    return next(cols for pool in co._pool.values() for cols in pool if cols.batch is batch)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "buffered"])
def test_registered_leases_of_the_default_config_are_coalesced_as_fixed_ops_under_o_direct(
    uring_stack: Stack, data: pathlib.Path, direct: bool
) -> None:
    # The default config (fixedbuf on) leases registered buffers: their *_many_async used to
    # skip the coalescer (one io_uring_enter per await, 8 here).  Buffered, they go out as
    # plain ops at their own addresses (buffers.fixed_opcodes_pay), coalesced all the same.
    from uringstack.ring.flags import Op

    h = open_plain_uring(uring_stack, data, True, direct=direct)
    ring = h.ring
    assert ring is not None
    try:
        leases = _registered_leases(h, 8)
        want = _pattern(64 * BLOCK + 1808)

        async def main() -> tuple[list[Any], int, int]:
            await asyncio.gather(*(h.read_many_async([i * BLOCK], [b]) for i, b in enumerate(leases)))  # warm up
            before = ring.counters()["enters"]
            got = await asyncio.gather(*(h.read_many_async([(i + 8) * BLOCK], [b]) for i, b in enumerate(leases)))
            reads = ring.counters()["enters"] - before
            for i, b in enumerate(leases):
                b[0:4] = bytes([i, i, i, i])
            before = ring.counters()["enters"]
            wrote = await asyncio.gather(*(h.write_many_async([(i + 32) * BLOCK], [b]) for i, b in enumerate(leases)))
            return [got, wrote], reads, ring.counters()["enters"] - before

        (got, wrote), reads, writes = _run(main())
        assert got == [[BLOCK]] * 8 and wrote == [[BLOCK]] * 8
        assert reads == 1, reads
        assert writes == 1, writes
        cols = _flushed_columns(h, leases[0])
        if direct:
            assert cols.get("opcodes")[:8] == [int(Op.WRITE_FIXED)] * 8
            assert sorted(cols.get("buf_index")[:8]) == sorted(b.index for b in leases)
        else:
            assert cols.get("opcodes")[:8] == [int(Op.WRITE)] * 8
            assert sorted(cols.get("addrs")[:8]) == sorted(b.addr for b in leases)
        on_disk = data.read_bytes()
        for i in range(8):
            block = on_disk[(i + 32) * BLOCK : (i + 33) * BLOCK]
            assert block == bytes([i] * 4) + want[(i + 8) * BLOCK + 4 : (i + 9) * BLOCK]
        h.release_buffers(leases)
    finally:
        h.close()


@pytest.mark.timeout(60)
def test_a_registered_lease_in_a_coalesced_batch_in_flight_is_not_leased_again(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    h = _uring_handle(uring_stack, data)
    ring = h.ring
    assert ring is not None
    leases = _registered_leases(h, 1)
    pool = h.worker.buffers.for_ring(ring)
    assert pool is not None
    pipe = _PipeBacked(h)
    try:

        async def main() -> list[int]:
            task = asyncio.create_task(h.read_many_async([0], leases))
            for _ in range(3):
                await asyncio.sleep(0)  # queued, flushed: in the kernel now
            assert ring.inflight == 1
            free = pool.available()
            h.release_buffers(leases)  # the pool must defer it: the kernel writes into it
            assert pool.available() == free, "a buffer the kernel is writing was handed back to the pool"
            os.write(pipe.w, b"late".ljust(len(leases[0]), b"."))  # the whole lease: no short read
            got: list[int] = await task
            return got

        assert _run(main()) == [len(leases[0])]
        pooled = leases[0].parent  # (the lease itself is retired: its view was released with it)
        assert pooled is not None
        assert bytes(pooled)[:4] == b"late"
        assert not pooled.in_flight()
    finally:
        pipe.restore()
        h.close()


@pytest.mark.timeout(60)
def test_one_flush_mixing_registered_leases_with_pins_and_arena_reads_reads_each_into_its_own_memory(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # Leases take their own addresses (no pin), written beside runs of pins by position:
    # each op must land in its own buffer, all in one submission.
    expect = data.read_bytes()
    h = _uring_handle(uring_stack, data)
    ring = h.ring
    assert ring is not None
    try:
        leases = _registered_leases(h, 4)
        plain = [bytearray(BLOCK) for _ in range(4)]

        async def main() -> tuple[list[Any], int]:
            await h.read(BLOCK, 0)  # warm up
            before = ring.counters()["enters"]
            got = await asyncio.gather(
                h.read(100, 3 * BLOCK + 5),
                h.read_many_async([BLOCK, 9 * BLOCK], plain[:2]),
                h.read_many_async([2 * BLOCK, 7 * BLOCK], leases[:2]),
                h.read_into_async(plain[2], 4 * BLOCK),
                h.read_many_async([5 * BLOCK, 6 * BLOCK], leases[2:]),
                h.read(7, 11 * BLOCK),
            )
            return got, ring.counters()["enters"] - before

        got, enters = _run(main())
        assert enters == 1, enters
        assert got[0] == expect[3 * BLOCK + 5 : 3 * BLOCK + 105] and got[5] == expect[11 * BLOCK : 11 * BLOCK + 7]
        for buf, off in [(plain[0], 1), (plain[1], 9), (leases[0], 2), (leases[1], 7), (plain[2], 4)]:
            assert bytes(buf) == expect[off * BLOCK : (off + 1) * BLOCK], off
        for buf, off in [(leases[2], 5), (leases[3], 6)]:
            assert bytes(buf) == expect[off * BLOCK : (off + 1) * BLOCK], off
        h.release_buffers(leases)
    finally:
        h.close()


# --- *_many_async lists of many tasks on one handle: one flush, built by whole-list steps.
# A flush whose requests are all read_many/write_many lists of one kind from one handle
# (the ``asyncio batch`` bench row) builds its C columns from the requests' lists at once
# (``Coalescer._submit_lists``): each op must land in its own buffer at its own offset,
# every request get its own results, and a column set reused across arena flushes and
# list flushes never keep the other kind's addresses or lengths.


def _gather_counting_enters(h: FileHandle, make: Callable[[], list[Awaitable[Any]]]) -> tuple[list[Any], int]:
    """The results of *make()*'s awaitables awaited together, and the ``io_uring_enter`` calls
    they took (after one read that sets up the ring's eventfd bridge)."""
    ring = h.ring
    assert ring is not None

    async def main() -> tuple[list[Any], int]:
        await h.read(BLOCK, 0)
        before = ring.counters()["enters"]
        got = await asyncio.gather(*make())
        return got, ring.counters()["enters"] - before

    got, enters = _run(main())
    return got, enters


@pytest.mark.timeout(60)
def test_lists_of_many_tasks_each_land_in_their_own_buffers_with_their_own_results(
    plain_uring_stack: Stack, data: pathlib.Path
) -> None:
    expect = data.read_bytes()
    with _uring_handle(plain_uring_stack, data) as h:
        leases = h.lease_buffers(11, size=BLOCK)
        # Requests of 1..4 ops, and one mixing buffer sizes.
        groups = [leases[0:1], leases[1:3], leases[3:6], leases[6:10]]
        offsets = [[(7 * t + 5 * i) % 60 * BLOCK for i in range(len(g))] for t, g in enumerate(groups)]
        odd = [bytearray(512), bytearray(BLOCK), bytearray(100)]
        odd_offs = [3 * BLOCK + 17, 10 * BLOCK + 5, 9]
        tail = [bytearray(BLOCK), bytearray(BLOCK)]
        try:
            got, enters = _gather_counting_enters(
                h,
                lambda: [
                    *(h.read_many_async(o, g) for o, g in zip(offsets, groups, strict=True)),
                    h.read_many_async(odd_offs, odd),
                ],
            )
            assert enters == 1, enters
            assert got == [[BLOCK] * len(g) for g in groups] + [[512, BLOCK, 100]]
            for o, g in zip(offsets, groups, strict=True):
                assert [bytes(b) for b in g] == [expect[off : off + BLOCK] for off in o]
            assert [bytes(b) for b in odd] == [expect[o : o + len(b)] for o, b in zip(odd_offs, odd, strict=True)]
            # A list reading past the end of the file beside a full one: the short op's
            # result is its own (the rest of its list, and the other list, unaffected).
            short, _ = _gather_counting_enters(
                h, lambda: [h.read_many_async([63 * BLOCK, 64 * BLOCK], tail), h.read_many_async([0], leases[10:])]
            )
            assert short == [[BLOCK, 1808], [BLOCK]]
            assert bytes(tail[0]) + bytes(tail[1][:1808]) == expect[63 * BLOCK :]
            assert bytes(leases[10]) == expect[:BLOCK]
        finally:
            h.release_buffers(leases)


@pytest.mark.timeout(60)
def test_lists_of_many_tasks_write_each_buffer_at_its_own_offset(
    plain_uring_stack: Stack, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "w"
    path.write_bytes(bytes(32 * BLOCK))
    with _uring_handle(plain_uring_stack, path, writable=True) as h:
        leases = h.lease_buffers(16, size=BLOCK)
        for i, b in enumerate(leases):
            b[:] = bytes([0x40 + i]) * BLOCK
        groups = [leases[0:4], leases[4:6], leases[6:13], leases[13:16]]
        blocks = iter(range(31, 0, -2))  # every lease its own block
        offsets = [[next(blocks) * BLOCK for _ in grp] for grp in groups]
        try:
            got, _ = _gather_counting_enters(
                h, lambda: [h.write_many_async(o, g) for o, g in zip(offsets, groups, strict=True)]
            )
        finally:
            h.release_buffers(leases)
    assert got == [[BLOCK] * len(g) for g in groups]
    on_disk = path.read_bytes()
    flat = [off for o in offsets for off in o]
    assert [on_disk[off : off + BLOCK] for off in flat] == [bytes([0x40 + k]) * BLOCK for k in range(16)]


@pytest.mark.timeout(60)
def test_flushes_alternating_arena_reads_and_lists_reuse_columns_without_stale_addresses(
    plain_uring_stack: Stack, data: pathlib.Path
) -> None:
    # Both kinds keep per-column constants in a pooled column set (the arena's
    # addresses as a progression, one length for all ops): a list flush between two
    # arena flushes over the same arena must not leave its pins' addresses in place.
    expect = data.read_bytes()
    with _uring_handle(plain_uring_stack, data) as h:
        leases = h.lease_buffers(8, size=BLOCK)

        async def main() -> None:
            for round_ in range(6):
                offs = [(round_ * 11 + 3 * i) % 64 * BLOCK for i in range(8)]
                singles = await asyncio.gather(*(h.read(BLOCK, off) for off in offs))
                assert singles == [expect[off : off + BLOCK] for off in offs], round_
                back = offs[:4][::-1] + offs[4:][::-1]
                lists = await asyncio.gather(
                    h.read_many_async(back[:4], leases[:4]), h.read_many_async(back[4:], leases[4:])
                )
                assert lists == [[BLOCK] * 4] * 2
                assert [bytes(b) for b in leases] == [expect[off : off + BLOCK] for off in back], round_

        try:
            _run(main())
        finally:
            h.release_buffers(leases)


@pytest.mark.timeout(60)
def test_lists_of_registered_leases_from_many_tasks_read_and_write_each_lease_in_one_flush(
    uring_stack: Stack, tmp_path: pathlib.Path
) -> None:
    from uringstack.ring.flags import Op

    path = tmp_path / "reg"
    want = _pattern(64 * BLOCK)
    path.write_bytes(want)
    with _uring_handle(uring_stack, path, True) as h:
        whole = _registered_leases(h, 10)
        # Requests of 1..3 leases, and one of two 512-byte parts of a lease (sub-leases).
        parts = [whole[9].sub(0, 512), whole[9].sub(1024, 512)]
        groups = [whole[0:1], whole[1:3], whole[3:6], whole[6:9], parts]
        offsets = [[(5 * t + 3 * i) % 40 * BLOCK + 8 * t for i in range(len(g))] for t, g in enumerate(groups)]
        try:
            got, enters = _gather_counting_enters(
                h, lambda: [h.read_many_async(o, g) for o, g in zip(offsets, groups, strict=True)]
            )
            assert enters == 1, enters
            assert got == [[BLOCK] * len(g) for g in groups[:4]] + [[512, 512]]
            for o, g in zip(offsets, groups, strict=True):
                assert [bytes(b) for b in g] == [want[off : off + len(b)] for off, b in zip(o, g, strict=True)]
            for k, b in enumerate(whole[:9]):
                b[0:BLOCK] = bytes([0x80 + k]) * BLOCK
            targets = [[(49 - 3 * t - i) * BLOCK for i in range(len(g))] for t, g in enumerate(groups[:4])]
            wrote, _ = _gather_counting_enters(
                h, lambda: [h.write_many_async(o, g) for o, g in zip(targets, groups[:4], strict=True)]
            )
            assert wrote == [[BLOCK] * len(g) for g in groups[:4]]
            assert not any((b.parent or b).in_flight() for b in whole)
            on_disk = path.read_bytes()
            flat = [off for o in targets for off in o]
            assert [on_disk[off : off + BLOCK] for off in flat] == [bytes([0x80 + k]) * BLOCK for k in range(9)]
            # The writes went out as plain WRITEs at each lease's own address: a buffered file
            # (buffers.fixed_opcodes_pay; the O_DIRECT case's WRITE_FIXED is tested above).
            cols = _flushed_columns(h, whole[0])
            assert cols.get("opcodes")[:9] == [int(Op.WRITE)] * 9
            assert cols.get("addrs")[:9] == [b.addr for g in groups[:4] for b in g]
        finally:
            h.release_buffers(whole)


@pytest.mark.timeout(60)
def test_one_flush_of_lists_of_registered_leases_and_of_plain_buffers_reads_each_into_its_own_memory(
    uring_stack: Stack, data: pathlib.Path
) -> None:
    # Two kinds of lists in one flush (registered leases: READ_FIXED at their own
    # addresses; plain buffers: READ at their pins'): each request keeps its kind.
    expect = data.read_bytes()
    with _uring_handle(uring_stack, data) as h:
        leases = _registered_leases(h, 4)
        plain = [bytearray(BLOCK) for _ in range(4)]
        try:
            got, enters = _gather_counting_enters(
                h,
                lambda: [
                    h.read_many_async([BLOCK, 2 * BLOCK], leases[:2]),
                    h.read_many_async([3 * BLOCK, 4 * BLOCK], plain[:2]),
                    h.read_many_async([5 * BLOCK, 6 * BLOCK], leases[2:]),
                    h.read_many_async([7 * BLOCK, 8 * BLOCK], plain[2:]),
                ],
            )
            assert enters == 1, enters
            assert got == [[BLOCK, BLOCK]] * 4
            blocks = [expect[k * BLOCK : (k + 1) * BLOCK] for k in range(9)]
            assert [bytes(b) for b in leases] == [blocks[1], blocks[2], blocks[5], blocks[6]]
            assert plain == [blocks[3], blocks[4], blocks[7], blocks[8]]
        finally:
            h.release_buffers(leases)
