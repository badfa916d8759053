"""The background zero-fill of the next segment is paced (synced in pieces, a rest after
each) so the appender's durable writes do not queue behind a whole segment's writeback;
a roll or close that needs the spare ends the rests, and the spare is still fully written
and fdatasynced before its header is stamped (docs/wal.md, "Segment life cycle")."""

from __future__ import annotations

import errno
import os
import pathlib
import threading
import time

import pytest

from uringstack.wal import Wal, WalConfig, WalFailedError, segment
from uringstack.wal.faults import SegmentFaults, segment_faults

SEG = 4 << 20  # four 1 MiB zero chunks
CFG = WalConfig(segment_size_bytes=SEG, max_batch_bytes=8 * 1024, backend="fallback")


class _Resting:
    """Replaces FillPacer.rest: rests until hurried (or the test gives up), recording that it rested."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.give_up = threading.Event()

    def rest(self, pacer: segment.FillPacer, seconds: float) -> None:
        self.entered.set()
        deadline = time.monotonic() + 30
        while not pacer.hurried and not self.give_up.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)


def test_a_paced_fill_syncs_each_piece_then_the_whole_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment, "FILL_PIECE_BYTES", 1 << 20)
    rests: list[float] = []
    monkeypatch.setattr(segment.FillPacer, "rest", lambda self, s: rests.append(s))
    with segment_faults(SegmentFaults()) as rec:
        path = segment.prepare_spare(tmp_path, SEG, pacer=segment.FillPacer())
    ops = [op for op, name in rec.log if name == path.name and op in ("pwrite", "fdatasync")]
    # each 1 MiB piece is synced and rested after; the final fdatasync makes the whole file durable
    assert ops == ["pwrite", "fdatasync"] * 4 + ["fdatasync"], ops
    assert len(rests) == 4
    assert path.stat().st_size == SEG
    with open(path, "rb") as f:
        assert not any(f.read())


def test_an_unpaced_fill_syncs_once(tmp_path: pathlib.Path) -> None:
    """The synchronous path (the first segment, create_segment) has no pacer: flat out, one fdatasync."""
    with segment_faults(SegmentFaults()) as rec:
        path = segment.prepare_spare(tmp_path, SEG)
    ops = [op for op, name in rec.log if name == path.name and op in ("pwrite", "fdatasync")]
    assert ops == ["pwrite"] * 4 + ["fdatasync"], ops


def test_a_roll_that_finds_its_spare_half_filled_hurries_it_and_waits_for_all_of_it(
    wal_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment, "FILL_PIECE_BYTES", 1 << 20)
    resting = _Resting()
    monkeypatch.setattr(segment.FillPacer, "rest", lambda pacer, s: resting.rest(pacer, s))
    acked: list[int] = []
    with segment_faults(SegmentFaults()) as rec, Wal.open(wal_dir, CFG) as wal:
        assert resting.entered.wait(10), "the background fill never rested"
        assert (wal_dir / "spare.tmp").exists()

        def fill_segment() -> None:
            while len(wal.segments()) < 2:
                acked.append(wal.append(os.urandom(4000)))

        t = threading.Thread(target=fill_segment)
        t.start()
        t.join(20)
        try:
            assert not t.is_alive(), "the roll waited for a resting fill instead of hurrying it"
        finally:
            resting.give_up.set()
            t.join(10)
        spare_ops = []
        for op, name in rec.log:
            if name == "spare.tmp" and op in ("pwrite", "fdatasync"):
                spare_ops.append(op)
            if op == "rename" and name.startswith("spare.tmp->"):
                break
        # all four zero chunks, a durable sync after the last of them, then the header and its sync
        assert spare_ops[-3:] == ["fdatasync", "pwrite", "fdatasync"], spare_ops
        assert spare_ops.count("pwrite") == 5, spare_ops
    with Wal.open(wal_dir, CFG) as wal:
        assert [lsn for lsn, _ in wal.read_from(1)] == acked


def test_close_ends_a_resting_fill(wal_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment, "FILL_PIECE_BYTES", 1 << 20)
    resting = _Resting()
    monkeypatch.setattr(segment.FillPacer, "rest", lambda pacer, s: resting.rest(pacer, s))
    wal = Wal.open(wal_dir, CFG)
    try:
        assert resting.entered.wait(10), "the background fill never rested"
        closer = threading.Thread(target=wal.close)
        closer.start()
        closer.join(10)
        assert not closer.is_alive(), "close waited for a resting fill"
    finally:
        resting.give_up.set()
        wal.close()


def test_a_failed_piece_fdatasync_fails_the_log_at_rollover(
    wal_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsyncgate: an fdatasync error in a paced piece is not retried past; the roll fails, naming the step."""
    monkeypatch.setattr(segment, "FILL_PIECE_BYTES", 1 << 20)
    monkeypatch.setattr(segment.FillPacer, "rest", lambda pacer, s: None)
    acked = 0
    # fdatasync 0 and 1: the first segment's zeros and header; 2: the spare's first piece
    with segment_faults(SegmentFaults({("fdatasync", 2): errno.EIO})):
        wal = Wal.open(wal_dir, CFG)
        try:
            with pytest.raises(WalFailedError) as ei:
                for _ in range(2000):
                    wal.append(os.urandom(4000))
                    acked += 1
        finally:
            wal.close()
    assert ei.value.errno == errno.EIO
    assert "spare.tmp" in str(ei.value) and "fdatasync of zeros up to offset 1048576" in str(ei.value), str(ei.value)
    assert not list(wal_dir.glob("*.tmp"))
    with Wal.open(wal_dir, CFG) as wal:
        assert len(list(wal.read_from(1))) == acked
