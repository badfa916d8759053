"""hypothesis properties of recovery: cuts and bit flips anywhere in a written log."""

from __future__ import annotations

import pathlib
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uringstack.wal import Wal, WalConfig, WalCorruptionError
from uringstack.wal.record import HEADER_BYTES, encode, padded_size
from uringstack.wal.recovery import scan
from uringstack.wal.segment import DATA_START, list_segments

CFG = WalConfig(segment_size_bytes=32 * 1024, max_batch_bytes=4096, backend="fallback", direct_io="off")
records_st = st.lists(st.binary(min_size=0, max_size=700), min_size=1, max_size=40)
_settings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _write(d: pathlib.Path, records: list[bytes]) -> None:
    with Wal.open(d, CFG) as wal:
        for r in records:
            wal.append(r)


def _layout(records: list[bytes]) -> list[tuple[int, int, int]]:
    """(segment index, offset, covered bytes) of each record, by replaying the writer's rule."""
    out, seg, off = [], 0, DATA_START
    for r in records:
        size = padded_size(len(r))
        if off + size > CFG.segment_size_bytes:
            seg, off = seg + 1, DATA_START
        out.append((seg, off, HEADER_BYTES + len(r)))
        off += size
    return out


@_settings
@given(records_st, st.data())
def test_cut_anywhere_in_last_segment_keeps_exactly_the_complete_prefix(
    records: list[bytes], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        _write(d, records)
        layout = _layout(records)
        last_seg = layout[-1][0]
        path = list_segments(d)[last_seg][1]
        in_last = [(i, off, n) for i, (s, off, n) in enumerate(layout) if s == last_seg]
        end = in_last[-1][1] + in_last[-1][2]
        cut = data.draw(st.integers(DATA_START, end))
        with open(path, "r+b") as f:  # everything from the cut on never reached the disk
            f.seek(cut)
            f.write(bytes(end - cut))
        # a record survives iff every byte the cut zeroed was already zero
        survivors = 0
        for i, off, n in in_last:
            raw = encode(i + 1, records[i])[:n]
            if any(raw[max(0, cut - off) :]):
                break
            survivors += 1
        with Wal.open(d, CFG) as wal:  # tolerate_tail: the cut is a torn tail
            got = list(wal.read_from(1))
        assert [p for _, p in got] == records[: in_last[0][0] + survivors]


@_settings
@given(records_st, st.data())
def test_bit_flip_never_returns_a_corrupt_record(records: list[bytes], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        _write(d, records)
        layout = _layout(records)
        victim = data.draw(st.integers(0, len(records) - 1))
        seg, off, covered = layout[victim]
        bit = data.draw(st.integers(0, covered * 8 - 1))
        path = list_segments(d)[seg][1]
        with open(path, "r+b") as f:
            f.seek(off + bit // 8)
            b = f.read(1)[0]
            f.seek(off + bit // 8)
            f.write(bytes([b ^ (1 << (bit % 8))]))
        with pytest.raises(WalCorruptionError):
            Wal.open(d, CFG, recovery="absolute")
        assert scan(d).damage is not None
        with Wal.open(d, CFG, recovery="point_in_time") as wal:
            got = list(wal.read_from(1))
        # exactly the records before the damaged one, each intact
        assert [p for _, p in got] == records[:victim]
