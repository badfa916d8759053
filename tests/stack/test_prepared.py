"""Prepared reads and writes (``FileHandle.prepare_reads``/``prepare_writes``) on every backend.

The io_uring backend has its own fast path (columns built once, only the
offsets written per call); every other backend gets the generic one
(``RestartingPrepared``: ``start_rw`` per call).  Both must keep
``read_many``'s contract: short only at EOF, errors raised, O_DIRECT
alignment refused before submission, one batch in flight at a time.
"""

from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import uringstack.plugins.fallback.backend as fallback_backend
from tests.requires import skip_without
from uringstack.errors import AlignmentError, BatchInFlightError, RingClosedError, ShortIOError
from uringstack.ring import Ring
from uringstack.ring.buffers import RegisteredBuffer, aligned_buffer
from uringstack.ring.flags import Op
from uringstack.ring.io_backend import RestartingPrepared
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.uring_backend import UringPrepared

BS = 4096
CPU = sorted(os.sched_getaffinity(0))[0]
BACKENDS = {
    # (iopoll off: on a device with poll queues an O_DIRECT handle would be the IOPOLL backend's)
    "uring": {"core.backend": "uring", "core.cores": [CPU], "iopoll.mode": "off"},
    "fallback": {"core.backend": "fallback", "core.cores": [CPU]},
}


@pytest.fixture(params=sorted(BACKENDS))
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = open_stack(overrides=BACKENDS[request.param])
    yield s
    s.close()


@pytest.fixture
def data_file(tmp_path: pathlib.Path) -> tuple[pathlib.Path, bytes]:
    data = os.urandom(64 * BS)
    path = tmp_path / "data"
    path.write_bytes(data)
    return path, data


def _expected_kind(h: FileHandle) -> type:
    return UringPrepared if h.backend == "uring" else RestartingPrepared


def test_prepared_reads_run_at_new_offsets_like_read_many(stack: Stack, data_file: tuple[pathlib.Path, bytes]) -> None:
    path, data = data_file
    with stack.open(path) as h:
        bufs = [bytearray(BS) for _ in range(8)]
        with h.prepare_reads(bufs) as reads:
            assert isinstance(reads._prep, _expected_kind(h))
            for k in range(4):
                offsets = [((i * 5 + k * 17) % 64) * BS for i in range(8)]
                assert reads.run(offsets) == [BS] * 8
                for buf, off in zip(bufs, offsets, strict=True):
                    assert bytes(buf) == data[off : off + BS]
            pending = reads.start([0] * 8)  # the unchecked form
            assert pending.wait() == [BS] * 8 and bytes(bufs[7]) == data[:BS]


def test_prepared_writes(stack: Stack, tmp_path: pathlib.Path) -> None:
    blocks = [bytearray(os.urandom(BS)) for _ in range(4)]
    with stack.open(tmp_path / "w", create=True) as h:
        writes = h.prepare_writes(blocks)
        assert writes.run([3 * BS, 0, 2 * BS, BS]) == [BS] * 4
        blocks[0][:] = b"z" * BS  # the same buffer, new contents, another offset
        assert writes.run([4 * BS, 5 * BS, 6 * BS, 7 * BS]) == [BS] * 4
    got = (tmp_path / "w").read_bytes()
    assert got[3 * BS : 4 * BS] != b"z" * BS and got[4 * BS : 5 * BS] == b"z" * BS
    assert got[: 3 * BS] == bytes(blocks[1]) + bytes(blocks[3]) + bytes(blocks[2])


