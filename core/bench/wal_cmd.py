"""``bench wal``: the WAL beside a naive Python WAL and fio's durable QD1 write."""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..wal.bench import run_wal_bench
from ..wal.config import WalConfig
from ..wal.record import HEADER_BYTES
from .runner import machine_info


def _fmt(v: Any, digits: int = 1) -> str:
    return f"{v:,.{digits}f}" if isinstance(v, float | int) else "-"


@click.command("wal")
@click.option("--appenders", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--record-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="payload bytes per record (at most 1048560: a framed record fits in max_batch_bytes)")  # fmt: skip
@click.option(
    "--duration",
    type=click.FloatRange(min=0.5),
    default=5.0,
    show_default=True,
    help="seconds per row, split over --rounds interleaved rounds",
)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--backend", type=click.Choice(["auto", "uring", "fallback", "posix"]), default="auto",
              show_default=True,
              help="core.backend of the stack the WAL builds (posix: the old name of fallback)")  # fmt: skip
@click.option("--dir", "directory", type=click.Path(file_okay=False, exists=True), default=None,
              help="where to write (default: a temporary directory under /var/tmp)")  # fmt: skip
@click.option("--asyncio", "use_asyncio", is_flag=True,
              help="add a row with the appenders as asyncio tasks (append_async on one event loop)")  # fmt: skip
@click.option("--async-flush", type=click.Choice(["thread", "loop"]), default="thread", show_default=True,
              help="the log's async_flush: who writes the asyncio row's batches (docs/wal.md)")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the raw result as JSON")
def wal_bench_command(
    appenders: int, record_size: int, duration: float, rounds: int, backend: str, directory: str | None,
    use_asyncio: bool, async_flush: str, as_json: bool,
) -> None:  # fmt: skip
    """Durable appends/s, MB/s and ack latency p50/p99/p99.9, with ratios to the references.

    The fio reference writes with the log's pattern: its backend's engine
    (io_uring, or psync for the fallback), its sync (O_DSYNC writes or
    write + fdatasync) and its O_DIRECT setting.  When the log's flushes
    are larger than 4 KiB (a 4 KiB record is an 8 KiB write: its header
    spills into a second block), a second fio row writes that many bytes:
    its ratio to fio 4k is what the format costs, the log's ratio to it what
    the rest does.  Each WAL row says how often it flushed and how much of
    that time was the durable write (the rest: Python and thread hand-offs).
    """
    largest = WalConfig().max_batch_bytes - HEADER_BYTES  # the WAL's largest payload
    if record_size > largest:
        raise click.BadParameter(
            f"{record_size} bytes is more than the WAL's largest record, {largest} bytes "
            f"(a framed record must fit in max_batch_bytes={WalConfig().max_batch_bytes})",
            param_hint="'--record-size'",
        )
    config = WalConfig(async_flush=async_flush)  # type: ignore[arg-type]  # (click checked the choice)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if directory is None:
        with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="uringstack-bench-") as tmp:
            result = run_wal_bench(tmp, appenders, record_size, duration, backend, config, rounds=rounds,
                                   use_asyncio=use_asyncio)  # fmt: skip
    else:
        result = run_wal_bench(directory, appenders, record_size, duration, backend, config, rounds=rounds,
                               use_asyncio=use_asyncio)  # fmt: skip
    if as_json:
        # what scripts/benchmarks-md.py needs to place a run: when, where, how it was asked for
        doc = {
            "schema": "uringstack.bench-wal/1",
            "workload": "wal",
            "started_at": started,
            "command": " ".join(["uringstack", *(shlex.quote(a) for a in sys.argv[1:])]),
            "machine": machine_info(),
            **result,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    wal = result["wal"]
    table = Table(
        title=f"uringstack WAL: {appenders} appender(s), {record_size} B records, "
        f"backend {wal['backend']} (O_DIRECT {'on' if wal['direct_io'] else 'off'})"
    )
    for col in ("row", "records/s", "MB/s", "p50 us", "p99 us", "p99.9 us", "flush / write us", "WAL ratio"):
        table.add_column(col, justify="left" if col == "row" else "right")
    r = result["ratios"]

    def vs(pre: str) -> str:
        out = f"rec/s {_fmt(r[pre + 'records_per_s_vs_naive'], 2)}x naive"
        if pre + "p99_vs_fio" in r:
            out += f", p99 {_fmt(r[pre + 'p99_vs_fio'], 2)}x fio"
        return out

    threads = f"{vs('')}; {_fmt(wal['records_per_flush'])} rec/flush"
    if "p99_vs_fio_wal_bytes" in r:
        threads += f"; p99 {_fmt(r['p99_vs_fio_wal_bytes'], 2)}x fio {result['fio_wal_bytes']['bs'] // 1024}k"
    rows = [("WAL threads", wal, threads)]
    if "wal_asyncio" in result:
        aio = result["wal_asyncio"]
        rows.append(("WAL asyncio", aio,
                     f"{vs('asyncio_')}; {_fmt(aio['records_per_flush'])} rec/flush; "
                     f"append_async enqueue p99 {_fmt(aio.get('enqueue_p99_us'))} us"))  # fmt: skip
    rows.append(("naive write+fdatasync", result["naive"], ""))
    fio = result["fio"]
    if "skipped" in fio:
        rows.append(("fio QD1 4k", {}, f"skipped: {fio['skipped']}"))
    else:  # the same engine, durability step and O_DIRECT as the log's writes
        rows.append((f"fio QD1 4k ({fio['pattern']})", fio, ""))
    same = result.get("fio_wal_bytes", {})
    if "skipped" not in same and "bs" in same:  # the format's cost: more bytes per durable write than 4 KiB
        rows.append((f"fio QD1 {same['bs'] // 1024}k (the WAL's bytes/write)", same,
                     f"p99 {_fmt(r.get('fio_wal_bytes_p99_vs_fio'), 2)}x fio 4k"))  # fmt: skip
    for name, row, ratio in rows:
        # a WAL row's flush cycle and the durable write in it (the rest: Python and thread hand-offs)
        cycle = "" if "cycle_us_per_flush" not in row else (
            f"{_fmt(row['cycle_us_per_flush'], 0)} / {_fmt(row['write_us_per_flush'], 0)}")  # fmt: skip
        table.add_row(
            name, _fmt(row.get("records_per_s"), 0), _fmt(row.get("mb_per_s"), 2),
            _fmt(row.get("p50_us")), _fmt(row.get("p99_us")), _fmt(row.get("p999_us")), cycle, ratio,
        )  # fmt: skip
    out = Console()
    # a pipe or file gets the whole table rather than 80 columns with wrapped cells (as `bench`)
    (out if out.is_terminal else Console(width=240)).print(table)
