"""``uringstack probe``: what io_uring, CPUs, memory and devices offer this process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.pluginmanager import UringstackPluginManager


def _a_number(value: float) -> float:
    # (FloatRange lets nan through: every comparison with it is false, so the cache was never used)
    if value != value:
        raise click.BadParameter("nan is not a number of seconds.")
    return value


@click.command("probe")
@click.option("--json", "as_json", is_flag=True, help="Print the capability model as JSON.")
@click.option("--no-devices", is_flag=True, help="Skip the block device / NVMe scan (pyudev).")
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reuse the report in FILE if younger than --max-age, else probe and write it there.",
)
@click.option(
    "--no-plugins",
    is_flag=True,
    help="Do not let plugins add facts (uringstack_probe hook).",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=0),
    callback=lambda _ctx, _param, value: _a_number(value),
    default=3600.0,
    show_default=True,
    help="Seconds a --cache file stays valid.",
)
def probe(as_json: bool, no_devices: bool, cache: Path | None, no_plugins: bool, max_age: float) -> None:
    """Probe this machine and report which io_uring features this process can use.

    Creates a ring for each setup flag (SQPOLL, IOPOLL, SQE128, CQE32,
    SINGLE_ISSUER, COOP_TASKRUN, DEFER_TASKRUN) to learn what the kernel
    really accepts, explains why io_uring is blocked when it is
    (kernel.io_uring_disabled, seccomp, ENOSYS, not Linux), reads
    RLIMIT_MEMLOCK, CPUs and NUMA nodes, and lists block devices and NVMe
    namespaces with queue/io_poll and their /dev/ngXnY char device.

    Lists the known defects of this kernel (matched by its Debian package
    version from /proc/version, else its release) with the pattern each rules
    out, e.g. polled NVMe passthrough on Debian 12's 6.1, or how uringstack
    works around it (ops the kernel cancels under signals are run again);
    --json carries them as kernel_defects.

    Ends with one verdict line for io_uring and one per plugin: the plugin's
    own verdict for the config in $URINGSTACK_CONFIG and URINGSTACK_*
    (the same lines `uringstack plan` shows). The exit status is 0 even when
    io_uring is unusable: that is a finding, not an error.
    """
    from uringstack.cli.probe_report import render
    from uringstack.probe import probe as run_probe
    from uringstack.probe import probe_cached

    devices = not no_devices
    pm, config = (None, None) if no_plugins else _plugins()
    if cache is not None:  # (a cache that cannot be written is a warning: stderr, one line)
        caps = probe_cached(cache, max_age, devices=devices, plugin_manager=pm)
    else:
        caps = run_probe(devices=devices, plugin_manager=pm)
    if as_json:
        click.echo(caps.model_dump_json(indent=2))
    else:
        render(caps, plugin_manager=pm, config=config)


def _plugins() -> tuple[UringstackPluginManager | None, StackConfig | None]:
    """The plugins and the config their verdicts are computed for (``$URINGSTACK_CONFIG``, env)."""
    # A broken third-party plugin or config must not hide the probe's findings:
    # warn on stderr (stdout may be JSON) and probe without plugins.
    try:
        from uringstack.config import load_config

        loaded = load_config(None)
    except Exception as exc:
        click.echo(f"warning: plugins not loaded ({type(exc).__name__}: {exc})", err=True)
        return None, None
    return loaded.plugin_manager, loaded.config
