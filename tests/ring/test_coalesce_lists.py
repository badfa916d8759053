"""``*_many_async`` requests of many tasks on one handle: one flush, built by whole-list steps.

A flush whose requests are all read_many/write_many lists of plain buffers from
one handle (the ``asyncio batch`` bench row: tasks awaiting ``read_many_async``
of their leases) builds its C columns from the requests' lists at once
(``Coalescer._submit_lists``).  These tests pin down what that must keep: each
op lands in its own buffer at its own offset, every request gets its own
results (lists of different lengths, buffers of different sizes, a short read
at end of file), writes reach the disk, and a column set reused across arena
flushes and list flushes never keeps the other kind's addresses or lengths.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import open_plain_uring
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle

BLOCK = 4096
BLOCKS = 64
TAIL = 1808  # the file ends inside a block: a short read at EOF


def _pattern(size: int) -> bytes:
    return bytes((i * 13 + i // 4096) & 0xFF for i in range(size))


@pytest.fixture
def data(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "data"
    path.write_bytes(_pattern(BLOCKS * BLOCK + TAIL))
    path.read_bytes()  # hot in the page cache
    return path


@pytest.fixture
def plain_stack() -> Iterator[Stack]:
    # fixedbuf off: lease_buffers hands out plain pinned leases (the bench rows' config)
    with open_stack(overrides={"core.cores": [0], "fixedbuf.mode": "off"}) as s:
        yield s


def _handle(stack: Stack, path: pathlib.Path, writable: bool = False) -> FileHandle:
    h: FileHandle = open_plain_uring(stack, path, writable)
    return h


def _run(coro: Any, timeout: float = 10.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.mark.timeout(60)
def test_lists_of_many_tasks_each_land_in_their_own_buffers_with_their_own_results(
    plain_stack: Stack, data: pathlib.Path
) -> None:
    expect = data.read_bytes()
    with _handle(plain_stack, data) as h:
        ring = h.ring
        assert ring is not None
        leases = h.lease_buffers(12, size=BLOCK)
        # Requests of 1..4 ops; the last mixes buffer sizes.
        groups = [leases[0:1], leases[1:3], leases[3:6], leases[6:10]]
        offsets = [[(7 * t + 5 * i) % 60 * BLOCK for i in range(len(g))] for t, g in enumerate(groups)]
        odd = [bytearray(512), bytearray(BLOCK), bytearray(100)]
        odd_offs = [3 * BLOCK + 17, 10 * BLOCK + 5, 9]
        tail = [bytearray(BLOCK), bytearray(BLOCK)]

        async def main() -> tuple[list[Any], int, int]:
            await h.read(BLOCK, 0)  # the eventfd bridge is set up by the first await
            before = ring.counters()
            got = await asyncio.gather(
                *(h.read_many_async(o, g) for o, g in zip(offsets, groups, strict=True)),
                h.read_many_async(odd_offs, odd),
            )
            after = ring.counters()
            # A list reading past the end of the file beside a full one: the short op's
            # result is its own (the rest of its list, and the other list, unaffected).
            short = await asyncio.gather(
                h.read_many_async([(BLOCKS - 1) * BLOCK, BLOCKS * BLOCK], tail), h.read_many_async([0], leases[10:11])
            )
            got.append(short)
            return got, after["enters"] - before["enters"], after["submitted"] - before["submitted"]

        try:
            got, enters, submitted = _run(main())
            assert enters == 1 and submitted == 10 + 3, (enters, submitted)
            assert got == [[BLOCK] * len(g) for g in groups] + [[512, BLOCK, 100], [[BLOCK, TAIL], [BLOCK]]]
            for o, g in zip(offsets, groups, strict=True):
                assert [bytes(b) for b in g] == [expect[off : off + BLOCK] for off in o]
            assert bytes(odd[0]) == expect[odd_offs[0] : odd_offs[0] + 512]
            assert bytes(odd[1]) == expect[10 * BLOCK + 5 : 11 * BLOCK + 5]
            assert bytes(tail[0]) == expect[(BLOCKS - 1) * BLOCK : BLOCKS * BLOCK]
            assert bytes(tail[1][:TAIL]) == expect[BLOCKS * BLOCK :]
            assert bytes(leases[10]) == expect[:BLOCK]
            assert bytes(odd[2]) == expect[9:109]
        finally:
            h.release_buffers(leases)


@pytest.mark.timeout(60)
def test_lists_of_many_tasks_write_each_buffer_at_its_own_offset(plain_stack: Stack, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "w"
    path.write_bytes(bytes(32 * BLOCK))
    with _handle(plain_stack, path, writable=True) as h:
        leases = h.lease_buffers(16, size=BLOCK)
        for i, b in enumerate(leases):
            b[:] = bytes([0x40 + i]) * BLOCK
        groups = [leases[0:4], leases[4:6], leases[6:13], leases[13:16]]
        blocks = iter(range(31, 0, -2))  # every lease its own block
        offsets = [[next(blocks) * BLOCK for _ in grp] for grp in groups]

        async def main() -> list[Any]:
            return await asyncio.gather(*(h.write_many_async(o, g) for o, g in zip(offsets, groups, strict=True)))

        try:
            got = _run(main())
        finally:
            h.release_buffers(leases)
    assert got == [[BLOCK] * len(g) for g in groups]
    on_disk = path.read_bytes()
    k = 0
    for o, grp in zip(offsets, groups, strict=True):
        for off in o:
            assert on_disk[off : off + BLOCK] == bytes([0x40 + k]) * BLOCK, (k, off)
            k += 1
        assert len(grp) == len(o)


@pytest.mark.timeout(60)
def test_flushes_alternating_arena_reads_and_lists_reuse_columns_without_stale_addresses(
    plain_stack: Stack, data: pathlib.Path
) -> None:
    # Both kinds keep per-column constants in a pooled column set (the arena's
    # addresses as a progression, one length for all ops): a list flush between two
    # arena flushes over the same arena must not leave its pins' addresses in place.
    expect = data.read_bytes()
    with _handle(plain_stack, data) as h:
        leases = h.lease_buffers(8, size=BLOCK)

        async def main() -> None:
            for round_ in range(6):
                offs = [(round_ * 11 + 3 * i) % BLOCKS * BLOCK for i in range(8)]
                singles = await asyncio.gather(*(h.read(BLOCK, off) for off in offs))
                assert singles == [expect[off : off + BLOCK] for off in offs], round_
                lists = await asyncio.gather(
                    h.read_many_async(offs[:4][::-1], leases[:4]), h.read_many_async(offs[4:][::-1], leases[4:])
                )
                assert lists == [[BLOCK] * 4] * 2
                assert [bytes(b) for b in leases] == [
                    expect[off : off + BLOCK] for off in offs[:4][::-1] + offs[4:][::-1]
                ], round_

        try:
            _run(main())
        finally:
            h.release_buffers(leases)


@pytest.mark.timeout(60)
def test_lists_of_registered_leases_from_many_tasks_read_and_write_each_lease_as_a_fixed_op(
    tmp_path: pathlib.Path,
) -> None:
    from tests.requires import skip_without
    from uringstack.ring.buffers import RegisteredBuffer
    from uringstack.ring.flags import Op

    path = tmp_path / "reg"
    want = _pattern(BLOCKS * BLOCK)
    path.write_bytes(want)
    with open_stack(overrides={"core.cores": [0], "fixedbuf.mode": "on"}) as stack, _handle(stack, path, True) as h:
        ring = h.ring
        assert ring is not None
        whole = h.lease_buffers(10, size=BLOCK)
        if not all(isinstance(b, RegisteredBuffer) for b in whole):
            h.release_buffers(whole)
            skip_without("no registered-buffer pool serves this handle (fixedbuf could not register: memlock?)")
        # Requests of 1..4 leases; one request takes 512-byte parts of its lease (sub-leases).
        parts = [whole[9].sub(0, 512), whole[9].sub(1024, 512)]
        groups = [whole[0:1], whole[1:3], whole[3:6], whole[6:9], parts]
        offsets = [[(5 * t + 3 * i) % 40 * BLOCK + 8 * t for i in range(len(g))] for t, g in enumerate(groups)]

        async def main() -> tuple[list[Any], int]:
            await h.read(BLOCK, 0)  # the eventfd bridge is set up by the first await
            before = ring.counters()["enters"]
            got = await asyncio.gather(*(h.read_many_async(o, g) for o, g in zip(offsets, groups, strict=True)))
            enters = ring.counters()["enters"] - before
            for k, b in enumerate(whole[:9]):
                b[0:BLOCK] = bytes([0x80 + k]) * BLOCK
            targets = [[(40 + 9 - 3 * t - i) * BLOCK for i in range(len(g))] for t, g in enumerate(groups[:4])]
            wrote = await asyncio.gather(*(h.write_many_async(o, g) for o, g in zip(targets, groups[:4], strict=True)))
            return [got, wrote, targets], enters

        try:
            (got, wrote, targets), enters = _run(main())
            assert enters == 1, enters
            assert got == [[BLOCK] * len(g) for g in groups[:4]] + [[512, 512]]
            assert wrote == [[BLOCK] * len(g) for g in groups[:4]]
            assert not any((b.parent or b).in_flight() for b in whole)
            on_disk = path.read_bytes()
            k = 0
            for o, g in zip(targets, groups[:4], strict=True):
                for off in o:
                    assert on_disk[off : off + BLOCK] == bytes([0x80 + k]) * BLOCK, (k, off)
                    k += 1
                assert len(o) == len(g)
            assert bytes(parts[0]) == want[offsets[4][0] : offsets[4][0] + 512]
            assert bytes(parts[1]) == want[offsets[4][1] : offsets[4][1] + 512]
            # The last flush (the writes) went out as WRITE_FIXED from each lease's own slot.
            co = h._coalescer_cache
            assert co is not None
            batch = (whole[0].parent or whole[0]).batch  # (leases of a pool of larger buffers are parts)
            assert batch is not None, "a registered lease submitted by the coalescer was not marked in flight"
            cols = next(c for pool in co._pool.values() for c in pool if c.batch is batch)
            assert cols.get("opcodes")[:9] == [int(Op.WRITE_FIXED)] * 9
            assert cols.get("buf_index")[:9] == [b.index for g in groups[:4] for b in g]
        finally:
            h.release_buffers(whole)


@pytest.mark.timeout(60)
def test_one_flush_of_lists_of_registered_leases_and_of_plain_buffers_reads_each_into_its_own_memory(
    data: pathlib.Path,
) -> None:
    # Two kinds of lists in one flush (registered leases: READ_FIXED at their own
    # addresses; plain buffers: READ at their pins'): each request keeps its kind.
    from tests.requires import skip_without
    from uringstack.ring.buffers import RegisteredBuffer

    expect = data.read_bytes()
    with open_stack(overrides={"core.cores": [0], "fixedbuf.mode": "on"}) as stack, _handle(stack, data) as h:
        ring = h.ring
        assert ring is not None
        leases = h.lease_buffers(4, size=BLOCK)
        if not all(isinstance(b, RegisteredBuffer) for b in leases):
            h.release_buffers(leases)
            skip_without("no registered-buffer pool serves this handle (fixedbuf could not register: memlock?)")
        plain = [bytearray(BLOCK) for _ in range(4)]

        async def main() -> tuple[list[Any], int]:
            await h.read(BLOCK, 0)
            before = ring.counters()["enters"]
            got = await asyncio.gather(
                h.read_many_async([BLOCK, 2 * BLOCK], leases[:2]),
                h.read_many_async([3 * BLOCK, 4 * BLOCK], plain[:2]),
                h.read_many_async([5 * BLOCK, 6 * BLOCK], leases[2:]),
                h.read_many_async([7 * BLOCK, 8 * BLOCK], plain[2:]),
            )
            return got, ring.counters()["enters"] - before

        try:
            got, enters = _run(main())
            assert enters == 1, enters
            assert got == [[BLOCK, BLOCK]] * 4
            blocks = [expect[k * BLOCK : (k + 1) * BLOCK] for k in range(9)]
            assert [bytes(b) for b in leases] == [blocks[1], blocks[2], blocks[5], blocks[6]]
            assert plain == [blocks[3], blocks[4], blocks[7], blocks[8]]
        finally:
            h.release_buffers(leases)
