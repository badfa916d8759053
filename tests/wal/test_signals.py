"""A raising signal (Ctrl-C) anywhere in an append leaves the log consistent, usable, and openable.

Each sweep sends a real signal (tests/signal_points.py) at each point of the
log's code in turn, in the thread that appends, and then checks what a program
that caught the exception would find:

* the interrupted call raised the signal's exception;
* the log is still usable (the next append returns the next LSN), unless the
  signal landed inside the durable write itself, whose outcome on disk is
  unknown: then the log failed (and says why), as it does on an I/O error;
* nothing hangs: other appenders, the next append and ``close()`` return
  within seconds;
* reopened, the log holds every acknowledged record at the LSN its append
  returned, and LSNs with no gap (the interrupted record at its own LSN, or
  not at all).

Before these tests a signal could leave the inline flusher's ``_busy`` set
(every later append and ``close()`` hung), drop a taken batch so the next one
was framed with its LSNs (the log no longer opened: "record has LSN 2,
expected 3"), break a gate's relay, or fail the log for a signal in its
bookkeeping.  The entry of an event-loop callback is left out, as in the
coalescer's sweeps: a signal there counts as the callback run (docs/wal.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import inspect
import pathlib
import shutil
import threading
import time
from collections.abc import Callable
from types import CodeType
from typing import Any

import pytest

from tests.descriptors import open_fds
from tests.signal_points import Interrupt, code_of, signal_at, sweep
from tests.waiting import wait_until
from tests.wal.test_batching import GatedBackend
from uringstack.ring.io_backend import FileIO, SyncMethod
from uringstack.ring.pending import Pending
from uringstack.wal import Wal, WalFailedError
from uringstack.wal import writer as writer_mod
from uringstack.wal.faults import WrappedFileIO

# The log's own code, and the durable write's on each backend.
_LOG = ("wal/writer.py",)
_WRITE = {
    "fallback": ("stack/handle.py", "ring/inflight.py", "fallback/backend.py"),
    "uring": ("stack/handle.py", "ring/inflight.py", "ring/__init__.py", "ring/pending.py"),
}
# qualnames of the log's code (wal/writer.py): its classes' methods and its functions
_FUNCTIONS = [n for n, f in vars(writer_mod).items() if inspect.isfunction(f) and f.__module__ == writer_mod.__name__]
_BOOKKEEPING = ("Writer.", "_Gate.", "_Taken.", *_FUNCTIONS)
# Small segments: every point opens a log of its own (a default one fallocates 2 x 64 MiB).
_SMALL = {"segment_size_bytes": 64 * 1024, "max_batch_bytes": 8 * 1024}


def _in_the_log(where: str) -> bool:
    return where.startswith(_BOOKKEEPING)


def _returns_within(fn: Callable[[], Any], what: str, seconds: float = 5.0) -> Any:
    """``fn()`` in a thread: its result (or exception), or AssertionError naming *what* if it hangs."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{what} hung"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _next_append_and_close(wal: Wal, where: str | None) -> int | None:
    """The log after the signal: the next append's LSN (None when the log failed), then close()."""
    try:
        lsn: int | None = _returns_within(lambda: wal.append(b"after"), f"a signal {where}: the next append")
    except WalFailedError:
        lsn = None
    _returns_within(wal.close, f"a signal {where}: close()")
    return lsn


def _reopened(directory: pathlib.Path, backend: str) -> dict[int, bytes]:
    with Wal.open(directory, backend=backend, **_SMALL) as wal:
        return dict(wal.read_from(1))


def _check_log(back: dict[int, bytes], acknowledged: dict[int, bytes], maybe: set[bytes], where: str | None) -> None:
    """Every acknowledged record at its LSN, no gap, and nothing else but an interrupted record."""
    assert sorted(back) == list(range(1, len(back) + 1)), f"a signal {where}: LSNs with a gap: {sorted(back)}"
    for lsn, payload in acknowledged.items():
        assert back.get(lsn) == payload, f"a signal {where}: LSN {lsn} reads back {back.get(lsn)!r}, not {payload!r}"
    extra = {back[lsn] for lsn in set(back) - set(acknowledged)}
    assert extra <= maybe, f"a signal {where}: records nobody appended: {extra - maybe}"


