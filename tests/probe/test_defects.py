"""The known-kernel-defects table: every entry parses, and matching by version is right."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from uringstack.config import ConfigError, load_config
from uringstack.probe.defects import (
    DEFECTS_BY_ID,
    IOWQ_SIGNAL_CANCEL_ID,
    KNOWN_DEFECTS,
    PATTERNS,
    POLLED_FILE_READS,
    POLLED_PASSTHROUGH,
    KernelVersion,
    check_known_ids,
    compare_debian,
    debian_version_from_proc,
    matching_defects,
    parse_range,
    parse_upstream,
    running_kernel,
)
from uringstack.probe.defects_report import defect_lines, render_defects
from uringstack.probe.model import Capabilities
from uringstack.testing import make_fake_capabilities

GPF = "nvme-uring-cmd-iopoll-gpf"
BOOKWORM_PROC = (
    "Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) "
    "12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)"
)


@pytest.mark.parametrize("defect", KNOWN_DEFECTS, ids=lambda d: d.id)
def test_every_entry_parses_and_is_complete(defect: object) -> None:
    from uringstack.probe.defects import KernelDefect

    assert isinstance(defect, KernelDefect)
    assert defect.upstream or defect.debian, "an entry must name the kernels it affects"
    # Parsing raises for a malformed range: this is the test that fails instead of a user.
    assert len(defect.upstream_ranges()) == len(defect.upstream)
    assert len(defect.debian_ranges()) == len(defect.debian)
    # Each entry says what uringstack does about it: rule a pattern out, or work around it.
    assert (defect.rules_out in PATTERNS) != bool(defect.worked_around), "exactly one of rules_out, worked_around"
    assert defect.evidence and defect.title
    assert DEFECTS_BY_ID[defect.id] is defect


def test_ids_are_unique() -> None:
    assert len({d.id for d in KNOWN_DEFECTS}) == len(KNOWN_DEFECTS)


@pytest.mark.parametrize(
    ("scheme", "text"),
    [("upstream", "6.0-6.5"), ("upstream", ">=6.5,<6.0"), ("upstream", ">=x"), ("debian", ">=6.1,<=6.2"),
     ("debian", ""), ("debian", ">=6.1,>=6.2"), ("debian", "<6.1 beta"), ("gentoo", ">=1")],
)  # fmt: skip
def test_malformed_ranges_are_refused_with_the_range_named(scheme: str, text: str) -> None:
    with pytest.raises(ValueError, match=r"range|scheme"):
        parse_range(scheme, text)


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [("6.1.192-3", "6.1.192-2", 1), ("6.1.192-3", "6.5", -1), ("6.5~rc4-1~exp1", "6.5~", 1),
     ("6.5~rc4-1~exp1", "6.5", -1), ("6.1.10-1", "6.1.9-1", 1), ("1:5.0-1", "6.1-1", 1),
     ("6.12.118-1", "6.12.118-1", 0), ("6.1", "6.1.0", -1)],
)  # fmt: skip
def test_debian_versions_compare_as_dpkg_does(a: str, b: str, sign: int) -> None:
    got = compare_debian(a, b)
    assert (got > 0) - (got < 0) == sign


def test_kernel_versions_are_parsed_from_release_and_proc_version() -> None:
    assert parse_upstream("6.1.0-57-amd64") == (6, 1, 0)
    assert parse_upstream("6.12.118+deb13-amd64") == (6, 12, 118)
    assert parse_upstream("6.5") == (6, 5, 0)
    with pytest.raises(ValueError, match="does not start with a kernel version"):
        parse_upstream("linux-6.1")
    assert debian_version_from_proc(BOOKWORM_PROC) == "6.1.192-3"
    assert debian_version_from_proc("Linux version 6.8.0-31-generic (buildd@lcy02) #31-Ubuntu SMP") is None


def test_running_kernel_reads_proc_version(tmp_path: Path) -> None:
    proc = tmp_path / "version"
    proc.write_text(BOOKWORM_PROC)
    assert running_kernel(proc).debian == "6.1.192-3"
    assert running_kernel(tmp_path / "absent").debian is None


@pytest.mark.parametrize(
    ("release", "debian", "hit"),
    [
        ("6.1.0-57-amd64", "6.1.192-3", True),  # Debian 12: the kernel that crashed
        ("6.1.0-56-amd64", "6.1.190-1", True),
        ("6.0.0-6-amd64", "6.0.12-1", True),
        ("6.12.118+deb13-amd64", "6.12.118-1", False),  # Debian 13: fixed
        ("6.5.0-0.deb12.4-amd64", "6.5.10-1~bpo12+1", False),  # bookworm-backports 6.5: fixed
        ("5.10.0-46-amd64", "5.10.262-1", False),  # Debian 11: no polled passthrough at all
        ("6.3.5", None, True),  # upstream kernels by their release
        ("6.4.16-custom", None, True),
        ("6.5.0", None, False),
        ("5.19.17", None, False),
        ("weird", None, False),  # unknown: judged by the live probe, as before
        # a Debian package version that is not understood: the upstream ranges still apply
        ("6.1.0-57-amd64", "6.1.192-3_custom", True),
        ("6.12.118+deb13-amd64", "6.12.118-1_custom", False),
    ],
)
def test_matching_by_debian_package_or_upstream_version(release: str, debian: str | None, hit: bool) -> None:
    found = [f for f in matching_defects(KernelVersion(release, debian)) if f.id == GPF]
    assert [f.id for f in found] == ([GPF] if hit else [])
    if hit:
        assert found[0].rules_out == POLLED_PASSTHROUGH
        assert (debian if debian and "_" not in debian else release) in found[0].matched


EOF_HOLE = "iopoll-file-read-eof-zero"


@pytest.mark.parametrize(
    ("release", "debian", "hit"),
    [
        ("5.10.0-46-amd64", "5.10.262-1", True),  # Debian 11: reproduced
        ("6.1.0-57-amd64", "6.1.192-3", True),  # Debian 12: reproduced
        ("6.5.0-0.deb12.4-amd64", "6.5.10-1~bpo12+1", True),  # not measured: ruled out until one is
        ("6.12.118+deb13-amd64", "6.12.118-1", False),  # Debian 13: measured right
        ("6.12.0-rc3", None, False),
        ("6.11.9", None, True),
        ("5.4.0", None, True),
        ("6.18.44-fc-v1252", None, False),  # (this host's kernel)
    ],
)
def test_polled_file_reads_are_ruled_out_up_to_the_first_kernel_measured_right(
    release: str, debian: str | None, hit: bool
) -> None:
    found = [f for f in matching_defects(KernelVersion(release, debian)) if f.id == EOF_HOLE]
    assert [f.rules_out for f in found] == ([POLLED_FILE_READS] if hit else [])


def test_a_debian_kernel_is_judged_by_its_package_not_its_abi_name() -> None:
    # uname -r of Debian's 6.5 backport starts with 6.5 but a Debian 6.1 one with "6.1.0":
    # the upstream range must not be consulted when the package version is known.
    assert matching_defects(KernelVersion("6.1.0-57-amd64", "6.1.192-3"))
    assert not [f for f in matching_defects(KernelVersion("6.3.0-1-amd64", "6.13.1-1")) if f.rules_out]
    assert EOF_HOLE not in [f.id for f in matching_defects(KernelVersion("6.1.0-1-amd64", "6.12.118-1"))]


@pytest.mark.parametrize(
    ("release", "debian", "hit"),
    [
        ("5.10.0-46-amd64", "5.10.262-1", True),  # Debian 11: 264 of 900 ops cancelled
        ("6.1.0-57-amd64", "6.1.192-3", True),  # Debian 12: 359 of 900
        ("6.12.118+deb13-amd64", "6.12.118-1", True),  # Debian 13: 12 of 900
        ("6.13.7", None, True),
        ("6.14.0", None, False),  # the backoff
        ("6.18.44-fc-v1252", None, False),  # (this host's kernel: 0 of 200)
        ("4.19.0-27-amd64", "4.19.316-1", False),  # io-wq had no retry path yet
    ],
)
def test_the_iowq_signal_cancel_is_reported_as_worked_around(release: str, debian: str | None, hit: bool) -> None:
    found = [f for f in matching_defects(KernelVersion(release, debian)) if f.id == IOWQ_SIGNAL_CANCEL_ID]
    assert len(found) == hit
    if hit:
        # It rules nothing out: no plugin may refuse a pattern because of it.
        assert found[0].rules_out == "" and "runs such an op again" in found[0].worked_around
        caps = make_fake_capabilities()
        caps.kernel_defects = found
        assert all(caps.defect_ruling_out(p) is None for p in PATTERNS)


def test_a_worked_around_defect_is_shown_without_an_override_and_cannot_be_accepted() -> None:
    caps = make_fake_capabilities()
    caps.kernel_debian_version = "6.1.192-3"
    caps.kernel_defects = matching_defects(KernelVersion("6.1.0-57-amd64", "6.1.192-3"))
    assert IOWQ_SIGNAL_CANCEL_ID in [f.id for f in caps.kernel_defects]
    line = next(x for x in defect_lines(caps) if x.startswith(IOWQ_SIGNAL_CANCEL_ID))
    assert "rules out nothing; worked around: every handle runs such an op again" in line
    con = Console(record=True, width=400)
    render_defects(caps, con)
    text = con.export_text()
    assert f'accept_kernel_defects = ["{GPF}"]' in text
    assert f'accept_kernel_defects = ["{IOWQ_SIGNAL_CANCEL_ID}"]' not in text
    with pytest.raises(ValueError, match=rf"'{IOWQ_SIGNAL_CANCEL_ID}' rule out nothing.*nothing to accept"):
        check_known_ids([IOWQ_SIGNAL_CANCEL_ID])
    with pytest.raises(ConfigError, match=r"accept_kernel_defects.*rule out nothing"):
        load_config(None, env={}, overrides={"core": {"accept_kernel_defects": [IOWQ_SIGNAL_CANCEL_ID]}})


def test_capabilities_carry_defects_through_json() -> None:
    caps = make_fake_capabilities()
    caps.kernel_debian_version = "6.1.192-3"
    caps.kernel_defects = matching_defects(KernelVersion("6.1.0-57-amd64", "6.1.192-3"))
    back = Capabilities.model_validate_json(caps.model_dump_json())
    assert back.kernel_defects == caps.kernel_defects
    assert back.defect_ruling_out(POLLED_PASSTHROUGH) is not None
    assert back.defect_ruling_out(POLLED_PASSTHROUGH, [GPF]) is None
    assert back.defect_ruling_out("something else") is None


def test_report_lists_applicable_defects_and_says_when_none() -> None:
    caps = make_fake_capabilities()
    assert "no known defect" in defect_lines(caps)[0]
    caps.kernel_debian_version = "6.1.192-3"
    caps.kernel_defects = matching_defects(KernelVersion("6.1.0-57-amd64", "6.1.192-3"))
    con = Console(record=True, width=200)
    render_defects(caps, con)
    text = con.export_text()
    assert GPF in text and "9408d8a37e6c" in text and "accept_kernel_defects" in text
    assert "IORING_OP_URING_CMD on an IORING_SETUP_IOPOLL ring" in text


def test_probe_json_has_the_defects_of_this_kernel() -> None:
    from uringstack.cli import cli as main

    result = CliRunner().invoke(main, ["probe", "--json", "--no-devices", "--no-plugins"])
    assert result.exit_code == 0, result.output
    caps = Capabilities.model_validate_json(result.output)
    assert caps.kernel_defects == matching_defects(running_kernel())
    table = CliRunner().invoke(main, ["probe", "--no-devices", "--no-plugins"])
    assert "Known kernel defects" in table.output


def test_accept_kernel_defects_is_validated_against_the_table() -> None:
    cfg = load_config(None, env={}, overrides={"core": {"accept_kernel_defects": [GPF]}}).config
    assert cfg.core.accept_kernel_defects == [GPF]
    env = load_config(None, env={"URINGSTACK_CORE__ACCEPT_KERNEL_DEFECTS": GPF}).config
    assert env.core.accept_kernel_defects == [GPF]
    with pytest.raises(ConfigError, match=r"accept_kernel_defects.*unknown kernel defect id.*'nvme-typo'"):
        load_config(None, env={}, overrides={"core": {"accept_kernel_defects": ["nvme-typo"]}})
