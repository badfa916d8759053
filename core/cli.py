"""The ``uringstack`` command line: one click group, one module per subcommand."""

from __future__ import annotations

import importlib

import click

# (module, attribute) of each subcommand; each module owns one job.
_SUBCOMMANDS: list[tuple[str, str]] = [
    ("uringstack.cli_probe", "probe"),
    ("uringstack.cli_config", "config"),
    ("uringstack.cli_plan", "plan_command"),
    ("uringstack.cli_wal", "wal"),
    ("uringstack.cli_bench", "bench"),
    ("uringstack.cli_tune", "tune_command"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uringstack")
def cli() -> None:
    """uringstack: io_uring storage stacks for Python, configured from a probe of this machine."""


for _module, _attr in _SUBCOMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))


def main() -> None:
    """Console-script entry point."""
    cli()
