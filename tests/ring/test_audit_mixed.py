"""Random interleavings of single ops, batches larger than the ring and ops the kernel holds, on one small ring.

The ring's bookkeeping (slots, the done list, the in-flight count) is shared
by ``us_rw_one`` (which takes its own slot back out of the done list),
``us_batch_start`` (which may submit a batch in several ring-sized pieces and
drain in between) and the reaps.  Whatever the order, every op gets its own
result, every batch finishes exactly once, and at the end nothing is in flight,
every slot is free and no completion was stray.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uringstack.ring import MAX_SLOTS, Batch, Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi

BLOCK = 512
BLOCKS = 64

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("nops"), st.integers(1, 40), st.booleans()),
        st.tuples(st.just("reads"), st.integers(1, 40), st.booleans()),
        st.tuples(st.just("one"), st.integers(0, BLOCKS - 1), st.booleans()),
        st.tuples(st.just("pipe_read"), st.just(0), st.booleans()),
        st.tuples(st.just("pipe_write"), st.just(0), st.booleans()),
        st.tuples(st.just("reap"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("wait"), st.integers(0, 1000), st.booleans()),
    ),
    max_size=40,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, bytes]]:
    path: Path = tmp_path_factory.mktemp("mixed") / "f"
    content = os.urandom(BLOCK * BLOCKS)
    path.write_bytes(content)
    fd = os.open(path, os.O_RDWR)
    yield fd, content
    os.close(fd)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_any_interleaving_keeps_the_bookkeeping_exact(
    data: tuple[int, bytes], steps: list[tuple[str, int, bool]]
) -> None:
    fd, content = data
    ring = Ring(entries=4)
    ring.wait_tick = 0.1
    ring.wait_timeout = 5.0
    r, w = os.pipe()
    # (batch, expected results, buffer and its expected bytes or None)
    batches: list[tuple[Batch, list[int] | None, bytearray | None, bytes | None]] = []
    pipe_reads = 0
    try:
        for kind, k, flag in steps:
            if kind == "nops":
                batches.append((ring.submit(Op.NOP, -1, n=k, wait=flag), [0] * k, None, None))
            elif kind == "reads":
                buf = bytearray(BLOCK * k)
                pin = ffi.from_buffer(buf)
                base = address_of(pin)
                offs = [BLOCK * ((i * 7) % BLOCKS) for i in range(k)]
                b = ring.submit(Op.READ, fd, addrs=[base + BLOCK * i for i in range(k)], lens=BLOCK,
                                offsets=offs, keep=[pin, buf], wait=flag)  # fmt: skip
                want = b"".join(content[o : o + BLOCK] for o in offs)
                batches.append((b, [BLOCK] * k, buf, want))
            elif kind == "one":
                buf = bytearray(BLOCK)
                pin = ffi.from_buffer(buf)
                assert ring.rw_one(Op.READ, fd, pin, BLOCK, BLOCK * k, 0, 0, pin) == BLOCK
                assert buf == content[BLOCK * k : BLOCK * (k + 1)]
            elif kind == "pipe_read" and pipe_reads < ring.cq_cap - 1:
                # (the reads nobody wrote for stay below Ring.cq_cap: at the cap the next
                # submission waits for room, which only the writes further on could make)
                buf = bytearray(8)
                pin = ffi.from_buffer(buf)
                batches.append((ring.submit(Op.READ, r, addrs=address_of(pin), lens=8, offsets=0, keep=[pin, buf]),
                                [8], None, None))  # fmt: skip
                pipe_reads += 1
            elif kind == "pipe_write" and pipe_reads:
                os.write(w, b"p" * 8)
                pipe_reads -= 1
            elif kind == "reap":
                done = (ring.reap, ring.try_reap, ring.poll)[k]()
                assert all(b.finished for b in done)
            elif kind == "wait":
                # any batch but a pipe read nobody wrote for (that one would wait until wait_timeout)
                ready = [b for b, want, *_ in batches if want != [8] or b.finished]
                if ready:
                    b = ready[k % len(ready)]
                    ring.wait(b)
                    assert b.finished
        os.write(w, b"p" * 8 * pipe_reads)
        for b, want, buf, want_bytes in batches:
            assert ring.wait(b) == want
            assert b.finished
            if buf is not None:
                assert buf == want_bytes
        ring.reap()
        assert ring.inflight == 0 and ring._inflight == {}
        assert sorted(ring._free_slots) == list(range(MAX_SLOTS))
        assert ring.counters()["stray"] == 0
    finally:
        ring.close()
        os.close(r)
        os.close(w)
