"""The table of ``uringstack bench fileobj``: each side's median, the ratios, the targets."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _cell(side: dict[str, Any]) -> str:
    if "rate" in side:
        return f"{side['rate']:,.0f}/s (cpu {side['cpu_us_per_read']:.1f} µs/read)"
    return f"{side['seconds']:.3f} s (cpu {side['cpu_seconds']:.3f} s)"


def render(doc: dict[str, Any], out: Console) -> None:
    """The result document as a table: each side's median, the ratios, the target."""
    spec = doc["spec"]
    table = Table(
        title=f"file objects beside the built-ins: {spec['file_size'] >> 20} MiB, {spec['reps']} rep(s) "
        f"(median), backend {doc['backend']}"
    )
    for col in ("bench", "sides (median)", "ratio", "target", "met"):
        table.add_column(col)
    for r in doc["results"]:
        if r["status"] != "ok":
            table.add_row(r["bench"], f"{r['status']}: {r['reason']}", "-", r["target"]["text"], "-")
            continue
        sides = "\n".join(f"{k}: {_cell(v)}" for k, v in r["sides"].items())
        ratios = "\n".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items())
        met = "-" if r["met"] is None else "yes" if r["met"] else "no"
        table.add_row(r["bench"], sides, ratios, r["target"]["text"], met)
    out.print(table)
