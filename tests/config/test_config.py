"""Config loading: layering, provenance, disabled plugins, and errors that explain themselves."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field

from uringstack.config import (
    ConfigError,
    CoreConfig,
    StackConfig,
    config_schema,
    load_config,
)
from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import PluginError, UringstackPluginManager
from uringstack.types import FeatureMode


class PollConfig(BaseModel):
    """Settings of a test feature plugin."""

    model_config = ConfigDict(extra="forbid")
    mode: FeatureMode = "auto"
    idle_ms: int = Field(default=10, ge=0)


class PollPlugin:
    @hookimpl
    def uringstack_config_sections(self) -> tuple[str, type[BaseModel]]:
        return ("poll", PollConfig)


Register = Callable[..., str]


@pytest.fixture
def pm(plugin_manager: UringstackPluginManager, register_plugin: Register) -> UringstackPluginManager:
    register_plugin(PollPlugin(), "poll")
    return plugin_manager


def write(tmp_path: pathlib.Path, text: str, name: str = "uringstack.toml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(exc: ConfigError) -> dict[str, str]:
    return {p.key: str(p) for p in exc.problems}


# --- values and priority ------------------------------------------------------------------


def test_defaults_without_file_or_env(pm: UringstackPluginManager) -> None:
    loaded = load_config(env={}, plugin_manager=pm)
    assert loaded.config.core == CoreConfig()
    assert loaded.config.section("poll", PollConfig) == PollConfig()
    assert set(loaded.provenance.values()) == {"default"}
    assert "core.ring_entries" in loaded.provenance and "poll.idle_ms" in loaded.provenance


def test_priority_argument_over_env_over_file_over_default(pm: UringstackPluginManager, tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        "[core]\nring_entries = 512\ndirect = true\ncores = [0]\n[poll]\nmode = 'off'\nidle_ms = 5\n",
    )
    env = {
        "URINGSTACK_CORE__RING_ENTRIES": "1024",
        "URINGSTACK_POLL__MODE": "on",
        "URINGSTACK_CORE__CORES": "0,2-3",
    }
    loaded = load_config(path, env=env, overrides={"core.ring_entries": 2048}, plugin_manager=pm)
    core = loaded.config.core
    poll = loaded.config.section("poll", PollConfig)
    assert core.ring_entries == 2048  # argument beats env and file
    assert core.cores == [0, 2, 3]  # env beats file
    assert core.direct is True  # file beats default
    assert poll.mode == "on" and poll.idle_ms == 5
    assert core.backend == "auto"
    assert loaded.provenance["core.ring_entries"] == "argument"
    assert loaded.provenance["core.cores"] == "env:URINGSTACK_CORE__CORES"
    assert loaded.provenance["poll.mode"] == "env:URINGSTACK_POLL__MODE"
    assert loaded.provenance["core.direct"] == f"file:{path}"
    assert loaded.provenance["poll.idle_ms"] == f"file:{path}"
    assert loaded.provenance["core.backend"] == "default"
    rows = {row.key: (row.value, row.source) for row in loaded.rows()}
    assert rows["core.cores"] == ([0, 2, 3], "env:URINGSTACK_CORE__CORES")


def test_env_is_case_insensitive_and_config_env_names_the_file(
    pm: UringstackPluginManager, tmp_path: pathlib.Path
) -> None:
    path = write(tmp_path, "[poll]\nidle_ms = 7\n")
    env = {"URINGSTACK_CONFIG": str(path), "uringstack_core__direct": "true"}
    loaded = load_config(env=env, plugin_manager=pm)
    assert loaded.path == path
    assert loaded.config.section("poll", PollConfig).idle_ms == 7
    assert loaded.config.core.direct is True
    assert loaded.provenance["core.direct"] == "env:uringstack_core__direct"


def test_one_variable_set_twice_in_different_cases_is_refused_naming_both(pm: UringstackPluginManager) -> None:
    """Names are read without case, so two spellings with different values made the winner an
    accident of the environment's order (session 32's probe: one applied, the other named)."""
    env = {"URINGSTACK_CORE__DIRECT": "true", "uringstack_core__direct": "false", "URINGSTACK_POLL__IDLE_MS": "3"}
    with pytest.raises(ConfigError) as info:
        load_config(env=env, plugin_manager=pm)
    text = problems(info.value)["core.direct"]
    assert "set twice, in different cases" in text
    assert "URINGSTACK_CORE__DIRECT='true'" in text and "uringstack_core__direct='false'" in text
    # the same value twice is one setting: allowed
    same = load_config(env={"URINGSTACK_CORE__DIRECT": "true", "Uringstack_Core__Direct": "true"}, plugin_manager=pm)
    assert same.config.core.direct is True


def test_process_environment_is_read_by_default(pm: UringstackPluginManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URINGSTACK_POLL__IDLE_MS", "3")
    loaded = load_config(plugin_manager=pm)
    assert loaded.config.section("poll", PollConfig).idle_ms == 3


def test_section_accessor_is_typed_and_strict(pm: UringstackPluginManager) -> None:
    config = load_config(env={}, plugin_manager=pm).config
    with pytest.raises(KeyError, match="no config section 'sqpoll'"):
        config.section("sqpoll", PollConfig)
    with pytest.raises(TypeError, match="not CoreConfig"):
        config.section("poll", CoreConfig)
    assert list(config.sections()) == ["core", "poll"]


def test_plain_stack_config_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URINGSTACK_CORE__RING_ENTRIES", "64")
    assert StackConfig().core.ring_entries == 256


# --- disabled plugins -----------------------------------------------------------------------


def test_disabled_plugin_is_blocked_and_its_section_ignored(
    pm: UringstackPluginManager, tmp_path: pathlib.Path
) -> None:
    path = write(tmp_path, "[core]\ndisabled_plugins = ['poll']\n[poll]\nmode = 'on'\nidle_ms = 1\n")
    env = {"URINGSTACK_POLL__MODE": "off", "URINGSTACK_POLL": '{"mode": "off"}'}
    loaded = load_config(path, env=env, plugin_manager=pm)
    assert "poll" not in pm.plugin_names()
    assert pm.is_blocked("poll")
    assert "poll" not in loaded.config.sections()
    assert any("[poll] ignored" in note and "disabled" in note for note in loaded.notes)
    assert any("URINGSTACK_POLL__MODE ignored" in note for note in loaded.notes)
    assert any("URINGSTACK_POLL ignored" in note for note in loaded.notes)  # the whole-section form too


def test_disabled_from_env_as_comma_list(pm: UringstackPluginManager) -> None:
    env = {"URINGSTACK_CORE__DISABLED_PLUGINS": "poll, nosuch"}
    loaded = load_config(env=env, plugin_manager=pm)
    assert loaded.config.core.disabled_plugins == ["poll", "nosuch"]
    assert "poll" not in loaded.config.sections()
    assert any("'nosuch', which is not an installed plugin" in note for note in loaded.notes)


# --- errors ---------------------------------------------------------------------------------


def test_unknown_key_names_key_value_allowed_and_file(pm: UringstackPluginManager, tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "[poll]\nidle_msec = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugin_manager=pm)
    [problem] = info.value.problems
    assert problem.key == "poll.idle_msec"
    assert str(problem) == (f"poll.idle_msec: unknown key (got 5; allowed: mode, idle_ms) [file:{path}]")


def test_a_list_field_says_what_its_items_are(pm: UringstackPluginManager, tmp_path: pathlib.Path) -> None:
    # it said "a list of a string"
    path = write(tmp_path, "[core]\ndisabled_plugins = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugin_manager=pm)
    assert "(got 5; allowed: a list of strings)" in problems(info.value)["core.disabled_plugins"]


def test_a_bound_inside_a_union_is_said(tmp_path: pathlib.Path) -> None:
    # sqpoll.cpu is 'auto' or Annotated[int, Field(ge=0)]: it said "auto or an integer" of -1
    path = write(tmp_path, "[sqpoll]\ncpu = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "(got -1; allowed: auto or an integer >= 0)" in problems(info.value)["sqpoll.cpu"]


def test_an_unknown_table_from_the_environment_names_its_variable(pm: UringstackPluginManager) -> None:
    """``URINGSTACK_CORE__SQPOLL__MODE`` makes an unknown key ``core.sqpoll``, deeper
    than any variable named after the key: the error said only ``[env]``."""
    env = {"URINGSTACK_CORE__SQPOLL__MODE": "on", "URINGSTACK_CORE__SQPOLL__IDLE_MS": "5"}
    with pytest.raises(ConfigError) as info:
        load_config(env=env, plugin_manager=pm)
    [problem] = info.value.problems
    assert problem.key == "core.sqpoll"
    assert str(problem).endswith("[env:URINGSTACK_CORE__SQPOLL__IDLE_MS,URINGSTACK_CORE__SQPOLL__MODE]")


def test_unknown_section_lists_known_sections(pm: UringstackPluginManager, tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "[pol]\nmode = 'on'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugin_manager=pm)
    text = problems(info.value)["pol"]
    assert "unknown section" in text and "core, poll" in text and f"file:{path}" in text


def test_unknown_section_in_env_is_an_error(pm: UringstackPluginManager) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"URINGSTACK_POL__MODE": "on"}, plugin_manager=pm)
    text = problems(info.value)["pol"]
    assert "unknown section" in text and "[env:URINGSTACK_POL__MODE]" in text
    # Variables without SECTION__KEY shape may belong to other tools.
    load_config(env={"URINGSTACK_SOMETHING": "x"}, plugin_manager=pm)


def test_a_section_variable_that_is_not_json_hides_no_other_problem(pm: UringstackPluginManager) -> None:
    """All problems at once (docs/config.md): a whole-section variable pydantic-settings
    cannot decode dropped the whole environment layer, so a bad ``URINGSTACK_CORE__DIRECT``
    beside it went unreported (session 31)."""
    env = {"URINGSTACK_POLL": "{bad", "URINGSTACK_CORE__DIRECT": "yes"}
    with pytest.raises(ConfigError) as info:
        load_config(env=env, plugin_manager=pm)
    found = problems(info.value)
    assert "cannot parse environment value" in found["poll"] and "[env:URINGSTACK_POLL]" in found["poll"]
    assert "[env:URINGSTACK_CORE__DIRECT]" in found["core.direct"]
    # (another variable of the layer is still validated)
    with pytest.raises(ConfigError) as info:
        load_config(env={"URINGSTACK_POLL": "{bad", "URINGSTACK_CORE__RING_ENTRIES": "3"}, plugin_manager=pm)
    assert "core.ring_entries" in problems(info.value)


def test_bad_mode_literal(pm: UringstackPluginManager) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"URINGSTACK_POLL__MODE": "yes"}, plugin_manager=pm)
    assert problems(info.value)["poll.mode"] == (
        "poll.mode: 'yes' is not one of auto, on, off [env:URINGSTACK_POLL__MODE]"
    )


def test_wrong_types(pm: UringstackPluginManager, tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        "[core]\ndirect = 'maybe'\nring_entries = 300\ncores = 'all'\n[poll]\nidle_ms = -1\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugin_manager=pm)
    found = problems(info.value)
    assert "got 'maybe'; allowed: true, false" in found["core.direct"]
    assert "power of two" in found["core.ring_entries"] and "got 300" in found["core.ring_entries"]
    assert "got 'all'" in found["core.cores"]
    assert "'auto' or a list of CPU ids" in found["core.cores"]
    assert "got -1" in found["poll.idle_ms"] and "an integer >= 0" in found["poll.idle_ms"]
    assert all(f"[file:{path}]" in text for text in found.values())
    # One error lists every problem, one line each.
    assert str(info.value).count("\n") == len(found)


def test_argument_errors_are_attributed(pm: UringstackPluginManager) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"core": {"backend": "spdk"}}, plugin_manager=pm)
    text = problems(info.value)["core.backend"]
    assert text == "core.backend: 'spdk' is not one of auto, uring, fallback [argument]"


def test_toml_syntax_error_names_file_and_line(pm: UringstackPluginManager, tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "[core]\ndirect = true\nring_entries = \n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: invalid TOML"):
        load_config(path, env={}, plugin_manager=pm)


def test_missing_file_is_an_error(pm: UringstackPluginManager, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={}, plugin_manager=pm)
    with pytest.raises(ConfigError, match="named by URINGSTACK_CONFIG"):
        load_config(env={"URINGSTACK_CONFIG": str(tmp_path / "nope.toml")}, plugin_manager=pm)


def test_section_name_clash_names_both_plugins(pm: UringstackPluginManager, register_plugin: Register) -> None:
    class Clash:
        @hookimpl
        def uringstack_config_sections(self) -> tuple[str, type[BaseModel]]:
            return ("poll", PollConfig)

    register_plugin(Clash(), "clash")
    with pytest.raises(PluginError, match=r"plugin 'clash'.*already used by plugin 'poll'"):
        load_config(env={}, plugin_manager=pm)


def test_section_model_without_defaults_is_rejected(
    plugin_manager: UringstackPluginManager, register_plugin: Register
) -> None:
    class Needy(BaseModel):
        path: str

    class Plugin:
        @hookimpl
        def uringstack_config_sections(self) -> tuple[str, type[BaseModel]]:
            return ("needy", Needy)

    register_plugin(Plugin(), "needy")
    with pytest.raises(PluginError, match="needs a default for every field"):
        load_config(env={}, plugin_manager=plugin_manager)


@pytest.mark.parametrize("bad", ["out of bounds", "wrong type"])
def test_section_model_whose_default_its_field_refuses_is_rejected(
    plugin_manager: UringstackPluginManager, register_plugin: Register, bad: str
) -> None:
    """pydantic does not validate defaults: ``ge=1`` with 0, or ``"lots"`` for a float, was
    shown by ``config show`` and handed to the plugin's hooks."""

    class Bad(BaseModel):
        min_entries: int = Field(default=0 if bad == "out of bounds" else 1, ge=1)
        ratio: float = "lots" if bad == "wrong type" else 0.5  # type: ignore[assignment]

    class Plugin:
        @hookimpl
        def uringstack_config_sections(self) -> tuple[str, type[BaseModel]]:
            return ("baddefault", Bad)

    register_plugin(Plugin(), "baddefault")
    field = "min_entries" if bad == "out of bounds" else "ratio"
    with pytest.raises(PluginError, match=f"(?s)needs a default for every field, one its field accepts.*{field}"):
        load_config(env={}, plugin_manager=plugin_manager)


