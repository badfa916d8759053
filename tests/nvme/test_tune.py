"""`uringstack tune` on the VM's real block devices: the emulated NVMe namespace and null_blk.

Each run goes through the command itself (`uringstack tune --json`), then checks
that it kept to its budget, never wrote the device (its block-layer write and
discard counters, and on the namespace the bytes of blocks written beforehand),
stored a cache entry keyed by the device's identity that `load_state` accepts,
and that what is opened afterwards uses it: `uringstack plan --json` quotes
the measurement and a stack with the default config serves the device the way
the measurement chose.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from uringstack import open_stack
from uringstack.cli import cli
from uringstack.probe.model import Capabilities
from uringstack.probe.tune_cache import cache_dir, entry_path, load_state, read_document
from uringstack.probe.tuning import TuneDocument, TuneRecord

from .conftest import BLK

pytestmark = pytest.mark.nvme

BUDGET_S = 30.0
"""The guest runs under TCG (every instruction emulated): probing and each stack's set-up take
about 50 times as long as on hardware, so the default 10 s would leave no room to measure."""
SLACK_S = 1.0
"""Over the budget allowed for the CLI's own work outside tune() (printing the JSON) on a TCG guest."""
BS = 4096


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def write_counters(device: Path) -> dict[str, int]:
    """The block layer's write, discard and flush counters of *device* (Documentation/block/stat.rst)."""
    fields = [int(x) for x in Path(f"/sys/block/{device.name}/stat").read_text().split()]
    names = {4: "write ios", 6: "write sectors", 11: "discard ios", 15: "flush ios"}
    return {name: fields[i] for i, name in names.items() if i < len(fields)}


def tune_cli(device: Path, budget: float = BUDGET_S) -> tuple[TuneRecord, float]:
    # the budget is the command's time once Python has started and imported uringstack
    # (docs/tune.md): load the command's modules first, as `uringstack tune` has by then
    assert CliRunner().invoke(cli, ["tune", "--help"]).exit_code == 0
    t0 = time.perf_counter()
    result = CliRunner().invoke(cli, ["tune", "--json", "--budget", str(budget), str(device)])
    wall = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    [record] = TuneDocument.model_validate_json(result.stdout).records
    return record, wall


def check_record(record: TuneRecord, device: Path, wall: float, budget: float, caps: Capabilities) -> None:
    runs = [(m.settings, m.status, round(m.seconds, 2), m.reason) for m in record.measurements]
    assert wall <= budget + SLACK_S, (
        f"tune {device} took {wall:.2f} s for a {budget} s budget: {record.elapsed_s} s in the runs {runs}"
    )
    assert record.elapsed_s <= budget, runs
    assert record.target == str(device) and record.kind == "block" and record.best is not None
    status = [m.status for m in record.measurements]
    assert status[:2] == ["ok", "ok"] and "failed" not in status, [(m.settings, m.reason) for m in record.measurements]
    assert status == sorted(status)  # skipped (budget exhausted) only at the end
    dev = caps.device_for_path(str(device))
    assert dev is not None
    if dev.io_poll:
        # the device polls: IOPOLL is one of the dimensions, and was measured
        on = [m for i in record.compared.get("iopoll", []) if (m := record.measurements[i]).settings["iopoll"] == "on"]
        assert on and on[0].status == "ok", f"IOPOLL was not measured on {device}: {record.measurements}"
    else:
        assert "iopoll" not in record.compared


def check_cache(record: TuneRecord, device: Path) -> None:
    entry = entry_path(record)
    assert entry.parent == cache_dir() and entry.is_file()
    assert read_document(entry).records == [record]
    state = load_state()
    assert state.ignored == [] and [(a.record, a.device) for a in state.records] == [(record, device.name)]


