"""The public I/O API, run against both backends (io_uring and the thread-pool fallback)."""

from __future__ import annotations

import array
import asyncio
import errno
import os
import pathlib

import pytest

from uringstack.errors import AlignmentError, RingClosedError, ShortIOError, UringIOError
from uringstack.ring.buffers import aligned_buffer
from uringstack.stack import Stack

BS = 4096


def expected_backend(stack: Stack) -> str:
    return "fallback" if stack.config.core.backend == "fallback" else "uring"


def test_backend_is_the_one_asked_for(stack: Stack, tmp_path: pathlib.Path) -> None:
    with stack.open(tmp_path / "f", create=True) as h:
        assert h.backend == expected_backend(stack)
        assert h.backend_reason  # the plan's reason travels with the handle
        assert ("thread pool" in h.backend_reason) == (h.backend == "fallback")


def test_write_read_round_trip_buffered(stack: Stack, tmp_path: pathlib.Path) -> None:
    data = os.urandom(10_000)
    with stack.open(tmp_path / "f", create=True) as h:
        assert h.write_from(data, 123) == len(data)
        out = bytearray(len(data))
        assert h.read_into(out, 123) == len(data)
        assert out == data
        assert h.size() == 123 + len(data)
    assert (tmp_path / "f").read_bytes()[123:] == data


def test_direct_io_round_trip_with_aligned_buffers(stack: Stack, tmp_path: pathlib.Path) -> None:
    with stack.open(tmp_path / "d", create=True, direct=True) as h:
        assert h.direct and h.block_size in (512, 1024, 2048, 4096)
        buf = aligned_buffer(4 * BS)
        buf[:] = os.urandom(4 * BS)
        assert h.write_from(buf, 8 * BS) == 4 * BS
        back = aligned_buffer(4 * BS)
        assert h.read_into(back, 8 * BS) == 4 * BS
        assert back[:] == buf[:]


def test_misaligned_direct_io_is_refused_before_submission(stack: Stack, tmp_path: pathlib.Path) -> None:
    with stack.open(tmp_path / "d", create=True, direct=True) as h:
        buf = aligned_buffer(2 * BS)
        with pytest.raises(AlignmentError, match="offset 100 is not a multiple"):
            h.read_into(buf, 100)
        with pytest.raises(AlignmentError, match="length 1000"):
            h.write_from(memoryview(buf)[:1000], 0)
        with pytest.raises(AlignmentError, match="buffer address"):
            h.write_from(memoryview(buf)[512 + 1 : 512 + 1 + BS], 0)
        assert h.size() == 0, "nothing may be written when the request is refused"


