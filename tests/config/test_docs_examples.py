"""Every TOML and environment example in docs/config.md does what the page says."""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

from uringstack.config import RESERVED_ENV_VARS, ConfigError, load_config

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "config.md"
TEXT = DOC.read_text()
TOML_BLOCKS = re.findall(r"^```toml\n(.*?)^```", TEXT, flags=re.MULTILINE | re.DOTALL)
# `URINGSTACK_X__Y=value` in prose or in a shell line; a quoted value is one shell word.
ENV_EXAMPLES = sorted(set(re.findall(r"\b(URINGSTACK_[A-Z0-9_]+)=('[^']*'|\"[^\"]*\"|[^\s`]+)", TEXT)))
BAD = "# bad.toml"
ERROR_EXAMPLE = re.search(
    r"^\$ (\S+)=(\S+) uringstack config validate --with-env bad\.toml\n(.*?)^```", TEXT, flags=re.MULTILINE | re.DOTALL
)


def test_examples_are_found() -> None:
    # Guards the test itself: a format change must not make it vacuous.
    assert len(TOML_BLOCKS) >= 3
    assert len(ENV_EXAMPLES) >= 10
    assert not re.search(r"`…__", TEXT), "abbreviated variable names cannot be tried; spell them out"


@pytest.mark.parametrize("block", [b for b in TOML_BLOCKS if not b.startswith(BAD)])
def test_toml_example_is_valid(block: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "uringstack.toml"
    path.write_text(block)
    load_config(path, env={})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        e
        for e in ENV_EXAMPLES
        if (ERROR_EXAMPLE is None or e != ERROR_EXAMPLE.group(1, 2)) and e[0] not in RESERVED_ENV_VARS
    ],
)
def test_environment_example_is_valid(name: str, value: str) -> None:
    (word,) = shlex.split(value)
    load_config(env={name: word})


def test_error_example_is_what_validate_prints(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = [b for b in TOML_BLOCKS if b.startswith(BAD)]
    match = ERROR_EXAMPLE
    assert match is not None, "the error example's command line is missing"
    monkeypatch.chdir(tmp_path)
    pathlib.Path("bad.toml").write_text(block)
    with pytest.raises(ConfigError) as info:
        load_config("bad.toml", env={match.group(1): match.group(2)})
    assert str(info.value).splitlines() == match.group(3).rstrip("\n").splitlines()
