"""Ctrl-C (any raising signal handler) during a waited ``read_into`` leaves the handle guarding its op.

``FileHandle.read_into`` is one ``Ring.rw_one`` call; a signal that interrupts
its wait in the kernel runs its Python handler as the call returns.  When the
handler raises, the read is still in the kernel: the handle must find it
(``outlived_op``) so that ``close()`` waits for it instead of closing the
descriptor under it, and the buffer receives the data.  The hung read is a
read from an empty pipe (``rw_one`` redirected there, as in
``tests/stack/test_prepared_single.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import CodeType, FrameType

import pytest

import uringstack
from tests.signal_points import Alarm, Interrupt, code_of, signal_at, sweep
from tests.stack.conftest import GatedReads
from uringstack.ring import Ring
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.prepared import PreparedIO
from uringstack.stack.uring_backend import UringFileIO

CPU = sorted(os.sched_getaffinity(0))[0]


def _raise_alarm(signum: int, frame: FrameType | None) -> None:
    raise Alarm


@pytest.fixture
def alarmed(tmp_path: os.PathLike[str]) -> Iterator[tuple[FileHandle, Ring, int, int]]:
    """A handle on a 4 KiB file whose ring waits 2 s per call (the alarm interrupts that
    wait), an empty pipe (r, w) for the hung read, and SIGALRM raising :class:`Alarm`."""
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
    r, w = os.pipe()
    old = signal.signal(signal.SIGALRM, _raise_alarm)
    s = open_stack(overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off"})
    try:
        h = s.open(path)
        assert isinstance(h.io, UringFileIO)
        ring = h.ring
        assert isinstance(ring, Ring)
        ring.wait_tick = 2.0  # the call's own wait: the alarm interrupts it
        ring.wait_timeout = 3.0
        yield h, ring, r, w
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        s.close()
        os.close(r)
        os.close(w)


def _synced_zeros(tmp_path: os.PathLike[str]) -> str:
    """A 4 KiB file of zeros on disk (its pages can be dropped from the cache)."""
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        os.fsync(f.fileno())
    return path


def _to_pipe(ring: Ring, r: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ring.rw_one`` reads the pipe instead of the file."""
    real = ring.rw_one
    monkeypatch.setattr(ring, "rw_one", lambda op, fd, ptr, n, off, *rest: real(op, r, ptr, n, 0, 0, 0, rest[-1]))


def _close_waits_for_the_read(h: FileHandle, ring: Ring, buf: bytearray, w: int) -> None:
    """The interrupted read is still the kernel's: close() waits for it (written late), then closes."""
    assert ring.inflight == 1
    writer = threading.Timer(0.3, os.write, (w, b"late"))
    writer.start()
    started = time.monotonic()
    h.close()  # waits for the read the kernel still holds, then closes the descriptor
    assert bytes(buf[:4]) == b"late", "close() returned while the kernel still held the read"
    assert time.monotonic() - started >= 0.25
    writer.join()
    assert ring.inflight == 0
    with pytest.raises(OSError):
        os.fstat(h.fd)


