"""A Debian kernel whose package version cannot be read still gets the defects it is known to have.

Before, a malformed Debian version in ``/proc/version`` made ``matching_defects``
skip the whole table: the kernel was treated as defect-free, silently.  Now the
upstream ranges are matched against the release, and the probe report says
that the Debian version was not understood.  The well-formed lines are the
real ``/proc/version`` texts of the Debian 11, 12 and 13 kernels the NVMe VM
boots (read from their kernel images).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from uringstack.probe.defects import (
    IOWQ_SIGNAL_CANCEL_ID,
    KernelVersion,
    debian_build_tag,
    debian_version_from_proc,
    debian_version_problem,
    matching_defects,
    running_kernel,
    version_note,
)
from uringstack.probe.defects_report import defect_lines, render_defects
from uringstack.testing import make_fake_capabilities

GPF = "nvme-uring-cmd-iopoll-gpf"
EOF_HOLE = "iopoll-file-read-eof-zero"


def _proc(release: str, tag: str, gcc: str = "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0") -> str:
    return (
        f"Linux version {release} (debian-kernel@lists.debian.org) ({gcc}, GNU ld (GNU Binutils for Debian) "
        f"2.40) {tag}\n"
    )


BULLSEYE = _proc("5.10.0-46-amd64", "#1 SMP Debian 5.10.262-1 (2026-07-31)", "gcc-10 (Debian 10.2.1-6) 10.2.1 20210110")
BOOKWORM = _proc("6.1.0-57-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)")
TRIXIE = _proc(
    "6.12.118+deb13-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.12.118-1 (2026-11-20)",
    "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0",
)  # fmt: skip

# (release, /proc/version, Debian version read, understood, the GPF defect applies)
CASES = {
    "debian11": ("5.10.0-46-amd64", BULLSEYE, "5.10.262-1", True, False),
    "debian12": ("6.1.0-57-amd64", BOOKWORM, "6.1.192-3", True, True),
    "debian13": ("6.12.118+deb13-amd64", TRIXIE, "6.12.118-1", True, False),
}
# malformed package versions in a Debian build tag: (name, release, line, replaced, by, version read, applies)
for name, release, line, old, new, version, applies in [
    ("debian12 underscore", "6.1.0-57-amd64", BOOKWORM, "6.1.192-3 ", "6.1.192-3_local ", "6.1.192-3_local", True),
    ("debian12 two revisions", "6.1.0-57-amd64", BOOKWORM, "6.1.192-3 ", "6.1.192-3-rt-2 ", "6.1.192-3-rt-2", True),
    ("debian12 no version", "6.1.0-57-amd64", BOOKWORM, "Debian 6.1.192-3 ", "Debian ", None, True),
    ("debian12 not numeric", "6.1.0-57-amd64", BOOKWORM, "Debian 6.1.192-3 ", "Debian custom-build ", None, True),
    ("debian13 underscore", "6.12.118+deb13-amd64", TRIXIE, "6.12.118-1 ", "6.12.118-1_x ", "6.12.118-1_x", False),
    ("debian11 underscore", "5.10.0-46-amd64", BULLSEYE, "5.10.262-1 ", "5.10.262-1_x ", "5.10.262-1_x", False),
]:
    CASES[name] = (release, line.replace(old, new), version, False, applies)


def _kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release: str, text: str) -> KernelVersion:
    proc = tmp_path / "version"
    proc.write_text(text)
    monkeypatch.setattr("uringstack.probe.defects.platform.release", lambda: release)
    return running_kernel(proc)


@pytest.mark.parametrize("case", list(CASES))
def test_real_and_malformed_debian_proc_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    release, text, version, understood, applies = CASES[case]
    kernel = _kernel(tmp_path, monkeypatch, release, text)
    assert kernel.release == release
    assert kernel.debian == version == debian_version_from_proc(text)
    assert kernel.debian_tag and debian_build_tag(text)
    assert (debian_version_problem(kernel) is None) == understood
    found = [f for f in matching_defects(kernel) if f.id == GPF]  # the 6.12 entry: test_lost_writes_gate.py
    assert [f.id for f in found] == ([GPF] if applies else [])
    note = version_note(kernel)
    if understood:
        assert note == ""
        if applies:
            assert found[0].matched == f"Debian kernel package {version} is in >=6.0,<6.5~"
    else:
        assert "not understood" in note or "no package version" in note, note
        assert f"upstream version {release.split('-')[0].split('+')[0]}" in note, note
        if applies:
            assert found[0].matched.startswith(f"kernel {release} is in upstream >=6.0,<6.5 (")
            assert "so the upstream range was used" in found[0].matched


def test_the_compiler_s_debian_version_is_not_the_kernel_s() -> None:
    # "gcc-12 (Debian 12.2.0-14)" comes before the build tag: it must never be read as the kernel's
    text = _proc("6.1.0-57-amd64", "#1 SMP PREEMPT_DYNAMIC (2026-11-26)")
    assert debian_version_from_proc(text) is None
    assert not debian_build_tag(text)
    kernel = KernelVersion("6.1.0-57-amd64", debian_version_from_proc(text), debian_build_tag(text))
    assert version_note(kernel) == ""  # not a Debian kernel: upstream matching is the rule, not a fallback
    assert [f.id for f in matching_defects(kernel)] == [GPF, EOF_HOLE, IOWQ_SIGNAL_CANCEL_ID]  # (6.1: all hold it)


def test_an_unreadable_proc_version_falls_back_to_upstream_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("uringstack.probe.defects.platform.release", lambda: "6.1.0-57-amd64")
    kernel = running_kernel(tmp_path / "missing")
    assert kernel.proc_error.startswith("FileNotFoundError")
    assert "/proc/version could not be read" in version_note(kernel)
    assert [f.id for f in matching_defects(kernel)] == [GPF, EOF_HOLE, IOWQ_SIGNAL_CANCEL_ID]  # (6.1: all hold it)


def test_a_release_without_a_version_says_nothing_could_be_matched() -> None:
    kernel = KernelVersion("weird", "6.1.192-3_x", True)
    assert matching_defects(kernel) == []
    note = version_note(kernel)
    assert "not understood" in note and "'weird' has no leading X.Y[.Z] either" in note
    assert "no known defect can be matched" in note


def test_the_probe_report_says_the_debian_version_was_not_understood() -> None:
    kernel = KernelVersion("6.1.0-57-amd64", "6.1.192-3_local", True)
    caps = make_fake_capabilities()
    caps.kernel_release, caps.kernel_debian_version = kernel.release, kernel.debian
    caps.kernel_defects = matching_defects(kernel)
    caps.kernel_version_note = version_note(kernel)
    lines = defect_lines(caps)
    assert lines[0].startswith(f"{GPF}: rules out")
    assert lines[-1].startswith("kernel version: the Debian kernel package version '6.1.192-3_local'")
    con = Console(record=True, width=400)
    render_defects(caps, con)
    text = con.export_text()
    assert "Kernel version not fully understood" in text and "'6.1.192-3_local'" in text and GPF in text
    caps.kernel_defects = []
    assert defect_lines(caps)[-1].startswith("kernel version: ")


def test_uringstack_probe_prints_and_carries_the_note(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from uringstack.cli import cli as main
    from uringstack.probe.model import Capabilities

    proc = tmp_path / "version"
    proc.write_text(BOOKWORM.replace("6.1.192-3 ", "6.1.192-3_local "))
    monkeypatch.setattr("uringstack.probe.defects._PROC_VERSION", proc)
    monkeypatch.setattr("uringstack.probe.defects.running_kernel.__defaults__", (proc,))
    monkeypatch.setattr("uringstack.probe.defects.platform.release", lambda: "6.1.0-57-amd64")
    result = CliRunner().invoke(main, ["probe", "--json", "--no-devices", "--no-plugins"])
    assert result.exit_code == 0, result.output
    caps = Capabilities.model_validate_json(result.output)
    assert "'6.1.192-3_local' in /proc/version is not understood" in caps.kernel_version_note
    assert [f.id for f in caps.kernel_defects] == [GPF, EOF_HOLE, IOWQ_SIGNAL_CANCEL_ID]
    table = CliRunner().invoke(main, ["probe", "--no-devices", "--no-plugins"])
    assert "Kernel version not fully understood" in table.output
