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

import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest

import uringstack
from uringstack.ring import Ring
from uringstack.stack import open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.uring_backend import UringFileIO

CPU = sorted(os.sched_getaffinity(0))[0]


class Alarm(Exception):
    """What the test's SIGALRM handler raises."""


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
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    with pytest.raises(Alarm):
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
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    with pytest.raises(Alarm):
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
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
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
    the ring waits for (the file's pages dropped from the cache, so no cached read answers
    first) outlives the call, and the file's close waits for it."""
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        os.fsync(f.fileno())
    r, w = os.pipe()
    old_alarm, old_usr1 = signal.signal(signal.SIGALRM, _raise_alarm), signal.getsignal(signal.SIGUSR1)
    s = open_stack(overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off"})
    try:
        ring = s.workers[0].rings["storage"]
        ring.wait_tick, ring.wait_timeout = 2.0, 3.0
        raw = uringstack.open(path, "rb", buffering=0, stack=s)
        assert isinstance(raw, uringstack.FileIO)
        os.posix_fadvise(raw.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        sent = _second_signal_in_lookup(ring, monkeypatch)
        _to_pipe(ring, r, monkeypatch)
        buf = bytearray(4096)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
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
