"""Interleaved rounds: fio and the uringstack rows take turns in short slices.

On a device whose speed drifts (the virtio disk of the development VM reads
from the host's page cache of its image, which warms as it is read and is
shared with other tenants: 4k to 90k IOPS for the same fio job, see
docs/bench.md), a row measured after fio, or before, gets another device, and
the ratio of two back-to-back runs means nothing.  Here every row and fio's
job run in *rounds* slices each, taking turns; the order reverses every round
(ABBA: fio first in even rounds, last in odd ones), so a steady drift favours
neither side.  Each row's ratio to fio is the **median of its per-round
paired ratios** (row in round r over fio in round r), for IOPS and for the
p50/p99 latencies; the per-slice figures are kept in the row's
``details.rounds`` so the spread can be shown.

The aggregate row adds up ops, bytes and seconds over the slices (so IOPS and
the bytes check cover every slice); its latency percentiles are the medians
of the per-slice percentiles, the same rule for the rows and fio (fio's
percentiles cannot be merged across runs).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from uringstack.bench.metrics import ModeResult
from uringstack.bench.spec import BenchSpec

REFERENCE = "fio io_uring"
ORDER = "ABBA: the sequence (fio jobs, then the rows) in even rounds, reversed in odd rounds"
_PCTS = ("p50", "p99", "p99_9", "mean")


@dataclass(frozen=True)
class Slot:
    """One entry of a round: a row name and how to run its slice of round *n* (``run(n)``)."""

    name: str
    run: Callable[[int], ModeResult]


SLICE_RAMP_S = (0.25, 0.5)  # warm-up of a slice: at least, at most (not counted)


def slice_spec(spec: BenchSpec, rounds: int) -> BenchSpec:
    """The spec of one slice: the row's measured seconds split over *rounds*.

    Unless the spec fixes its warm-up, a slice gets a tenth of its length, but at
    least 0.25 s: the device idles between slices (fio starting, a row building
    its stack: 0.05-1 s here), and a device that refills a burst while idle
    spends it in the warm-up, not in the measured window."""
    one = spec.duration / rounds
    lo, hi = SLICE_RAMP_S
    ramp = spec.ramp if spec.ramp >= 0 else max(lo, min(hi, one / 10))
    return dataclasses.replace(spec, duration=one, ramp=ramp)


def round_spec(one: BenchSpec, rnd: int) -> BenchSpec:
    """The slice spec of round *rnd*: its own offset stream.  With the same seed every
    slice would re-read the blocks of the first (which a device cache then serves hot),
    while fio draws fresh offsets each run (``--randrepeat=0``)."""
    return dataclasses.replace(one, seed=one.seed * 1_000_003 + rnd)


def round_order(names: Sequence[str], rnd: int) -> list[str]:
    """The slots of round *rnd* in the order they run (ABBA: reversed every other round)."""
    return list(names) if rnd % 2 == 0 else list(reversed(names))


@dataclass
class Rounds:
    """Every slice's result, by slot name, in round order."""

    slices: dict[str, list[tuple[int, int, float, ModeResult]]]  # name -> (round, position, t_s, result)
    sequence: list[list[str]]


