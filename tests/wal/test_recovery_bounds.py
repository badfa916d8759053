"""Exact bounds of recovery's classification and of where appends resume; each test
fails when the bound it names is off (issue 12, "Tests that would have caught it")."""

from __future__ import annotations

import os
import pathlib

import pytest

from uringstack.wal import Wal, WalConfig, WalCorruptionError
from uringstack.wal.recovery import scan, walk
from uringstack.wal.segment import BLOCK_BYTES, list_segments, read_header

CFG = WalConfig(segment_size_bytes=256 * 1024, max_batch_bytes=8 * 1024, backend="fallback")


def _poke(path: pathlib.Path, offset: int, xor: int = 0x10) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ xor]))


def _record_offsets(path: pathlib.Path, first_lsn: int) -> list[int]:
    with open(path, "rb") as f:
        return [off for off, _lsn, _p in walk(f.read(), first_lsn)]


@pytest.mark.parametrize(("past_window", "torn"), [(-1, True), (0, False)])
def test_torn_tail_window_is_floored_to_the_block(wal_dir: pathlib.Path, past_window: int, torn: bool) -> None:
    """Damage at P is a torn tail only if every non-zero byte after it lies before
    block_floor(P) + max_write_bytes: the last write started at the block holding P."""
    data = [os.urandom(1000) for _ in range(5)]
    with Wal.open(wal_dir, CFG) as wal:
        for d in data:
            wal.append(d)
    seg = list_segments(wal_dir)[0][1]
    last = _record_offsets(seg, 1)[-1]
    assert last % BLOCK_BYTES, "the test needs a last record that does not start on a block"
    _poke(seg, last + 20)  # the last record's payload: it no longer decodes
    window_end = last - last % BLOCK_BYTES + CFG.max_write_bytes
    _poke(seg, window_end + past_window, 0xFF)
    d = scan(wal_dir).damage
    assert d is not None and d.offset == last and d.torn_tail is torn, d
    if torn:
        with Wal.open(wal_dir, CFG) as wal:
            assert [p for _, p in wal.read_from(1)] == data[:4]
    else:
        with pytest.raises(WalCorruptionError, match="corruption"):
            Wal.open(wal_dir, CFG)


def test_damage_in_the_last_record_of_an_older_segment_is_corruption(wal_dir: pathlib.Path) -> None:
    """A newer segment that holds even one record makes damage before it corruption: a
    torn write is always the last one.  (Shaped like a torn tail inside its own segment.)"""
    cfg = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    data: list[bytes] = []
    with Wal.open(wal_dir, cfg) as wal:
        while len(wal.segments()) < 3:
            data.append(os.urandom(1000))
            wal.append(data[-1])
    segs = list_segments(wal_dir)
    assert len(segs) == 3
    newest_records = len(_record_offsets(segs[2][1], segs[2][0]))
    assert newest_records == 1  # the newest segment holds exactly one record
    first, second = segs[1]
    last = _record_offsets(second, first)[-1]
    _poke(second, last + 100)
    s = scan(wal_dir)
    assert s.damage is not None and s.damage.path == second and not s.damage.torn_tail
    for mode in ("tolerate_tail", "absolute"):
        with pytest.raises(WalCorruptionError, match="corruption"):
            Wal.open(wal_dir, cfg, recovery=mode)
    assert list_segments(wal_dir) == segs  # nothing was discarded
    bad_lsn = segs[2][0] - 1
    with Wal.open(wal_dir, cfg, recovery="point_in_time") as wal:
        assert [p for _, p in wal.read_from(1)] == data[: bad_lsn - 1]
    assert (wal_dir / (segs[2][1].name + ".discarded")).exists()


@pytest.mark.parametrize(
    "change", [{"max_batch_bytes": 16 * 1024}, {"segment_size_bytes": 128 * 1024}], ids=["max_batch", "segment_size"]
)
def test_appends_never_go_into_a_segment_with_another_header(wal_dir: pathlib.Path, change: dict[str, int]) -> None:
    """Recovery bounds a torn write by the max_write_bytes in the segment's header, so a
    writer configured differently must start a new segment rather than append to it."""
    old = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    new = WalConfig(**{**old.model_dump(), **change})
    with Wal.open(wal_dir, old) as wal:
        wal.append(b"a")
    with Wal.open(wal_dir, new) as wal:
        assert wal.append(b"b") == 2
        assert len(wal.segments()) == 2
    segs = list_segments(wal_dir)
    h_old, h_new = read_header(segs[0][1]), read_header(segs[1][1])
    assert (h_old.segment_bytes, h_old.max_write_bytes) == (old.segment_size_bytes, old.max_write_bytes)
    assert (h_new.first_lsn, h_new.segment_bytes, h_new.max_write_bytes) == (
        2, new.segment_size_bytes, new.max_write_bytes,
    )  # fmt: skip
    assert len(_record_offsets(segs[0][1], 1)) == 1
    with Wal.open(wal_dir, new, recovery="absolute") as wal:
        assert list(wal.read_from(1)) == [(1, b"a"), (2, b"b")]
    # and the same configuration keeps appending where the log ends
    with Wal.open(wal_dir, new) as wal:
        wal.append(b"c")
        assert len(wal.segments()) == 2