@pytest.mark.timeout(30)
def test_read_into_interrupted_by_a_raising_handler_is_waited_for_by_close(
    alarmed: tuple[FileHandle, Ring, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, ring, r, w = alarmed
    _to_pipe(ring, r, monkeypatch)
    buf = bytearray(4096)
    with pytest.raises(Alarm), _alarm_once_submitted(ring):
        h.read_into(buf, 0)
    monkeypatch.undo()
    _close_waits_for_the_read(h, ring, buf, w)


@pytest.mark.timeout(30)
def test_a_prepared_single_run_interrupted_by_a_raising_handler_is_waited_for_by_close(
    alarmed: tuple[FileHandle, Ring, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for ``prepared.run([off])`` of one buffer (the QD1 loop's one-frame path): the
    interrupted op stays the prepared object's (``done()`` false) and the handle's close waits."""
    h, ring, r, w = alarmed
    # the bound op calls ring.rw_one, looked up per call: redirected to the pipe below
    monkeypatch.setattr(
        ring, "bind_rw_one",
        lambda op, fd, ptr, n, flags, index, keep: lambda off: ring.rw_one(op, fd, ptr, n, off, flags, index, keep),
    )  # fmt: skip
    buf = bytearray(4096)
    reads = h.prepare_reads([buf])
    assert reads.run([0]) == [4096]  # binds the op: the next run takes the one-frame path
    _to_pipe(ring, r, monkeypatch)
    with pytest.raises(Alarm), _alarm_once_submitted(ring):
        reads.run([0])
    monkeypatch.undo()
    assert not reads.done()
    _close_waits_for_the_read(h, ring, buf, w)


class Second(Exception):
    """What the test's SIGUSR1 handler raises: a second signal, inside the first one's handling."""


def _second_signal_in_lookup(ring: Ring, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first ``ring.batch_holding`` (the handle's lookup of the interrupted op, through the
    backend's ``outlived_op``) sends this thread a SIGUSR1 first, whose handler raises
    :class:`Second` there: Ctrl-C twice.  Returns the list the sends are counted in."""
    real = ring.batch_holding
    sent: list[int] = []

    def batch_holding(keep: object) -> object:
        if not sent:
            sent.append(1)
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        return real(keep)

    def raise_second(signum: int, frame: FrameType | None) -> None:
        raise Second

    signal.signal(signal.SIGUSR1, raise_second)  # (the caller restores the old handler)
    monkeypatch.setattr(ring, "batch_holding", batch_holding)
    return sent


@pytest.mark.timeout(30)
@pytest.mark.parametrize("form", ["read_into", "prepared"])
def test_a_second_signal_while_the_handle_looks_up_its_interrupted_op(
    alarmed: tuple[FileHandle, Ring, int, int], monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """Ctrl-C twice: the first interrupts the wait, the second raises while the handle finds
    the op the kernel still holds (``outlived_op``).  The first exception propagates and the
    handle still tracks the op: close() waits for it."""
    h, ring, r, w = alarmed
    buf = bytearray(4096)
    if form == "prepared":
        monkeypatch.setattr(
            ring, "bind_rw_one",
            lambda op, fd, ptr, n, flags, index, keep: lambda off: ring.rw_one(op, fd, ptr, n, off, flags, index, keep),
        )  # fmt: skip
        reads = h.prepare_reads([buf])
        assert reads.run([0]) == [4096]  # binds the op: the next run takes the one-frame path
    old = signal.getsignal(signal.SIGUSR1)
    try:
        sent = _second_signal_in_lookup(ring, monkeypatch)
        _to_pipe(ring, r, monkeypatch)
        with pytest.raises(Alarm), _alarm_once_submitted(ring):
            if form == "prepared":
                reads.run([0])
            else:
                h.read_into(buf, 0)
    finally:
        signal.signal(signal.SIGUSR1, old)
    monkeypatch.undo()
    assert sent == [1], "the lookup was not interrupted: the test tested nothing"
    if form == "prepared":
        assert not reads.done()
    _close_waits_for_the_read(h, ring, buf, w)


@pytest.mark.timeout(30)
def test_a_second_signal_while_fileio_readinto_looks_up_its_interrupted_op(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for ``uringstack.FileIO.readinto`` at the file position (``read_here``): the read
    the ring waits for (no cached read answers first) outlives the call, and the file's close
    waits for it."""
    path = _synced_zeros(tmp_path)
    r, w = os.pipe()
    old_alarm, old_usr1 = signal.signal(signal.SIGALRM, _raise_alarm), signal.getsignal(signal.SIGUSR1)
    s = open_stack(overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off"})
    try:
        ring = s.workers[0].rings["storage"]
        ring.wait_tick, ring.wait_timeout = 2.0, 3.0
        raw = uringstack.open(path, "rb", buffering=0, stack=s)
        assert isinstance(raw, uringstack.FileIO)
        assert raw.handle is not None
        monkeypatch.setattr(raw.handle, "_cached", lambda buf, want: None)  # as in _opened("readinto")
        raw._disarm_cached_reads()
        sent = _second_signal_in_lookup(ring, monkeypatch)
        _to_pipe(ring, r, monkeypatch)
        buf = bytearray(4096)
        with pytest.raises(Alarm), _alarm_once_submitted(ring):
            raw.readinto(buf)
        signal.signal(signal.SIGUSR1, old_usr1)
        monkeypatch.undo()
        assert sent == [1], "the lookup was not interrupted: the test tested nothing"
        assert ring.inflight == 1
        writer = threading.Timer(0.3, os.write, (w, b"late"))
        writer.start()
        raw.close()  # waits for the read the kernel still holds
        assert bytes(buf[:4]) == b"late", "close() returned while the kernel still held the read"
        writer.join()
        assert ring.inflight == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGUSR1, old_usr1)
        s.close()
        os.close(r)
        os.close(w)


# --- a signal at each point of the handle's tracking (tests/signal_points.py) ----------------
# The handle counts a single waited op in its tracker while it runs and, when the call
# raised with the op still in the kernel, keeps that op tracked before counting the call
# out.  A raising signal at any point of that bookkeeping must leave close() neither
# waiting for a call that returned (its whole timeout, then a false "ran past") nor
# returning while the kernel still holds the read.


def _bound_per_call(ring: Ring) -> Callable[..., Callable[[int], int]]:
    """A ``ring.bind_rw_one`` whose op calls ``ring.rw_one``, looked up per call (redirected to the pipe)."""
    return lambda op, fd, ptr, n, flags, index, keep: lambda off: ring.rw_one(op, fd, ptr, n, off, flags, index, keep)


def _drained(ring: Ring) -> None:
    """Wait (bounded) until the ring reaped the read the late write completed."""
    deadline = time.monotonic() + 5.0
    while ring.inflight and time.monotonic() < deadline:
        ring.reap()
        time.sleep(0.001)
    assert ring.inflight == 0


_HANDLE_CODE = code_of(
    files=(
        "ring/inflight.py",
        "ring/interrupts.py",
        "stack/handle.py",
        "stack/prepared.py",
        "fallback/backend.py",
        "fallback/pool.py",
    )
)


def _bookkeeping(code: CodeType) -> bool:
    """The handle's, prepared objects' and tracker's code but finalizers (a signal raising in
    one is ignored: test_a_signal_anywhere_in_a_dropped_prepared_objects_handover)."""
    return code.co_name != "__del__" and _HANDLE_CODE(code)


# Each form: one public call on a 4 KiB file and what it returns, from the handle's
# tracking paths: a single waited op, a prepared run of one buffer (one-frame path) and
# of two (a start), a batch (the tracker's run), a file object's readinto (read_here),
# and a bound durable write on each backend (the fallback's is counted while it runs).
FORMS: dict[str, Callable[[FileHandle], object]] = {
    "read_into": lambda h: h.read_into(bytearray(4096), 0),
    "prepared": lambda h: h.prepare_reads([bytearray(4096)]).run([0]),
    "prepared-2": lambda h: h.prepare_reads([bytearray(2048), bytearray(2048)]).run([0, 2048]),
    "read_many": lambda h: h.read_many([0], [bytearray(4096)]),
    "write_durable": lambda h: h.bind_write_durable()(b"y" * 4096, 0),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["uring", "fallback"])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_signal_anywhere_in_a_calls_tracking_leaves_close_prompt(
    tmp_path: os.PathLike[str], form: str, backend: str
) -> None:
    """One raising signal (Ctrl-C) at each point of the handle's and tracker's code in turn:
    the call completes or raises, and the handle's close() then returns at once."""
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
    s = open_stack(
        overrides={"core.backend": backend, "core.cores": [CPU], "sqpoll.mode": "off", "core.close_timeout_s": 0.5}
    )
    call = FORMS[form]
    try:

        def once(at: int) -> str | None:
            h = s.open(path)
            with signal_at(_bookkeeping, at) as sent, contextlib.suppress(Interrupt):
                call(h)
            try:
                h.close()
            except TimeoutError as e:
                raise AssertionError(f"a signal {sent.where} left the call counted: {e}") from None
            return sent.where

        sweep(once)
    finally:
        s.close()


@pytest.mark.timeout(60)
def test_a_signal_anywhere_in_a_dropped_prepared_objects_handover(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prepared object dropped without close() hands its batch still in flight to the
    handle's tracker in its finalizer, where Python prints and ignores an exception: a
    raising signal at each point of that handover still leaves the batch tracked."""
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
    ignored: list[object] = []  # (the types only: the traceback would keep the object alive)
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(u.exc_type))
    dropping = code_of(files=("stack/prepared.py", "ring/interrupts.py"))
    with open_stack(overrides={"core.backend": "uring", "core.cores": [CPU], "core.close_timeout_s": 0.3}) as s:

        def once(at: int) -> str | None:
            h = s.open(path)
            prepared = h.prepare_reads([bytearray(4096)])
            in_flight = _Unfinished()
            prepared._last = in_flight  # as if its batch were still in flight
            with signal_at(lambda code: code.co_name in ("__del__", "_hand_over") and dropping(code), at) as sent:
                del prepared  # (the last reference: finalized here)
            if sent.where is not None and sent.where.startswith("PreparedIO.__del__ at its entry"):
                # The limit docs/api.md states: nothing of the finalizer ran, and Python
                # ignores the exception; the handle's close does not see the batch.
                in_flight.finished = True
                h.close()
                return sent.where
            with pytest.raises(TimeoutError) as got:
                h.close()
            assert "1 op(s)" in str(got.value), f"a signal {sent.where} lost the batch in flight: {got.value}"
            in_flight.finished = True
            h.io.close()  # (the handle's close left the descriptor open: release it now)
            return sent.where

        sweep(once)
    assert ignored, "no signal raised in the finalizer: the test tested nothing"


class _Unfinished:
    """A batch in flight until the test says otherwise."""

    n = 1
    finished = False

    def done(self) -> bool:
        return self.finished


@pytest.mark.timeout(120)
def test_a_signal_anywhere_while_the_fallback_queues_a_batch_leaves_its_ops_waited_for(
    tmp_path: os.PathLike[str], gated_fallback_reads: GatedReads
) -> None:
    """The fallback backend queues a batch's ops on its pool one by one: a raising signal at
    each point of that (and of the trackers') in turn, and the handle's close() still
    returns only after every op that was queued has run (the pool resolves the descriptor
    number when it runs an op: one run after the close would read another file)."""
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"x" * 8192)
    gate, ended = gated_fallback_reads.gate, gated_fallback_reads.ended
    queuing = code_of(files=("fallback/backend.py", "fallback/pool.py", "ring/inflight.py", "ring/interrupts.py"))
    with open_stack(overrides={"core.backend": "fallback", "core.cores": [CPU], "core.close_timeout_s": 5.0}) as s:

        def once(at: int) -> str | None:
            h = s.open(path)
            gate.clear()
            ended.clear()
            with signal_at(queuing, at) as sent, contextlib.suppress(Interrupt):
                h.start_read_many([0, 4096], [bytearray(4096), bytearray(4096)])
            opener = threading.Timer(0.1, gate.set)
            opener.start()
            h.close()
            closed = time.monotonic()
            opener.join()
            time.sleep(0.05)  # (an op still queued after the close would run now)
            late = [t for t in ended if t > closed]
            assert not late, f"a signal {sent.where}: {len(late)} op(s) ran after close() returned"
            return sent.where

        sweep(once)


def _opened(
    form: str, s: Stack, ring: Ring, path: str, buf: bytearray, monkeypatch: pytest.MonkeyPatch
) -> tuple[Callable[[], None], Callable[[], object]]:
    """A handle (or file object) on *path* for *form*: its close, and the read into *buf* to interrupt."""
    if form == "readinto":
        raw = uringstack.open(path, "rb", buffering=0, stack=s)
        assert isinstance(raw, uringstack.FileIO)
        # The read must go to the ring: its first step, the page-cache copy (read_cached), finds
        # nothing.  Dropping the page (DONTNEED) did not make sure of that: read_cached's own
        # preadv2(RWF_NOWAIT) starts reading the missing page in, and when that read finishes
        # before the call looks again (under load) the call returns it, the ring never sees the
        # read, and the alarm lands after it ("DID NOT RAISE").
        assert raw.handle is not None
        monkeypatch.setattr(raw.handle, "_cached", lambda buf, want: None)
        raw._disarm_cached_reads()  # (its C step copies without _cached: the Python step here)
        return raw.close, lambda: raw.readinto(buf)
    h = s.open(path)
    if form == "read_into":
        return h.close, lambda: h.read_into(buf, 0)
    monkeypatch.setattr(ring, "bind_rw_one", _bound_per_call(ring))
    reads = h.prepare_reads([buf])
    assert reads.run([0]) == [4096]  # binds the op: the next run takes the one-frame path
    return h.close, lambda: reads.run([0])


@contextlib.contextmanager
def _alarm_once_submitted(ring: Ring) -> Iterator[None]:
    """Within the block, SIGALRM to this thread once *ring* holds an op (the read to interrupt
    is in the kernel), and never after the block.

    A timer (``setitimer(0.05)``) fired by the clock: under load it ran out before the read was
    submitted (``ring.inflight`` 0) or after a read that returned landed it in pytest or in the
    stack's teardown."""
    target = threading.get_ident()
    over = threading.Event()

    def send() -> None:
        while not over.wait(0.001):
            if ring.inflight:
                signal.pthread_kill(target, signal.SIGALRM)
                return

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        over.set()
        sender.join()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("form", ["read_into", "prepared", "readinto"])
def test_a_second_signal_anywhere_in_the_tracking_of_an_interrupted_read(
    tmp_path: os.PathLike[str],
    monkeypatch: pytest.MonkeyPatch,
    form: str,
    pipe: tuple[int, int],
    counted_alarm: list[int],
) -> None:
    """Ctrl-C twice: the first interrupts the wait of a read the kernel keeps (an empty pipe),
    the second lands at each point of the handle's and tracker's bookkeeping after it in
    turn.  Each time the close waits for the read (written late) and then returns: for
    ``read_into``, a prepared run of one buffer and ``uringstack.FileIO.readinto``."""
    path = _synced_zeros(tmp_path)
    r, w = pipe
    rang = counted_alarm
    swept = {"read_into": FileHandle._one_pinned, "prepared": PreparedIO.run, "readinto": FileHandle._read_here}[form]
    keep = [getattr(cls, "_keep_outlived", None) for cls in (FileHandle, PreparedIO)]  # (absent before the fix)
    chosen = code_of(swept, *[f for f in keep if f is not None], files=("ring/inflight.py", "ring/interrupts.py"))
    with open_stack(
        overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off", "core.close_timeout_s": 1.0}
    ) as s:
        ring = s.workers[0].rings["storage"]
        ring.wait_tick, ring.wait_timeout = 2.0, 3.0

        def once(at: int) -> str | None:
            buf = bytearray(4096)
            close, read = _opened(form, s, ring, path, buf, monkeypatch)
            _to_pipe(ring, r, monkeypatch)
            rang.clear()
            with (
                signal_at(chosen, at, armed=lambda: bool(rang)) as sent,
                pytest.raises((Alarm, Interrupt)),
                _alarm_once_submitted(ring),
            ):
                read()
            monkeypatch.undo()
            assert rang == [1]
            assert ring.inflight == 1  # the kernel holds the read
            writer = threading.Timer(0.1, os.write, (w, b"late"))
            writer.start()
            try:
                close()
                got = bytes(buf[:4])  # what the read had delivered when close() returned
            except TimeoutError as e:
                got = str(e).encode()
            writer.join()
            _drained(ring)
            assert got != b"\0" * 4, f"a signal {sent.where}: close() returned while the kernel held the read"
            assert got == b"late", f"a signal {sent.where} left the call counted: {got.decode()}"
            return sent.where

        sweep(once)
