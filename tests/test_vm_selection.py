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

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _collected(marker: str, *paths: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", marker, *paths],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_the_vm_keeps_the_io_uring_cases_and_drops_the_fallbacks() -> None:
    kept = _collected("not host_only", "tests/wal/test_wal_on_stack.py", "tests/ring/test_pins_released.py")
    assert kept, "nothing left for the VM"
    assert not [n for n in kept if "fallback" in n], kept
    assert [n for n in kept if "[auto]" in n] and [n for n in kept if "[uring]" in n], kept


def test_the_fallback_plugins_tests_run_on_the_host_only() -> None:
    assert _collected("not host_only", "tests/plugins/fallback") == []
    assert _collected("host_only", "tests/plugins/fallback")


def test_a_test_not_marked_stays_in_the_vm() -> None:
    kept = _collected("not host_only", "tests/ring/test_cancel_releases_buffer.py")
    everything = _collected("host_only or not host_only", "tests/ring/test_cancel_releases_buffer.py")
    assert kept == everything and kept
