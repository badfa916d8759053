"""Group commit mechanics: who flushes, how many wake-ups per batch, append_many.

A gated backend holds the first write until the test opens it, so the test
decides which appends land in which batch instead of hoping for a race.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import threading
import time
from typing import Any, cast

import pytest

from tests.waiting import wait_until
from uringstack.ring.io_backend import FileIO, SyncMethod
from uringstack.ring.pending import CompletedPending, Pending
from uringstack.wal import Wal, WalClosedError, WalConfig, WalFailedError
from uringstack.wal import writer as writer_mod
from uringstack.wal.faults import WrappedFileIO


class GatedBackend:
    """A ``wrap_io`` whose first ``hold`` durable writes block until :attr:`release` is set.

    Records which thread issued every flush.  The real FileIO writes underneath.
    """

    def __init__(self, hold: int = 1, fail_at: int | None = None) -> None:
        self.hold = hold
        self.fail_at = fail_at
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []

    def __call__(self, io: FileIO) -> FileIO:
        return _GatedIO(io, self)


class _GatedIO(WrappedFileIO):
    def __init__(self, inner: FileIO, gate: GatedBackend) -> None:
        super().__init__(inner)
        self.gate = gate

    def start_write_durable(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> Pending:
        gate = self.gate
        n = len(gate.threads)
        gate.threads.append(threading.current_thread().name)
        if n < gate.hold:
            gate.entered.set()
            assert gate.release.wait(10), "test never released the gated write"
        if n == gate.fail_at:
            return CompletedPending([-errno.EIO, -errno.ECANCELED] if sync == "fdatasync" else [-errno.EIO])
        return self.inner.start_write_durable(offset, buffer, sync, wait=wait)


def _from_wal(callback: Any) -> bool:
    """A callback the WAL scheduled (run_in_executor schedules its own through the same call)."""
    return str(getattr(callback, "__module__", "")).startswith("uringstack.wal")


def _count_wal_posts(loop: asyncio.AbstractEventLoop) -> list[Any]:
    """Record the callbacks the WAL posts to *loop* with ``call_soon_threadsafe`` (its
    acknowledgements; run_in_executor's own posts are left out)."""
    posted: list[Any] = []
    real = loop.call_soon_threadsafe

    def counting(cb: Any, *args: Any, **kw: Any) -> Any:
        if _from_wal(cb):
            posted.append(cb)
        return real(cb, *args, **kw)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    return posted


def _queued(wal: Wal) -> int:
    return wal.next_lsn - 1 - wal.durable_lsn


def test_lone_appender_flushes_inline(wal_dir: pathlib.Path) -> None:
    """No hand-off to the flusher thread and back when nobody else is appending."""
    be = GatedBackend(hold=0)
    with Wal.open(wal_dir, backend="fallback", wrap_io=be) as wal:
        for i in range(20):
            assert wal.append(b"r%d" % i) == i + 1
    assert be.threads == [threading.current_thread().name] * 20


class _CountingLock:
    """The writer's lock, counting how often it is taken (the real lock underneath, so the
    writer's Condition, bound to the real one, still sees it held)."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.taken = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self.lock.acquire(blocking, timeout)
        self.taken += got
        return got

    def release(self) -> None:
        self.lock.release()

    def locked(self) -> bool:
        return self.lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_lone_append_takes_the_writer_lock_twice(wal_dir: pathlib.Path) -> None:
    """Once to queue and take its record, once to acknowledge it and give up ``_busy``.

    The inline path runs once per append right after a blocking syscall, with the
    CPU's caches cold (docs/wal.md, issue 14): it used to take the lock five times."""
    with Wal.open(wal_dir, backend="fallback") as wal:
        wal.append(b"warm")
        w = wal._writer
        real = w.lock
        counting = _CountingLock(real)
        w.lock = cast("threading.Lock", counting)
        try:
            for i in range(3):
                assert wal.append(b"r%d" % i) == i + 2
        finally:
            w.lock = real
        assert counting.taken == 2 * 3
        assert not w._busy and w._lead_lsn == 0
        assert dict(wal.read_from(1)) == {1: b"warm", 2: b"r0", 3: b"r1", 4: b"r2"}
        seg = w.active
        assert seg.records == 4 and seg.end_offset == 4096 + 4 * 24  # 16-byte header, padded to 8


def test_an_interrupt_after_the_lead_gave_up_busy_leaves_the_next_flusher_alone(wal_dir: pathlib.Path) -> None:
    """A KeyboardInterrupt can land after the acknowledgement gave ``_busy`` up: by then
    another thread may be flushing, and the interrupted lead must not clear its ``_busy``
    (two writes in flight would break the torn-tail rule recovery relies on)."""
    with Wal.open(wal_dir, backend="fallback") as wal, pytest.MonkeyPatch.context() as mp:
        w = wal._writer
        real = writer_mod.Writer._release_lead_locked

        def release_then_lose_busy(self: writer_mod.Writer) -> None:
            real(self)
            self._busy = True  # as if the flusher thread took it right away
            mp.undo()
            raise KeyboardInterrupt

        mp.setattr(writer_mod.Writer, "_release_lead_locked", release_then_lose_busy)
        with pytest.raises(KeyboardInterrupt):
            wal.append(b"x")
        assert w._busy  # still the other flusher's
        assert wal.durable_lsn == 1
        w._busy = False  # hand it back, so close() can flush and stop


def test_appends_behind_an_inline_flush_go_to_the_flusher_as_one_batch(wal_dir: pathlib.Path) -> None:
    be = GatedBackend(hold=1)
    results: dict[int, int] = {}
    opened: list[int] = []
    real_open = writer_mod._Gate.open

    def counting_open(gate: writer_mod._Gate) -> None:
        opened.append(len(gate.locks))
        real_open(gate)

    with Wal.open(wal_dir, backend="fallback", wrap_io=be) as wal, pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer_mod._Gate, "open", counting_open)

        def work(i: int) -> None:
            results[i] = wal.append(b"t%d" % i)

        leader = threading.Thread(target=work, args=(0,), name="leader")
        leader.start()
        assert be.entered.wait(10)
        followers = [threading.Thread(target=work, args=(i,)) for i in range(1, 17)]
        for t in followers:
            t.start()
        wait_until(lambda: _queued(wal) == 17, 10.0, "17 records queued")  # the held record and 16 queued behind it
        be.release.set()
        for t in [leader, *followers]:
            t.join()
        assert results[0] == 1 and sorted(results.values()) == list(range(1, 18))
        assert be.threads == ["leader", "wal-flusher"]  # two flushes: the leader's, then one for all 16
        assert opened == [16]  # one gate for the 16 followers, opened once (they relay the wake-up)
        assert dict(wal.read_from(1)) == {lsn: b"t%d" % i for i, lsn in results.items()}


