"""A misspelled config section gets a "did you mean", as a misspelled hook does."""

from __future__ import annotations

import pathlib

import pytest

from uringstack.config import ConfigError, load_config


def test_misspelled_section_in_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[sqpol]\nmode = 'off'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    [problem] = info.value.problems
    assert problem.key == "sqpol"
    assert "did you mean 'sqpoll'?" in str(problem)


def test_misspelled_section_in_the_environment() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"URINGSTACK_FIXEBUF__MODE": "off"})
    assert "did you mean 'fixedbuf'?" in str(info.value)


def test_nothing_close_gets_no_suggestion(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[zzzzzz]\nx = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "did you mean" not in str(info.value)