@pytest.mark.timeout(600)
def test_a_signal_anywhere_in_a_lone_append_leaves_the_log_consistent(
    tmp_path: pathlib.Path, backend_name: str
) -> None:
    """The append flushes inline (it finds no flush under way): a signal in its queueing, its
    take, staging, the write, or the acknowledgement."""
    chosen = code_of(files=_LOG + _WRITE[backend_name])
    record = b"x" * 100

    def once(at: int) -> str | None:
        directory = tmp_path / f"at{at}"
        wal = Wal.open(directory, backend=backend_name, **_SMALL)
        acknowledged = {wal.append(b"warm"): b"warm"}
        with signal_at(chosen, at) as sent:
            try:
                acknowledged[wal.append(record)] = record
                raised: BaseException | None = None
            except (Interrupt, WalFailedError) as e:
                raised = e
        where = sent.where
        if where is None:
            wal.close()
            return None
        assert raised is not None, f"a signal {where}: the append returned"
        failed = wal.failed
        segment = wal._writer.active
        after = _next_append_and_close(wal, where)
        if _in_the_log(where):
            assert isinstance(raised, Interrupt), f"a signal {where}: the append raised {raised!r}"
            assert failed is None and after is not None, f"a signal {where} failed the log: {wal.failed!r}"
        else:  # inside the durable write: what reached the disk is unknown
            assert isinstance(raised, WalFailedError) and failed is raised, f"a signal {where}: {raised!r}"
            assert after is None
        if after is not None:
            acknowledged[after] = b"after"
        back = _reopened(directory, backend_name)
        _check_log(back, acknowledged, {record}, where)
        if after is not None:  # each record counted once in its segment (a cut-short acknowledgement runs again)
            assert segment.records == len(back), f"a signal {where}: {segment.records} records counted, {len(back)}"
        shutil.rmtree(directory)
        return where

    assert sweep(once) > 20


@pytest.mark.timeout(600)
def test_a_signal_anywhere_in_an_append_waiting_for_a_flush_leaves_the_relay_and_the_log_whole(
    tmp_path: pathlib.Path,
) -> None:
    """The append queues behind a flush under way and waits in a gate's relay, between two
    other waiting appenders: a signal before it waits or once it is woken must still pass
    the relay on to the appender behind it."""
    chosen = code_of(files=_LOG)
    mine = b"mine"

    def once(at: int) -> str | None:
        directory = tmp_path / f"at{at}"
        be = GatedBackend(hold=1)
        wal = Wal.open(directory, backend="fallback", wrap_io=be, **_SMALL)
        w = wal._writer
        acknowledged: dict[int, bytes] = {}

        def append(payload: bytes) -> None:
            acknowledged[wal.append(payload)] = payload

        def gate_size() -> int:
            gate = w._gate
            return 0 if gate is None else len(gate.locks)

        lead = threading.Thread(target=append, args=(b"lead",), name="lead", daemon=True)
        lead.start()
        assert be.entered.wait(5)
        ahead = threading.Thread(target=append, args=(b"ahead",), name="ahead", daemon=True)
        ahead.start()
        wait_until(lambda: gate_size() == 1, 1.0, "one appender at the gate")
        behind = threading.Thread(target=append, args=(b"behind",), name="behind", daemon=True)

        def queue_behind_then_release() -> None:
            _briefly_until(lambda: gate_size() == 2)  # (not if the signal came before we queued)
            behind.start()
            _briefly_until(lambda: gate_size() == 3)
            be.release.set()

        releaser = threading.Thread(target=queue_behind_then_release, daemon=True)
        releaser.start()
        in_main = threading.main_thread()
        with (
            signal_at(chosen, at, armed=lambda: threading.current_thread() is in_main) as sent,
            contextlib.suppress(Interrupt),
        ):
            acknowledged[wal.append(mine)] = mine
        releaser.join(5)
        hung = _joined(lead, ahead, behind)
        if hung:  # release the rest, so one broken relay costs seconds, not the test's timeout
            for gate in [*w._gates, *([w._gate] if w._gate else [])]:
                for lk in gate.locks:
                    if lk.locked():
                        lk.release()
            _joined(lead, ahead, behind)
        assert not hung, f"a signal {sent.where}: {hung} appender hung in the relay"
        if sent.where is None:
            _returns_within(wal.close, "close()")
            return None
        assert b"ahead" in acknowledged.values() and b"behind" in acknowledged.values()
        after = _next_append_and_close(wal, sent.where)
        assert after is not None, f"a signal {sent.where} failed the log: {wal.failed!r}"
        acknowledged[after] = b"after"
        _check_log(_reopened(directory, "fallback"), acknowledged, {mine}, sent.where)
        shutil.rmtree(directory)
        return sent.where

    assert sweep(once) > 10


