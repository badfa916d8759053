"""Every ring is the plan's: no plugin module creates a ``Ring`` of its own.

A ring a plugin built itself (a private ring per file, a flush ring made at
open) never shows up in ``uringstack plan`` or ``Stack.describe()``, escapes
the plugins' ``ring_params`` decisions and the kernel-defect gate, and is not
closed with the stack.  Plugins ask for rings through ``FeatureVerdict.ring_roles``
and use ``worker.rings[role]``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLUGIN_FILES = sorted((ROOT / "plugins").glob("*/**/*.py"))


def ring_constructions(path: pathlib.Path) -> list[int]:
    """Lines of ``Ring(...)`` / ``<module>.Ring(...)`` calls in *path*."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name == "Ring":
                lines.append(node.lineno)
    return lines


def test_the_scan_finds_a_ring_construction(tmp_path: pathlib.Path) -> None:
    probe = tmp_path / "p.py"
    probe.write_text("from uringstack import ring\nr = ring.Ring(params)\nq = Ring(params)\n")
    assert ring_constructions(probe) == [2, 3]


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_plugin_builds_a_ring_outside_the_plan(path: pathlib.Path) -> None:
    found = ring_constructions(path)
    assert not found, (
        f"{path.relative_to(ROOT)} creates a Ring at line(s) {found}: declare the ring's role "
        "in the feature's verdict (ring_roles) so the plan builds it, and use worker.rings[role]"
    )