def check_used_afterwards(record: TuneRecord, device: Path) -> None:
    """`uringstack plan` quotes the measurement; a default stack serves *device* as measured."""
    result = CliRunner().invoke(cli, ["plan", "--json"])
    assert result.exit_code == 0, result.output
    plan: dict[str, Any] = json.loads(result.stdout)
    reasons = {v["plugin"]: v["reason"] for v in plan["verdicts"]}
    assert any(n.startswith(f"tune: using {device} (cache:") for n in plan["notes"]), plan["notes"]
    for plugin in ("sqpoll", "fixedbuf", "iopoll"):
        if record.comparison(plugin) is not None:
            assert "measured: " in reasons[plugin] and f"on {device} (tuned " in reasons[plugin], reasons[plugin]
    iopoll = record.comparison("iopoll")
    cpu = min(os.sched_getaffinity(0))
    with open_stack(overrides={"core.cores": [cpu]}) as stack, stack.open(device, direct=True) as handle:
        if iopoll is not None:
            assert handle.backend == ("iopoll" if iopoll.best == "on" else "uring"), (handle.backend, iopoll)
        buf = handle.lease_buffers(1, BS)
        try:
            assert handle.read_many([0], buf) == [BS]
        finally:
            handle.release_buffers(buf)


def test_tune_nvme_namespace(caps: Capabilities, xdg: Path) -> None:
    rng = random.Random(23)
    size = int(Path(f"/sys/block/{BLK.name}/size").read_text()) * 512
    blocks = sorted(rng.sample(range(size // BS), 256))
    pattern = mmap.mmap(-1, BS * len(blocks))
    pattern[:] = rng.randbytes(len(pattern))
    fd = os.open(BLK, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
    try:
        for i, b in enumerate(blocks):  # known bytes where the reads land: they must survive the tune
            assert os.pwritev(fd, [memoryview(pattern)[i * BS : (i + 1) * BS]], b * BS) == BS
        os.fsync(fd)
    finally:
        os.close(fd)
    before = write_counters(BLK)
    record, wall = tune_cli(BLK)
    assert write_counters(BLK) == before, "tune wrote to the namespace"
    back = mmap.mmap(-1, BS * len(blocks))
    fd = os.open(BLK, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        for i, b in enumerate(blocks):
            assert os.preadv(fd, [memoryview(back)[i * BS : (i + 1) * BS]], b * BS) == BS
    finally:
        os.close(fd)
    assert back[:] == pattern[:], "the namespace's bytes changed during tune"
    check_record(record, BLK, wall, BUDGET_S, caps)
    # keyed by what identifies the drive: its model, serial number and WWN from sysfs
    sys_dev = Path(f"/sys/block/{BLK.name}")
    key = record.key.device
    assert key.name == BLK.name and key.model == (sys_dev / "device" / "model").read_text().strip()
    assert key.model.startswith("QEMU") and key.serial == (sys_dev / "device" / "serial").read_text().strip()
    if (sys_dev / "wwid").exists():
        assert key.wwn == (sys_dev / "wwid").read_text().strip()
    assert key.size_bytes == size and key.fs == ""
    check_cache(record, BLK)
    check_used_afterwards(record, BLK)


def test_tune_nullb(caps: Capabilities, nullb: Path, xdg: Path) -> None:
    # null_blk (not memory_backed) keeps no data: the block layer's counters are the check
    before = write_counters(nullb)
    record, wall = tune_cli(nullb)
    assert write_counters(nullb) == before, "tune wrote to null_blk"
    check_record(record, nullb, wall, BUDGET_S, caps)
    # null_blk has no model, serial or WWN: keyed by its device number and size
    key = record.key.device
    assert key.name == nullb.name and key.serial == key.wwn == ""
    assert key.devnum == Path(f"/sys/block/{nullb.name}/dev").read_text().strip()
    check_cache(record, nullb)
    check_used_afterwards(record, nullb)


def test_bench_tuned_row_on_nullb(nullb: Path, xdg: Path) -> None:
    # the one command of issue 15's "done means": calibrate, run the ladder, then the default
    # config's stack; under TCG the numbers are noise, the row and its ratio must be there
    args = [
        "bench",
        "randread",
        "--tuned",
        "--tune-budget",
        str(BUDGET_S),
        "--no-fio",
        "-t",
        "0.5",
        "--file",
        str(nullb),
        "--modes",
        "batched,+fixedbuf",
        "--json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {r["mode"]: r for r in doc["results"]}
    tuned = rows["tuned (auto)"]
    assert tuned["status"] == "ok", tuned["reason"]
    assert tuned["details"]["measured"], tuned["details"]["notes"]
    summary = doc["summary"]["tuned"]
    assert summary["best_mode"] in ("batched", "+fixedbuf") and summary["vs_best"] is not None
    assert summary["calibration"]["target"] == str(nullb) and summary["calibration"]["best"]
