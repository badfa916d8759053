"""File and environment values are typed strictly; every section refuses unknown keys."""

from __future__ import annotations

import pathlib

import pytest
from pydantic import ValidationError

from uringstack.config import ConfigError, load_config
from uringstack.pluginmanager import make_plugin_manager
from uringstack.types import FeatureConfig

BUILTIN_SECTIONS = {"fallback", "fixedbuf", "iopoll", "nvme_passthrough", "sqpoll"}


def _problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return {p.key: str(p) for p in exc.value.problems}


def _toml(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("[core]\nring_entries = true", "core.ring_entries"),
        ("[core]\nring_entries = 512.0", "core.ring_entries"),
        ('[core]\nring_entries = "512"', "core.ring_entries"),
        ('[core]\ndirect = "yes"', "core.direct"),
        ("[core]\ndirect = 1", "core.direct"),
        ("[core]\ncores = [true]", "core.cores"),
        ('[sqpoll]\nshare = "true"', "sqpoll.share"),
        ("[sqpoll]\nidle_ms = false", "sqpoll.idle_ms"),
        ('[fixedbuf]\ncount = "8"', "fixedbuf.count"),
        ('[nvme_passthrough]\niopoll = "no"', "nvme_passthrough.iopoll"),
    ],
)
def test_toml_values_of_the_wrong_type_are_refused(tmp_path: pathlib.Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_toml(tmp_path, line), env={})
    problems = _problems(info)
    assert key in problems, problems
    assert "file:" in problems[key]


@pytest.mark.parametrize(
    ("name", "value", "key", "expected"),
    [
        ("URINGSTACK_CORE__RING_ENTRIES", "512", ("core", "ring_entries"), 512),
        ("URINGSTACK_CORE__RING_ENTRIES", " 64 ", ("core", "ring_entries"), 64),
        ("URINGSTACK_CORE__DIRECT", "true", ("core", "direct"), True),
        ("URINGSTACK_CORE__DIRECT", "FALSE", ("core", "direct"), False),
        ("URINGSTACK_CORE__DIRECT", "1", ("core", "direct"), True),
        ("URINGSTACK_CORE__DIRECT", "0", ("core", "direct"), False),
        ("URINGSTACK_SQPOLL__CPU", "auto", ("sqpoll", "cpu"), "auto"),
        ("URINGSTACK_SQPOLL__CPU", "1", ("sqpoll", "cpu"), 1),
        ("URINGSTACK_SQPOLL__MODE", "on", ("sqpoll", "mode"), "on"),
        ("URINGSTACK_CORE__CORES", "0-1", ("core", "cores"), [0, 1]),
    ],
)
def test_environment_values_in_the_documented_forms(
    name: str, value: str, key: tuple[str, str], expected: object
) -> None:
    config = load_config(env={name: value}).config
    assert getattr(getattr(config, key[0]), key[1]) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("URINGSTACK_CORE__DIRECT", "yes"),
        ("URINGSTACK_CORE__DIRECT", "on"),
        ("URINGSTACK_CORE__DIRECT", "2"),
        ("URINGSTACK_CORE__RING_ENTRIES", "true"),
        ("URINGSTACK_CORE__RING_ENTRIES", "512.0"),
        ("URINGSTACK_CORE__RING_ENTRIES", "0x200"),
        ("URINGSTACK_SQPOLL__SHARE", "yes"),
        ("URINGSTACK_SQPOLL__CPU", "first"),
    ],
)
def test_environment_values_outside_the_grammar_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={name: value})
    (problem,) = info.value.problems
    assert f"env:{name}" in str(problem)
    assert repr(value) in str(problem)


def test_negative_cpu_message_keeps_its_capitals(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_toml(tmp_path, "[core]\ncores = [0, -1]"), env={})
    assert "core.cores: CPU ids are not negative" in str(info.value)


def test_negative_sqpoll_cpu_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_toml(tmp_path, "[sqpoll]\ncpu = -1"), env={})
    assert "sqpoll.cpu" in _problems(info)


def test_feature_config_base_refuses_unknown_keys() -> None:
    class Mine(FeatureConfig):  # a plugin that does not repeat extra="forbid" itself
        depth: int = 1

    with pytest.raises(ValidationError, match="depth2"):
        Mine(depth2=3)  # type: ignore[call-arg]


def test_every_builtin_section_refuses_unknown_keys(tmp_path: pathlib.Path) -> None:
    sections = {s.name: s for s in make_plugin_manager().config_sections()}
    assert set(sections) >= BUILTIN_SECTIONS, "a built-in plugin section is missing: the check would be vacuous"
    for name, section in sections.items():
        assert issubclass(section.model, FeatureConfig), f"[{name}] does not derive from FeatureConfig"
        with pytest.raises(ConfigError) as info:
            load_config(_toml(tmp_path, f"[{name}]\nno_such_key = 1\n"), env={})
        problems = _problems(info)
        assert f"{name}.no_such_key" in problems, f"[{name}] accepted an unknown key: {problems}"
        assert "unknown key" in problems[f"{name}.no_such_key"]
        with pytest.raises(ConfigError) as info:
            load_config(env={f"URINGSTACK_{name.upper()}__NO_SUCH_KEY": "1"})
        assert f"{name}.no_such_key" in _problems(info)


