"""Expected errors end the CLI with one line on stderr and exit 2, not a traceback
(issue 12, item 10); unexpected ones (bugs) keep their traceback."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from click.testing import CliRunner

from uringstack.cli import cli

RUN_CLI = "import sys; from uringstack.cli import main; sys.argv[0] = 'uringstack'; main()"


def _run(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120
    )


def _one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def test_deeply_nested_toml_is_one_line(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "deep.toml"
    f.write_text("x = " + "[" * 10_000 + "]" * 10_000 + "\n")
    r = CliRunner().invoke(cli, ["config", "validate", str(f)])
    assert r.exit_code == 2, r.output
    line = _one_line_error(r.output)
    assert str(f) in line and "nested too deeply" in line, line


def test_bench_wal_record_size_too_large_is_one_line() -> None:
    r = CliRunner().invoke(cli, ["bench", "wal", "--record-size", "100000000", "--duration", "0.5"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert "--record-size" in r.output and "1048560" in r.output, r.output


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_probe_json_to_a_full_device_is_one_line() -> None:
    with open("/dev/full", "w") as full:
        r = _run("probe", "--json", "--no-devices", "--no-plugins", stdout=full.fileno())
    assert r.returncode == 2, r.stderr
    line = _one_line_error(r.stderr)
    assert "standard output" in line and "No space left on device" in line, line


def test_small_output_to_a_full_device_is_one_line() -> None:
    """Output small enough to stay buffered fails at the final flush: still one line, exit 2."""
    with open("/dev/full", "w") as full:
        r = _run("wal", "verify", "--help", stdout=full.fileno())
    assert r.returncode == 2, r.stderr
    _one_line_error(r.stderr)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_debug_shows_the_traceback() -> None:
    with open("/dev/full", "w") as full:
        r = _run("--debug", "probe", "--json", "--no-devices", "--no-plugins", stdout=full.fileno())
    assert r.returncode != 0 and "Traceback" in r.stderr and "No space left on device" in r.stderr


def test_a_bug_keeps_its_traceback() -> None:
    @cli.command("boom-test")
    def boom() -> None:
        raise KeyError("a bug")

    try:
        r = CliRunner().invoke(cli, ["boom-test"])
    finally:
        cli.commands.pop("boom-test")
    assert isinstance(r.exception, KeyError)  # not swallowed into a one-line message
    assert r.exit_code == 1


def test_os_error_in_a_command_is_one_line() -> None:
    @cli.command("oserror-test")
    def oserr() -> None:
        raise PermissionError(13, "Permission denied", "/some/file")

    try:
        r = CliRunner().invoke(cli, ["oserror-test"])
    finally:
        cli.commands.pop("oserror-test")
    assert r.exit_code == 2
    line = _one_line_error(r.output)
    assert "/some/file" in line and "Permission denied" in line


def test_click_usage_errors_are_untouched() -> None:
    r = CliRunner().invoke(cli, ["wal", "verify"])
    assert r.exit_code == 2 and "Missing argument" in r.output and "Usage:" in r.output


@pytest.mark.parametrize(("value", "says"), [("-5", "x>=0"), ("nan", "nan is not a number of seconds")])
def test_probe_max_age_must_be_a_number_of_seconds(tmp_path: pathlib.Path, value: str, says: str) -> None:
    """Until session 32 both were taken: no cache age is within them, so --cache never reused
    its file, silently."""
    r = CliRunner().invoke(cli, ["probe", "--no-devices", "--cache", str(tmp_path / "c.json"), "--max-age", value])
    assert r.exit_code == 2, r.output
    assert "--max-age" in r.output and says in r.output, r.output
    assert not (tmp_path / "c.json").exists()
