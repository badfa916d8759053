"""Segment creation: ENOSPC is reported with the file and the operation and leaves no
temp file (issue 12, item 9); a new segment's header is synced before its rename."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from uringstack.wal import Wal, WalConfig, WalFailedError
from uringstack.wal.faults import SegmentFaults, segment_faults
from uringstack.wal.segment import list_segments

CFG = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")


def _tmp_files(d: pathlib.Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("op", ["fallocate", "pwrite", "fdatasync"])
def test_enospc_preparing_the_first_segment(wal_dir: pathlib.Path, op: str) -> None:
    with segment_faults(SegmentFaults({(op, 0): errno.ENOSPC})), pytest.raises(OSError) as ei:
        Wal.open(wal_dir, CFG)
    e = ei.value
    assert e.errno == errno.ENOSPC
    msg = str(e)
    assert "new-1.tmp" in msg and op in msg and "preparing a 65536-byte WAL segment" in msg, msg
    assert "partial file was removed" in msg
    assert _tmp_files(wal_dir) == []
    assert list_segments(wal_dir) == []
    # once there is room again the log opens normally
    with Wal.open(wal_dir, CFG) as wal:
        assert wal.append(b"x") == 1


@pytest.mark.parametrize(("call", "what"), [(2, "pwrite of zeros"), (3, "pwrite of the header")])
def test_enospc_on_a_spare_fails_the_log_at_rollover(wal_dir: pathlib.Path, call: int, what: str) -> None:
    # pwrite 0 and 1: the first segment's zeros and header; 2 and 3: the spare's. Every
    # pwrite from there fails: the roll's second attempt at a spare (below) too.
    with segment_faults(SegmentFaults({("pwrite", n): errno.ENOSPC for n in range(call, call + 100)})):
        wal = Wal.open(wal_dir, CFG)
        try:
            acked = 0
            with pytest.raises(WalFailedError) as ei:
                for _ in range(200):
                    wal.append(os.urandom(1000))
                    acked += 1
        finally:
            wal.close()
    assert ei.value.errno == errno.ENOSPC
    assert "spare.tmp" in str(ei.value) and what in str(ei.value), str(ei.value)
    assert _tmp_files(wal_dir) == []
    with Wal.open(wal_dir, CFG) as wal:
        assert len(list(wal.read_from(1))) == acked


def test_header_is_synced_before_the_rename(wal_dir: pathlib.Path) -> None:
    """The durability order of a new segment: header write, its fdatasync, rename, dir fsync."""
    with segment_faults(SegmentFaults()) as rec, Wal.open(wal_dir, CFG) as wal:
        for _ in range(100):  # at least one rollover onto a background spare
            wal.append(os.urandom(1000))
        assert len(wal.segments()) >= 2
    log = rec.log
    renames = [i for i, (op, _) in enumerate(log) if op == "rename"]
    assert len(renames) >= 2
    for i in renames:
        src = log[i][1].split("->")[0]
        # the calls on that file just before its rename: the header pwrite, then its fdatasync
        before = [op for op, name in log[:i] if name == src]
        assert before[-2:] == ["pwrite", "fdatasync"], (src, before[-4:])
        assert log[i + 1] == ("fsync", "<dir>"), log[i : i + 2]


@pytest.fixture
def small_fs(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_enospc_on_a_full_filesystem(small_fs: pathlib.Path) -> None:
    d = small_fs / "wal"
    with pytest.raises(OSError) as ei:
        Wal.open(d, WalConfig(segment_size_bytes=4 * 1024 * 1024, backend="fallback"))
    assert ei.value.errno == errno.ENOSPC
    assert "new-1.tmp" in str(ei.value), str(ei.value)
    assert _tmp_files(d) == []
    st = os.statvfs(small_fs)
    assert st.f_bfree * st.f_frsize >= 900 * 1024  # the space came back


def test_wait_spare_returns_once_the_next_segment_is_synced(
    wal_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench waits for the background zero-fill before it measures: wait_spare must not
    return True while that fill's fdatasync is still running."""
    import threading

    from uringstack.wal import segment

    release, entered = threading.Event(), threading.Event()
    real = segment.SYSCALLS.fdatasync

    def held(fd: int) -> None:
        if threading.current_thread().name == "wal-spare":
            entered.set()
            assert release.wait(10), "the test never released the spare's fdatasync"
        real(fd)

    monkeypatch.setattr(segment.SYSCALLS, "fdatasync", held)
    with Wal.open(wal_dir, CFG) as wal:
        assert entered.wait(10)
        assert wal.wait_spare(0.2) is False
        release.set()
        assert wal.wait_spare(10) is True
        assert (wal_dir / "spare.tmp").stat().st_size == CFG.segment_size_bytes


