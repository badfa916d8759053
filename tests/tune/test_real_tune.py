"""Real, short calibrations on this machine's disk: within budget, cached, used by the plan,
shippable as a config include, read-only on block devices, and on-start in open_stack()."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from uringstack.cli import cli
from uringstack.config import load_config
from uringstack.plan import make_plan
from uringstack.probe import probe
from uringstack.probe.tune_cache import cache_dir, load_state
from uringstack.probe.tuning import TuneDocument, TuneRecord
from uringstack.stack import open_stack
from uringstack.tune.runner import tune

pytestmark = pytest.mark.timeout(90)
BUDGET = 3.0


def assert_windows_fit(record: TuneRecord, budget: float) -> None:
    """The budget on the runner's own accounting, which a loaded machine cannot break.

    The measuring windows it ran (each fitted to the time left, shortened and never
    lengthened when a set-up ran slow) add up to no more than the budget.  A runner that
    ignored its budget (or took the 10 s default) fails here; the wall clock is not asserted,
    since on a shared 2-CPU machine the scheduler, not the runner, decides it.  The exact
    skip/shorten logic is checked on a virtual clock in test_search.py."""
    windows = [m.seconds for m in record.measurements if m.status == "ok"]
    assert windows and sum(windows) <= budget, f"windows of {sum(windows):.2f} s for a {budget} s budget"


@pytest.fixture
def xdg(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def test_tune_the_disk_within_budget_then_plan_and_ship(tmp_path: pathlib.Path, xdg: pathlib.Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(cli, ["tune", "--json", "--budget", str(BUDGET), str(data)])
    assert result.exit_code == 0, result.output
    doc = TuneDocument.model_validate_json(result.stdout)
    [record] = doc.records
    assert record.target == str(data) and record.kind == "directory" and record.best is not None
    assert_windows_fit(record, BUDGET)
    ran = {k for m in record.measurements for k in m.settings}
    assert {"batch", "fixedbuf", "sqpoll"} <= ran
    assert set(record.compared) == ran
    # on a loaded machine the last candidates may not fit the budget: they are reported as skipped
    status = [m.status for m in record.measurements]
    assert status[:2] == ["ok", "ok"] and "failed" not in status, [m.reason for m in record.measurements]
    assert status == sorted(status)  # "ok" ... then "skipped", never a gap
    for m in record.measurements:
        if m.status == "ok":  # a mode that starves (SQPOLL on a busy 2-CPU machine) measures zero
            assert (m.iops > 0 and m.cpu_us_per_io > 0) or "no read completed in the window" in m.reason, m
    assert list(data.iterdir()) == []  # the scratch file is gone
    # cached, and the next plan uses it
    [entry] = list(cache_dir().glob("*.json"))
    assert load_state().records[0].record == record
    loaded = load_config(env={})
    plan = make_plan(probe(), loaded.config, loaded.plugin_manager)
    sqpoll = next(v for v in plan.verdicts if v.plugin == "sqpoll")
    if record.comparison("sqpoll") is not None:
        assert sqpoll.reason.startswith("auto: measured: ") and str(data) in sqpoll.reason
    assert any(n.startswith(f"tune: using {data} (cache:{entry}") for n in plan.notes)
    assert any(n.startswith("tune: issue reads in batches of") for n in plan.notes)
    # shipped: the --json output as [core] tune_results, with the cache gone
    shutil.rmtree(xdg)
    shipped = tmp_path / "tuned.json"
    shipped.write_text(result.stdout)
    toml = tmp_path / "uringstack.toml"
    toml.write_text(f'[core]\ntune_results = "{shipped}"\n')
    loaded = load_config(toml, env={})
    plan = make_plan(probe(), loaded.config, loaded.plugin_manager)
    assert any(n.startswith(f"tune: using {data} (core.tune_results:{shipped}") for n in plan.notes)


def test_cli_table_says_where_it_was_written(tmp_path: pathlib.Path, xdg: pathlib.Path) -> None:
    result = CliRunner().invoke(cli, ["tune", "--budget", str(BUDGET), str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"written to {cache_dir()}" in result.output.replace("\n", "")
    assert "best" in result.output and "IOPS" in result.output


def test_an_unwritable_cache_keeps_the_measurement(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """XDG_CACHE_HOME a file (or a read-only file system): the run measured for its whole
    budget, then ended with "error: ... Not a directory" and exit 2, printing nothing. Now a
    one-line warning, the results printed, --json a document for [core] tune_results."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    data = tmp_path / "data"
    data.mkdir()
    command = ["tune", "--json", "--budget", str(BUDGET), str(data)]
    result = subprocess.run(  # (a subprocess: pytest would capture the warning)
        [sys.executable, "-c", "from uringstack.cli import main; main()", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "not written to the tune cache" in warning[0], result.stderr
    doc = TuneDocument.model_validate_json(result.stdout)
    assert doc.records and doc.records[0].best is not None


def test_block_device_is_read_never_written(loop_device: tuple[str, pathlib.Path], xdg: pathlib.Path) -> None:
    dev, backing = loop_device
    before = hashlib.sha256(backing.read_bytes()).hexdigest()
    writes_before = int(pathlib.Path(f"/sys/block/{os.path.basename(dev)}/stat").read_text().split()[4])
    [(record, where)] = tune([dev], BUDGET)
    assert record.kind == "block" and record.best is not None and where
    assert_windows_fit(record, BUDGET)
    assert record.key.device.name == os.path.basename(dev) and record.key.device.fs == ""
    writes_after = int(pathlib.Path(f"/sys/block/{os.path.basename(dev)}/stat").read_text().split()[4])
    assert writes_after == writes_before, "tune wrote to the block device"
    assert hashlib.sha256(backing.read_bytes()).hexdigest() == before


def test_on_start_calibrates_once(tmp_path: pathlib.Path, xdg: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uringstack.tune.runner as runner
    from uringstack.tune.start import ON_START_BUDGET_S

    calls: list[float] = []
    real_tune = runner.tune

    def counted(targets: list[str], budget_s: float, **kwargs: Any) -> Any:
        calls.append(budget_s)
        return real_tune(targets, budget_s, **kwargs)

    monkeypatch.setattr(runner, "tune", counted)
    monkeypatch.chdir(tmp_path)
    cpu = min(os.sched_getaffinity(0))
    with open_stack(overrides={"core.tune": "on-start", "core.cores": [cpu]}) as stack:
        assert stack.caps.tuning is not None and len(stack.caps.tuning.records) == 1
        assert any(n.startswith(f"tune: using {tmp_path} (cache:") for n in stack.plan.notes)
        assert_windows_fit(stack.caps.tuning.records[0].record, ON_START_BUDGET_S)
    assert calls == [ON_START_BUDGET_S] and ON_START_BUDGET_S <= 3.0  # start-up waits about 3 s, once
    [entry] = list(cache_dir().glob("*.json"))
    stamp = entry.stat().st_mtime_ns
    with open_stack(overrides={"core.tune": "on-start", "core.cores": [cpu]}) as stack:
        assert stack.caps.tuning is not None and len(stack.caps.tuning.records) == 1
    assert calls == [ON_START_BUDGET_S], "a valid entry exists: the second open_stack calibrated again"
    assert entry.stat().st_mtime_ns == stamp and list(tmp_path.glob(".uringstack-tune-*")) == []


def test_off_never_measures(tmp_path: pathlib.Path, xdg: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_stack(overrides={"core.cores": [min(os.sched_getaffinity(0))]}) as stack:
        assert stack.config.core.tune == "off"
        assert stack.caps.tuning is not None and stack.caps.tuning.records == []
    assert not cache_dir().exists()


def test_failed_on_start_calibration_falls_back_to_rules(
    tmp_path: pathlib.Path, xdg: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uringstack.tune.runner as runner

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "tune", broken)
    monkeypatch.chdir(tmp_path)
    with open_stack(overrides={"core.tune": "on-start", "core.cores": [min(os.sched_getaffinity(0))]}) as stack:
        notes = "\n".join(stack.plan.notes)
        assert f"core.tune = on-start: calibrating {tmp_path} failed: [Errno 28] No space left on device" in notes
        sqpoll = next(v for v in stack.plan.verdicts if v.plugin == "sqpoll")
        assert "no valid measurement" in sqpoll.reason and "rule" in sqpoll.reason


def test_json_output_is_the_document(tmp_path: pathlib.Path, xdg: pathlib.Path) -> None:
    result = CliRunner().invoke(cli, ["tune", "--json", "--no-cache", "--budget", str(BUDGET), str(tmp_path)])
    assert result.exit_code == 0, result.output
    raw = json.loads(result.stdout)
    assert raw["schema"] == "uringstack.tune/1" and raw["format_version"] == 1
    assert not cache_dir().exists()


TUNE_UNDER_LIMIT = r"""
import json, sys
from uringstack.probe import probe
from uringstack.tune.runner import tune
[(record, _)] = tune([sys.argv[1]], 3.0, write_cache=False)
print(json.dumps({"charged": probe().memlock.rings_charged, "backend": record.backend,
                  "settings": sorted({k for m in record.measurements for k in m.settings})}))
"""


def test_tune_under_a_memlock_limit_too_small_for_rings_files_the_fallback(tmp_path: pathlib.Path) -> None:
    # 8 KiB without CAP_IPC_LOCK: on a kernel charging ring memory not even the smallest storage
    # ring fits, so every stack measured runs on the fallback; until session 34 the record
    # said "uring" (and io_uring-only choices such as SQPOLL were "measured" on the fallback)
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    out = subprocess.run(
        ["prlimit", "--memlock=8192:8192", "--", "setpriv", "--bounding-set", "-ipc_lock", "--inh-caps",
         "-ipc_lock", "--", sys.executable, "-c", TUNE_UNDER_LIMIT, str(data)],
        capture_output=True, text=True, timeout=80, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if not report["charged"]:
        from tests.requires import skip_without

        skip_without("a kernel that charges ring memory to RLIMIT_MEMLOCK (the host's 6.18 does)")
    assert report["backend"] == "fallback", report
    assert "sqpoll" not in report["settings"] and "fixedbuf" not in report["settings"], report
