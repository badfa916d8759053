"""A checkpoint (``truncate_before``) meeting a reader in another thread, and recovery after one.

Both found by a probe of the public API in session 31:

- ``read_from`` copied the segment list under the writer's lock and opened the
  files after releasing it; ``truncate_before`` deletes the files it took out
  of the list after releasing it too, so a checkpoint between the two steps made
  the reader's open fail with a bare ``FileNotFoundError`` (docs/wal.md says a
  snapshot reads segments a checkpoint removes after the call).
- ``point_in_time`` recovery of a log whose oldest kept segment (after a
  checkpoint) had a damaged header discarded every segment and started the
  log again at LSN 1: LSNs below the checkpoint were given out again.
"""

from __future__ import annotations

import os
import pathlib
import threading
from typing import Any

import pytest

import uringstack.wal.log as log_module
from uringstack.wal import Wal, WalConfig

CFG = WalConfig(segment_size_bytes=16 * 1024, max_batch_bytes=8 * 1024, backend="fallback")


def test_read_from_keeps_reading_segments_a_checkpoint_removes_meanwhile(
    wal_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint runs in another thread between ``read_from``'s snapshot and its opens,
    as far as the log lets it: with the opens under the lock it waits for them."""
    data = [os.urandom(1000) for _ in range(40)]
    wal = Wal.open(wal_dir, CFG)
    try:
        for x in data:
            wal.append(x)
        assert len(wal.segments()) >= 3
        real = log_module.iter_records
        removed: list[int] = []
        threads: list[threading.Thread] = []

        def checkpoint_first(*args: Any) -> Any:
            t = threading.Thread(target=lambda: removed.append(wal.truncate_before(wal.durable_lsn)))
            threads.append(t)
            t.start()
            t.join(0.5)  # (blocked on the log's lock when read_from holds it)
            return real(*args)

        monkeypatch.setattr(log_module, "iter_records", checkpoint_first)
        records = wal.read_from(1)
        monkeypatch.undo()
        got = [payload for _, payload in records]
        threads[0].join(5)
        assert removed and removed[0] >= 2, removed  # the checkpoint did remove segments
        assert got == data
    finally:
        wal.close()


def test_point_in_time_after_a_checkpoint_never_reuses_lsns(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, CFG) as wal:
        for i in range(60):
            wal.append(b"r%03d" % i + bytes(1000))
        assert wal.truncate_before(40) >= 2
        first = wal.segments()[0][0]
        assert 1 < first <= 40
    oldest = wal_dir / sorted(n for n in os.listdir(wal_dir) if n.endswith(".wal"))[0]
    with open(oldest, "r+b") as f:  # a bit of the oldest segment's header
        f.seek(20)
        b = f.read(1)
        f.seek(20)
        f.write(bytes([b[0] ^ 1]))
    with Wal.open(wal_dir, CFG, recovery="point_in_time") as wal:
        assert wal.recovered.damage is not None
        assert wal.next_lsn == first  # where the log began after the checkpoint, not 1
        assert wal.append(b"new") == first
    with Wal.open(wal_dir, CFG, recovery="absolute") as wal:
        assert list(wal.read_from(1)) == [(first, b"new")]
