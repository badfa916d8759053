"""Injected faults through the simulated faulty disk (FaultyIO)."""

from __future__ import annotations

import errno
import os
import pathlib
import threading

import pytest

from uringstack.wal import RecoveryMode, Wal, WalConfig, WalCorruptionError, WalFailedError
from uringstack.wal.faults import FaultPlan, FaultyIO
from uringstack.wal.recovery import scan
from uringstack.wal.segment import DATA_START, list_segments

# host_only: each fault comes from a Python wrapper (FaultyIO), not from the kernel, and the
# log's answer to it is Python's (the NVMe VM's kernel matrix deselects it)
pytestmark = pytest.mark.host_only


def _records(d: pathlib.Path, **kw: str) -> list[tuple[int, bytes]]:
    with Wal.open(d, backend="fallback", **kw) as wal:
        return list(wal.read_from(1))


@pytest.mark.parametrize("direct", ["off", "on"])
def test_short_writes_are_completed(wal_dir: pathlib.Path, direct: str, backend_name: str) -> None:
    short = 100 if direct == "off" else 4096  # O_DIRECT continuations must stay aligned
    # write calls: append1 -> 0 (short), 1; append2 -> 2; append3 -> 3 (short), 4; append4 -> 5
    plan = FaultPlan(short_writes={0: short, 3: short, 5: 0})
    be = FaultyIO(plan)
    data = [os.urandom(5000 + i) for i in range(4)]  # 8 KiB writes
    with Wal.open(wal_dir, backend=backend_name, sync="fdatasync", wrap_io=be, direct_io=direct) as wal:
        for i, d in enumerate(data[:3]):
            assert wal.append(d) == i + 1
        assert be.write_calls == 5
        with pytest.raises(WalFailedError):  # a zero-byte write is an error, not a loop
            wal.append(data[3])
    assert [p for _, p in _records(wal_dir)][:3] == data[:3]


def test_eio_on_write_fails_the_log(wal_dir: pathlib.Path, backend_name: str) -> None:
    be = FaultyIO(FaultPlan(write_errors={2: errno.EIO}))
    with Wal.open(wal_dir, backend=backend_name, sync="fdatasync", wrap_io=be) as wal:
        assert wal.append(b"one") == 1
        assert wal.append(b"two") == 2
        with pytest.raises(WalFailedError) as ei:
            wal.append(b"three")
        assert ei.value.errno == errno.EIO and isinstance(ei.value, OSError)
        with pytest.raises(WalFailedError):
            wal.append(b"four")
        assert wal.durable_lsn == 2 and wal.failed is ei.value
    assert be.write_calls == 3  # nothing was tried after the failure
    assert _records(wal_dir) == [(1, b"one"), (2, b"two")]


def test_eio_on_fdatasync_no_false_ack_no_retry(wal_dir: pathlib.Path, backend_name: str) -> None:
    be = FaultyIO(FaultPlan(sync_errors={3: errno.EIO}))
    acked: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    with Wal.open(wal_dir, backend=backend_name, sync="fdatasync", wrap_io=be) as wal:

        def work(i: int) -> None:
            for k in range(200):
                try:
                    lsn = wal.append(f"{i}:{k}".encode())
                except WalFailedError as e:
                    with lock:
                        failures.append(e)
                    return
                with lock:
                    acked.append(lsn)

        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        durable = wal.durable_lsn
        assert len(failures) == 8  # every appender saw the failure
        assert all(f.errno == errno.EIO for f in failures)
        assert max(acked) <= durable  # nothing acknowledged beyond the last good flush
        with pytest.raises(WalFailedError):
            wal.append(b"late")
    assert be.sync_calls == 4  # the failed fdatasync was never retried
    got = dict(_records(wal_dir))
    assert all(lsn in got for lsn in acked)


