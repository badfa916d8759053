"""Stateful property test: random interleavings of I/O, close and cancel against a model of each file.

A hypothesis ``RuleBasedStateMachine`` opens, reads, writes (sync, from other
threads, from asyncio, started and left in flight), writes durably, cancels
asyncio writes, and closes handles, including a close racing writes from
other threads, while raw descriptors of an unrelated "victim" file keep
grabbing the numbers that closes free.  After every step each file is read
back with plain ``os.pread`` and compared with its model, so a byte landing
outside the file it was meant for (or missing from its own) fails at once;
``reopen_all`` closes everything and checks every acknowledged (durable)
write is there through fresh descriptors.  Runs on io_uring and on the
fallback.  ``URINGSTACK_PROPERTY_EXAMPLES`` raises the example count (default
a few seconds per backend).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from uringstack.errors import RingClosedError
from uringstack.ring.pending import Pending
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle

FILES = 3
SIZE = 32 * 1024
MAX_LEN = 8192
VICTIM = bytes(range(256)) * (SIZE // 256)
EXAMPLES = int(os.environ.get("URINGSTACK_PROPERTY_EXAMPLES", "6"))

BACKENDS = {
    "uring": {"core.backend": "auto", "fallback.mode": "auto"},
    "fallback": {"core.backend": "fallback"},
}

files = st.integers(0, FILES - 1)
lengths = st.integers(1, MAX_LEN)
seeds = st.integers(0, 2**32 - 1)
fracs = st.floats(0, 1)
how = st.sampled_from(["sync", "thread", "async"])


def _data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _offset(frac: float, n: int) -> int:
    return int(frac * (SIZE - n))


class Flying:
    """A write whose outcome is not known yet: started and not waited, or an asyncio write that was cancelled."""

    def __init__(self, off: int, data: bytes, pending: Pending | None, chunk: int = 0) -> None:
        self.off = off
        self.data = data
        self.pending = pending  # None: a cancelled await; it may or may not have been submitted
        self.results = [chunk] * (len(data) // chunk) if chunk else [len(data)]

    def overlaps(self, off: int, n: int) -> bool:
        return self.off < off + n and off < self.off + len(self.data)


class IOMachine(RuleBasedStateMachine):
    stack: ClassVar[Stack]

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="uringstack-prop-")
        self.paths = [os.path.join(self.dir, f"f{i}") for i in range(FILES)]
        for p in self.paths:
            with open(p, "wb") as f:
                f.write(bytes(SIZE))
        self.model = [bytearray(SIZE) for _ in range(FILES)]
        # bytes whose value is one of a few candidates (a cancelled write that may have landed)
        self.unsure: list[dict[int, set[int]]] = [{} for _ in range(FILES)]
        self.flying: list[list[Flying]] = [[] for _ in range(FILES)]
        self.handles: list[FileHandle | None] = [None] * FILES
        victim = os.path.join(self.dir, "victim")
        with open(victim, "wb") as f:
            f.write(VICTIM)
        self.victim_path = victim
        self.victim_fds: list[int] = []
        self.pool = concurrent.futures.ThreadPoolExecutor(6)  # >= the parties of threads_race's barrier

    # --- helpers -----------------------------------------------------------------------
    def _handle(self, i: int) -> FileHandle:
        h = self.handles[i]
        if h is None:
            h = self.handles[i] = self.stack.open(self.paths[i])
        return h

    def _apply(self, i: int, off: int, data: bytes) -> None:
        self.model[i][off : off + len(data)] = data
        for k in range(off, off + len(data)):
            self.unsure[i].pop(k, None)

    def _settle_closed(self, i: int) -> None:
        """Handle *i* was closed: close() waited for everything it started, so outcomes are final."""
        for fl in self.flying[i]:
            if fl.pending is not None:
                assert fl.pending.done(), "close() returned with a started write still in flight"
                assert fl.pending.wait() == fl.results
                self._apply(i, fl.off, fl.data)
            else:
                for k, b in enumerate(fl.data, fl.off):
                    self.unsure[i].setdefault(k, {self.model[i][k]}).add(b)
        self.flying[i] = []

    def _close(self, i: int) -> None:
        h = self.handles[i]
        if h is not None:
            h.close()
            self.handles[i] = None
        self._settle_closed(i)

    def _make_room(self, i: int, off: int, n: int) -> None:
        """Writes racing an unsettled one have no defined order: settle overlapping ones first."""
        if any(fl.overlaps(off, n) for fl in self.flying[i]):
            self._close(i)

    def _check_bytes(self, i: int, off: int, got: bytes, resolve: bool) -> None:
        want = bytearray(self.model[i][off : off + len(got)])
        allowed: dict[int, set[int]] = {}
        for fl in self.flying[i]:
            for k, b in enumerate(fl.data, fl.off):
                if off <= k < off + len(got):
                    allowed.setdefault(k, {self.model[i][k]}).add(b)
        for k, cands in self.unsure[i].items():
            if off <= k < off + len(got):
                allowed.setdefault(k, set()).update(cands)
        for k, cands in allowed.items():
            if got[k - off] in cands:
                want[k - off] = got[k - off]
        if want != got:
            bad = next(j for j in range(len(got)) if want[j] != got[j])
            raise AssertionError(
                f"{self.paths[i]}: byte {off + bad} is {got[bad]:#04x}, expected {want[bad]:#04x} "
                f"(a write landed where it was not meant to, or an acknowledged one is missing)"
            )
        if resolve:  # settled bytes read back fix the model
            for k in list(self.unsure[i]):
                if off <= k < off + len(got) and not any(fl.overlaps(k, 1) for fl in self.flying[i]):
                    self.model[i][k] = got[k - off]
                    del self.unsure[i][k]

    # --- rules ---------------------------------------------------------------------------
    @rule(i=files)
    def open_handle(self, i: int) -> None:
        self._handle(i)

    @rule(i=files)
    def close_handle(self, i: int) -> None:
        self._close(i)

    @rule(i=files, n=lengths, frac=fracs, seed=seeds, mode=how)
    def write(self, i: int, n: int, frac: float, seed: int, mode: str) -> None:
        off, data = _offset(frac, n), _data(seed, n)
        self._make_room(i, off, n)
        h = self._handle(i)
        if mode == "sync":
            assert h.write_from(data, off) == n
        elif mode == "thread":
            assert self.pool.submit(h.write_from, data, off).result(30) == n
        else:
            assert asyncio.run(h.write(data, off)) == n
        self._apply(i, off, data)

    @rule(i=files, n=lengths, frac=fracs, seed=seeds)
    def write_durable(self, i: int, n: int, frac: float, seed: int) -> None:
        off, data = _offset(frac, n), _data(seed, n)
        self._make_room(i, off, n)
        assert self._handle(i).write_durable(data, off) == n
        self._apply(i, off, data)

    @rule(i=files, ops=st.integers(1, 256), chunk=st.integers(1, 128), frac=fracs, seed=seeds)
    def start_write(self, i: int, ops: int, chunk: int, frac: float, seed: int) -> None:
        """A batch of many small writes left in flight (a queue deep enough to outlive a close)."""
        n = ops * chunk
        off, data = _offset(frac, n), _data(seed, n)
        self._make_room(i, off, n)
        offsets = [off + j * chunk for j in range(ops)]
        p = self._handle(i).start_write_many(offsets, [data[o - off : o - off + chunk] for o in offsets])
        self.flying[i].append(Flying(off, data, p, chunk))

    @rule(i=files, n=lengths, frac=fracs, seed=seeds, ticks=st.integers(0, 3))
    def cancel_async_write(self, i: int, n: int, frac: float, seed: int, ticks: int) -> None:
        off, data = _offset(frac, n), _data(seed, n)
        self._make_room(i, off, n)
        h = self._handle(i)

        async def main() -> bool:
            task = asyncio.create_task(h.write(data, off))
            for _ in range(ticks):
                await asyncio.sleep(0)
            task.cancel()
            try:
                assert await task == n
                return True
            except asyncio.CancelledError:
                return False

        if asyncio.run(main()):
            self._apply(i, off, data)
        else:
            self.flying[i].append(Flying(off, data, None))

    @rule(i=files, n=lengths, frac=fracs, mode=how)
    def read(self, i: int, n: int, frac: float, mode: str) -> None:
        off = _offset(frac, n)
        h = self._handle(i)
        buf = bytearray(n)
        if mode == "sync":
            got = h.read_into(buf, off)
        elif mode == "thread":
            got = self.pool.submit(h.read_into, buf, off).result(30)
        else:
            data = asyncio.run(h.read(n, off))
            got, buf = len(data), bytearray(data)
        assert got == n
        self._check_bytes(i, off, bytes(buf), resolve=False)

    @rule(
        writes=st.lists(st.tuples(files, lengths, fracs, seeds), min_size=2, max_size=4),
        close_during=st.none() | files,
    )
    def threads_race(self, writes: list[tuple[int, int, float, int]], close_during: int | None) -> None:
        """Writes from several threads at once, optionally while another thread closes one of the handles."""
        ops = []
        for i, n, frac, seed in writes:
            off = _offset(frac, n)
            if any(j == i and o < off + n and off < o + len(d) for j, o, d in ops):
                continue  # concurrent overlapping writes have no defined result
            self._make_room(i, off, n)
            ops.append((i, off, _data(seed, n)))
        hs = {i: self._handle(i) for i, _, _ in ops}
        if close_during is not None:
            hs.setdefault(close_during, self._handle(close_during))
        go = threading.Barrier(len(ops) + (close_during is not None))

        def one(i: int, off: int, data: bytes) -> bool:
            go.wait(10)
            try:
                assert hs[i].write_from(data, off) == len(data)
                return True
            except RingClosedError:
                assert i == close_during
                return False

        def closer() -> None:
            go.wait(10)
            assert close_during is not None
            hs[close_during].close()

        futs = [self.pool.submit(one, *op) for op in ops]
        if close_during is not None:
            c = self.pool.submit(closer)
            c.result(30)
            self.handles[close_during] = None
        for (i, off, data), f in zip(ops, futs, strict=True):
            if f.result(30):  # acknowledged: it must be there; refused: it must not
                self._apply(i, off, data)
        if close_during is not None:
            self._settle_closed(close_during)

    @precondition(lambda self: len(self.victim_fds) < 4)
    @rule()
    def grab_fd_number(self) -> None:
        """Take the lowest free descriptor number, the one a close has just released."""
        self.victim_fds.append(os.open(self.victim_path, os.O_RDWR))

    @precondition(lambda self: self.victim_fds)
    @rule()
    def release_fd_number(self) -> None:
        os.close(self.victim_fds.pop(0))

    @rule()
    def reopen_all(self) -> None:
        """Close everything, then every acknowledged write must be there through fresh descriptors."""
        for i in range(FILES):
            self._close(i)
        for i in range(FILES):
            h = self._handle(i)
            buf = bytearray(SIZE)
            assert h.read_into(buf, 0) == SIZE
            self._check_bytes(i, 0, bytes(buf), resolve=True)

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def every_byte_is_where_it_belongs(self) -> None:
        with open(self.victim_path, "rb") as f:
            assert f.read() == VICTIM, "a write landed in an unrelated file"
        for i, p in enumerate(self.paths):
            with open(p, "rb") as f:
                data = f.read()
            assert len(data) == SIZE, f"{p} changed size to {len(data)}"
            self._check_bytes(i, 0, data, resolve=True)

    def teardown(self) -> None:
        try:
            for i in range(FILES):
                self._close(i)
            self.every_byte_is_where_it_belongs()
        finally:
            for fd in self.victim_fds:
                os.close(fd)
            for h in self.handles:
                if h is not None:
                    h.close()
            self.pool.shutdown(wait=True)
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=sorted(BACKENDS))
def backend_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = open_stack(overrides=BACKENDS[request.param])
    yield s
    s.close()


@pytest.mark.timeout(600)
def test_random_interleavings_keep_every_byte_where_it_belongs(backend_stack: Stack) -> None:
    machine: Any = type("Machine", (IOMachine,), {"stack": backend_stack})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
