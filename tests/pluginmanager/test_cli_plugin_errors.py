"""A plugin that fails to import gives every CLI command the same clean error, not a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.pluginmanager.conftest import MakeDist
from uringstack.cli import cli

BROKEN = "import no_such_module_for_uringstack_tests\n"


@pytest.fixture
def broken_plugin(make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist("broken-plugin", {"broken": "broken_plugin_mod"}, {"broken_plugin_mod": BROKEN})
    monkeypatch.delenv("URINGSTACK_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("URINGSTACK_CONFIG", raising=False)


@pytest.mark.usefixtures("broken_plugin")
def test_plan_with_a_plugin_that_fails_to_import_is_a_two_line_error() -> None:
    result = CliRunner().invoke(cli, ["plan"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2, result.output
    assert lines[0].startswith("plugin error: cannot load uringstack plugin 'broken'")
    assert "ModuleNotFoundError" in lines[0]
    assert "URINGSTACK_CORE__DISABLED_PLUGINS=broken" in lines[1]


@pytest.mark.usefixtures("broken_plugin")
def test_plan_and_config_validate_say_the_same(tmp_path: pytest.TempPathFactory) -> None:
    import pathlib

    cfg = pathlib.Path(str(tmp_path)) / "c.toml"
    cfg.write_text("")
    plan = CliRunner().invoke(cli, ["plan", "--config", str(cfg)])
    validate = CliRunner().invoke(cli, ["config", "validate", str(cfg)])
    assert plan.exit_code == validate.exit_code == 2
    assert plan.output == validate.output
