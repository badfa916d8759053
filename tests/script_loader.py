"""Load a standalone script from ``scripts/`` as a module, for the tests of what it computes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).parents[1] / "scripts"


def load_script(filename: str, module_name: str) -> ModuleType:
    """Execute ``scripts/<filename>`` as module *module_name* (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(module_name, SCRIPTS / filename)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
