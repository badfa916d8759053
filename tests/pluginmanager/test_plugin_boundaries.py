"""No plugin imports another plugin or a private core module.

A plugin is written against the public core only, so it could live in its own
distribution (as third-party plugins do) and the core can change its private
modules freely.  "Public" is what docs/plugins.md lists under "Public core
modules": every ``import uringstack.X`` / ``from uringstack.X import ...`` in
``plugins/<name>/`` must name a listed module (or a submodule of a listed
package), or the plugin's own package.  Any module path with a segment that
starts with ``_`` is private whatever the list says.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
DOCS = ROOT / "docs" / "plugins.md"


def public_modules() -> set[str]:
    text = DOCS.read_text()
    section = text.split("## Public core modules", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(uringstack(?:\.[a-z_.]+)?)` \|", section, flags=re.MULTILINE))


def imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "uringstack":
                # `from uringstack import aio` imports the module uringstack.aio.
                found.extend((node.lineno, f"uringstack.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "uringstack" or name.startswith("uringstack.")]


def violation(plugin: str, module: str, public: set[str]) -> str | None:
    own = f"uringstack.plugins.{plugin}"
    if module == own or module.startswith(own + "."):
        return None
    if module.startswith("uringstack.plugins"):
        return "imports another plugin"
    if any(part.startswith("_") for part in module.split(".")):
        return "imports a private core module (name starts with '_')"
    parts = module.split(".")
    if not any(".".join(parts[:i]) in public for i in range(2, len(parts) + 1)):
        return "imports a core module not listed under 'Public core modules' in docs/plugins.md"
    return None


PLUGIN_FILES = sorted(PLUGINS.glob("*/**/*.py"))


def test_the_lists_are_not_empty() -> None:
    # Guards the test itself: a renamed heading or folder must not make it vacuous.
    assert len(PLUGIN_FILES) >= 10
    assert {"uringstack.hookspecs", "uringstack.types", "uringstack.ring"} <= public_modules()


def test_no_plugin_imports_another_plugin_or_private_core() -> None:
    public = public_modules()
    problems: list[str] = []
    for path in PLUGIN_FILES:
        plugin = path.relative_to(PLUGINS).parts[0]
        for line, module in imported_modules(path):
            why = violation(plugin, module, public)
            if why:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module}: {why}")
    assert not problems, "plugin boundary violations:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "bad"),
    [
        ("uringstack.plugins.iopoll.pipeline", True),
        ("uringstack.ring._native.build", True),
        ("uringstack.cli.plan", True),
        ("uringstack.plugins.sqpoll.plugin", False),
        ("uringstack.probe.model", False),
        ("uringstack.ring", False),
    ],
)
def test_the_rule_itself(module: str, bad: bool) -> None:
    assert (violation("sqpoll", module, public_modules()) is not None) is bad
