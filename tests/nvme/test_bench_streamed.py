"""The ``streamed +iopoll`` and ``streamed +passthrough`` bench rows measure what they name.

Each runs on its handle's own ring (the worker's IOPOLL ring, the passthrough
ring) with that ring's queue depth at QD, and starts prepared batches many
times larger than it.  Runs inside ../shared/nvme-vm (scripts/test-nvme.sh);
the namespace and null_blk are read, never written (a block device target is
benchmarked read-only).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.streamed_rows import check_streamed_row, record_starts
from uringstack.bench import runner
from uringstack.bench.ladder import RUNGS
from uringstack.bench.spec import BenchSpec
from uringstack.probe.blockdev import device_size
from uringstack.probe.model import Capabilities

from .conftest import BLK

pytestmark = pytest.mark.nvme


def _run_streamed(monkeypatch: pytest.MonkeyPatch, mode: str, device: Path) -> None:
    seen = record_starts(monkeypatch)
    spec = BenchSpec(
        "randread", file=str(device), file_size=device_size(str(device)), queue_depth=8, duration=0.5, direct=True
    )
    row = runner.run_mode(spec, RUNGS[mode])
    backend = RUNGS[mode].expect_backend
    assert backend is not None
    check_streamed_row(row, spec, seen, backend)


@pytest.mark.timeout(120)
def test_streamed_iopoll_row_runs_on_the_iopoll_ring_at_its_queue_depth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _run_streamed(monkeypatch, "streamed +iopoll", BLK)


@pytest.mark.timeout(120)
def test_streamed_iopoll_row_on_null_blk(monkeypatch: pytest.MonkeyPatch, caps: Capabilities, nullb: Path) -> None:
    dev = caps.device_for_path(str(nullb))
    assert dev is not None
    if dev.io_poll:
        _run_streamed(monkeypatch, "streamed +iopoll", nullb)
        return
    # 5.10's null_blk has no poll queues: the row is skipped for the reason the plan gives,
    # never measured on the storage ring under the IOPOLL row's name
    spec = BenchSpec("randread", file=str(nullb), file_size=device_size(str(nullb)), queue_depth=8, duration=0.5)
    row = runner.run_mode(spec, RUNGS["streamed +iopoll"])
    assert row.status == "skipped" and "served by uring, not iopoll" in row.reason, (row.status, row.reason)


@pytest.mark.timeout(120)
def test_streamed_passthrough_row_runs_on_the_passthrough_ring_at_its_queue_depth(
    monkeypatch: pytest.MonkeyPatch, passthrough: None
) -> None:
    _run_streamed(monkeypatch, "streamed +passthrough", BLK)
