"""docs/schemas/ holds the JSON schemas of `probe --json` and `plan --json`, generated from the models."""

from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner

from uringstack.cli import cli
from uringstack.cli.schemas import render, schemas

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schemas"


@pytest.mark.parametrize("name", ["probe", "plan"])
def test_docs_schema_is_current(name: str) -> None:
    path = DOCS / f"{name}.schema.json"
    assert path.exists(), "run: python -m uringstack.cli.schemas docs/schemas"
    assert path.read_text() == render(schemas()[name]), (
        f"{path} is stale; regenerate with: python -m uringstack.cli.schemas docs/schemas"
    )


def test_plan_json_has_the_schema_top_level_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    # The schema describes what the command really prints (checked on the keys,
    # without a JSON-schema validator dependency).
    monkeypatch.delenv("URINGSTACK_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["plan", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    schema = schemas()["plan"]
    assert set(schema["required"]) <= set(printed) <= set(schema["properties"])
