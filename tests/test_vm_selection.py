"""What the NVMe VM's kernel matrix deselects (``-m "not host_only"``, scripts/vm-guest-tests.sh).

The matrix runs the host groups on 5.10, 6.1 and 6.12 under emulation, within CI's
90 minutes; tests that make no io_uring call whose behaviour varies by kernel are
``host_only`` and run on the host alone.  These checks keep that cut from taking
the io_uring side of a test with it.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = (
    "tests/wal/test_wal_on_stack.py",  # parametrized "auto" / "fallback"
    "tests/ring/test_pins_released.py",  # parametrized "uring" / "fallback"
    "tests/plugins/fallback",  # the fallback plugin's own tests
    "tests/ring/test_cancel_releases_buffer.py",  # nothing marked
)


def _collected(*marker: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *marker, *SAMPLE],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line for line in proc.stdout.splitlines() if "::" in line}


@pytest.fixture(scope="module")
def kept() -> tuple[set[str], set[str]]:
    """(every test of the sample, those the VM runs)."""
    return _collected(), _collected("-m", "not host_only")


def test_the_vm_keeps_the_io_uring_cases_and_drops_the_fallbacks(kept: tuple[set[str], set[str]]) -> None:
    _, vm = kept
    assert not [n for n in vm if "fallback" in n], vm
    assert [n for n in vm if "[auto]" in n] and [n for n in vm if "[uring]" in n], vm


def test_the_fallback_plugins_tests_run_on_the_host_only(kept: tuple[set[str], set[str]]) -> None:
    everything, vm = kept
    assert [n for n in everything if n.startswith("tests/plugins/fallback/")]
    assert not [n for n in vm if n.startswith("tests/plugins/fallback/")]


def test_a_test_not_marked_stays_in_the_vm(kept: tuple[set[str], set[str]]) -> None:
    everything, vm = kept
    unmarked = {n for n in everything if n.startswith("tests/ring/test_cancel_releases_buffer.py")}
    assert unmarked and unmarked <= vm
