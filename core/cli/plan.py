"""``uringstack plan``: what the stack would build on this machine, and why."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from uringstack.plan import Plan


def render_plan(plan: Plan, console: Console) -> None:
    """Print *plan* for someone who has never read the code."""
    verdict = "usable" if plan.io_uring_usable else "NOT usable"
    console.print(f"[bold]io_uring[/]: {verdict} — {escape(plan.io_uring_reason)}")
    console.print(f"[bold]default backend[/]: {plan.default_backend} — {escape(plan.default_backend_reason)}")
    console.print(f"[bold]plugins loaded[/]: {', '.join(plan.plugins) or 'none'}")

    t = Table(title="Plugins: on or off, and why", show_lines=False)
    t.add_column("plugin")
    t.add_column("mode")
    t.add_column("used")
    t.add_column("why")
    for v in plan.verdicts:
        why = escape(v.reason) + (f"\n[dim]hint: {escape(v.hint)}[/]" if v.hint else "")
        t.add_row(v.plugin, v.mode, "[green]yes[/]" if v.enabled else "[yellow]no[/]", why)
    console.print(t)

    t = Table(title="Workers (one pinned thread per CPU) and their rings")
    t.add_column("worker")
    t.add_column("ring")
    t.add_column("setup flags")
    t.add_column("details")
    t.add_column("decisions")
    for w in plan.workers:
        if not w.rings:
            t.add_row(f"#{w.index} cpu {w.cpu}", "-", "-", "no rings", "; ".join(plan.notes))
        for r in w.rings:
            details = [f"{r.entries} entries"]
            if r.sq_thread_cpu is not None:
                details.append(f"poller on cpu {r.sq_thread_cpu}, idle {r.sq_thread_idle_ms} ms")
            if r.attach_to and "SQPOLL" in r.flags:
                details.append(f"shares the poller of {r.attach_to}")
            elif r.attach_to:
                details.append(f"attached to {r.attach_to}")
            if r.spin_us:
                details.append(f"spins {r.spin_us} µs before sleeping")
            if r.max_in_flight is not None:
                details.append(f"at most {r.max_in_flight} ops in flight")
            flags = " ".join(r.flags) or "(none)"
            reasons = escape("\n".join(r.reasons))
            t.add_row(f"#{w.index} cpu {w.cpu}", r.role, flags, ", ".join(details), reasons)
    console.print(t)

    if plan.targets:
        t = Table(title="Devices: which backend would serve them")
        t.add_column("target")
        t.add_column("kind")
        t.add_column("backend")
        t.add_column("why")
        for tp in plan.targets:
            t.add_row(tp.target, tp.kind, tp.backend, escape(tp.reason))
        console.print(t)
    for note in plan.notes:
        console.print(f"note: {escape(note)}")


@click.command("plan")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML config file (default: $URINGSTACK_CONFIG, else built-in defaults).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(config_path: str | None, as_json: bool) -> None:
    """Show the stack uringstack would build here: per core, which rings with
    which flags, registered buffers/files, which backend serves which device,
    and for every plugin why it is on or off.  Builds nothing and opens no
    device itself; the probe it runs first opens each NVMe generic char
    device (/dev/ngXnY) once, read-only, to test access and read its
    namespace id (nothing is sent to the device)."""
    from uringstack.config import ConfigError, load_config
    from uringstack.plan import make_plan
    from uringstack.pluginmanager import PluginError
    from uringstack.probe import probe
    from uringstack.types import PlanError

    try:
        loaded = load_config(config_path)
        caps = probe(plugin_manager=loaded.plugin_manager)
        plan = make_plan(caps, loaded.config, loaded.plugin_manager)
    except PluginError as exc:
        # The same words and exit status as `uringstack config validate`.
        click.echo(f"plugin error: {exc}", err=True)
        sys.exit(2)
    except (ConfigError, PlanError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(plan.model_dump(mode="json"), indent=2))
        return
    console = Console()
    for note in loaded.notes:
        console.print(f"note: {escape(note)}")
    render_plan(plan, console)
