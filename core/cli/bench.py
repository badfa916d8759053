"""``uringstack bench``: the mode ladder beside fio's equivalent job, one command per workload.

``bench wal`` (the WAL benchmark) lives in a colleague's module and is added
when it is installed; ``bench fileobj`` (file objects beside the built-ins,
:mod:`uringstack.bench.fileobj`) has its own options.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shlex
import sys
from collections.abc import Callable
from typing import Any, cast

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from uringstack.bench.fileobj import BENCHES as FILEOBJ_BENCHES
from uringstack.bench.fileobj import run_fileobj_bench
from uringstack.bench.fileobj_report import render as render_fileobj
from uringstack.bench.ladder import ALIASES, RUNGS
from uringstack.bench.report import render
from uringstack.bench.runner import check_target, default_file, interleave_usage, run_bench
from uringstack.bench.spec import WORKLOADS, BenchSpec, WorkloadName
from uringstack.probe.system import parse_cpulist

_SIZE_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class SizeType(click.ParamType[int]):
    """Byte sizes such as ``4096``, ``4k``, ``64m``, ``1g`` (powers of 1024)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        mult = _SIZE_SUFFIX.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in _SIZE_SUFFIX else text
        try:
            n = int(digits) * mult
        except ValueError:
            self.fail(f"{value!r} is not a size (examples: 4096, 4k, 64m, 1g)", param, ctx)
        if n <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return n


