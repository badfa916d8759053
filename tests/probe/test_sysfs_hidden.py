"""A probe where /sys is hidden (a container without sysfs) says so.

Without sysfs the device scan finds nothing, which read as "this machine has no
block devices": the report and the iopoll verdict now name the cause."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.requires import skip_without
from uringstack.probe.blockdev import sysfs_hidden_reason


def test_a_visible_sysfs_gives_no_reason(tmp_path: Path) -> None:
    (tmp_path / "class" / "block").mkdir(parents=True)
    (tmp_path / "dev" / "block").mkdir(parents=True)
    assert sysfs_hidden_reason(tmp_path) == ""
    assert sysfs_hidden_reason() == ""  # this machine's own /sys


def test_an_empty_sysfs_is_named_with_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "dev" / "block").mkdir(parents=True)
    reason = sysfs_hidden_reason(tmp_path)
    assert f"sysfs is not visible at {tmp_path}" in reason
    assert str(tmp_path / "class" / "block") in reason and str(tmp_path / "dev" / "block") not in reason
    assert "mount sysfs" in reason


def test_the_probe_names_a_hidden_sysfs() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        skip_without("root and unshare(1), to hide /sys in a private mount namespace")
    script = (
        "mount -t tmpfs none /sys && "
        f"{sys.executable} -c 'import json; from uringstack.probe import probe; c = probe(); "
        'print(json.dumps({"devices": len(c.devices), "error": c.device_scan_error}))\''
    )
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    if out.returncode != 0 and "unshare" in out.stderr:
        skip_without(f"a private mount namespace (unshare -m failed: {out.stderr.strip()[-200:]})")
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"devices": 0' in out.stdout
    assert "sysfs is not visible at /sys" in out.stdout, out.stdout
