"""A real seccomp filter denies io_uring_setup (as Docker does): the probe must say so."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).resolve().parent / "seccomp_deny_uring.py"

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="the BPF filter in seccomp_deny_uring.py is written for x86_64 syscall numbers",
)

PROBE_JSON = "from uringstack.probe import probe; print(probe(devices=False).model_dump_json())"
RUN_CLI = "import sys; from uringstack.cli import main; sys.argv[0] = 'uringstack'; main()"


def _under_filter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HELPER), sys.executable, *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_probe_reports_seccomp_blocker() -> None:
    proc = _under_filter("-c", PROBE_JSON)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    uring = report["uring"]
    assert uring["usable"] is False
    assert uring["blocker"] == "seccomp"
    assert "blocked by seccomp" in uring["reason"]
    # No flag can be accepted when no ring can be created at all.
    assert not any(f["accepted"] for f in uring["setup_flags"].values())


def test_filter_only_denies_io_uring() -> None:
    # The same process image can still do ordinary I/O: the filter is precise.
    proc = _under_filter("-c", "import os; print(len(os.listdir('/')) > 0)")
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr


def test_cli_exits_zero_with_seccomp_verdict() -> None:
    proc = _under_filter("-c", RUN_CLI, "probe", "--no-devices")
    assert proc.returncode == 0, proc.stderr
    assert "io_uring: not usable: io_uring_setup blocked by seccomp" in proc.stdout
    assert "fallback: usable" in proc.stdout
