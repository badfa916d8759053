"""``uringstack tune``: measure the candidate settings on the real device and cache the result."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from uringstack.probe.tuning import TuneDocument, TuneRecord
from uringstack.tune.runner import DEFAULT_BUDGET_S


def render_record(record: TuneRecord, where: str, console: Console) -> None:
    """One table per target: every candidate with its IOPS and CPU per I/O, the best marked."""
    key = record.key
    dev = key.device
    ident = " ".join(x for x in (dev.model, dev.serial and f"serial {dev.serial}", dev.wwn and f"wwn {dev.wwn}") if x)
    t = Table(
        title=f"{record.target} ({record.kind}; {ident or 'device ' + dev.devnum}; kernel {key.kernel}; "
        f"{key.cpus} CPUs) — {record.workload.block_size >> 10} KiB random reads QD{record.workload.queue_depth}"
        + ("" if record.workload.direct else ", buffered"),
    )
    t.add_column("")
    t.add_column("settings")
    t.add_column("IOPS", justify="right")
    t.add_column("CPU µs/IO", justify="right")
    t.add_column("s", justify="right")
    t.add_column("note")
    for i, m in enumerate(record.measurements):
        mark = "[green]best[/]" if i == record.best else ""
        settings = ", ".join(f"{k}={v}" for k, v in m.settings.items())
        if m.status != "ok":
            color = "yellow" if m.status == "skipped" else "red"
            t.add_row(mark, settings, "-", "-", "-", f"[{color}]{m.status}[/]: {escape(m.reason)}")
        else:
            t.add_row(mark, settings, f"{m.iops:,.0f}", f"{m.cpu_us_per_io:.1f}", f"{m.seconds:.2f}", escape(m.reason))
    console.print(t)
    console.print(f"tuned in {record.elapsed_s:.1f} s; " + (f"written to {where}" if where else "not cached"))


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@click.command("tune")
@click.argument("targets", nargs=-1, type=click.Path())
@click.option(
    "--budget",
    type=float,
    default=DEFAULT_BUDGET_S,
    show_default=True,
    help="total seconds for all targets, split across the candidates",
)
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON (usable as [core] tune_results)")
@click.option("--no-cache", is_flag=True, help="measure and print, but do not write the cache")
def tune_command(targets: tuple[str, ...], budget: float, as_json: bool, no_cache: bool) -> None:
    """Measure which settings are fastest here: 4 KiB random reads at QD32 on each TARGET
    (a file, read in place; a directory, through a scratch file there; a block device,
    read-only), trying batch sizes, registered buffers, SQPOLL, IOPOLL where the device
    polls and 1 or 2 workers.  The results go to $XDG_CACHE_HOME/uringstack/tune/, where
    every later plan in `auto` finds them (see `uringstack plan`).  Default TARGET: the
    current directory."""
    began = time.perf_counter()  # --budget counts from here: imports and probing below are in it
    from uringstack.tune.runner import tune
    from uringstack.tune.targets import TuneError

    err = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=as_json or not err.is_terminal,
        transient=True,
    )
    state: dict[str, Any] = {"task": None, "target": "", "runs": 0}

    def on_target(target: str, runs: int) -> None:
        if state["task"] is not None:
            progress.remove_task(state["task"])
        state.update(target=target, runs=0, task=progress.add_task(target, total=runs))

    def on_run(label: str, seconds: float) -> None:
        # called as each candidate starts: the bar counts the runs already finished
        progress.update(state["task"], completed=state["runs"], description=f"{state['target']}: {label}")
        state["runs"] += 1

    # SIGTERM (systemd stop, kill) ends the command as Ctrl-C does, through the cleanup: the
    # default action left a directory target's 64 MiB scratch file behind (session 32)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with progress:
            results = tune(
                list(targets) or ["."],
                budget,
                on_target=on_target,
                on_run=on_run,
                write_cache=not no_cache,
                spent_s=time.perf_counter() - began,
            )
    except TuneError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        doc = TuneDocument.of([r for r, _ in results])
        click.echo(json.dumps(doc.model_dump(mode="json", by_alias=True), indent=2))
        return
    out = Console()
    console = out if out.is_terminal else Console(width=160)
    for record, where in results:
        render_record(record, where, console)
    if not all(r.best is not None for r, _ in results):
        sys.exit(1)