def test_section_name_with_a_double_underscore_is_rejected(
    plugin_manager: UringstackPluginManager, register_plugin: Register
) -> None:
    """``__`` separates section and key in ``URINGSTACK_<SECTION>__<KEY>``: a section
    ``my__plug`` loaded from a file, and its variables were refused as section ``my``."""

    class Section(BaseModel):
        mode: str = "auto"

    class Plugin:
        @hookimpl
        def uringstack_config_sections(self) -> tuple[str, type[BaseModel]]:
            return ("my__plug", Section)

    register_plugin(Plugin(), "dunder")
    with pytest.raises(PluginError, match="without '__'"):
        load_config(env={}, plugin_manager=plugin_manager)


# --- schema, fixtures, CLI ------------------------------------------------------------------


def test_schema_covers_core_and_plugin_sections(pm: UringstackPluginManager) -> None:
    schema = config_schema(pm)
    assert set(schema["properties"]) == {"core", "poll"}
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    assert defs["PollConfig"]["properties"]["mode"]["enum"] == ["auto", "on", "off"]
    assert defs["CoreConfig"]["additionalProperties"] is False


def test_stack_config_fixture(stack_config: Callable[..., StackConfig], register_plugin: Register) -> None:
    register_plugin(PollPlugin(), "poll")
    config = stack_config({"poll": {"mode": "off"}, "core": {"ring_entries": 64}})
    assert config.section("poll", PollConfig).mode == "off"
    assert config.core.ring_entries == 64
    with pytest.raises(ConfigError, match=r"poll\.mode"):
        stack_config({"poll": {"mode": "sometimes"}})


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # The CLI loads installed plugins; keep these tests about the core section.
    for name in ("URINGSTACK_CONFIG", "URINGSTACK_CORE__RING_ENTRIES"):
        monkeypatch.delenv(name, raising=False)
    return {"URINGSTACK_DISABLE_PLUGIN_AUTOLOAD": "1"}


