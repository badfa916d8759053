"""``read_from`` over a segment damaged after the log was opened (session 31).

The walk of a segment stops at the first record that does not decode; the
iteration then went on with the next segment, so records counted as durable
were skipped without a word (LSNs 14-24 missing, found by a probe). It raises
``WalCorruptionError`` there now, after yielding what came before."""

from __future__ import annotations

import pathlib

import pytest

from tests.wal.test_damage_table import _flip
from uringstack.wal import Wal, WalConfig, WalCorruptionError

CFG = WalConfig(segment_size_bytes=16 * 1024, max_batch_bytes=8 * 1024, backend="fallback")


def test_a_record_damaged_while_open_stops_read_from_with_an_error(wal_dir: pathlib.Path) -> None:
    data = [b"r%03d" % i + bytes(1000) for i in range(60)]
    with Wal.open(wal_dir, CFG) as wal:
        for x in data:
            wal.append(x)
        (first0, _, _), (first1, _, path1), *_ = wal.segments()
        _flip(path1, 4096 + 1030)  # the second record of the second segment
        got: list[int] = []
        with pytest.raises(WalCorruptionError, match=rf"record LSN {first1 + 1} does not decode") as info:
            for lsn, payload in wal.read_from(1):
                assert payload == data[lsn - 1]
                got.append(lsn)
        assert got == list(range(first0, first1 + 1))  # everything before the damage, in order
        assert info.value.path == str(path1)
        # reading from past the damage still works
        assert [lsn for lsn, _ in wal.read_from(first1 + 20)] == list(range(first1 + 20, 61))