def run_rounds(
    slots: Sequence[Slot],
    rounds: int,
    on_slice: Callable[[int, str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Rounds:
    """Run every slot once per round, in :func:`round_order`.  A slot skipped in its first
    slice (its rung is unavailable here) is not run again; a failed slice is kept (the
    row then reports the failure) and the slot runs on in later rounds."""
    by_name = {s.name: s for s in slots}
    slices: dict[str, list[tuple[int, int, float, ModeResult]]] = {s.name: [] for s in slots}
    skipped: set[str] = set()
    sequence: list[list[str]] = []
    t0 = clock()
    for rnd in range(rounds):
        ran: list[str] = []
        for name in round_order([s.name for s in slots], rnd):
            if name in skipped:
                continue
            if on_slice is not None:
                on_slice(rnd, name)
            started = clock() - t0
            res = by_name[name].run(rnd)
            slices[name].append((rnd, len(ran), round(started, 3), res))
            ran.append(name)
            if res.status == "skipped":
                skipped.add(name)
        sequence.append(ran)
    return Rounds(slices, sequence)


def _slice_record(rnd: int, pos: int, t_s: float, r: ModeResult) -> dict[str, Any]:
    rec: dict[str, Any] = {"round": rnd, "position": pos, "t_s": t_s, "status": r.status}
    if r.status != "ok":
        rec["reason"] = r.reason
        return rec
    rec.update(
        ops=r.ops,
        seconds=round(r.seconds, 6),
        iops=round(r.iops, 1),
        lat_us={k: round(v, 3) for k, v in r.lat_us.items()},
        cpu_us_per_io=None if r.cpu_us_per_io is None else round(r.cpu_us_per_io, 3),
    )
    if "clat_us" in r.details:
        rec["clat_us"] = r.details["clat_us"]
    return rec


def combine(name: str, slices: list[tuple[int, int, float, ModeResult]]) -> ModeResult:
    """One row from a slot's slices: sums of ops, bytes and seconds; medians of the
    per-slice percentiles; ``details.rounds`` holds every slice."""
    first = slices[0][3]
    records = [_slice_record(*s) for s in slices]
    if first.status == "skipped":
        return first
    results = [s[3] for s in slices]
    failed = [(s[0], s[3]) for s in slices if s[3].status != "ok"]
    base_details = {k: v for k, v in first.details.items() if k not in ("clat_us", "fio_cpu_pct")}  # per slice
    if failed:
        rnd, bad = failed[0]
        return ModeResult(
            mode=name,
            kind=first.kind,
            api=first.api,
            status="failed",
            reason=f"{len(failed)} of {len(slices)} slices failed; round {rnd}: {bad.reason}",
            details={**base_details, "rounds": records},
        )
    ops = sum(r.ops for r in results)
    nbytes = sum(r.bytes for r in results)
    secs = sum(r.seconds for r in results)
    lat = {k: statistics.median([r.lat_us[k] for r in results]) for k in _PCTS if all(k in r.lat_us for r in results)}
    enters = [r.enters_per_io for r in results]
    row = ModeResult(
        mode=name,
        kind=first.kind,
        api=first.api,
        status="ok",
        ops=ops,
        bytes=nbytes,
        seconds=secs,
        iops=ops / secs if secs > 0 else 0.0,
        mb_s=nbytes / secs / 1e6 if secs > 0 else 0.0,
        lat_us=lat,
        # CPU time over the slices' windows: weights by seconds, so CPU per I/O stays cpu / ops
        cpu_pct=sum(r.cpu_pct * r.seconds for r in results) / secs if secs > 0 else 0.0,
        details={**base_details, "rounds": records},
    )
    if all(e is not None for e in enters) and ops:
        row.enters_per_io = sum((e or 0.0) * r.ops for e, r in zip(enters, results, strict=True)) / ops
    clats = [r.details.get("clat_us") or {} for r in results]
    keys = [k for k in ("p50", "p99") if all(k in c for c in clats)]
    if keys:
        row.details["clat_us"] = {k: statistics.median([float(c[k]) for c in clats]) for k in keys}
    return row


def paired_ratios(row: ModeResult, ref: ModeResult) -> dict[str, list[float | None]]:
    """Per round: the row's IOPS, p50 and p99 over the reference's in the same round
    (None where either side has no figure for that round)."""
    ref_by_round = {rec["round"]: rec for rec in ref.details.get("rounds", []) if rec["status"] == "ok"}
    out: dict[str, list[float | None]] = {"iops": [], "p50": [], "p99": []}
    for rec in row.details.get("rounds", []):
        other = ref_by_round.get(rec["round"]) if rec["status"] == "ok" else None
        if other is None:
            for vs in out.values():
                vs.append(None)
            continue
        out["iops"].append(rec["iops"] / other["iops"] if other["iops"] else None)
        for k in ("p50", "p99"):
            a, b = rec["lat_us"].get(k), other["lat_us"].get(k)
            out[k].append(a / b if a is not None and b else None)
    return out


def paired_medians(row: ModeResult, ref: ModeResult) -> tuple[dict[str, float | None], dict[str, list[float | None]]]:
    """The medians of *row*'s per-round paired ratios to *ref* (IOPS, p50, p99), and the
    pairs themselves, rounded, one per round."""
    pairs = paired_ratios(row, ref)
    rounded = {k: [None if v is None else round(v, 4) for v in vs] for k, vs in pairs.items()}
    return {k: _median([v for v in vs if v is not None]) for k, vs in pairs.items()}, rounded


def apply_ratios(rows: list[ModeResult], reference: str = REFERENCE) -> None:
    """Each ok row's ratio to *reference*: the median of its per-round paired ratios
    (``details.ratio_rounds`` keeps them, rounded, one per round)."""
    ref = next((r for r in rows if r.mode == reference and r.status == "ok"), None)
    if ref is None:
        return
    for r in rows:
        if r.status != "ok":
            continue
        meds, r.details["ratio_rounds"] = paired_medians(r, ref)
        r.ratio_iops, r.ratio_p50, r.ratio_p99 = meds["iops"], meds["p50"], meds["p99"]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