def test_torn_last_write(wal_dir: pathlib.Path, backend_name: str) -> None:
    be = FaultyIO(FaultPlan(torn_writes={5: 4096 + 512}))
    big = [os.urandom(6000) for _ in range(6)]
    with Wal.open(wal_dir, backend=backend_name, sync="fdatasync", wrap_io=be) as wal:
        for d in big[:5]:
            wal.append(d)
        with pytest.raises(WalFailedError):
            wal.append(big[5])
    # absolute consistency refuses even a torn tail...
    with pytest.raises(WalCorruptionError, match="torn tail"):
        Wal.open(wal_dir, backend="fallback", recovery="absolute")
    s = scan(wal_dir)
    assert s.damage is not None and s.damage.torn_tail
    # ...tolerate_tail cuts it off, keeping every acknowledged record
    assert [p for _, p in _records(wal_dir)] == big[:5]
    # the cut is durable: the log is now clean even for absolute mode
    assert [p for _, p in _records(wal_dir, recovery="absolute")] == big[:5]


def test_torn_last_sector_in_file(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, backend="fallback") as wal:
        for i in range(5):
            wal.append(bytes([i + 1]) * 2000)
    seg = list_segments(wal_dir)[0][1]
    s = scan(wal_dir)
    end = s.segments[0].end_offset
    with open(seg, "r+b") as f:  # the last sector of the last record never made it
        f.seek(end - 512)
        f.write(bytes(512))
    with pytest.raises(WalCorruptionError):
        Wal.open(wal_dir, backend="fallback", recovery="absolute")
    got = _records(wal_dir)
    assert [p for _, p in got] == [bytes([i + 1]) * 2000 for i in range(4)]


def _multi_segment_log(d: pathlib.Path) -> tuple[WalConfig, list[bytes]]:
    cfg = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    data = [os.urandom(1000) for _ in range(300)]
    with Wal.open(d, cfg) as wal:
        for x in data:
            wal.append(x)
        assert len(wal.segments()) >= 4
    return cfg, data


