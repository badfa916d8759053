"""Targets and budgets that cannot be tuned get one clear line naming them."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from uringstack.cli import cli
from uringstack.probe.tuning import TuneRecord, Workload
from uringstack.tune.runner import check_budget, tune
from uringstack.tune.targets import SCRATCH_PREFIX, TuneError, prepared


def test_missing_target(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TuneError, match=f"^{tmp_path}/nope: no such file, directory or block device$"):
        tune([str(tmp_path / "nope")], 5)


def test_tune_errors_are_uringstack_errors(tmp_path: pathlib.Path) -> None:
    # errors.py promises one base for every non-I/O error: an application's
    # `except UringStackError` must catch a target that cannot be tuned
    from uringstack.errors import UringStackError

    assert issubclass(TuneError, UringStackError)
    with pytest.raises(UringStackError, match="no such file"):
        tune([str(tmp_path / "nope")], 5)


def test_character_device_is_refused() -> None:
    with pytest.raises(TuneError, match=r"^/dev/null: a character device; tune a regular file, a directory or a block"):
        tune(["/dev/null"], 5)


def test_a_file_whose_size_cannot_be_read_is_named() -> None:
    """/proc files refuse lseek(SEEK_END): the error was a bare "Invalid argument"."""
    with pytest.raises(TuneError, match=r"^/proc/self/status: cannot read its size \(Invalid argument\)"):
        tune(["/proc/self/status"], 5)


def test_fifo_is_refused(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TuneError, match="not a file, directory or block device"):
        tune([str(fifo)], 5)


def test_too_small_file(tmp_path: pathlib.Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"x" * 4096)
    too_small = r"4096 bytes is too small; random reads need at least 131072 bytes"
    with pytest.raises(TuneError, match=too_small), prepared(str(small), Workload()):
        pass


@pytest.mark.parametrize("budget", [0, -1, -0.5, float("nan"), float("inf")])
def test_budget_must_be_positive_and_finite(budget: float) -> None:
    """(NaN passed both checks and measured; infinity failed every run with an OverflowError
    and wrote that all-failed record over the cache's good one.)"""
    with pytest.raises(TuneError, match=rf"^--budget {budget:g}: must be a positive, finite number of seconds$"):
        check_budget(budget, 1)


def test_budget_too_short_for_the_runs() -> None:
    """Two runs of 0.2 s (and 0.1 s of set-up each) per target, and the 0.5 s each target's
    share keeps for the end: until session 31 the advised minimum left that out, and a
    budget of it was refused again when the runs started ("leaving 0.1 s")."""
    with pytest.raises(TuneError, match=r"^--budget 2: too short for 2 target\(s\) x ~2 runs; give at least 2.2 s$"):
        check_budget(2.0, 2)
    check_budget(2.2, 2)


def test_cli_budget_zero_is_an_error_before_anything_runs(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(cli, ["tune", "--budget", "0", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: --budget 0: must be a positive, finite number of seconds" in result.output
    assert list(tmp_path.iterdir()) == []  # no scratch file was even written


def test_cli_names_a_bad_target(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(cli, ["tune", "--budget", "3", str(tmp_path / "missing")])
    assert result.exit_code == 2 and f"error: {tmp_path}/missing: no such file" in result.output


@pytest.fixture
def read_only_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A small tmpfs mounted read-only (needs root and mount)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_read_only_file_system(read_only_dir: pathlib.Path) -> None:
    with pytest.raises(TuneError, match=rf"^{read_only_dir}: read-only file system; tune an existing file"):
        tune([str(read_only_dir)], 5)


def test_scratch_file_is_removed_even_when_tuning_fails(tmp_path: pathlib.Path) -> None:
    with pytest.raises(RuntimeError), prepared(str(tmp_path), Workload(), scratch_bytes=1 << 20) as target:
        assert os.path.basename(target.path).startswith(SCRATCH_PREFIX) and os.path.getsize(target.path) == 1 << 20
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_help_describes_the_command() -> None:
    text = CliRunner().invoke(cli, ["tune", "--help"]).output
    assert "--budget" in text and "XDG_CACHE_HOME" in text and "read-only" in text


def test_a_budget_eaten_by_start_up_is_named(tmp_path: pathlib.Path) -> None:
    want = rf"^--budget 1.2: \d+\.\d s went to start-up, .* 0.5 s is kept for the end, leaving 0.0 s for {tmp_path}"
    with pytest.raises(TuneError, match=want):
        tune([str(tmp_path)], 1.2, spent_s=1.1)
    assert list(tmp_path.iterdir()) == []


def test_a_budget_over_a_day_is_refused() -> None:
    """``--budget 1e12`` passed: every run's deadline overflowed ``time.sleep``, all candidates
    failed and that record replaced a good cache entry (session 32)."""
    with pytest.raises(TuneError, match=r"^--budget 1e\+12: more than 86400 s \(a day\)"):
        check_budget(1e12, 1)
    check_budget(86_400, 1)


def test_every_target_is_checked_before_any_is_measured(tmp_path: pathlib.Path) -> None:
    """``tune good nope`` measured and cached the first target, then failed on the second,
    against "exits 2 before measuring anything" (session 32)."""
    good = tmp_path / "good.bin"
    good.write_bytes(b"\0" * (1 << 20))
    cache = tmp_path / "cache"
    began = time.perf_counter()
    with pytest.raises(TuneError, match="nope: no such file"):
        tune([str(good), str(tmp_path / "nope")], 3, cache_directory=cache)
    assert not cache.exists()
    assert time.perf_counter() - began < 0.5  # (a measured target takes its 1 s share at least)
    small = tmp_path / "small"
    small.write_bytes(b"x" * 4096)
    with pytest.raises(TuneError, match="4096 bytes is too small"):
        tune([str(good), str(small)], 3, cache_directory=cache)
    assert not cache.exists()


def test_a_run_where_nothing_succeeded_keeps_the_earlier_cache_entry(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uringstack.tune.runner as runner

    target = tmp_path / "f.bin"
    target.write_bytes(b"\0" * (1 << 20))
    cache = tmp_path / "cache"
    [(first, where)] = tune([str(target)], 2.5, cache_directory=cache)
    assert first.best is not None and where
    kept = pathlib.Path(where).read_bytes()

    def nothing_succeeded(*args: object, **kwargs: object) -> TuneRecord:
        return first.model_copy(update={"best": None, "measurements": [], "compared": {}})

    monkeypatch.setattr(runner, "tune_target", nothing_succeeded)
    with pytest.warns(RuntimeWarning, match="no candidate succeeded on .*: not written to the tune cache"):
        [(record, where_now)] = tune([str(target)], 2.5, cache_directory=cache)
    assert record.best is None and where_now == ""
    assert pathlib.Path(where).read_bytes() == kept


def test_tune_says_when_the_config_reads_a_shipped_file_instead(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"\0" * (1 << 20))
    monkeypatch.setenv("URINGSTACK_CORE__TUNE_RESULTS", str(tmp_path / "shipped.json"))
    with pytest.warns(RuntimeWarning, match=r"core.tune_results = .*shipped.json is set: plans with this config read"):
        tune([str(target)], 2.5, cache_directory=tmp_path / "cache")


def test_sigterm_removes_the_scratch_file(tmp_path: pathlib.Path) -> None:
    """The default SIGTERM action left a directory target's 64 MiB scratch file (session 32)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    run = "import sys; from uringstack.cli import main; sys.argv[0] = 'uringstack'; main()"
    target = tmp_path / "dir"
    target.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", run, "tune", "--budget", "30", str(target)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(SCRATCH_PREFIX) for p in target.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)  # (into the measuring)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(target.iterdir()) == []
