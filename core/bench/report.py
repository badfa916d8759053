"""The result table (rich) printed by ``uringstack bench``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def _ratio(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}x"


def render(doc: dict[str, Any], console: Console) -> None:
    """Print the table of *doc* (the ``--json`` document), then skipped/failed reasons."""
    spec = doc["spec"]
    title = (
        f"{spec['workload']}  bs={spec['block_size']}  QD={spec['queue_depth']}  "
        f"workers={spec['workers']}  {'O_DIRECT' if spec['direct'] else 'buffered'}  "
        f"{spec['duration']:g}s  file={spec['file_size'] >> 20} MiB"
    )
    table = Table(
        title=title,
        caption="ratios are to fio io_uring in this run (latency: lower is better); "
        "B/IO = bytes the row's ops returned per op",
    )
    for col in (
        "mode",
        "IOPS",
        "MB/s",
        "B/IO",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "CPU%",
        "CPU µs/IO",
        "enter/IO",
        "syscall/IO",
        "IOPS/fio",
        "p50/fio",
        "p99/fio",
    ):
        table.add_column(col, justify="left" if col == "mode" else "right", no_wrap=True)
    notes: list[str] = []
    for r in doc["results"]:
        if r["status"] != "ok":
            notes.append(f"{r['mode']}: {r['status']}: {r['reason']}")
            continue
        lat = r["lat_us"]
        ratio = r["ratio_to_fio"]
        check = r.get("bytes_check", "ok")
        if check not in ("ok", ""):
            notes.append(f"{r['mode']}: {check}")
        table.add_row(
            r["mode"] + ("  [raw]" if r.get("api") == "raw" else ""),
            _num(r["iops"]),
            _num(r["mb_s"], 1),
            _num(r.get("bytes_per_io")) + ("" if check in ("ok", "") else " !"),
            _num(lat.get("p50"), 1),
            _num(lat.get("p99"), 1),
            _num(lat.get("p99_9"), 1),
            _num(r["cpu_pct"]),
            _num(r.get("cpu_us_per_io"), 2),
            _num(r["enters_per_io"], 3),
            _num(r["syscalls_per_io"], 2),
            _ratio(ratio["iops"]),
            _ratio(ratio["p50"]),
            _ratio(ratio["p99"]),
        )
    console.print(table)
    s = doc["summary"]
    if s["best_mode"]:
        console.print(
            f"best mode: {s['best_mode']} {_num(s['best_iops'])} IOPS = "
            f"{_ratio(s['best_vs_fio'])} fio io_uring, {_ratio(s['best_vs_fallback'])} fallback"
        )
    tuned = s.get("tuned")
    if tuned:
        cal = tuned.get("calibration") or {}
        if tuned["vs_best"] is not None:
            line = (
                f"tuned (auto): {_num(tuned['iops'])} IOPS = {_ratio(tuned['vs_best'])} the best rung "
                f"({tuned['best_mode']})"
            )
        else:
            line = f"tuned (auto): {tuned['status']} (no ratio to the best rung)"
        if cal.get("best"):
            picked = ", ".join(f"{k}={v}" for k, v in cal["best"].items())
            line += f"; uringstack tune ({cal['elapsed_s']:g} s of {cal['budget_s']:g}) chose {picked}"
        console.print(line)
    for r in doc["results"]:
        for key, why in (("vs_fio_sqpoll", " (SQPOLL on both sides, each a second CPU busy)"), ("vs_row", "")):
            vs = r["details"].get(key) if r["status"] == "ok" else None
            if vs:
                console.print(f"{r['mode']} vs {vs['reference']}{why}: {_vs(vs)}")
    if s.get("raw_ring_vs_fio") is not None:
        console.print(f"raw ring (not public API): {_ratio(s['raw_ring_vs_fio'])} fio io_uring")
    sc = s.get("scaling")
    if sc:
        pairs = ", ".join(f"{m} {v:.2f}x" for m, v in sc["ratios"].items())
        console.print(f"scaling to {sc['workers']} workers (IOPS ratio): {pairs}")
    il = doc.get("interleave")
    if il:
        _interleave_lines(il, doc["results"], console)
    if not doc["fio"]["available"]:
        console.print(f"fio not run: {doc['fio']['reason']}")
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")


def _vs(vs: dict[str, Any]) -> str:
    """A row's ratios to another row or job (``details.vs_row``, ``vs_fio_sqpoll``); with
    --rounds the range of the per-round pairs whose medians they are."""
    text = f"IOPS {_ratio(vs['iops'])}, p50 {_ratio(vs['p50'])}, p99 {_ratio(vs['p99'])}"
    rr = vs.get("ratio_rounds")
    if rr:
        text += f" (medians of per-round pairs; the pairs: IOPS {_spread(rr['iops'])}, p50 {_spread(rr['p50'])}, "
        text += f"p99 {_spread(rr['p99'])})"
    return text


def _spread(values: list[Any]) -> str:
    got = [v for v in values if v is not None]
    return f"{min(got):.2f}-{max(got):.2f}" if got else "-"


def _interleave_lines(il: dict[str, Any], rows: list[dict[str, Any]], console: Console) -> None:
    """How the rounds ran, and each row's per-round paired ratios (their median is the table's)."""
    warm = il.get("device_warm") or {}
    settle = il.get("settle") or {}
    console.print(
        f"interleaved: {il['rounds']} rounds of {il['slice_s']:g} s (+{il['ramp_s']:g} s warm-up), "
        f"order reversed every round; ratios = median of per-round ratios to {il['reference']}"
        + (f"; device warm-up {warm['mb_s']} MB/s" if warm.get("mb_s") else "")
        + (f"; settle {settle['seconds']:g} s of fio at {_num(settle.get('iops'))} IOPS" if settle else "")
    )
    for r in rows:
        rr = r["details"].get("ratio_rounds")
        if r["status"] == "ok" and rr and r["kind"] != "fio":
            console.print(
                f"  {r['mode']}: per-round IOPS/fio {_spread(rr['iops'])}, p50/fio {_spread(rr['p50'])}, "
                f"p99/fio {_spread(rr['p99'])}"
            )
