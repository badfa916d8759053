"""`uringstack probe` renders the plugins' own verdicts, third-party plugins included."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.pluginmanager.conftest import MakeDist
from uringstack.cli import cli
from uringstack.cli.probe_report import verdicts
from uringstack.config import load_config
from uringstack.plan.tuning import attach_tuning
from uringstack.testing import make_fake_capabilities

ACME = """
from uringstack.hookspecs import hookimpl
from uringstack.types import FeatureVerdict


@hookimpl
def uringstack_check_support(caps, config):
    return FeatureVerdict(plugin="acme", mode="auto", enabled=False,
                          reason="acme: no widget on this machine", hint="plug in a widget")
"""


def test_probe_lines_are_the_plugins_verdicts() -> None:
    # A machine the old hard-coded probe verdicts judged differently from the
    # plugins: 64 KiB memlock (fixedbuf shrinks or skips), 2 CPUs (sqpoll off).
    caps = make_fake_capabilities(cores=2, memlock_bytes=64 * 1024)
    loaded = load_config(env={})
    pm, config = loaded.plugin_manager, loaded.config
    # (with the tune measurements looked up, as make_plan does: the plan's verdicts)
    planned = attach_tuning(caps, config)
    expected = {v.plugin: v for v in pm.check_support(caps=planned, config=config) if v is not None}
    assert {"sqpoll", "fixedbuf", "iopoll", "fallback"} <= set(expected)
    checks = verdicts(caps, pm, config)
    assert checks[0].feature == "io_uring"
    by_name = {c.feature: c for c in checks[1:]}
    assert set(by_name) == set(expected)
    for name, v in expected.items():
        assert by_name[name].usable is v.enabled, name
        assert by_name[name].reason.startswith(v.reason), name


def test_without_plugins_only_io_uring_is_judged() -> None:
    caps = make_fake_capabilities(uring="seccomp")
    [check] = verdicts(caps)
    assert check.feature == "io_uring" and not check.usable


def test_cli_probe_shows_a_third_party_verdict(make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist("acme-plugin", {"acme": "acme_probe_plugin"}, {"acme_probe_plugin": ACME})
    monkeypatch.delenv("URINGSTACK_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("URINGSTACK_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["probe", "--no-devices"])
    assert result.exit_code == 0, result.output
    assert "acme: not usable: acme: no widget on this machine; hint: plug in a widget" in result.output
    # The built-ins speak for themselves too: their verdict lines carry their plugin name.
    assert "\n  fallback: " in result.output
    assert "\n  sqpoll: " in result.output


def test_cli_probe_no_plugins_has_no_plugin_lines(make_dist: MakeDist) -> None:
    make_dist("acme-plugin", {"acme": "acme_probe_plugin"}, {"acme_probe_plugin": ACME})
    result = CliRunner().invoke(cli, ["probe", "--no-devices", "--no-plugins"])
    assert result.exit_code == 0, result.output
    assert "acme" not in result.output
    assert "\n  io_uring: " in result.output