def _flip(path: pathlib.Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def test_bit_flip_in_old_segment(wal_dir: pathlib.Path) -> None:
    cfg, data = _multi_segment_log(wal_dir)
    segs = list_segments(wal_dir)
    # inside the payload of the 3rd record of the 2nd segment (records are 1016 bytes)
    _flip(segs[1][1], DATA_START + 2 * 1016 + 500)
    bad_lsn = segs[1][0] + 2
    for mode in ("absolute", "tolerate_tail"):
        with pytest.raises(WalCorruptionError, match="corruption") as ei:
            Wal.open(wal_dir, cfg, recovery=mode)
        assert "checksum" in str(ei.value)
    with Wal.open(wal_dir, cfg, recovery=RecoveryMode.POINT_IN_TIME) as wal:
        got = list(wal.read_from(1))
        assert [p for _, p in got] == data[: bad_lsn - 1]
        assert wal.append(b"new") == bad_lsn
    assert sorted(p.name for p in wal_dir.glob("*.discarded")) == [p.name + ".discarded" for _, p in segs[2:]]
    assert _records(wal_dir, recovery="absolute")[-1] == (bad_lsn, b"new")


def test_bit_flip_in_segment_header(wal_dir: pathlib.Path) -> None:
    cfg, _ = _multi_segment_log(wal_dir)
    _flip(list_segments(wal_dir)[1][1], 20)
    with pytest.raises(WalCorruptionError, match="header"):
        Wal.open(wal_dir, cfg)


def test_missing_segment_detected(wal_dir: pathlib.Path) -> None:
    cfg, _ = _multi_segment_log(wal_dir)
    os.unlink(list_segments(wal_dir)[1][1])
    with pytest.raises(WalCorruptionError, match="missing"):
        Wal.open(wal_dir, cfg, recovery="absolute")


def test_garbage_far_past_the_tail_is_corruption(wal_dir: pathlib.Path) -> None:
    """Non-zero bytes beyond where the last write could reach are not a torn tail."""
    cfg = WalConfig(segment_size_bytes=256 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    with Wal.open(wal_dir, cfg) as wal:
        wal.append(b"x" * 100)
    seg = list_segments(wal_dir)[0][1]
    _flip(seg, 200 * 1024)
    with pytest.raises(WalCorruptionError, match="corruption"):
        Wal.open(wal_dir, cfg)
    with Wal.open(wal_dir, cfg, recovery="point_in_time") as wal:
        assert list(wal.read_from(1)) == [(1, b"x" * 100)]


def test_a_second_point_in_time_recovery_keeps_what_the_first_set_aside(wal_dir: pathlib.Path) -> None:
    """Segments set aside as ``*.discarded`` hold acknowledged records past the damage, kept
    for inspection.  With records of one size the log, refilled after a recovery, rolls at
    the same LSNs, so its new segments take the set-aside ones' names: a second recovery
    must not rename over them."""
    cfg, data = _multi_segment_log(wal_dir)
    segs = list_segments(wal_dir)
    _flip(segs[1][1], DATA_START + 2 * 1016 + 500)
    bad_lsn = segs[1][0] + 2
    with Wal.open(wal_dir, cfg, recovery=RecoveryMode.POINT_IN_TIME) as wal:
        for _ in data[bad_lsn - 1 :]:  # other records of the same size: the same roll points
            wal.append(os.urandom(1000))
    first = {p.name: p.read_bytes() for p in wal_dir.glob("*.discarded")}
    assert sorted(first) == [p.name + ".discarded" for _, p in segs[2:]]
    again = list_segments(wal_dir)
    assert [lsn for lsn, _ in again] == [lsn for lsn, _ in segs]  # (the collision this is about)
    _flip(again[1][1], DATA_START + 2 * 1016 + 500)
    with Wal.open(wal_dir, cfg, recovery=RecoveryMode.POINT_IN_TIME) as wal:
        assert [p for _, p in wal.read_from(1)] == data[: bad_lsn - 1]
    for name, content in first.items():
        assert (wal_dir / name).read_bytes() == content, f"{name} was replaced by the second recovery"
    second = sorted(p.name for p in wal_dir.iterdir() if ".discarded" in p.name and p.name not in first)
    assert len(second) == len(segs) - 2, second  # the second recovery's, under names of their own


def test_a_write_the_kernel_cancelled_is_written_again_and_acknowledged(
    wal_dir: pathlib.Path, backend_name: str
) -> None:
    """ECANCELED for a durable write, the kernel's own (io-wq could not create a worker:
    docs/api.md, "An op the kernel cancelled on its own"), is no failure of the log: the
    write never ran, so the handle issues it again with its flush, and the append is
    acknowledged once that succeeded (before session 42 the log failed)."""
    be = FaultyIO(FaultPlan(write_errors={1: errno.ECANCELED}))
    with Wal.open(wal_dir, backend=backend_name, sync="fdatasync", wrap_io=be) as wal:
        assert [wal.append(p) for p in (b"one", b"two", b"three")] == [1, 2, 3]
        assert wal.failed is None and wal.durable_lsn == 3
    assert be.write_calls == 4  # the second append's write, cancelled, then again
    assert _records(wal_dir) == [(1, b"one"), (2, b"two"), (3, b"three")]


def test_a_flush_the_kernel_cancelled_after_a_whole_write_is_issued_again(
    wal_dir: pathlib.Path, backend_name: str
) -> None:
    """A cancelled flush after a write that ran whole is no failed flush (that one fails the
    log for good, test above): it never ran, and a new flush makes the record durable."""
    be = FaultyIO(FaultPlan(sync_errors={1: errno.ECANCELED}))
    with Wal.open(wal_dir, backend=backend_name, sync="fdatasync", wrap_io=be) as wal:
        assert [wal.append(p) for p in (b"one", b"two", b"three")] == [1, 2, 3]
        assert wal.failed is None and wal.durable_lsn == 3
    assert be.write_calls == 3  # no write again: only the flush
    assert _records(wal_dir) == [(1, b"one"), (2, b"two"), (3, b"three")]
