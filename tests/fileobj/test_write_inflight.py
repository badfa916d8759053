"""Held ``bytes`` are written without waiting (``FileIO._release``): the rules that keep that safe.

A fault hook replaces the handle's ``start_write_many`` with batches whose
completion the test controls (:class:`Gate`): each copies the data it is given
(so only the file object keeps the caller's ``bytes`` alive) and writes it,
through the real handle, only once the gate opens.  Every rule fails a test
here when removed: ``flush()``/``close()`` and every other use of the descriptor
wait for the writes; a failure or a short write surfaces at the next
write/flush/close; the ``bytes`` stay referenced until their completions are
reaped, also after a wait that gave up (a lost completion); the bytes in
flight are capped."""

from __future__ import annotations

import errno
import os
import pathlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uringstack
from uringstack.errors import UringIOError
from uringstack.fileobj import fileio
from uringstack.fileobj.openfile import HOLD_MIN
from uringstack.stack import Stack

WAIT_S = 10.0  # a gate never opened fails a test after this, never hangs it


class GatedPending:
    """A batch of writes that completes only once its gate opens (then written for real)."""

    def __init__(self, gate: Gate, offsets: list[int], data: list[bytearray]) -> None:
        self.gate = gate
        self.n = len(data)
        self.offsets = offsets
        self.data = data  # copies: the caller's bytes are referenced by the file object only
        self.results: list[int] | None = None

    def done(self) -> bool:
        return self.results is not None or (self.gate.open.is_set() and not self.gate.lost)

    def wait(self) -> list[int]:
        if self.results is None:
            if self.gate.lost or not self.gate.open.wait(WAIT_S):
                raise UringIOError(errno.ETIMEDOUT, "wait", "gate", "a lost completion (test)")
            results = self.gate.real(self.offsets, self.data).wait()
            self.results = self.gate.outcome(self.data, results)
        return self.results

    async def wait_async(self) -> list[int]:
        raise AssertionError("not used by the file object")


class Gate:
    def __init__(self, f: Any, outcome: Callable[[list[bytearray], list[int]], list[int]] | None = None) -> None:
        handle = f.raw.handle
        self.real = handle.start_write_many
        self.open = threading.Event()
        self.lost = False
        self.started: list[GatedPending] = []
        self.outcome = outcome or (lambda data, results: results)

        def start_write_many(offsets: Any, buffers: Any) -> GatedPending:
            p = GatedPending(self, list(offsets), [bytearray(b) for b in buffers])
            self.started.append(p)
            return p

        handle.start_write_many = start_write_many


def _blocked(fn: Callable[[], Any], gate: Gate) -> Any:
    """Run *fn* in a thread: it must still be running after 0.3 s, and end once *gate* opens."""
    out: list[Any] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(0.3)
    still = t.is_alive()
    gate.open.set()
    t.join(WAIT_S)
    assert not t.is_alive(), "stuck after the gate opened"
    assert still, "returned while the writes were still in flight"
    if err:
        raise err[0]
    return out[0] if out else None


