"""scripts/test-nvme.sh tells a guest that died mid-run (failure) from a VM that never booted (skip).

A stand-in for ../shared/nvme-vm/run (NVME_VM_RUN) plays each outcome, so the
decision logic is checked on any machine, in seconds, without a VM.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.requires import skip_without

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test-nvme.sh"


def _run(tmp_path: Path, body: str, kernels: str = "6.1") -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "run"
    fake.write_text("#!/bin/sh\n" + body)
    fake.chmod(0o755)
    env = {**os.environ, "NVME_VM_RUN": str(fake), "NVME_KERNELS": kernels}
    return subprocess.run(["bash", str(SCRIPT), "-k", "no_such_test_name"], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_a_guest_oops_after_boot_fails_the_run_at_once(tmp_path: Path) -> None:
    # What run does on an oops: the guest printed its marker, then the VM panicked: exit 125.
    body = 'echo "test-nvme: guest booted (6.1.0-57-amd64)"\necho "RIP: 0010:bio_poll+0x1d/0x150" >&2\nexit 125\n'
    done = _run(tmp_path, body)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "6.1 (6.1.0-57-amd64): FAILED" in done.stdout and "guest kernel died" in done.stdout
    assert "bio_poll" in done.stderr  # run's kernel log reaches the user


def test_a_vm_that_never_booted_is_a_skip_with_the_reason(tmp_path: Path) -> None:
    done = _run(tmp_path, 'echo "qemu: cannot boot" >&2\nexit 125\n', kernels="6.1 6.12")
    assert "6.1: SKIPPED: the VM did not boot (exit 125" in done.stdout
    assert "6.12: SKIPPED" in done.stdout
    assert "no NVMe VM booted" in done.stderr  # then the group runs on the host, where it skips
    assert done.returncode in (0, 5), done.stdout + done.stderr  # 5: pytest collected nothing


def test_a_failing_test_in_the_guest_fails_the_run(tmp_path: Path) -> None:
    done = _run(tmp_path, 'echo "test-nvme: guest booted (6.12.1)"\necho "1 failed in 3s"\nexit 1\n', kernels="6.12")
    assert done.returncode == 1 and "6.12 (6.12.1): FAILED" in done.stdout


@pytest.mark.parametrize("kernels", ["5.9"])
def test_an_unknown_kernel_name_is_a_usage_error(tmp_path: Path, kernels: str) -> None:
    done = _run(tmp_path, "exit 0\n", kernels=kernels)
    assert done.returncode == 2 and "unknown kernel '5.9'" in done.stderr


def test_after_one_kernel_found_no_kvm_the_others_start_under_tcg(tmp_path: Path) -> None:
    # The stand-in records its arguments and, like run, caches "tcg" for its suite's image.
    cache = tmp_path / "cache"
    body = (
        'echo "$NVME_VM_SUITE: $*" | cut -d- -f1-3 >> "$XDG_CACHE_HOME/calls"\n'
        'mkdir -p "$XDG_CACHE_HOME/nvme-vm${NVME_VM_SUITE:+-$NVME_VM_SUITE}"\n'
        'printf "host\\ntcg\\n" > "$XDG_CACHE_HOME/nvme-vm${NVME_VM_SUITE:+-$NVME_VM_SUITE}/accel"\n'
        'echo "test-nvme: guest booted (x)"\necho "1 passed in 1s"\nexit 0\n'
    )
    cache.mkdir()
    fake = tmp_path / "run"
    fake.write_text("#!/bin/sh\n" + body)
    fake.chmod(0o755)
    env = {**os.environ, "NVME_VM_RUN": str(fake), "NVME_KERNELS": "5.10 6.12", "XDG_CACHE_HOME": str(cache)}
    env.pop("NVME_VM_ACCEL", None)
    done = subprocess.run(["bash", str(SCRIPT), "-k", "x"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = (cache / "calls").read_text().splitlines()
    assert calls[0].startswith("bullseye: --timeout"), calls  # the first kernel probes (auto)
    assert calls[1].startswith("trixie: --accel tcg"), calls  # the next one skips the probe


def test_the_summary_names_both_parts_and_a_host_group_failure_fails_the_run(tmp_path: Path) -> None:
    # the guest runs the NVMe group, then the host groups (scripts/vm-guest-tests.sh)
    body = 'echo "test-nvme: guest booted (5.10.0-46-amd64)"\necho "25 passed, 20 skipped in 30.1s"\n'
    done = _run(tmp_path, body + 'echo "700 passed, 3 skipped in 400.2s"\nexit 0\n', kernels="5.10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NVMe group: 25 passed, 20 skipped; host groups: 700 passed, 3 skipped" in done.stdout
    done = _run(tmp_path, body + 'echo "1 failed, 699 passed in 400.2s"\nexit 1\n', kernels="5.10")
    assert done.returncode == 1 and "5.10 (5.10.0-46-amd64): FAILED" in done.stdout
    assert "host groups: 1 failed, 699 passed" in done.stdout
    # the default host groups run as two tagged parts side by side; both summaries are kept
    parts = 'echo "[h1] 400 passed, 3 skipped in 200.1s"\necho "[h2] 1 failed, 299 passed in 210.0s"\nexit 1\n'
    done = _run(tmp_path, body + parts, kernels="5.10")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "host groups: [h1] 400 passed, 3 skipped; [h2] 1 failed, 299 passed" in done.stdout


def test_the_tail_names_every_failed_test_with_its_kernel(tmp_path: Path) -> None:
    # CI shows the tail of the run only: stop 55's "[h1] 1 failed" on 5.10 named no test.
    body = (
        'echo "test-nvme: guest booted (5.10.0-46-amd64)"\necho "25 passed in 30.1s"\n'
        'echo "[h1] FAILED tests/ring/test_x.py::test_y - AssertionError: lost"\n'
        'echo "[h2] ERROR tests/wal/test_z.py::test_w - OSError"\n'
        'echo "[h1] 1 failed, 399 passed in 200.1s"\necho "[h2] 1 error in 2.0s"\nexit 1\n'
    )
    done = _run(tmp_path, body, kernels="5.10")
    assert done.returncode == 1, done.stdout + done.stderr
    tail = done.stdout.split("== NVMe kernel matrix", 1)[1]
    assert "5.10: [h1] FAILED tests/ring/test_x.py::test_y - AssertionError: lost" in tail
    assert "5.10: [h2] ERROR tests/wal/test_z.py::test_w - OSError" in tail
    done = _run(tmp_path, 'echo "test-nvme: guest booted (6.1)"\necho "3 passed in 1.0s"\nexit 0\n')
    assert "== failed tests" not in done.stdout


def test_the_guest_script_never_makes_a_filesystem_outside_the_vm(tmp_path: Path) -> None:
    # On a machine whose nvme0n1 is not QEMU's (or that has none), the host groups are
    # refused before mkfs; the NVMe group's own exit status is kept apart.
    guest = SCRIPT.parent / "vm-guest-tests.sh"
    model = Path("/sys/block/nvme0n1/device/model")
    if model.exists() and model.read_text().startswith("QEMU"):
        skip_without("a machine whose nvme0n1 is not QEMU's emulated one (here the guard rightly lets it through)")
    done = subprocess.run(["sh", str(guest), "true"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is not the VM's emulated namespace" in done.stderr
    assert "NVMe group exit" not in done.stdout  # stopped before anything else
    env = {**os.environ, "NVME_HOST_GROUPS": ""}
    done = subprocess.run(["sh", str(guest), "false"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "NVMe group exit 1, host groups exit 0" in done.stdout