def test_read_many_and_write_many(stack: Stack, tmp_path: pathlib.Path) -> None:
    blocks = [os.urandom(BS) for _ in range(64)]
    with stack.open(tmp_path / "m", create=True) as h:
        offsets = [i * BS for i in range(64)]
        assert h.write_many(offsets, blocks) == [BS] * 64
        outs = [bytearray(BS) for _ in range(64)]
        order = list(reversed(offsets))
        assert h.read_many(order, outs) == [BS] * 64
        for off, out in zip(order, outs, strict=True):
            assert out == blocks[off // BS]


def test_vectored_forms(stack: Stack, tmp_path: pathlib.Path) -> None:
    parts = [b"a" * 100, b"b" * 5000, b"c" * 7]
    with stack.open(tmp_path / "v", create=True) as h:
        assert h.writev_from(parts, 10) == 5107
        outs = [bytearray(100), bytearray(5000), bytearray(7)]
        assert h.readv_into(outs, 10) == 5107
        assert b"".join(outs) == b"".join(parts)


def test_short_read_at_eof_is_reported_not_padded(stack: Stack, tmp_path: pathlib.Path) -> None:
    (tmp_path / "s").write_bytes(b"x" * 1000)
    with stack.open(tmp_path / "s") as h:
        buf = bytearray(4096)
        assert h.read_into(buf, 0) == 1000
        assert h.read_many([500, 2000], [bytearray(1000), bytearray(10)]) == [500, 0]
        with pytest.raises(ShortIOError) as info:
            h.read_many([0], [bytearray(4096)], exact=True)
        assert info.value.got == 1000 and info.value.expected == 4096


def test_reads_past_the_end_are_not_asked_again(
    stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that returned 0 is at the end of the file (read(2)). The README's own
    example (32 reads of a 4 KiB file, "one submission") re-read each of the 31 past
    the end in a waited submission of its own: 32 io_uring_enter calls."""
    (tmp_path / "s").write_bytes(b"x" * 4096)
    with stack.open(tmp_path / "s") as h:
        batches: list[int] = []  # the backend's submissions (a batch is one)
        start_rw = h._io.start_rw
        monkeypatch.setattr(h._io, "start_rw", lambda *a, **k: (batches.append(1), start_rw(*a, **k))[1])
        bufs = [bytearray(4096) for _ in range(32)]
        assert h.read_many([i * 4096 for i in range(32)], bufs) == [4096] + [0] * 31
        assert len(batches) == 1
        with pytest.raises(ShortIOError) as info:
            h.read_many([0, 8192], [bytearray(4096), bytearray(4096)], exact=True)
        assert (info.value.got, info.value.expected, info.value.transferred) == (0, 4096, 0)
        assert len(batches) == 2
        if h.ring is not None:
            before = h.ring.counters()["enters"]
            h.read_many([i * 4096 for i in range(32)], bufs)
            assert h.ring.counters()["enters"] - before == 1


def test_a_short_read_into_wide_items_is_short_by_bytes_sync_and_async(stack: Stack, tmp_path: pathlib.Path) -> None:
    """Buffers are counted in bytes: 8 bytes read into an 8-item array of doubles (64 bytes)
    is short.  read_many_async compared with len() (8 items) and returned [8] with
    exact=True instead of raising ShortIOError."""
    (tmp_path / "s").write_bytes(b"\x01" * 8)
    with stack.open(tmp_path / "s") as h:
        for make in (lambda: array.array("d", [0.0] * 8), lambda: memoryview(bytearray(64)).cast("Q")):
            with pytest.raises(ShortIOError) as info:
                h.read_many([0], [make()], exact=True)
            assert (info.value.got, info.value.expected) == (8, 64)
            with pytest.raises(ShortIOError) as info:
                asyncio.run(asyncio.wait_for(h.read_many_async([0], [make()], exact=True), 30))
            assert (info.value.got, info.value.expected) == (8, 64)
            assert asyncio.run(asyncio.wait_for(h.read_many_async([0], [make()]), 30)) == [8]


def test_errors_carry_errno_op_and_file(stack: Stack, tmp_path: pathlib.Path) -> None:
    (tmp_path / "ro").write_bytes(b"x")
    with stack.open(tmp_path / "ro", writable=False) as h, pytest.raises(UringIOError) as info:
        h.write_from(b"y", 0)
    assert info.value.errno == errno.EBADF
    assert info.value.op == "write"
    assert info.value.filename == str(tmp_path / "ro")
    with pytest.raises(UringIOError) as info2:
        stack.open(tmp_path / "missing")
    assert info2.value.errno == errno.ENOENT


def test_fsync_fdatasync_and_write_durable(stack: Stack, tmp_path: pathlib.Path) -> None:
    with stack.open(tmp_path / "d", create=True, direct=True) as h:
        buf = aligned_buffer(BS)
        buf[:] = b"z" * BS
        assert h.write_durable(buf, 0) == BS
        h.fsync()
        h.fdatasync()
    assert (tmp_path / "d").read_bytes() == b"z" * BS


def test_use_after_close_is_refused(stack: Stack, tmp_path: pathlib.Path) -> None:
    h = stack.open(tmp_path / "c", create=True)
    h.close()
    h.close()
    with pytest.raises(RingClosedError):
        h.read_into(bytearray(1), 0)
    # (lease_buffers handed a closed handle buffers, registered ones out of its worker's pool)
    with pytest.raises(RingClosedError):
        h.lease_buffers(4, 4096)


def test_empty_batches_are_empty_on_every_call(stack: Stack, tmp_path: pathlib.Path) -> None:
    """No ops, no results, on every backend; io_uring's unwaited and asyncio forms raised
    ValueError("submit_columns: n=0 outside 1..2 (the columns' capacity)")."""
    with stack.open(tmp_path / "e", create=True) as h:
        assert h.read_many([], []) == [] and h.write_many([], []) == []
        assert h.start_read_many([], []).wait() == [] and h.start_write_many([], []).wait() == []

        async def both() -> tuple[list[int], list[int]]:
            return await h.read_many_async([], []), await h.write_many_async([], [])

        assert asyncio.run(asyncio.wait_for(both(), 30)) == ([], [])


def test_asyncio_gather_of_1000_reads(stack: Stack, tmp_path: pathlib.Path) -> None:
    data = os.urandom(256 * BS)
    (tmp_path / "a").write_bytes(data)

    async def main() -> list[bytes]:
        with stack.open(tmp_path / "a") as h:
            return await asyncio.gather(*(h.read(BS, (i * 37 % 256) * BS) for i in range(1000)))

    got = asyncio.run(main())
    assert len(got) == 1000
    for i, block in enumerate(got):
        off = (i * 37 % 256) * BS
        assert block == data[off : off + BS]


def test_asyncio_write_then_read_direct(stack: Stack, tmp_path: pathlib.Path) -> None:
    async def main() -> bytes:
        with stack.open(tmp_path / "aw", create=True, direct=True) as h:
            buf = aligned_buffer(BS)
            buf[:] = b"q" * BS
            assert await h.write(buf, BS) == BS
            await h.fdatasync_async()
            return await h.read(BS, BS)

    assert asyncio.run(main()) == b"q" * BS


def test_workers_are_pinned(stack: Stack) -> None:
    seen = stack.run_on_workers(lambda w: (w.cpu, os.sched_getaffinity(0)))
    assert len(seen) == len(stack.caps.cpus.allowed)
    for cpu, affinity in seen:
        assert affinity == {cpu}


def test_handles_spread_over_workers_and_core_choice(stack: Stack, tmp_path: pathlib.Path) -> None:
    cpus = [w.cpu for w in stack.workers]
    with stack.open(tmp_path / "x", create=True, core=cpus[-1]) as h:
        assert h.worker.cpu == cpus[-1]
    with pytest.raises(ValueError, match="no worker on CPU 9999"):
        stack.open(tmp_path / "x", core=9999)


def test_asyncio_run_twice_on_one_stack(stack: Stack, tmp_path: pathlib.Path) -> None:
    """A second event loop (e.g. a second asyncio.run) takes over the ring's eventfd."""
    (tmp_path / "twice").write_bytes(b"0123456789")

    async def main() -> bytes:
        with stack.open(tmp_path / "twice") as h:
            return await h.read(4, 3)

    assert asyncio.run(main()) == b"3456"
    assert asyncio.run(main()) == b"3456"