@pytest.fixture
def path(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    yield tmp_path / "f"


def _chunks(n: int) -> list[bytes]:
    return [os.urandom(HOLD_MIN) for _ in range(n)]


OTHER_USES: dict[str, Callable[[Any], Any]] = {
    "flush": lambda f: f.flush(),
    "raw.flush": lambda f: f.raw.flush(),
    "fileno": lambda f: f.fileno(),
    "tell": lambda f: f.raw.tell(),
    "seek": lambda f: f.seek(0, os.SEEK_END),
    "truncate": lambda f: f.truncate(),
    "small write + flush": lambda f: (f.write(bytearray(b"z" * (8 * HOLD_MIN))), f.raw.flush()),
    "large write": lambda f: f.raw.write(bytearray(b"z" * (8 * HOLD_MIN))),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("use", sorted(OTHER_USES))
def test_every_other_use_waits_for_the_writes_in_flight(use: str, path: pathlib.Path, stack: Stack) -> None:
    chunks = _chunks(6)
    with uringstack.open(path, "wb", stack=stack, buffering=2 * HOLD_MIN) as f:
        gate = Gate(f)
        for c in chunks:
            f.write(c)
        assert len(gate.started) == 3 and not gate.open.is_set()  # started, none waited for
        _blocked(lambda: OTHER_USES[use](f), gate)
        # what the use saw is the whole data, written
        assert path.read_bytes()[: 6 * HOLD_MIN] == b"".join(chunks)
    data = path.read_bytes()
    assert data[: 6 * HOLD_MIN] == b"".join(chunks)


@pytest.mark.timeout(60)
def test_close_waits_for_the_writes_in_flight(path: pathlib.Path, stack: Stack) -> None:
    chunks = _chunks(4)
    f = uringstack.open(path, "wb", stack=stack, buffering=2 * HOLD_MIN)
    gate = Gate(f)
    for c in chunks:
        f.write(c)
    _blocked(f.close, gate)
    assert f.closed
    assert path.read_bytes() == b"".join(chunks)


@pytest.mark.timeout(60)
def test_held_bytes_stay_referenced_until_reaped(path: pathlib.Path, stack: Stack) -> None:
    """The kernel reads a started write's memory until its completion: the ``bytes`` must live."""
    chunk = os.urandom(HOLD_MIN)
    base = sys.getrefcount(chunk)
    with uringstack.open(path, "wb", stack=stack, buffering=2 * HOLD_MIN) as f:
        gate = Gate(f)
        f.write(chunk)
        f.write(chunk)  # a buffer's worth: started, not waited for
        assert len(gate.started) == 1
        assert sys.getrefcount(chunk) == base + 2  # kept by the file object, twice
        gate.open.set()
        f.flush()
        assert sys.getrefcount(chunk) == base  # reaped: let go
    assert path.read_bytes() == chunk * 2


@pytest.mark.timeout(60)
def test_a_wait_that_gives_up_keeps_the_bytes_and_the_write(path: pathlib.Path, stack: Stack) -> None:
    """A lost completion (the wait's bound passed): flush raises in seconds; the batch and its
    ``bytes`` stay with the file object, and a later flush still waits for it."""
    chunk = os.urandom(HOLD_MIN)
    base = sys.getrefcount(chunk)
    with uringstack.open(path, "wb", stack=stack, buffering=2 * HOLD_MIN) as f:
        gate = Gate(f)
        f.write(chunk)
        f.write(chunk)
        gate.lost = True
        t0 = time.monotonic()
        with pytest.raises(OSError) as info:
            f.flush()
        assert time.monotonic() - t0 < 5
        assert info.value.errno == errno.ETIMEDOUT
        del info  # (its traceback's frames hold the batch's list)
        assert sys.getrefcount(chunk) == base + 2
        gate.lost = False
        gate.open.set()
        f.flush()
        assert sys.getrefcount(chunk) == base
    assert path.read_bytes() == chunk * 2


def _failing(err: int, at: int) -> Callable[[list[bytearray], list[int]], list[int]]:
    def outcome(data: list[bytearray], results: list[int]) -> list[int]:
        return [-err if i == at else r for i, r in enumerate(results)]

    return outcome


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["flush", "close", "next write"])
def test_a_failed_write_in_flight_raises_at_the_next_write_flush_or_close(
    where: str, path: pathlib.Path, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fileio, "WRITES_IN_FLIGHT_MAX", 2 * HOLD_MIN)
    f = uringstack.open(path, "wb", stack=stack, buffering=2 * HOLD_MIN)
    gate = Gate(f, _failing(errno.ENOSPC, 1))
    f.write(os.urandom(HOLD_MIN))
    f.write(os.urandom(HOLD_MIN))  # started; completes with ENOSPC on its 2nd write
    assert len(gate.started) == 1
    gate.open.set()
    with pytest.raises(OSError) as info:
        if where == "flush":
            f.flush()
        elif where == "close":
            f.close()
        else:
            for _ in range(4):  # past the cap: the failed batch is reaped at a write
                f.write(os.urandom(HOLD_MIN))
    assert info.value.errno == errno.ENOSPC
    if where == "close":
        assert f.closed
    else:
        f.close()  # the failure was raised once; what followed is written


@pytest.mark.timeout(60)
def test_a_short_write_in_flight_is_completed(path: pathlib.Path, stack: Stack) -> None:
    """A write the kernel did only part of: the rest is written, never silently dropped."""

    def short(data: list[bytearray], results: list[int]) -> list[int]:
        return [r // 2 if i == 0 else r for i, r in enumerate(results)]

    chunks = _chunks(2)
    with uringstack.open(path, "wb", stack=stack, buffering=2 * HOLD_MIN) as f:
        gate = Gate(f)
        gate.outcome = short
        f.write(chunks[0])
        f.write(chunks[1])
        gate.open.set()
        # (the gated batch wrote everything; the half it reports is written again: same bytes)
        real = f.raw.handle._complete_short
        retried: list[int] = []

        def spy(write: bool, offset: int, buf: Any, done: int, exact: bool) -> int:
            retried.append(done)
            return int(real(write, offset, buf, done, exact))

        f.raw.handle._complete_short = spy
        f.flush()
        assert retried == [HOLD_MIN // 2]
    assert path.read_bytes() == b"".join(chunks)


@pytest.mark.timeout(60)
def test_the_bytes_in_flight_are_capped(path: pathlib.Path, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``WRITES_IN_FLIGHT_MAX`` a write waits for the oldest started batch."""
    monkeypatch.setattr(fileio, "WRITES_IN_FLIGHT_MAX", 4 * HOLD_MIN)
    chunks = _chunks(12)
    with uringstack.open(path, "wb", stack=stack, buffering=2 * HOLD_MIN) as f:
        gate = Gate(f)
        for c in chunks[:4]:
            f.write(c)  # two batches, 4 chunks: at the cap, not past it
        assert len(gate.started) == 2

        def more() -> None:
            for c in chunks[4:]:
                f.write(c)

        _blocked(more, gate)
    assert path.read_bytes() == b"".join(chunks)


def test_buffered_writes_to_one_file_run_in_order_on_this_kernel(path: pathlib.Path, stack: Stack) -> None:
    """Many batches in flight at once, through the real ring or pool: every byte lands where written."""
    chunks = [bytes([i]) * HOLD_MIN for i in range(256)]
    with uringstack.open(path, "wb", stack=stack, buffering=4 * HOLD_MIN) as f:
        for c in chunks:
            f.write(c)
    assert path.read_bytes() == b"".join(chunks)
