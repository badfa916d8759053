"""``uringstack wal``: verify and dump a write-ahead log directory (read-only)."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import click

from uringstack.wal.errors import WalCorruptionError
from uringstack.wal.recovery import LogScan, RecoveryMode, check, iter_records, scan
from uringstack.wal.segment import list_segments

# click's status for bad input: the directory given is not something to check
EXIT_NOT_A_WAL = 2


@click.group("wal")
def wal() -> None:
    """Inspect a write-ahead log directory without modifying it."""


def _scan_wal(directory: Path) -> LogScan:
    """Scan *directory*, or exit 2 when it holds no segment (``Wal.open`` always creates one)."""
    if not list_segments(directory):
        click.echo(
            f"error: {directory} is not a WAL directory: it holds no segment file (<20-digit LSN>.wal)", err=True
        )
        sys.exit(EXIT_NOT_A_WAL)
    return scan(directory)


@wal.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--mode",
    type=click.Choice([m.value for m in RecoveryMode]),
    default=RecoveryMode.TOLERATE_TAIL.value,
    show_default=True,
    help="what counts as acceptable: a torn tail passes under tolerate_tail only",
)
def verify(directory: Path, mode: str) -> None:
    """Check every segment and record; exit 1 on damage the MODE does not accept.

    Exits 2 if DIRECTORY is not a WAL directory (it holds no segment file).
    """
    result = _scan_wal(directory)
    for seg in result.segments:
        click.echo(
            f"{seg.path.name}: LSN {seg.first_lsn}..{seg.last_lsn} ({seg.records} records, {seg.end_offset} bytes used)"
        )
    last = result.next_lsn - 1
    click.echo(f"segments: {len(result.segments)}  records: {result.records}  last LSN: {last}")
    d = result.damage
    if d is not None:
        kind = (
            "torn tail (a last write a crash cut short, or damage there that looks the same)"
            if d.torn_tail
            else "CORRUPTION"
        )
        click.echo(f"{kind} in {d.path.name} at offset {d.offset}: {d.reason}", err=True)
        for p in result.discard:
            click.echo(f"  segment past the damage: {p.name}", err=True)
    try:
        check(result, RecoveryMode(mode))
    except WalCorruptionError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo("ok" if d is None else f"ok under {mode}: opening the log would {_repair_plan(result)}")


def _repair_plan(result: LogScan) -> str:
    """What opening the log does about its damage (``recover``), in words for ``verify``."""
    d = result.damage
    assert d is not None
    steps = [f"end it at LSN {result.next_lsn - 1}"]
    if d.torn_tail:
        # (never "unacknowledged": a bit flip within the last max_write_bytes looks the same
        # as a torn write, docs/wal.md, and may hit an acknowledged record)
        steps[0] += " (cutting its torn last write: unacknowledged if a crash tore it; damage there looks the same)"
    else:
        steps[0] += " (the records past the damage, which may have been acknowledged, are not read back)"
    if result.discard:
        steps.append(f"set aside {len(result.discard)} segment(s) past the damage as <name>.discarded")
    return " and ".join(steps)


@wal.command("dump")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--from", "from_lsn", type=click.IntRange(min=1), default=1, help="first LSN")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def dump(directory: Path, from_lsn: int, as_json: bool) -> None:
    """Print the records from LSN --from on (up to the first damage, if any)."""
    result = _scan_wal(directory)
    for lsn, payload in iter_records(result.segments, from_lsn):
        if as_json:
            obj = {
                "lsn": lsn,
                "length": len(payload),
                "data_b64": base64.b64encode(payload).decode(),
            }
            click.echo(json.dumps(obj))
        else:
            preview = payload[:48]
            text = repr(preview)[2:-1] + ("..." if len(payload) > 48 else "")
            click.echo(f"{lsn}\t{len(payload)}\t{text}")
    if result.damage is not None:
        click.echo(f"(stopped at damage in {result.damage.path.name}: {result.damage.reason})", err=True)
