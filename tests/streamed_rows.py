"""What a ``streamed`` bench row must do, checked alike on the host (tests/bench/test_rows.py)
and in the NVMe VM (tests/nvme/test_bench_streamed.py): start prepared batches of
``stream_ops(QD) / 2`` ops on its handle's ring, whose queue depth (``cq_cap``) is QD, and
report what it moved and no latency (a batch's time is not its ops')."""

from __future__ import annotations

from typing import Any

import pytest

from uringstack.bench.ladder import stream_ops
from uringstack.bench.metrics import ModeResult
from uringstack.bench.spec import BenchSpec
from uringstack.stack.prepared import PreparedIO

Start = tuple[int, int | None, str]  # ops started, the ring's cq_cap, the handle's backend


def record_starts(monkeypatch: pytest.MonkeyPatch) -> list[Start]:
    """Every ``PreparedIO.start`` from now on, as a :data:`Start` (the start still runs)."""
    seen: list[Start] = []
    real = PreparedIO.start

    def recording(self: PreparedIO, offsets: Any) -> Any:
        ring = self._handle.ring
        seen.append((len(offsets), None if ring is None else ring.cq_cap, self._handle.backend))
        return real(self, offsets)

    monkeypatch.setattr(PreparedIO, "start", recording)
    return seen


def check_streamed_row(row: ModeResult, spec: BenchSpec, seen: list[Start], backend: str) -> None:
    assert row.status == "ok", row.reason
    assert set(seen) == {(stream_ops(spec.queue_depth) // 2, spec.queue_depth, backend)}
    assert len(seen) * stream_ops(spec.queue_depth) // 2 >= row.ops > 0
    assert row.bytes == row.ops * spec.block_size
    assert row.lat_us == {}