def test_cli_validate(tmp_path: pathlib.Path, cli_env: dict[str, str]) -> None:
    from uringstack.cli import cli

    runner = CliRunner()
    good = write(tmp_path, "[core]\nring_entries = 128\n", "good.toml")
    result = runner.invoke(cli, ["config", "validate", str(good)], env=cli_env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("valid")

    bad = write(tmp_path, "[core]\nring_entries = 100\nbackend = 'spdk'\n", "bad.toml")
    result = runner.invoke(cli, ["config", "validate", str(bad)], env=cli_env)
    assert result.exit_code == 2
    assert "core.ring_entries: must be a power of two" in result.output
    assert "core.backend: 'spdk' is not one of auto, uring, fallback" in result.output

    # The environment is ignored unless asked for.
    env = {**cli_env, "URINGSTACK_CORE__RING_ENTRIES": "3"}
    assert runner.invoke(cli, ["config", "validate", str(good)], env=env).exit_code == 0
    result = runner.invoke(cli, ["config", "validate", "--with-env", str(good)], env=env)
    assert result.exit_code == 2


def test_cli_validate_notes_a_missing_tune_results_file(tmp_path: pathlib.Path, cli_env: dict[str, str]) -> None:
    # valid (the file may be shipped later), but it said nothing while the plan ignores it
    from uringstack.cli import cli

    path = write(tmp_path, f"[core]\ntune_results = '{tmp_path / 'tune.json'}'\n")
    result = CliRunner().invoke(cli, ["config", "validate", str(path)], env=cli_env)
    assert result.exit_code == 0, result.output
    assert f"note: core.tune_results: {tmp_path / 'tune.json'} is not a file here" in result.output
    (tmp_path / "tune.json").write_text("{}")
    result = CliRunner().invoke(cli, ["config", "validate", str(path)], env=cli_env)
    assert result.exit_code == 0 and "tune_results" not in result.output


def test_cli_show_json_has_provenance(tmp_path: pathlib.Path, cli_env: dict[str, str]) -> None:
    from uringstack.cli import cli

    path = write(tmp_path, "[core]\nring_entries = 128\n")
    env = {**cli_env, "URINGSTACK_CORE__DIRECT": "1"}
    result = CliRunner().invoke(cli, ["config", "show", "--config", str(path), "--json"], env=env)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    assert data["config"]["core"]["ring_entries"] == 128
    assert data["provenance"]["core.ring_entries"] == f"file:{path}"
    assert data["provenance"]["core.direct"] == "env:URINGSTACK_CORE__DIRECT"
    assert data["provenance"]["core.backend"] == "default"

    table = CliRunner().invoke(cli, ["config", "show", "--config", str(path)], env=env)
    assert table.exit_code == 0 and "core.ring_entries" in table.output


def test_cli_schema(cli_env: dict[str, str]) -> None:
    from uringstack.cli import cli

    result = CliRunner().invoke(cli, ["config", "schema"], env=cli_env)
    assert result.exit_code == 0
    assert "core" in json.loads(result.output)["properties"]
