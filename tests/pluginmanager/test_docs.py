"""docs/plugins.md documents every hook with its exact signature (datasette's test_docs idea)."""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest

from uringstack import hookspecs
from uringstack.pluginmanager import make_plugin_manager

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
HOOKS = sorted(name for name in vars(hookspecs) if name.startswith(hookspecs.PROJECT_NAME + "_"))


def signature_line(name: str) -> str:
    """``def hook(arg: Type, ...) -> Ret:`` as written in hookspecs.py."""
    # hookspecs.py uses `from __future__ import annotations`: annotations are
    # the source strings, which is exactly what the docs should show.
    sig = inspect.signature(getattr(hookspecs, name))
    args = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {name}({args}) -> {sig.return_annotation}:"


def doc_sections() -> dict[str, str]:
    text = DOCS.read_text()
    parts = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def test_hooks_found() -> None:
    # Guards the test itself: an import change must not make it vacuous.
    assert len(HOOKS) >= 10
    assert "uringstack_ring_params" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_exact_signature(hook: str) -> None:
    sections = doc_sections()
    assert hook in sections, f"docs/plugins.md has no '### {hook}' section"
    assert signature_line(hook) in sections[hook], (
        f"docs/plugins.md section {hook} must show the signature:\n{signature_line(hook)}"
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_kind_is_documented(hook: str) -> None:
    opts = make_plugin_manager(autoload=False).pm.parse_hookspec_opts(hookspecs, hook)
    assert opts is not None
    expected = "historic" if opts["historic"] else "firstresult" if opts["firstresult"] else "collect"
    match = re.search(r"^Kind: (\w+)", doc_sections()[hook], flags=re.MULTILINE)
    assert match is not None, f"section {hook} has no 'Kind:' line"
    assert match.group(1) == expected


def test_no_stale_hooks_in_docs() -> None:
    documented = {name for name in doc_sections() if name.startswith("uringstack_")}
    assert documented == set(HOOKS)
