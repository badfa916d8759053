"""A plugin's section may use paths, enums, tuples and integer literals (session 28).

Strict validation (a TOML ``true`` is not the integer 1) wanted a ``Path``
object, an enum member, a tuple: what neither TOML, JSON nor the environment
can spell, so a third-party section with such a field could not be set at all
(and the tuple's error said "allowed: a list" while refusing one); a
``Literal[1, 2, 4]`` could not be set from the environment.
"""

from __future__ import annotations

import enum
import pathlib
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from uringstack.config import ConfigError, load_config
from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import make_plugin_manager


class Color(enum.Enum):
    red = "red"
    blue = "blue"


class Level(enum.IntEnum):
    low = 1
    high = 2


class TypedSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: pathlib.Path = pathlib.Path("/tmp")
    color: Color = Color.red
    level: Level = Level.low
    pair: tuple[int, int] = (1, 2)
    depth: Literal[1, 2, 4] = 1
    spare: pathlib.Path | None = None


class TypedPlugin:
    @hookimpl
    def uringstack_config_sections(self) -> tuple[str, type[BaseModel]]:
        return "typed", TypedSection


def _load(tmp_path: pathlib.Path, text: str | None = None, env: dict[str, str] | None = None) -> TypedSection:
    pm = make_plugin_manager()
    pm.register(TypedPlugin(), "typed")
    path = None
    if text is not None:
        path = tmp_path / "c.toml"
        path.write_text(text)
    return load_config(path, env=env or {}, plugin_manager=pm).config.section("typed", TypedSection)


def test_every_type_can_be_set_from_the_file(tmp_path: pathlib.Path) -> None:
    got = _load(tmp_path, '[typed]\npath = "/var"\ncolor = "blue"\nlevel = 2\npair = [3, 4]\ndepth = 4\nspare = "/x"\n')
    assert got.path == pathlib.Path("/var") and got.spare == pathlib.Path("/x")
    assert got.color is Color.blue and got.level is Level.high
    assert got.pair == (3, 4) and got.depth == 4


def test_every_type_can_be_set_from_the_environment(tmp_path: pathlib.Path) -> None:
    env = {
        "URINGSTACK_TYPED__PATH": "/var",
        "URINGSTACK_TYPED__COLOR": "blue",
        "URINGSTACK_TYPED__LEVEL": "2",
        "URINGSTACK_TYPED__PAIR": "[3, 4]",
        "URINGSTACK_TYPED__DEPTH": "4",
    }
    got = _load(tmp_path, env=env)
    assert (got.path, got.color, got.level, got.pair, got.depth) == (
        pathlib.Path("/var"),
        Color.blue,
        Level.high,
        (3, 4),
        4,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('color = "green"', "typed.color: 'green' is not one of red, blue"),
        ("level = true", "typed.level: true is not one of 1, 2"),  # (True == 1 in Python)
        ('pair = ["3", 4]', "typed.pair: item 0: input should be a valid integer"),
        ("pair = [3, 4, 5]", "allowed: a list of 2: an integer, an integer"),
        ("depth = 3", "typed.depth: 3 is not one of 1, 2, 4"),
        ("path = 5", "typed.path: input should be a path (a string) (got 5)"),
    ],
)
def test_wrong_values_are_still_refused_with_what_is_allowed(tmp_path: pathlib.Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f"[typed]\n{line}\n")
    assert message in str(info.value)