def _joined(*threads: threading.Thread, seconds: float = 3.0) -> list[str]:
    """Join *threads* within *seconds* in all; the names of those still running."""
    deadline = time.monotonic() + seconds
    for t in threads:
        if t.ident is not None:
            t.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threads if t.is_alive()]


def _briefly_until(cond: Callable[[], bool], timeout: float = 0.3) -> None:
    """Wait up to *timeout* for *cond* (which may never come: then go on)."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.001)


def _loop_callback_entry(code: CodeType) -> bool:
    """The log's event-loop callbacks, whose entry a signal can cut before any line of theirs runs
    (pure Python cannot close that; docs/wal.md)."""
    return code.co_qualname in ("Writer._kick", "Writer._resolved")


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    # host_only: the opt-in loop flush makes the same ring calls as the thread's, from
    # another thread: Python's signal handling is what differs, not the kernel's
    "async_flush",
    ["thread", pytest.param("loop", marks=pytest.mark.host_only)],
)
def test_a_signal_anywhere_in_asyncio_appends_still_resolves_every_future(
    tmp_path: pathlib.Path, async_flush: str
) -> None:
    """Four tasks append twice each on one event loop: a signal in ``append_async``, the flusher's
    wake-up (``_kick``) or the acknowledgement's callback (``_resolved``, ``resolve``).  Every
    task ends within seconds (its LSNs, or the signal's exception), and the log stays usable.
    With ``async_flush = "loop"`` the wake-up writes the batch on the loop, so the sweep also
    reaches the durable write: a signal inside it fails the log (its outcome on disk is
    unknown), as for a blocking append's inline flush, and every future still ends."""
    in_log = code_of(
        files=(*_LOG, "ring/wakeups.py", "ring/interrupts.py", *(_WRITE["fallback"] if async_flush == "loop" else ()))
    )

    def chosen(code: CodeType) -> bool:
        return in_log(code) and not _loop_callback_entry(code)

    failed_at: list[str | None] = []

    def once(at: int) -> str | None:
        directory = tmp_path / f"at{at}"
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _, context: None)  # a callback's Interrupt: logged, not printed
        wal = Wal.open(directory, backend="fallback", async_flush=async_flush, **_SMALL)
        acknowledged: dict[int, bytes] = {}

        async def twice(k: int) -> None:
            for i in range(2):
                payload = b"t%d-%d" % (k, i)
                acknowledged[await wal.append_async(payload)] = payload

        try:
            tasks = [loop.create_task(twice(k)) for k in range(4)]
            with signal_at(chosen, at) as sent:
                done, _ = loop.run_until_complete(asyncio.wait(tasks, timeout=5.0))
            assert done == set(tasks), f"a signal {sent.where}: an append_async never ended"
            for task in tasks:
                err = task.exception()
                assert err is None or isinstance(err, (Interrupt, WalFailedError)), f"a signal {sent.where}: {err!r}"
                if isinstance(err, WalFailedError):
                    assert async_flush == "loop" and wal.failed is not None, f"a signal {sent.where}: {err!r}"
            if sent.where is None:
                return None

            async def one_more() -> int:
                return await asyncio.wait_for(wal.append_async(b"after"), 5.0)

            if wal.failed is None:
                after = loop.run_until_complete(one_more())
                acknowledged[after] = b"after"
            else:  # only a signal inside the loop's own durable write fails the log
                assert async_flush == "loop" and not _in_the_log(sent.where or ""), sent.where
                failed_at.append(sent.where)
        finally:
            _returns_within(wal.close, f"a signal {sent.where}: close()")
            loop.close()
        maybe = {b"t%d-%d" % (k, i) for k in range(4) for i in range(2)}
        _check_log(_reopened(directory, "fallback"), acknowledged, maybe, sent.where)
        shutil.rmtree(directory)
        return sent.where

    assert sweep(once, most=1000) > 20
    # the loop's own writes were swept too (and failed the log), not only its bookkeeping
    assert bool(failed_at) == (async_flush == "loop"), failed_at