def test_asyncio_one_call_soon_threadsafe_per_batch(wal_dir: pathlib.Path) -> None:
    be = GatedBackend(hold=1)
    with Wal.open(wal_dir, backend="fallback", wrap_io=be) as wal:

        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            calls = _count_wal_posts(loop)
            first = wal.append_async(b"first")
            await loop.run_in_executor(None, be.entered.wait, 10)
            rest = [wal.append_async(b"a%d" % i) for i in range(100)]
            be.release.set()
            lsns = await asyncio.gather(first, *rest)
            assert len(calls) == 2, calls  # one per flushed batch, not one per record
            return list(lsns)

        assert asyncio.run(main()) == list(range(1, 102))
        assert wal.counters()["flushes"] == 2
        assert be.threads == ["wal-flusher", "wal-flusher"]  # an event loop never flushes inline


def test_asyncio_appenders_are_woken_in_place_by_the_acknowledgement(wal_dir: pathlib.Path) -> None:
    """The loop callback that acknowledges a flush runs each awaiting task's wake-up itself
    (uringstack.ring.wakeups.resolve): no call_soon Handle per record."""
    with Wal.open(wal_dir, backend="fallback") as wal:

        async def main() -> tuple[list[int], int]:
            loop = asyncio.get_running_loop()
            appended: set[asyncio.Future[int]] = set()
            woken_via_loop: list[Any] = []
            real = loop.call_soon

            def counting(cb: Any, *args: Any, **kw: Any) -> Any:
                if args and args[0] in appended:  # a set_result scheduling its task's wake-up
                    woken_via_loop.append(cb)
                return real(cb, *args, **kw)

            loop.call_soon = counting  # type: ignore[method-assign]

            async def appender(i: int) -> list[int]:
                got = []
                for k in range(20):
                    fut = wal.append_async(b"t%d-%d" % (i, k))
                    appended.add(fut)
                    got.append(await fut)
                return got

            per_task = await asyncio.wait_for(asyncio.gather(*(appender(i) for i in range(8))), 10)
            return sorted(lsn for lsns in per_task for lsn in lsns), len(woken_via_loop)

        lsns, via_loop = asyncio.run(main())
        assert lsns == list(range(1, 161))
        assert via_loop == 0, f"{via_loop} of 160 wake-ups went through call_soon"  # before: 160
        assert wal.counters()["flushes"] < 160  # the woken tasks' appends still share batches