SIZE = SizeType()


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--block-size", "-b", type=SIZE, default="4k", show_default=True, help="bytes per I/O"),
        click.option(
            "--queue-depth",
            "-q",
            type=click.IntRange(min=1),
            default=None,
            help="ops in flight per worker [default: 32; durable-append: 1]",
        ),
        click.option(
            "--workers",
            "-w",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="pinned workers, one per CPU, each with its own ring and handle",
        ),
        click.option(
            "--cpus",
            default=None,
            help="CPUs for the workers, e.g. 1 or 0,1 [default: where the file's device takes its "
            "completion interrupts first, then the other allowed CPUs]; fio is pinned the same way",
        ),
        click.option("--file-size", type=SIZE, default="1g", show_default=True),
        click.option(
            "--duration",
            "-t",
            type=click.FloatRange(min=0.05),
            default=5.0,
            show_default=True,
            help="measured seconds per mode (after a warm-up of min(0.5 s, duration/10))",
        ),
        click.option(
            "--direct/--buffered",
            default=True,
            show_default=True,
            help="O_DIRECT or the page cache",
        ),
        click.option(
            "--file",
            "--target",
            "path",
            type=click.Path(dir_okay=False),
            default=None,
            help="data file (created and filled once; reused when it has the right size; "
            "an existing file of another size is refused, never rewritten) "
            "[default: ./.uringstack-bench/data-SIZE.bin], or a block device (read workloads only, "
            "never written; --file-size is capped at its capacity)",
        ),
        click.option(
            "--modes",
            "-m",
            default=None,
            help=f"comma-separated subset of: {', '.join(RUNGS)} (raw = the raw-ring row). A mode on an "
            "SQPOLL ring (+sqpoll: a kernel thread polls the submission queue on another CPU and the caller "
            "spins on the completion queue, so it keeps two CPUs busy) also gets fio's SQPOLL job, "
            "'fio io_uring sqpoll' (its SQ thread pinned alike), as its like-for-like reference",
        ),
        click.option(
            "--batch",
            type=click.IntRange(min=1),
            default=None,
            help="ops per submit in the batched rungs [default: QD/8]",
        ),
        click.option(
            "--durability",
            type=click.Choice(["dsync", "fdatasync"]),
            default="dsync",
            show_default=True,
            help="durable-append: RWF_DSYNC writes (fio --sync=dsync) or write linked to fdatasync (fio --fdatasync=1)",
        ),
        click.option(
            "--scale-workers",
            type=click.IntRange(min=2),
            default=None,
            help="also re-run every row that worked (and fio) with this many workers (threads), "
            "then each public-API row with its workers as processes; summary.scaling gives each row's IOPS ratio",
        ),
        click.option(
            "--tuned",
            is_flag=True,
            help="randread: first run `uringstack tune` on the file (cache written), then add the "
            "'tuned (auto)' row: the default config's stack, which follows the measurement; "
            "summary.tuned.vs_best is its IOPS over the best rung's",
        ),
        click.option(
            "--tune-budget",
            type=click.FloatRange(min=0, min_open=True),
            default=10.0,
            show_default=True,
            help="seconds for the calibration of --tuned",
        ),
        click.option(
            "--rounds",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="N >= 2: fio's job and the rows take turns in N slices of duration/N seconds each, "
            "the order reversed every round (ABBA); each ratio is the median of the per-round paired "
            "ratios. For a device whose speed drifts (the VM's virtio disk: docs/bench.md)",
        ),
        click.option(
            "--settle",
            type=click.FloatRange(min=0),
            default=2.0,
            show_default=True,
            help="with --rounds: seconds of fio's job run first and not counted, so a device that "
            "bursts after idling has drained its burst before round 1",
        ),
        click.option("--no-fio", is_flag=True, help="do not run fio's equivalent job"),
        click.option("--syscalls", is_flag=True, help="also re-run each mode under strace -c -f"),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="print the result document as JSON (no progress bar)",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _cpus_option(text: str | None) -> list[int]:
    """``--cpus`` as a CPU list; a usage error naming the option for text that is not one."""
    if not text:
        return []
    try:
        return parse_cpulist(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not a CPU list such as 0,2-3 ({exc})", param_hint="--cpus") from None


def _run(workload: str, **kw: Any) -> None:
    qd = kw["queue_depth"] or (1 if WORKLOADS[workload].durable else 32)
    spec = BenchSpec(
        workload=cast(WorkloadName, workload),  # click.Choice limits it to WORKLOADS
        block_size=kw["block_size"],
        queue_depth=qd,
        workers=kw["workers"],
        cpus=_cpus_option(kw["cpus"]),
        file_size=kw["file_size"],
        duration=kw["duration"],
        direct=kw["direct"],
        file=kw["path"] or default_file(kw["file_size"]),
        durability=kw["durability"],
        batch=kw["batch"] or 0,
    )
    try:
        spec.validate()
        check_target(spec)
        interleave_usage(
            spec, kw["rounds"], with_fio=not kw["no_fio"], scale_workers=kw["scale_workers"] or 0, tuned=kw["tuned"]
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    modes = [m.strip() for m in kw["modes"].split(",") if m.strip()] if kw["modes"] else None
    if modes:
        bad = [m for m in modes if m not in RUNGS and m not in ALIASES]
        if bad:
            raise click.BadParameter(
                f"unknown mode(s) {', '.join(bad)}; modes: {', '.join(RUNGS)}", param_hint="--modes"
            )
    as_json = kw["as_json"]
    err = Console(stderr=True)
    # the progress bar is for people: not with --json, not when stderr is a file or pipe
    progress = Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=as_json or not err.is_terminal,
        transient=True,
    )
    task: list[Any] = []

    def on_step(label: str, seconds: float) -> None:
        if task:
            progress.update(task[0], completed=progress.tasks[0].total or 0)
            progress.remove_task(task.pop())
        task.append(progress.add_task(label, total=max(seconds, 0.01) if seconds else None))

    def tick() -> None:
        if task:
            t = progress.tasks[0]
            if t.total:
                progress.update(task[0], completed=min(t.total, t.elapsed or 0.0))

    with progress:
        doc = run_bench(
            spec,
            modes,
            with_fio=not kw["no_fio"],
            with_syscalls=kw["syscalls"],
            scale_workers=kw["scale_workers"] or 0,
            command=" ".join(["uringstack", *(shlex.quote(a) for a in sys.argv[1:])])
            if sys.argv and sys.argv[0].endswith("uringstack")
            else "",
            on_step=on_step,
            tick=tick,
            tuned=kw["tuned"],
            tune_budget=kw["tune_budget"],
            rounds=kw["rounds"],
            settle=kw["settle"],
        )
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        out = Console()
        # a pipe or file gets the whole table rather than 80 truncated columns
        render(doc, out if out.is_terminal else Console(width=160))
    if not any(r["status"] == "ok" for r in doc["results"] if r["kind"] == "uringstack"):
        sys.exit(1)


@click.group("bench")
def bench() -> None:
    """Benchmarks: the public-API ladder (fallback .. asyncio), the thread pool and aiofiles, beside fio;
    `fileobj`: the file objects beside the built-ins."""


def _make(workload: str) -> click.Command:
    wl = WORKLOADS[workload]

    def cmd(**kw: Any) -> None:
        _run(workload, **kw)

    cmd.__doc__ = f"{wl.summary.capitalize()}: every mode, then fio, with ratios to fio io_uring."
    return click.command(workload)(_options(cmd))


@click.command("fileobj")
@click.option("--file-size", type=SIZE, default="1g", show_default=True,
              help="size of the file hashed, copied and read (at least 1m, whole 4 KiB blocks)")  # fmt: skip
@click.option("--reps", type=click.IntRange(min=1), default=3, show_default=True,
              help="runs per side, alternating; medians and the median per-run ratio are reported")  # fmt: skip
@click.option("--dir", "directory", type=click.Path(file_okay=False, exists=True), default=None,
              help="where the files go (default: the system temp directory; not tmpfs for cold reads)")  # fmt: skip
@click.option("--reads-per-task", type=click.IntRange(min=1), default=2000, show_default=True,
              help="aio-random: seek + 4 KiB reads per task (32 tasks)")  # fmt: skip
@click.option("--only", default=",".join(FILEOBJ_BENCHES), show_default=True, help="comma-separated subset")
@click.option("--json", "as_json", is_flag=True, help="print the result document as JSON")
def fileobj_bench_command(
    file_size: int, reps: int, directory: str | None, reads_per_task: int, only: str, as_json: bool
) -> None:
    """sha256 hot and cold, copyfileobj, aio random reads: uringstack's file objects vs the built-ins."""
    chosen = tuple(n.strip() for n in only.split(",") if n.strip())
    err = Console(stderr=True)
    try:
        doc = run_fileobj_bench(
            file_size,
            reps,
            directory,
            chosen,
            reads_per_task,
            command=" ".join(["uringstack", *(shlex.quote(a) for a in sys.argv[1:])]),
            on_step=None if as_json or not err.is_terminal else lambda s: err.print(f"[dim]{s}...[/dim]"),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    out = Console()
    render_fileobj(doc, out if out.is_terminal else Console(width=160))


for _name in WORKLOADS:
    bench.add_command(_make(_name))
bench.add_command(fileobj_bench_command)

if importlib.util.find_spec("uringstack.bench.wal_cmd") is not None:
    bench.add_command(importlib.import_module("uringstack.bench.wal_cmd").wal_bench_command)