@pytest.mark.timeout(600)
def test_a_signal_anywhere_in_an_inline_flush_of_asyncio_appends_leaves_their_loop_served(
    tmp_path: pathlib.Path,
) -> None:
    """A blocking append on the event loop's thread flushes inline a batch that holds that
    loop's ``append_async`` records (their gate taken with it): after a signal anywhere in
    it, those futures and the loop's next ``append_async`` still resolve within seconds.
    (The gate must leave ``_gate`` before it joins the flushed gates: a stale ``_gate`` made
    the next ``append_async`` wait on a gate already opened, with no wake-up scheduled.)"""
    chosen = code_of(files=_LOG)

    def once(at: int) -> str | None:
        directory = tmp_path / f"at{at}"
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _, context: None)
        wal = Wal.open(directory, backend="fallback", **_SMALL)
        acknowledged: dict[int, bytes] = {}

        async def scenario() -> str | None:
            queued = [(wal.append_async(b"a%d" % i), b"a%d" % i) for i in range(2)]
            # (the flusher's wake-up has not run yet)
            with signal_at(chosen, at) as sent, contextlib.suppress(Interrupt):
                acknowledged[wal.append(b"sync")] = b"sync"
            if sent.where is None:
                return None
            for fut, payload in queued:
                acknowledged[await asyncio.wait_for(fut, 5.0)] = payload
            acknowledged[await asyncio.wait_for(wal.append_async(b"after"), 5.0)] = b"after"
            return sent.where

        try:
            where = loop.run_until_complete(scenario())
        except TimeoutError as e:
            raise AssertionError(f"a signal at point {at}: an append_async never resolved") from e
        finally:
            _returns_within(wal.close, f"a signal at point {at}: close()")
            loop.close()
        if where is not None:
            _check_log(_reopened(directory, "fallback"), acknowledged, {b"sync"}, where)
        shutil.rmtree(directory)
        return where

    assert sweep(once) > 10


class _FirstWakeUpRaises(asyncio.SelectorEventLoop):
    """A loop whose first ``call_soon`` of the log's wake-up raises, as a signal inside it would."""

    raised = False

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        if getattr(callback, "__name__", "") == "_kick" and not self.raised:
            self.raised = True
            raise Interrupt("inside call_soon")
        return super().call_soon(callback, *args, context=context)


def test_an_append_async_cut_short_while_scheduling_the_wake_up_leaves_the_next_one_served(
    tmp_path: pathlib.Path,
) -> None:
    """The wake-up is scheduled before the loop's entry in the gate is made: an entry means a
    wake-up is coming, so the next ``append_async`` of that loop schedules none.  (Made in
    the other order, a signal inside ``call_soon`` left the entry with no wake-up: every
    later ``append_async`` of the loop waited forever.)"""
    loop = _FirstWakeUpRaises()
    wal = Wal.open(tmp_path, backend="fallback", **_SMALL)

    async def scenario() -> int:
        with pytest.raises(Interrupt):
            wal.append_async(b"cut")
        return await asyncio.wait_for(wal.append_async(b"next"), 5.0)

    try:
        assert loop.run_until_complete(scenario()) == 2  # the cut one queued as LSN 1, written with it
    finally:
        _returns_within(wal.close, "close()")
        loop.close()
    assert _reopened(tmp_path, "fallback") == {1: b"cut", 2: b"next"}


