"""Fixtures for the plugin-framework tests: fake installed distributions."""

from __future__ import annotations

import importlib.metadata
import pathlib
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping

import pytest

MakeDist = Callable[..., pathlib.Path]


def builtin_plugin_names() -> list[str]:
    """Entry-point names uringstack itself declares (the built-in plugins).

    Tests that autoload block them, so they test the loader and not whether
    the built-ins exist or import on this machine yet.
    """
    return sorted(
        {
            ep.name
            for dist in importlib.metadata.distributions()
            if dist.metadata["Name"] == "uringstack"
            for ep in dist.entry_points
            if ep.group == "uringstack"
        }
    )


@pytest.fixture
def builtins() -> list[str]:
    """The built-in plugin names, to block them in autoload tests."""
    return builtin_plugin_names()


@pytest.fixture
def make_dist(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Factory: an "installed" distribution with ``uringstack`` entry points, on sys.path.

    ``make_dist("acme-plugin", {"acme": "acme_mod"}, {"acme_mod": "source"})``
    writes the modules and a ``.dist-info`` with ``entry_points.txt`` into a
    directory prepended to sys.path, which is exactly what importlib.metadata
    (and so pluggy) reads for a pip-installed package.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def make(name: str, entry_points: Mapping[str, str], modules: Mapping[str, str]) -> pathlib.Path:
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        info = site / f"{name.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[uringstack]\n{eps}\n")
        return site

    yield make
    for module in created:
        sys.modules.pop(module, None)
