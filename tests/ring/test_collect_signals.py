"""A raising signal anywhere in the ring's completion collection loses no completed batch.

The C side lists the slots whose batches completed (``us_reap_ready``,
``us_wait_slot_for``, ... drain the CQ into that list); ``Ring._collect_done``
finishes each listed batch (marks it finished, drops its buffers, frees its
slot) and runs its done-callbacks.  A signal handler that raises (Ctrl-C)
can run at any point CPython runs handlers at (tests/signal_points.py): if
the list were consumed before every slot in it was handled, a batch cut off
by the signal would stay unfinished forever (its waiters run to their
timeout, a handle's ``close()`` to its own and then keeps the descriptor),
and a callback cut off (a future's resolution, a lease's release) would never
run.  If the slots were freed before the list was consumed, a new batch could
take one and a collect re-reading the list would finish the new batch,
whose I/O is still in the kernel.

Each test sends a real signal at each point of the collection and of the
reap or wait path that calls it (``reap``, ``try_reap``, ``poll``, ``wait``,
``wait_any``, ``rw_one`` collecting the others' completions) while batches
of reads of a hot file and a NOP complete inside their submission, then
submits a read the kernel holds (an empty pipe), which takes a free slot, and
collects once more: every earlier batch is finished, each callback ran
exactly once, the held read is not finished (no slot was used twice), and,
once fed, it completes and ``close()`` returns at once.

A batch with two or three done-callbacks is swept the same way over the ring
module's code and the callbacks' own: a signal at the entry of one callback
counts as that one having run (a Python function cut short at its first
point), and every other callback still runs exactly once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from types import CodeType
from typing import Any, Protocol

import pytest

from tests.signal_points import Interrupt, code_of, signal_at, sweep
from uringstack.ring import MAX_SLOTS, Batch, Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi

# The collection and every path that calls it ("_take_done": the code before the fix, for
# checking that the tests fail on it).
_NAMES = (
    "_collect_done", "_take_done", "_adopt_unowned_locked", "_reap_locked", "reap", "try_reap", "poll",
    "wait", "_wait_slot_locked", "wait_any", "rw_one",
)  # fmt: skip
COLLECT = code_of(Batch.release, *(f for name in _NAMES if (f := getattr(Ring, name, None)) is not None))


class Completing:
    """Three batches completed in the kernel (their CQEs posted inside the submission, not
    yet reaped), with done-callbacks that count their runs: a C callable, a Python
    function, and a chain of two (``add_done_callback`` twice)."""

    def __init__(self, ring: Ring, fd: int) -> None:
        self.ran: list[tuple[str, Batch]] = []
        self.bufs = [bytearray(8) for _ in range(3)]
        pins = [ffi.from_buffer(b, require_writable=True) for b in self.bufs]
        first = ring.submit(
            Op.READ, fd, n=2, addrs=[address_of(p) for p in pins[:2]], lens=8, offsets=[0, 8], keep=[pins, self.bufs]
        )
        second = ring.submit(Op.NOP, -1)
        third = ring.submit(Op.READ, fd, addrs=address_of(pins[2]), lens=8, offsets=16, keep=[pins, self.bufs])
        self.batches = [first, second, third]
        self.c_ran: list[Batch] = []
        first.on_done = self.c_ran.append  # a C callable: the point right after its call is one too
        second.add_done_callback(lambda b: self.ran.append(("py", b)))
        third.add_done_callback(lambda b: self.ran.append(("chain-1", b)))
        third.add_done_callback(lambda b: self.ran.append(("chain-2", b)))
        self.expected = [("py", second), ("chain-1", third), ("chain-2", third)]

    def check(self, where: str | None) -> None:
        for batch in self.batches:
            assert batch.finished, f"a signal {where} left a completed batch unfinished"
            assert batch.on_done is None
        runs = sum(1 for b in self.c_ran if b is self.batches[0])
        assert runs == 1 and len(self.c_ran) == 1, f"a signal {where}: the C callback ran {runs} time(s)"
        for name, batch in self.expected:
            runs = sum(1 for n, b in self.ran if n == name and b is batch)
            assert runs == 1, f"a signal {where}: callback {name} ran {runs} time(s)"
        assert self.batches[0].results == [8, 8] and self.batches[2].results == [8]
        assert self.bufs[0] == bytes(range(8)) and self.bufs[2] == bytes(range(16, 24))


ENTRIES: dict[str, Callable[[Ring, Completing, int], object]] = {
    "reap": lambda ring, c, fd: ring.reap(),
    "try_reap": lambda ring, c, fd: ring.try_reap(),
    "poll": lambda ring, c, fd: ring.poll(),
    "wait": lambda ring, c, fd: ring.wait(c.batches[1]),
    "wait_any": lambda ring, c, fd: ring.wait_any(),
    "rw_one": lambda ring, c, fd: ring.rw_one(Op.READ, fd, ONE_PIN, 8, 32, 0, 0, ONE),
}
ONE = bytearray(8)
ONE_PIN = ffi.from_buffer(ONE, require_writable=True)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_a_signal_anywhere_in_collection_loses_no_batch(hot_fd: int, entry: str) -> None:
    call = ENTRIES[entry]
    assert sweep(lambda at: _signalled_collection(COLLECT, at, lambda ring: Completing(ring, hot_fd), call, hot_fd)) > 5


class _Checked(Protocol):
    def check(self, where: str | None) -> None: ...


def _signalled_collection(
    chosen: Callable[[CodeType], bool],
    at: int,
    make: Callable[[Ring], _Checked],
    call: Callable[[Ring, Any, int], object],
    fd: int,
) -> str | None:
    """On a new ring: *make* completed batches, *call* a collection with a signal at point *at*
    of the code *chosen* accepts, collect once more and ``check()``; then every slot is free
    and ``close()`` returns at once.  Where the signal was sent (None: fewer points)."""
    ring = Ring(entries=16)
    ring.wait_tick = 0.05
    ring.wait_timeout = 1.0  # a lost completion fails the wait in a second, never hangs
    r, w = os.pipe()
    try:
        done = make(ring)
        with signal_at(chosen, at) as sent, contextlib.suppress(Interrupt):
            call(ring, done, fd)
        # (the only thread using the ring: a lock the call left taken would hang the rest)
        assert not ring._lock.locked(), f"a signal {sent.where} left the ring locked"
        # A read the kernel holds takes a free slot: none of a list not yet consumed.
        held_buf = bytearray(8)
        held_pin = ffi.from_buffer(held_buf, require_writable=True)
        held = ring.submit(Op.READ, r, addrs=address_of(held_pin), lens=8, offsets=0, keep=[held_pin, held_buf])
        ring.reap()  # the next collection
        done.check(sent.where)
        assert not held.finished, f"a signal {sent.where}: a slot was used twice (the held read finished)"
        os.write(w, b"12345678")
        assert ring.wait(held) == [8] and held_buf == b"12345678"
        ring.reap()
        assert ring.inflight == 0 and ring._inflight == {}, sent.where
        assert sorted(ring._free_slots) == list(range(MAX_SLOTS)), f"a signal {sent.where} lost a slot"
        started = time.monotonic()
        ring.close()
        assert time.monotonic() - started < 0.5, sent.where
        return sent.where
    finally:
        if ring._lock.locked():  # (reported above; unlocked here so that closing it cannot hang)
            ring._lock.release()
        ring.close()
        os.close(r)
        os.close(w)


def _recorder(ran: list[tuple[int, Batch]], i: int) -> Callable[[Batch], None]:
    def callback(batch: Batch) -> None:  # (one code object for all: signal_at chooses it)
        ran.append((i, batch))

    return callback


RECORDER_CODE = _recorder([], 0).__code__


class Chain:
    """A NOP batch completed in the kernel with *n* Python done-callbacks (``add_done_callback``
    *n* times), alone (a collection of one batch) or among :class:`Completing`'s three."""

    def __init__(self, ring: Ring, fd: int, n: int, among_others: bool) -> None:
        self.others = Completing(ring, fd) if among_others else None
        self.batch = ring.submit(Op.NOP, -1)
        self.ran: list[tuple[int, Batch]] = []
        self.callbacks = [_recorder(self.ran, i) for i in range(n)]
        for callback in self.callbacks:
            self.batch.add_done_callback(callback)

    def check(self, where: str | None) -> None:
        """Each callback ran exactly once, but one whose entry the signal hit (it counts as run)."""
        if self.others is not None:
            self.others.check(where)
        assert self.batch.finished, f"a signal {where} left the chained batch unfinished"
        assert all(b is self.batch for _, b in self.ran)
        runs = [sum(1 for i, _ in self.ran if i == k) for k in range(len(self.callbacks))]
        hit = where is not None and where.startswith(f"{RECORDER_CODE.co_qualname} at its entry")
        assert max(runs) <= 1, f"a signal {where}: a callback ran twice ({runs})"
        assert runs.count(0) == hit, f"a signal {where}: callbacks that never ran ({runs} runs each)"
        assert not any(map(self.batch.has_done_callback, self.callbacks)), where


