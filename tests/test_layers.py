"""The core's modules form layers that follow the data flow, and import no cycle.

Every import of a ``uringstack`` module counts: top-level, deferred inside a
function, and under ``if TYPE_CHECKING:`` (a type-only import still ties the
two modules together for a reader and for mypy).  A module may import its own
layer or a lower one; the module graph must have no cycle at all.
"""

from __future__ import annotations

import ast
import collections
import pathlib
from collections.abc import Iterator

CORE = pathlib.Path(__file__).resolve().parent.parent / "core"

# Low to high.  A module's layer is that of its longest listed prefix.
# config shares the plugin contract's layer: the config's schema is built from
# the plugins' sections (config.load makes the plugin manager) while the hooks
# receive the config (hookspecs name config.model.StackConfig); within the
# layer the modules import no cycle.  The WAL benchmark is a bench command
# kept beside the WAL it measures.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "in_progress", "reaper"),
    ("ring",),
    ("probe",),
    ("types",),
    ("config", "hookspecs", "feature", "pluginmanager"),
    ("plan",),
    ("stack",),
    ("fileobj", "aio", "wal"),
    ("tune", "bench", "cli", "testing", "wal.bench"),
)

# Modules that exist only once built: the cffi extension, and each CPython extension (a C
# source with its type stub beside it: fileobj/_fastio, ring/_futures).
BUILT_MODULES = {"uringstack.ring._uring"} | {
    ".".join(["uringstack", *c.relative_to(CORE).with_suffix("").parts])
    for c in CORE.rglob("*.c")
    if c.with_suffix(".pyi").exists()
}

# (importer, imported): why this upward or cyclic import is needed.
ALLOWED: dict[tuple[str, str], str] = {
    ("uringstack.stack", "uringstack.tune.start"): (
        'open_stack runs the tuner (which builds stacks) only for core.tune = "on-start"'
    ),
}


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(CORE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(["uringstack", *parts])] = path
    return mods


MODULES = _modules()


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer.split(".")
    if MODULES[importer].name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _target(name: str) -> str:
    """The module *name* is, or "" for a name outside the core."""
    if name in MODULES or name in BUILT_MODULES:
        return name
    assert not name.startswith("uringstack.") or name.startswith("uringstack.plugins"), f"unknown module {name}"
    return ""


def imports(module: str) -> Iterator[tuple[str, int]]:
    """Every (core module, line) *module* imports, wherever the import statement sits."""
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            if base != "uringstack" and not base.startswith("uringstack."):
                continue
            for alias in node.names:
                # `from pkg import sub` imports the submodule; `from mod import name` the module.
                sub = f"{base}.{alias.name}"
                yield (sub if sub in MODULES or sub in BUILT_MODULES else _target(base)), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "uringstack" or alias.name.startswith("uringstack."):
                    yield _target(alias.name), node.lineno


def graph() -> dict[str, dict[str, int]]:
    edges: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for module in MODULES:
        for target, line in imports(module):
            if target and target != module and target not in BUILT_MODULES:
                edges[module].setdefault(target, line)
    return edges


def layer(module: str) -> int:
    rest = module.removeprefix("uringstack.")
    best, depth = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (rest == name or rest.startswith(name + ".")) and len(name) > depth:
                best, depth = index, len(name)
    return best


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in MODULES if m != "uringstack" and layer(m) < 0)
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_imports_go_down_the_layers() -> None:
    bad = [
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)}) at line {line}"
        for m, targets in sorted(graph().items())
        for t, line in sorted(targets.items())
        if m != "uringstack" and layer(t) > layer(m) and (m, t) not in ALLOWED
    ]
    assert not bad, "imports up the layers:\n" + "\n".join(bad)


def _cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    edges = {m: {t: line for t, line in ts.items() if (m, t) not in ALLOWED} for m, ts in graph().items()}
    cycles = _cycles(edges)
    detail = [
        "; ".join(f"{m} -> {t} (line {line})" for m in comp for t, line in edges[m].items() if t in comp)
        for comp in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_allow_list_is_still_needed() -> None:
    edges = graph()
    stale = [pair for pair in ALLOWED if pair[1] not in edges.get(pair[0], {})]
    assert not stale, f"allowed imports that no longer exist (remove them): {stale}"
