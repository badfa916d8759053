"""A single waited read or write on an IOPOLL ring is one call into C (``Ring.rw_one``).

``us_rw_one`` submits the op and, on an IOPOLL ring, polls for it in the same
call with the bounded pass loop every polled wait uses (``min_complete = 0``,
the deadline checked between passes: ``test_iopoll_wait_bound.py`` pins that
at the syscall level, for this path too).  Before, an IOPOLL single op made
one poll pass, and unless that pass found it (the emulated namespace never
completes that fast) it went back to Python as an unfinished op: a
:class:`Batch` and the ring's Python wait loop.  And the iopoll handle's
``read_into`` / ``write_from`` and a one-buffer prepared ``run`` did not use
``rw_one`` at all (columns, a Batch and a pending per op).  Runs inside
../shared/nvme-vm (scripts/test-nvme.sh) on /dev/nvme0n1.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from uringstack import open_stack
from uringstack.ring import Ring
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi
from uringstack.stack import Stack

from .conftest import BLK
from .test_stack_api import _pread

pytestmark = pytest.mark.nvme

BS = 4096


def _never(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("the op went back to Python unfinished (a Batch and the Python wait loop)")


@pytest.mark.timeout(120)
def test_rw_one_polls_for_its_op_in_the_call(polled_ring: Ring, blk_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    polled_ring.wait_tick, polled_ring.wait_timeout = 2.0, 10.0  # the call's own wait: far above a read's time
    monkeypatch.setattr(polled_ring, "_rw_one_unfinished", _never)
    rng = random.Random(14)
    units = os.lseek(blk_fd, 0, os.SEEK_END) // BS
    src, back = aligned_buffer(BS), aligned_buffer(BS)
    src_pin, back_pin = ffi.from_buffer(src), ffi.from_buffer(back)
    before = polled_ring.counters()
    offsets = [u * BS for u in rng.sample(range(units), 16)]
    for off in offsets:
        src[:] = rng.randbytes(BS)
        assert polled_ring.rw_one(Op.WRITE, blk_fd, src_pin, BS, off, 0, 0, src_pin) == BS
        assert polled_ring.rw_one(Op.READ, blk_fd, back_pin, BS, off, 0, 0, back_pin) == BS
        assert bytes(back) == bytes(src)
    after = polled_ring.counters()
    assert after["reaped"] - before["reaped"] == 2 * len(offsets)
    assert polled_ring.inflight == 0 and polled_ring._inflight == {}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with open_stack(overrides={"core.cores": [0], "iopoll.mode": "on"}) as s:
        yield s


@pytest.mark.timeout(120)
def test_single_ops_of_the_iopoll_handle_take_rw_one(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_into, write_from and a one-buffer prepared run: one rw_one call each, never a batch."""
    iopoll = stack.workers[0].rings["iopoll"]
    monkeypatch.setattr(iopoll, "submit_columns", _never)
    monkeypatch.setattr(iopoll, "_rw_one_unfinished", _never)
    rng = random.Random(15)
    with stack.open(BLK, direct=True, writable=True) as h:
        assert h.backend == "iopoll"
        units = h.size() // BS
        src, back = aligned_buffer(BS), aligned_buffer(BS)
        written: list[tuple[int, bytes]] = []
        before = iopoll.counters()["reaped"]
        for off in [u * BS for u in rng.sample(range(units), 8)]:
            src[:] = rng.randbytes(BS)
            assert h.write_from(src, off) == BS
            assert h.read_into(back, off) == BS
            assert bytes(back) == bytes(src)
            written.append((off, bytes(src)))
        with h.prepare_writes([src]) as w, h.prepare_reads([back]) as r:
            for off in [u * BS for u in rng.sample(range(units), 8)]:
                src[:] = rng.randbytes(BS)
                assert w.run([off]) == [BS]
                assert r.run([off]) == [BS]
                assert bytes(back) == bytes(src)
                written.append((off, bytes(src)))
        assert iopoll.counters()["reaped"] - before == 2 * len(written)  # every op polled on the IOPOLL ring
        assert iopoll.inflight == 0
    assert _pread(BLK, [o for o, _ in written], BS) == [d for _, d in written]