CHAIN_ENTRIES: dict[str, Callable[[Ring, Chain, int], object]] = {
    "reap": lambda ring, c, fd: ring.reap(),
    "wait": lambda ring, c, fd: ring.wait(c.batch),
}


@pytest.mark.parametrize("entry", sorted(CHAIN_ENTRIES))
@pytest.mark.parametrize("among_others", [False, True], ids=["alone", "among-others"])
@pytest.mark.parametrize("n", [2, 3])
def test_a_signal_at_the_entry_of_a_done_callback_skips_only_that_one(
    hot_fd: int, entry: str, among_others: bool, n: int
) -> None:
    """A signal at any point of the collection and of the done-callbacks of a batch with two or
    three: every callback runs exactly once, now or at the next collection, except one whose
    entry the signal hit; the batch is finished and its slot freed (the ring module's whole
    code is swept: its done-callbacks were once composed into one there)."""
    call = CHAIN_ENTRIES[entry]
    chosen = code_of(files=("ring/__init__.py",))

    def chain_code(code: CodeType) -> bool:
        return code is RECORDER_CODE or chosen(code)

    def once(at: int) -> str | None:
        return _signalled_collection(chain_code, at, lambda ring: Chain(ring, hot_fd, n, among_others), call, hot_fd)

    assert sweep(once) > n


def test_a_completion_no_batch_owns_frees_its_slot() -> None:
    """The op a third signal left no batch's (docs/api.md, "Ctrl-C during I/O"): its completion
    is collected without failing every later collection, and its slot is freed."""
    with Ring(entries=8) as ring:
        owned = ring.submit(Op.NOP, -1)
        unowned = ring.submit(Op.NOP, -1)
        del ring._inflight[unowned.slot]  # as rw_one's op when nothing made it a batch's
        for _ in range(2):
            assert ring.reap() in ([owned], [])
        assert owned.finished and ring.inflight == 0 and ring._inflight == {}
        assert sorted(ring._free_slots) == list(range(MAX_SLOTS))
