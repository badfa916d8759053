"""JSON schemas of what ``uringstack probe --json`` and ``uringstack plan --json`` print.

Generated from the pydantic models, so they cannot drift from the code: the
copies in ``docs/schemas/`` are checked by a test, and regenerated with::

    python -m uringstack.cli.schemas docs/schemas
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def _models() -> dict[str, type[BaseModel]]:
    from uringstack.plan import Plan
    from uringstack.probe.model import Capabilities

    return {"probe": Capabilities, "plan": Plan}


def schemas() -> dict[str, dict[str, Any]]:
    """``{"probe": schema, "plan": schema}``: JSON Schema (draft 2020-12) of each output."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in _models().items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"uringstack-{name}.schema.json"
        out[name] = schema
    return out


def render(schema: dict[str, Any]) -> str:
    """The text of one schema file (stable key order, trailing newline)."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path) -> list[Path]:
    """Write ``<name>.schema.json`` for each output into *directory*; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(render(schema))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m uringstack.cli.schemas DIR``: write the schema files into DIR."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m uringstack.cli.schemas DIRECTORY", file=sys.stderr)
        return 2
    for path in write(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