def test_asyncio_appends_of_one_tick_wake_the_flusher_once_after_the_tick(
    wal_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """append_async never wakes the flusher thread from inside the call (a woken thread would
    preempt the event loop mid-append); the loop wakes it once, after the appends of the tick."""
    with Wal.open(wal_dir, backend="fallback") as wal:
        work = wal._writer._work
        wakes: list[str] = []
        real_notify = work.notify

        def notify(n: int = 1) -> None:
            wakes.append(threading.current_thread().name)
            real_notify(n)

        monkeypatch.setattr(work, "notify", notify)

        async def main() -> list[int]:
            futs = [wal.append_async(b"r%d" % i) for i in range(10)]
            assert wakes == [], "append_async woke the flusher from inside the call"
            lsns = await asyncio.wait_for(asyncio.gather(*futs), 10)
            assert wakes == ["MainThread"], wakes  # one wake-up, from the loop, for all ten
            return list(lsns)

        assert asyncio.run(main()) == list(range(1, 11))
        assert wal.counters()["flushes"] == 1


def test_two_event_loops_share_a_batch(wal_dir: pathlib.Path) -> None:
    """One flush carrying records of two loops resolves each loop's futures with one call."""
    be = GatedBackend(hold=1)
    got: dict[str, list[int]] = {}
    calls: dict[str, int] = {}
    queued = threading.Barrier(3)
    with Wal.open(wal_dir, backend="fallback", wrap_io=be) as wal:
        wal_first = threading.Thread(target=wal.append, args=(b"first",))
        wal_first.start()
        assert be.entered.wait(10)

        def loop_thread(name: str) -> None:
            async def main() -> None:
                loop = asyncio.get_running_loop()
                real = loop.call_soon_threadsafe
                calls[name] = 0

                def counting(cb: Any, *args: Any, **kw: Any) -> Any:
                    calls[name] += _from_wal(cb)
                    return real(cb, *args, **kw)

                loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
                futs = [wal.append_async(b"%s%d" % (name.encode(), i)) for i in range(30)]
                await loop.run_in_executor(None, queued.wait, 10)
                got[name] = list(await asyncio.gather(*futs))

            asyncio.run(main())

        ts = [threading.Thread(target=loop_thread, args=(n,)) for n in ("x", "y")]
        for t in ts:
            t.start()
        queued.wait(10)
        be.release.set()
        for t in [*ts, wal_first]:
            t.join()
        assert calls == {"x": 1, "y": 1}
        assert sorted(got["x"] + got["y"]) == list(range(2, 62))
        assert wal.counters()["flushes"] == 2


def test_append_many(wal_dir: pathlib.Path, small_config: WalConfig) -> None:
    with Wal.open(wal_dir, small_config, backend="fallback") as wal:
        assert wal.append_many([]) == []
        assert wal.append_many([b"a", bytearray(b"b"), memoryview(b"c")]) == [1, 2, 3]
        assert wal.counters()["flushes"] == 1  # one write for the three
        with pytest.raises(ValueError, match="max_batch_bytes"):
            wal.append_many([b"ok", bytes(small_config.max_batch_bytes)])
        assert wal.next_lsn == 4  # nothing of the refused group was queued
        # more than one batch (8 KiB) and more than one segment (64 KiB): still one call
        big = [os.urandom(1000 + i) for i in range(150)]
        lsns = wal.append_many(big)
        assert lsns == list(range(4, 154)) and wal.durable_lsn == 153
        assert len(wal.segments()) > 1
    with Wal.open(wal_dir, small_config, backend="fallback") as wal:
        got = dict(wal.read_from(1))
        assert [got[i] for i in (1, 2, 3)] == [b"a", b"b", b"c"]
        assert [got[lsn] for lsn in lsns] == big


def test_append_many_from_threads_keeps_each_group_contiguous(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, backend="fallback") as wal:
        out: dict[int, list[int]] = {}

        def work(i: int) -> None:
            out[i] = [lsn for k in range(20) for lsn in wal.append_many([b"%d:%d:%d" % (i, k, j) for j in range(5)])]

        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        records = dict(wal.read_from(1))
        assert sorted(lsn for v in out.values() for lsn in v) == list(range(1, 801))
        for i, lsns in out.items():
            groups = [lsns[g : g + 5] for g in range(0, 100, 5)]
            assert all(g == list(range(g[0], g[0] + 5)) for g in groups)
            assert [records[lsn] for lsn in lsns] == [b"%d:%d:%d" % (i, k, j) for k in range(20) for j in range(5)]


def test_failure_rejects_sync_and_async_waiters_of_the_batch(wal_dir: pathlib.Path) -> None:
    be = GatedBackend(hold=1, fail_at=0)  # the held flush fails
    errors: list[BaseException] = []
    with Wal.open(wal_dir, backend="fallback", wrap_io=be) as wal:

        def work(payload: bytes) -> None:
            try:
                wal.append(payload)
            except WalFailedError as e:
                errors.append(e)

        leader = threading.Thread(target=work, args=(b"lead",))
        leader.start()
        assert be.entered.wait(10)
        followers = [threading.Thread(target=work, args=(b"f%d" % i,)) for i in range(5)]
        for t in followers:
            t.start()

        async def main() -> list[Any]:
            futs = [wal.append_async(b"a%d" % i) for i in range(10)]
            await asyncio.get_running_loop().run_in_executor(
                None, wait_until, lambda: _queued(wal) == 16, 10.0, "16 records queued"
            )
            be.release.set()
            return list(await asyncio.gather(*futs, return_exceptions=True))

        results = asyncio.run(main())
        for t in [leader, *followers]:
            t.join()
        assert len(errors) == 6 and all(e.errno == errno.EIO for e in errors)
        assert all(isinstance(r, WalFailedError) for r in results)
        assert wal.durable_lsn == 0 and be.threads == [be.threads[0]]  # nothing flushed after the failure
        with pytest.raises(WalFailedError):
            wal.append_many([b"late"])


def test_close_flushes_what_waits_behind_an_inline_flush(wal_dir: pathlib.Path) -> None:
    be = GatedBackend(hold=1)
    wal = Wal.open(wal_dir, backend="fallback", wrap_io=be)
    lsns: list[int] = []
    leader = threading.Thread(target=lambda: lsns.append(wal.append(b"lead")))
    leader.start()
    assert be.entered.wait(10)
    followers = [threading.Thread(target=lambda: lsns.append(wal.append(b"f"))) for _ in range(4)]
    for t in followers:
        t.start()
    wait_until(lambda: _queued(wal) == 5, 10.0, "5 records queued")
    closer = threading.Thread(target=wal.close)
    closer.start()
    be.release.set()
    for t in [leader, *followers, closer]:
        t.join()
    assert sorted(lsns) == [1, 2, 3, 4, 5]  # queued before close: flushed, not dropped
    with pytest.raises(WalClosedError):
        wal.append(b"after")


class _InterruptedOnce:
    """A lock whose first acquire raises, as KeyboardInterrupt does in a blocked main thread."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.raised = False

    def acquire(self) -> bool:
        if not self.raised:
            self.raised = True
            raise KeyboardInterrupt
        return self.lock.acquire()

    def release(self) -> None:
        self.lock.release()


class _InterruptedAfterAcquire(_InterruptedOnce):
    """A lock whose first acquire takes it, then raises: a signal landing right after the wait."""

    def acquire(self) -> bool:
        if not self.raised:
            self.raised = True
            self.lock.acquire()
            raise KeyboardInterrupt
        return self.lock.acquire()


def _wait_or_abandon(gate: writer_mod._Gate, i: int) -> None:
    """What Writer._append_sync does with its place in a gate."""
    try:
        gate.wait(i)
    except BaseException:
        gate.abandon(i)
        raise


@pytest.mark.parametrize("lock", [_InterruptedOnce, _InterruptedAfterAcquire])
def test_gate_relay_survives_an_interrupted_waiter(lock: type[_InterruptedOnce]) -> None:
    """Interrupted while it waited, or right after its wait took the lock, a waiter still
    passes the relay on to the one behind it, once the relay reached it."""
    gate = writer_mod._Gate()
    for _ in range(3):
        gate.add_sync()
    gate.locks[1] = lock(gate.locks[1])  # type: ignore[call-overload]
    woke: list[int] = []
    raised: list[BaseException] = []

    def interrupted() -> None:
        try:
            _wait_or_abandon(gate, 1)
        except KeyboardInterrupt as e:
            raised.append(e)

    ts = [threading.Thread(target=lambda i=i: (gate.wait(i), woke.append(i))) for i in (0, 2)]
    ts.append(threading.Thread(target=interrupted))
    for t in ts:
        t.start()
    time.sleep(0.05)
    assert woke == []  # nobody woke before the gate opened
    gate.open()
    for t in ts:
        t.join(5)
    assert sorted(woke) == [0, 2]  # the waiter behind the interrupted one was still reached
    assert len(raised) == 1


def test_append_async_copies_a_mutable_payload(wal_dir: pathlib.Path) -> None:
    """append_async records are framed later, by the flushing thread: a buffer the caller
    reuses right after the call must still be written as it was at the call."""
    be = GatedBackend(hold=1)
    with Wal.open(wal_dir, backend="fallback", wrap_io=be) as wal:

        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            first = wal.append_async(b"first")
            await loop.run_in_executor(None, be.entered.wait, 10)
            buf = bytearray(b"A" * 100)
            futs = [wal.append_async(buf)]
            buf[:] = b"B" * 100  # reused before the flush that carries the record
            futs.append(wal.append_async(memoryview(buf)))
            buf[:] = b"C" * 100
            be.release.set()
            return list(await asyncio.wait_for(asyncio.gather(first, *futs), 10))

        assert asyncio.run(main()) == [1, 2, 3]
        assert [p for _, p in wal.read_from(1)] == [b"first", b"A" * 100, b"B" * 100]


def test_asyncio_append_in_a_later_tick_is_flushed(wal_dir: pathlib.Path) -> None:
    """Resolving a batch schedules the next wake-up ahead; when the woken tasks append nothing
    in that tick it is withdrawn, so an append in a later tick schedules its own (else it
    would wait forever for a wake-up that already ran)."""
    with Wal.open(wal_dir, backend="fallback") as wal:

        async def main() -> list[int]:
            got = [await asyncio.wait_for(wal.append_async(b"one"), 10)]
            for i in range(3):
                await asyncio.sleep(0.02)  # the ahead-of-time wake-up runs and finds nothing
                got.append(await asyncio.wait_for(wal.append_async(b"later%d" % i), 10))
            return got

        assert asyncio.run(main()) == [1, 2, 3, 4]


def test_asyncio_mixed_with_blocking_appenders_frames_every_record(wal_dir: pathlib.Path) -> None:
    """One batch holding framed records (blocking appenders) and append_async payloads
    (framed by the flushing thread): every record reads back with its own LSN."""
    be = GatedBackend(hold=1)
    with Wal.open(wal_dir, backend="fallback", wrap_io=be) as wal:
        first = threading.Thread(target=wal.append, args=(b"first",))
        first.start()
        assert be.entered.wait(10)
        blockers = [threading.Thread(target=wal.append, args=(b"t%d" % i,)) for i in range(4)]

        async def main() -> list[int]:
            futs = []
            for i, t in enumerate(blockers):
                futs.append(wal.append_async(b"a%d" % i * (i + 1)))
                t.start()
                wait_until(lambda n=3 + 2 * i: _queued(wal) >= n, 10.0, "the records queued")
            be.release.set()
            return list(await asyncio.wait_for(asyncio.gather(*futs), 10))

        lsns = asyncio.run(main())
        for t in [first, *blockers]:
            t.join(10)
        assert wal.counters()["flushes"] == 2  # the eight queued behind the first write: one batch
        records = dict(wal.read_from(1))
        assert len(records) == 9 and sorted(records) == list(range(1, 10))
        assert [records[n] for n in lsns] == [b"a%d" % i * (i + 1) for i in range(4)]


def test_append_async_follows_the_running_loop(wal_dir: pathlib.Path) -> None:
    """The loop append_async remembers is used only while it runs on the caller's thread.

    (It skips asyncio.get_running_loop()'s getpid per call: a loop run after it in the
    same thread, or another thread's loop, must still get the futures, and a call with
    no running loop must still fail as asyncio's does.)"""
    with Wal.open(wal_dir, backend="fallback") as wal:

        async def append(tag: bytes) -> tuple[asyncio.AbstractEventLoop, int]:
            fut = wal.append_async(tag)
            assert fut.get_loop() is asyncio.get_running_loop()
            return asyncio.get_running_loop(), await asyncio.wait_for(fut, 10)

        first_loop, first = asyncio.run(append(b"a"))
        second_loop, second = asyncio.run(append(b"b"))  # a new loop in the same thread
        assert first_loop is not second_loop and (first, second) == (1, 2)
        with pytest.raises(RuntimeError, match="no running event loop"):
            wal.append_async(b"no loop")

        other: list[int] = []
        started, go = threading.Event(), threading.Event()

        def other_thread() -> None:
            async def main() -> None:
                started.set()
                await asyncio.get_running_loop().run_in_executor(None, go.wait, 10)
                other.append((await append(b"c"))[1])

            asyncio.run(main())

        t = threading.Thread(target=other_thread)
        t.start()

        async def here() -> None:
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
            await append(b"d")  # this thread's loop is remembered while the other one runs
            go.set()
            await asyncio.sleep(0.05)
            await append(b"e")

        asyncio.run(here())
        t.join(10)
        assert other and wal.durable_lsn == 5


class _OwnFuture(asyncio.Future[int]):
    """A loop's own kind of future (a loop that overrides create_future)."""


class _OwnFutureLoop(asyncio.SelectorEventLoop):
    def create_future(self) -> asyncio.Future[Any]:
        return _OwnFuture(loop=self)


def test_append_async_makes_the_loops_own_futures(wal_dir: pathlib.Path) -> None:
    """Futures are made directly (no create_future call) only for loops that make exact
    asyncio.Futures; a loop with its own create_future gets its own kind, resolved the plain way."""
    with Wal.open(wal_dir, backend="fallback") as wal:

        async def append(tag: bytes) -> tuple[type, int]:
            futs = [wal.append_async(tag) for _ in range(3)]
            return type(futs[-1]), (await asyncio.wait_for(asyncio.gather(*futs), 10))[-1]

        assert asyncio.run(append(b"plain")) == (asyncio.Future, 3)
        with asyncio.Runner(loop_factory=_OwnFutureLoop) as runner:
            assert runner.run(append(b"own")) == (_OwnFuture, 6)
        assert asyncio.run(append(b"plain again")) == (asyncio.Future, 9)