def test_a_full_disk_leaves_a_full_log_readable_and_appendable_once_there_is_room(wal_dir: pathlib.Path) -> None:
    """Every segment after the first fails with ENOSPC: the log fails when it must roll, and
    reopened on the still-full disk it opens, reads every acknowledged record and refuses
    appends with ENOSPC.  It used to make the full segment's successor at open, so the open
    failed, and the records could not be read through the log until the disk had room."""
    full = SegmentFaults({(op, n): errno.ENOSPC for op in ("fallocate",) for n in range(1, 50)})
    records = []
    with segment_faults(full):
        wal = Wal.open(wal_dir, CFG)
        try:
            with pytest.raises(WalFailedError) as rolled:
                for i in range(200):
                    records.append(b"%04d" % i * 250)
                    wal.append(records[-1])
        finally:
            wal.close()
        records.pop()  # the one that did not fit
        assert rolled.value.errno == errno.ENOSPC
        assert [p.name for _, p in list_segments(wal_dir)] == ["00000000000000000001.wal"]
        with Wal.open(wal_dir, CFG) as wal:
            assert [r for _, r in wal.read_from(1)] == records
            with pytest.raises(WalFailedError) as again:
                wal.append(b"m" * 1000)  # (no room for it in the full segment)
            assert again.value.errno == errno.ENOSPC
        assert _tmp_files(wal_dir) == []
    with Wal.open(wal_dir, CFG) as wal:  # room again
        assert wal.append(b"m" * 1000) == len(records) + 1
        assert [r for _, r in wal.read_from(1)] == [*records, b"m" * 1000]


def test_a_spare_that_failed_in_the_background_is_tried_again_at_the_roll(wal_dir: pathlib.Path) -> None:
    """The disk was full while the spare was prepared, and has room by the roll (a checkpoint's
    truncate_before freed it): the roll prepares the spare again instead of failing the log
    with the stale ENOSPC."""
    faults = SegmentFaults({("fallocate", 1): errno.ENOSPC})  # 0: the first segment; 1: its spare
    records = [b"%04d" % i * 250 for i in range(150)]  # 1000 bytes each: past one 64 KiB segment
    with segment_faults(faults), Wal.open(wal_dir, CFG) as wal:
        assert wal._writer.wait_spare(10)
        assert wal._writer._spare_error is not None  # the background preparation failed
        for r in records:
            wal.append(r)
        assert len(wal.segments()) == 3
    with Wal.open(wal_dir, CFG) as wal:
        assert [r for _, r in wal.read_from(1)] == records


def test_open_removes_leftover_spares_and_nothing_else(wal_dir: pathlib.Path) -> None:
    """Leftover spares go; other ``.tmp`` files in the directory are the caller's and stay
    (every ``*.tmp`` was removed: a log opened in ``/tmp`` took the caller's files)."""
    wal_dir.mkdir(parents=True, exist_ok=True)
    for name in ("spare.tmp", "new-7.tmp"):
        (wal_dir / name).write_bytes(b"\0" * 4096)  # what a crash while preparing one leaves
    for name in ("notes.tmp", "spare.tmp.tmp", "new-x.tmp"):
        (wal_dir / name).write_bytes(b"mine")
    (wal_dir / "dir.tmp").mkdir()
    with Wal.open(wal_dir, CFG) as wal:
        assert wal.append(b"x") == 1
        assert wal._writer.wait_spare(10)
        left = sorted(p.name for p in wal_dir.iterdir() if p.name.endswith(".tmp"))
    assert "new-7.tmp" not in left
    assert {"notes.tmp", "spare.tmp.tmp", "new-x.tmp", "dir.tmp"} <= set(left)
    for name in ("notes.tmp", "spare.tmp.tmp", "new-x.tmp"):
        assert (wal_dir / name).read_bytes() == b"mine"


def test_opening_a_log_in_new_directories_syncs_each_ones_parent(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Wal.open("a/b/wal")`` makes ``a``, ``b`` and ``wal``: each entry lives in its parent,
    which must reach the disk before an append is acknowledged, or a crash can take the
    whole log (and its acknowledged records) with the directory."""
    from uringstack.wal import log

    synced: list[pathlib.Path] = []
    real = log.fsync_dir

    def record(directory: pathlib.Path) -> None:
        synced.append(pathlib.Path(directory))
        real(directory)

    monkeypatch.setattr(log, "fsync_dir", record)
    with Wal.open(tmp_path / "a" / "b" / "wal", backend="fallback") as wal:
        wal.append(b"x")
    made = [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    assert synced[:3] == made, synced
    synced.clear()
    with Wal.open(tmp_path / "a" / "b" / "wal", backend="fallback"):  # exists: its parent only
        pass
    assert synced[:1] == [tmp_path / "a" / "b"] and tmp_path / "a" not in synced, synced