@pytest.mark.parametrize(
    "name", ["URINGSTACK_CORE__DIRECT", "URINGSTACK_SQPOLL__SHARE", "URINGSTACK_NVME_PASSTHROUGH__IOPOLL"]
)
@pytest.mark.parametrize("value", ["yes", "on", "2", "truee"])
def test_a_bad_environment_boolean_lists_every_accepted_spelling(name: str, value: str) -> None:
    """The error names what the environment grammar accepts (1/0 too, any case), not only
    the TOML booleans; and every spelling it lists is accepted."""
    with pytest.raises(ConfigError) as info:
        load_config(env={name: value})
    (problem,) = info.value.problems
    text = str(problem)
    assert f"(got {value!r}; allowed: true, false, 1, 0 (any case)) [env:{name}]" in text, text
    for word in ("true", "false", "1", "0", "TRUE", "False"):
        load_config(env={name: word})


def test_a_bad_file_boolean_lists_the_toml_booleans(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_toml(tmp_path, "[core]\ndirect = 1"), env={})
    assert "(got 1; allowed: true, false) [file:" in str(info.value.problems[0])


@pytest.mark.parametrize(
    ("table", "key", "allowed"),
    [
        ('{"ring_entries": "+128"}', "core.ring_entries", "a power of two"),
        ('{"ring_entries": "512"}', "core.ring_entries", "a power of two"),
        ('{"direct": 1}', "core.direct", "allowed: true, false)"),
        ('{"direct": "true"}', "core.direct", "allowed: true, false)"),
    ],
)
def test_a_whole_section_in_json_is_typed_as_in_the_file(table: str, key: str, allowed: str) -> None:
    """docs/config.md: ``URINGSTACK_CORE='{...}'`` is "typed as in the file". Before,
    its strings were parsed like a key's own variable ("+128" became 128) while
    its JSON 1 for a boolean was refused with "allowed: ..., 1, 0"."""
    with pytest.raises(ConfigError) as info:
        load_config(env={"URINGSTACK_CORE": table})
    (problem,) = info.value.problems
    assert problem.key == key and allowed in str(problem) and "[env:URINGSTACK_CORE]" in str(problem)


def test_a_keys_own_variable_is_still_text_beside_a_json_section() -> None:
    env = {"URINGSTACK_CORE": '{"direct": true}', "URINGSTACK_CORE__RING_ENTRIES": "+128"}
    config = load_config(env=env).config
    assert config.core.direct is True and config.core.ring_entries == 128


@pytest.mark.parametrize("key", ["iopoll.entries", "nvme_passthrough.entries"])
def test_ring_sizes_of_plugins_are_powers_of_two_as_the_cores_is(key: str) -> None:
    """The plan showed ``entries = 100`` where the kernel made 128 (``core.ring_entries``
    refused 100 already)."""
    with pytest.raises(ConfigError, match=rf"{key}: must be a power of two from 2 to 32768 \(got 100\)"):
        load_config(env={}, overrides={key: 100})
    section, name = key.split(".")
    assert getattr(load_config(env={}, overrides={key: 64}).config.sections()[section], name) == 64


def test_a_value_that_breaks_a_bound_is_shown_even_if_the_bound_has_its_digits() -> None:
    """``wait_timeout_s = 0`` said "input should be greater than 0" without "got 0": the
    value was left out wherever its text appeared anywhere in the message."""
    with pytest.raises(ConfigError) as info:
        load_config(env={"URINGSTACK_CORE__WAIT_TIMEOUT_S": "0"})
    assert "input should be greater than 0 (got 0" in str(info.value)


@pytest.mark.parametrize("key", ["core.ring_entries", "iopoll.entries", "nvme_passthrough.entries"])
def test_a_one_entry_ring_is_refused(key: str) -> None:
    """A 1-entry ring's CQ of 2 holds no op besides the 2 the ring keeps for itself: with
    ``core.ring_entries = 1`` every batch failed with E2BIG (session 31)."""
    with pytest.raises(ConfigError, match=rf"{key}: must be a power of two from 2 to 32768 \(got 1\)"):
        load_config(env={}, overrides={key: 1})


def test_the_smallest_ring_size_taken_serves_batches(tmp_path: pathlib.Path) -> None:
    from uringstack.stack import open_stack

    path = tmp_path / "f"
    path.write_bytes(b"x" * 8192)
    with open_stack(overrides={"core.ring_entries": 2, "core.backend": "uring"}) as stack, stack.open(path) as h:
        assert h.read_many([0, 4096], [bytearray(4096), bytearray(4096)]) == [4096, 4096]
        assert h.write_durable(b"y" * 4096, 0) == 4096


def test_values_are_shown_once_and_as_toml(tmp_path: pathlib.Path) -> None:
    """Until session 32 ``cores = [true]`` showed Python's ``[True]``, and a fixedbuf buffer size
    that is not a multiple of the page showed its value twice ("got 5000 (got 5000; ...")."""
    f = tmp_path / "c.toml"
    f.write_text("[core]\ncores = [true, 'x']\n[fixedbuf]\nbuffer_size = 5000\n")
    with pytest.raises(ConfigError) as info:
        load_config(f, env={})
    text = str(info.value)
    assert "(got [true, 'x'];" in text, text
    assert "fixedbuf.buffer_size: must be a multiple of 4096 (page size) (got 5000;" in text, text
    assert text.count("5000") == 1, text
