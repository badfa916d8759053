"""A real seccomp filter denies io_uring_setup (as Docker does): the probe must say so."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.requires import skip_without

HELPER = Path(__file__).resolve().parent / "seccomp_deny_uring.py"

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="the BPF filter in seccomp_deny_uring.py is written for x86_64 syscall numbers",
)

PROBE_JSON = "from uringstack.probe import probe; print(probe(devices=False).model_dump_json())"
RUN_CLI = "import sys; from uringstack.cli import main; sys.argv[0] = 'uringstack'; main()"


def _under_filter(*args: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HELPER), *options, sys.executable, *args],
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


# Until session 32 the probe created a ring and stopped there: with io_uring_enter or
# io_uring_register denied alone it said "usable", and every I/O (or open_stack) failed.
@pytest.mark.parametrize("err", ["EPERM", "ENOSYS"])
@pytest.mark.parametrize("syscall", ["enter", "register"])
def test_a_later_syscall_denied_alone_makes_io_uring_unusable(syscall: str, err: str) -> None:
    proc = _under_filter("-c", PROBE_JSON, options=("--deny", syscall, "--errno", err))
    assert proc.returncode == 0, proc.stderr
    uring = json.loads(proc.stdout)["uring"]
    assert uring["usable"] is False
    assert uring["blocker"] == "seccomp"
    assert uring["reason"].startswith(f"io_uring_{syscall} blocked by seccomp ({err} from a seccomp filter")
    assert "allows io_uring_setup/io_uring_enter/io_uring_register" in uring["reason"]


def test_register_denied_is_not_reported_as_missing_opcodes() -> None:
    proc = _under_filter("-c", RUN_CLI, "probe", "--no-devices", options=("--deny", "register"))
    assert proc.returncode == 0, proc.stderr
    assert "io_uring: not usable: io_uring_register blocked by seccomp" in proc.stdout
    assert "0 opcodes" not in proc.stdout
    assert "lacks IORING_OP_URING_CMD" not in proc.stdout


OPEN_STACK_IO = """
import sys, uringstack
with uringstack.open_stack() as s, s.open(sys.argv[1], create=True) as f:
    f.write_from(bytearray(b"x" * 4096), 0)
    buf = bytearray(4096)
    f.read_many([0], [buf])
    print(s.plan.default_backend, bytes(buf[:4]))
"""


@pytest.mark.parametrize("options", [("--deny", "enter"), ("--deny", "register"), ("--deny", "all", "--kill")])
def test_open_stack_falls_back_when_a_syscall_is_denied(tmp_path: Path, options: tuple[str, ...]) -> None:
    proc = _under_filter("-c", OPEN_STACK_IO, str(tmp_path / "f.bin"), options=options)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["fallback", "b'xxxx'"], proc.stdout + proc.stderr


def test_a_cache_from_an_unrestricted_shell_is_not_reused_under_seccomp(tmp_path: Path) -> None:
    """Until session 32 ``probe --cache`` reused it (same kernel, young enough): "usable"."""
    cache = tmp_path / "caps.json"
    code = (
        "from uringstack.probe import probe_cached\n"
        f"print(probe_cached({str(cache)!r}, 3600, devices=False).model_dump_json())"
    )
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert free.returncode == 0 and json.loads(free.stdout)["uring"]["usable"] is True, free.stderr
    proc = _under_filter("-c", code, options=("--deny", "all"))
    assert proc.returncode == 0, proc.stderr
    uring = json.loads(proc.stdout)["uring"]
    assert uring["usable"] is False and uring["blocker"] == "seccomp"


# A filter whose action kills (systemd's SystemCallFilter= default) killed `uringstack probe`
# with SIGSYS and no output until session 32.
@pytest.mark.parametrize("syscall", ["setup", "enter", "register"])
def test_a_filter_that_kills_is_reported_not_fatal(syscall: str) -> None:
    proc = _under_filter("-c", RUN_CLI, "probe", "--no-devices", options=("--deny", syscall, "--kill"))
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert (
        f"io_uring: not usable: io_uring_{syscall} blocked by seccomp with the kill action "
        "(a forked test child died of SIGSYS"
    ) in proc.stdout
    assert "SystemCallErrorNumber=EPERM" in proc.stdout
    assert "fallback: usable" in proc.stdout


def test_enosys_from_a_filter_on_a_kernel_with_io_uring_names_seccomp() -> None:
    if not Path("/proc/sys/kernel/io_uring_disabled").exists():
        skip_without(
            "kernel.io_uring_disabled (Linux 6.6+: without it ENOSYS from a filter cannot be told "
            "from a kernel without io_uring); also in the NVMe VM on 6.12"
        )
    proc = _under_filter("-c", PROBE_JSON, options=("--deny", "all", "--errno", "ENOSYS"))
    assert proc.returncode == 0, proc.stderr
    uring = json.loads(proc.stdout)["uring"]
    assert uring["blocker"] == "seccomp"
    assert uring["reason"].startswith("io_uring_setup blocked by seccomp (ENOSYS from a seccomp filter")
    assert "has no io_uring" not in uring["reason"]