def test_prepared_read_is_short_only_at_eof(stack: Stack, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "short"
    data = os.urandom(BS + BS // 2)
    path.write_bytes(data)
    with stack.open(path) as h:
        bufs = [bytearray(BS), bytearray(BS), bytearray(BS)]
        reads = h.prepare_reads(bufs)
        assert reads.run([0, BS, 4 * BS]) == [BS, BS // 2, 0]
        assert bytes(bufs[1][: BS // 2]) == data[BS:]
        with pytest.raises(ShortIOError):
            reads.run([0, BS, 0], exact=True)


def test_prepared_io_on_o_direct_refuses_misalignment_before_submitting(stack: Stack, tmp_path: pathlib.Path) -> None:
    with stack.open(tmp_path / "d", create=True, direct=True) as h:
        good = [aligned_buffer(BS) for _ in range(2)]
        writes = h.prepare_writes(good)
        with pytest.raises(AlignmentError, match="offset 100 is not a multiple"):
            writes.run([0, 100])
        assert h.size() == 0, "nothing may be written when the request is refused"
        assert writes.run([0, BS]) == [BS, BS]
        raw = aligned_buffer(3 * BS)
        bad = memoryview(raw)[512 + 1 : 512 + 1 + BS]
        with pytest.raises(AlignmentError, match="buffer address"):
            h.prepare_reads([bad])  # at prepare on every backend (the fallback: at the run, before)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: b"x" * 4096, BufferError),  # a read into bytes
        (lambda: memoryview(bytearray(8192))[::2], BufferError),  # not contiguous
        (lambda: 42, TypeError),
    ],
)
def test_an_unusable_buffer_is_refused_at_prepare_on_every_backend(
    stack: Stack, data_file: tuple[pathlib.Path, bytes], make: Any, error: type[Exception]
) -> None:
    """The io_uring backend refused these when preparing, the fallback only at the
    first run: the same program failed at different lines by backend."""
    with stack.open(data_file[0]) as h:
        with pytest.raises(error):
            h.prepare_reads([bytearray(4096), make()])
        assert h.prepare_reads([bytearray(4096)]).run([0]) == [4096]


def test_bad_offsets_are_named(stack: Stack, data_file: tuple[pathlib.Path, bytes]) -> None:
    with stack.open(data_file[0]) as h:
        reads = h.prepare_reads([bytearray(BS), bytearray(BS)])
        with pytest.raises(ValueError, match=r"offset -4096 \(op 1 of the batch\) is negative"):
            reads.run([0, -BS])
        with pytest.raises(ValueError, match="3 offsets for 2 prepared buffers"):
            reads.run([0, BS, 2 * BS])
        assert reads.run([0, BS]) == [BS, BS]  # a refused call leaves it usable
        with pytest.raises(ValueError, match="nothing to prepare"):
            h.prepare_reads([])


def test_prepared_io_after_close_is_refused(stack: Stack, data_file: tuple[pathlib.Path, bytes]) -> None:
    h = stack.open(data_file[0])
    reads = h.prepare_reads([bytearray(BS)])
    assert reads.run([0]) == [BS]
    h.close()
    with pytest.raises(RingClosedError, match="is closed"):
        reads.run([0])
    with pytest.raises(RingClosedError):
        reads.start([0])
    with pytest.raises(RingClosedError):
        h.prepare_reads([bytearray(BS)])


def _hold_in_flight(h: FileHandle, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Keep the next batch from completing (or from being seen complete) until the event is set."""
    release = threading.Event()
    if h.backend == "uring":
        ring = h.ring
        assert ring is not None
        real = ring.try_reap

        def try_reap() -> Any:  # done() then cannot see the completion before the release
            return real() if release.is_set() else []

        monkeypatch.setattr(ring, "try_reap", try_reap)
    else:
        real_preadv = fallback_backend._preadv

        def preadv(*args: Any) -> Any:
            assert release.wait(10), "the test never released the read"
            return real_preadv(*args)

        monkeypatch.setattr(fallback_backend, "_preadv", preadv)
    return release


def test_starting_again_while_in_flight_is_refused(
    stack: Stack, data_file: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = data_file
    with stack.open(path) as h:
        bufs = [bytearray(BS), bytearray(BS)]
        reads = h.prepare_reads(bufs)
        release = _hold_in_flight(h, monkeypatch)
        first = reads.start([0, BS])
        with pytest.raises(BatchInFlightError, match="still in flight"):
            reads.start([2 * BS, 3 * BS])
        with pytest.raises(BatchInFlightError):
            reads.run([2 * BS, 3 * BS])
        release.set()
        assert first.wait() == [BS, BS]
        assert bytes(bufs[0]) == data[:BS], "the refused start must not have touched the buffers"
        assert reads.run([2 * BS, 3 * BS]) == [BS, BS]


@pytest.fixture
def fixed_stack() -> Iterator[Stack]:
    s = open_stack(overrides={"core.backend": "uring", "core.cores": [CPU], "fixedbuf.mode": "on",
                              "fixedbuf.count": 8, "fixedbuf.buffer_size": BS, "fixedbuf.files": 4})  # fmt: skip
    yield s
    s.close()


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "buffered"])
def test_prepared_reads_on_leased_registered_buffers_use_read_fixed_under_o_direct_only(
    fixed_stack: Stack, data_file: tuple[pathlib.Path, bytes], direct: bool
) -> None:
    """Buffered, a lease is read with a plain READ at its address (buffers.fixed_opcodes_pay:
    READ_FIXED's copy from the page cache measured slower), tracked in flight the same way."""
    path, data = data_file
    with fixed_stack.open(path, direct=direct) as h:
        leases = h.lease_buffers(4, BS)
        if not all(isinstance(b, RegisteredBuffer) for b in leases):
            h.release_buffers(leases)
            skip_without("fixedbuf registered no buffers (RLIMIT_MEMLOCK too low)")
        reads = h.prepare_reads(leases)
        assert isinstance(reads._prep, UringPrepared)
        cols = reads._prep._cols
        if direct:
            assert cols.get("opcodes") == [Op.READ_FIXED] * 4
            assert cols.get("buf_index") == [b.index for b in leases]
        else:
            assert cols.get("opcodes") == [Op.READ] * 4
            assert cols.get("addrs") == [b.addr for b in leases]
        offsets = [9 * BS, 1 * BS, 33 * BS, 60 * BS]
        assert reads.run(offsets) == [BS] * 4
        for lease, off in zip(leases, offsets, strict=True):
            assert bytes(lease) == data[off : off + BS]
        # a lease in a prepared batch still in flight is not handed out again
        ring = h.ring
        assert isinstance(ring, Ring)
        pending = reads.start(offsets)
        assert all(lease.in_flight() for lease in leases) or pending.done()
        pending.wait()
        assert not any(lease.in_flight() for lease in leases)
        reads.close()  # (release_buffers refuses leases an open prepared I/O holds)
        h.release_buffers(leases)


@pytest.mark.parametrize(
    ("backend", "pause_in"),
    [("uring", "backend-start"), ("fallback", "backend-start"), ("uring", "uring-submission")],
)
def test_a_start_from_another_thread_while_one_is_starting_is_refused(
    tmp_path: pathlib.Path, backend: str, pause_in: str
) -> None:
    """One batch at a time, across threads too: a second thread's start while the first
    one's is still on its way to the ring must be refused, and the first batch must move
    its own offsets.  Before the claim both passed the in-flight check; on io_uring the
    later thread's offsets overwrote the shared offsets column before the first thread
    submitted, so thread A's buffers were written at thread B's offsets and both calls
    returned success (found by a two-thread probe: 1 run in ~6,000; here the window is
    widened by pausing thread A where a preemption would)."""
    path = tmp_path / "f"
    path.write_bytes(bytes(32 * BS))
    with open_stack(overrides=BACKENDS[backend]) as stack, stack.open(path, direct=True) as h:
        assert h.backend == backend
        buf = aligned_buffer(BS)
        buf[:] = b"A" * BS
        pr = h.prepare_writes([buf, buf])
        owner: Any = h.ring if pause_in == "uring-submission" else pr._prep
        name = "submit_columns" if pause_in == "uring-submission" else "start"
        real = getattr(owner, name)
        paused = threading.Event()

        def slow_for_a(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread().name == "A":
                paused.set()
                time.sleep(0.3)
            return real(*args, **kwargs)

        setattr(owner, name, slow_for_a)
        results: dict[str, Any] = {}

        def run(who: str, offsets: list[int]) -> None:
            try:
                results[who] = pr.run(offsets)
            except Exception as e:  # the test looks at what each thread got
                results[who] = e

        a = threading.Thread(target=run, args=("A", [0, BS]), name="A")
        a.start()
        assert paused.wait(5)
        run("B", [16 * BS, 17 * BS])
        a.join(10)
        setattr(owner, name, real)
        pr.close()
    assert results["A"] == [BS, BS]
    assert isinstance(results["B"], BatchInFlightError), results["B"]
    data = path.read_bytes()
    assert data[: 2 * BS] == b"A" * 2 * BS, "thread A's batch did not land at its own offsets"
    assert data[16 * BS : 18 * BS] == bytes(2 * BS)
