"""Runs ``test_devices_umockdev.py`` once per fixture inside ``umockdev-run``.

One ``pytest`` invocation still covers everything: this test starts the
inner pytest as a subprocess with the fixture loaded and checks its result.
``scripts/ensure-umockdev.sh`` installs Debian's umockdev when it is missing
(root + apt-get); otherwise the tests skip with the script's reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURES = ("nvme_poll", "nvme_nopoll", "nvme_multipath")
EXPECTED_PASSED = {"nvme_poll": 2, "nvme_nopoll": 1, "nvme_multipath": 1}


@pytest.fixture(scope="session")
def umockdev_run() -> str:
    found = shutil.which("umockdev-run")
    if found:
        return found
    script = REPO / "scripts" / "ensure-umockdev.sh"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=600)
    found = shutil.which("umockdev-run")
    if not found:
        pytest.skip(
            f"umockdev-run missing and {script.name} could not install it "
            f"(exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return found


@pytest.mark.parametrize("fixture", FIXTURES)
def test_device_probe_under_umockdev(umockdev_run: str, fixture: str) -> None:
    env = dict(os.environ, URINGSTACK_UMOCKDEV_FIXTURE=fixture)
    cmd = [
        umockdev_run, "-d", str(HERE / "fixtures" / f"{fixture}.umockdev"), "--",
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
        str(HERE / "test_devices_umockdev.py"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # Guard against a silently skipped inner run: the fixture's tests must pass.
    assert f"{EXPECTED_PASSED[fixture]} passed" in out, out