class _CtrlCAfterTheWrite(WrappedFileIO):
    """Ctrl-C right after the durable write returned, before the log saw its result."""

    def start_write_durable(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> Pending:
        self.inner.start_write_durable(offset, buffer, sync, wait=wait)  # the write is done
        raise KeyboardInterrupt


def test_ctrl_c_inside_the_write_fails_the_log_and_propagates_itself(tmp_path: pathlib.Path) -> None:
    """A ``KeyboardInterrupt`` in the write reaches the caller as itself (not as the log's
    error), and the log fails with EINTR: it cannot know what reached the disk."""
    wrapped: list[_CtrlCAfterTheWrite] = []

    def wrap(io: FileIO) -> FileIO:
        if not wrapped:  # the first segment's handle (the test writes no other)
            wrapped.append(_CtrlCAfterTheWrite(io))
            return wrapped[0]
        return io

    with Wal.open(tmp_path, backend="fallback", **_SMALL) as wal:
        assert wal.append(b"before") == 1
    wal = Wal.open(tmp_path, backend="fallback", wrap_io=wrap, **_SMALL)
    with pytest.raises(KeyboardInterrupt):
        wal.append(b"cut")
    failed = wal.failed
    assert isinstance(failed, WalFailedError) and failed.errno == errno.EINTR
    assert "KeyboardInterrupt" in str(failed)
    with pytest.raises(WalFailedError):
        wal.append(b"next")
    _returns_within(wal.close, "close() after Ctrl-C in the write")
    back = _reopened(tmp_path, "fallback")
    assert back[1] == b"before" and set(back) <= {1, 2}


def test_a_gate_waiter_that_never_waits_still_passes_the_relay_on() -> None:
    """A waiter whose place exists but who will not wait (cut short before it waited):
    ``abandon`` passes the relay on once it reaches that place, and only then."""
    gate = writer_mod._Gate()
    for _ in range(3):
        gate.add_sync()
    woke: list[int] = []
    ts = [threading.Thread(target=lambda i=i: (gate.wait(i), woke.append(i))) for i in (0, 2)]
    for t in ts:
        t.start()
    gate.abandon(1)
    time.sleep(0.05)
    assert woke == []  # nobody woke before the gate opened
    gate.open()
    for t in ts:
        t.join(5)
    assert sorted(woke) == [0, 2]
    gate.open()  # opening again does nothing (a cut-short acknowledgement runs again)
    assert gate.reached == 3


def test_ctrl_c_while_close_waits_for_a_flush_still_closes_after_it(tmp_path: pathlib.Path) -> None:
    """``close()`` interrupted while it waits for the flush under way runs to its end before
    the interrupt propagates: else the log would release its directory while still writing."""
    be = GatedBackend(hold=1)
    wal = Wal.open(tmp_path, backend="fallback", wrap_io=be, **_SMALL)
    w = wal._writer
    appender = threading.Thread(target=wal.append, args=(b"held",))
    appender.start()
    assert be.entered.wait(5)
    real_join = w._thread.join
    calls: list[float | None] = []

    def join_interrupted_once(timeout: float | None = None) -> None:
        calls.append(timeout)
        if len(calls) == 1:
            be.release.set()  # the flush goes on while the interrupt propagates
            raise KeyboardInterrupt
        real_join(timeout)

    w._thread.join = join_interrupted_once  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        wal.close()
    assert len(calls) == 2 and not w._thread.is_alive()
    assert w.handle is None  # the segment's handle closed, after the flush
    appender.join(5)
    assert _reopened(tmp_path, "fallback") == {1: b"held"}


@pytest.mark.timeout(300)
def test_a_signal_anywhere_in_opening_the_active_segment_leaves_no_descriptor_behind(
    tmp_path: pathlib.Path, backend_name: str
) -> None:
    """``Wal.open`` opens the active segment and hands the descriptor to a handle, which
    serves a duplicate (``Stack.open(adopt_fd=)``'s contract): the log's own descriptor is
    closed once whatever point a signal hits, and none is left open."""
    from uringstack import reaper
    from uringstack.ring.interrupts import open_stored

    chosen = code_of(writer_mod.Writer._open_active, open_stored)
    d = tmp_path / "wal"
    with Wal.open(d, backend=backend_name) as wal:
        wal.append(b"first")  # (the segment exists: each open below recovers and reopens it)

    def once(at: int) -> str | None:
        gc.collect()
        before = open_fds()
        wal = None
        with signal_at(chosen, at) as sent, contextlib.suppress(Interrupt):
            wal = Wal.open(d, backend=backend_name)
        if wal is not None:
            wal.close()
        gc.collect()
        assert reaper.drain(10), "the reaper did not finish"
        left = open_fds() - before
        assert not left, f"a signal {sent.where} left descriptors open: {left}"
        return sent.where

    assert sweep(once, most=200) > 5
