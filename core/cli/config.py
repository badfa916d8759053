"""``uringstack config``: validate a config file, show effective values, print the schema."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from uringstack.config import LoadedConfig

# Exit status for a bad config or a broken plugin; click uses 2 for usage
# errors too, and both mean "fix your input", which a deploy script can test.
EXIT_INVALID = 2

_ENV_HELP = (
    "Environment variables URINGSTACK_<SECTION>__<KEY> (e.g. URINGSTACK_CORE__RING_ENTRIES=512) "
    "override the file; URINGSTACK_CONFIG names the file when --config is not given."
)


@click.group("config")
def config() -> None:
    """Check and explain uringstack configuration files.

    A config file is TOML with a [core] table and one table per plugin
    ([sqpoll], [fixedbuf], ...). Priority, highest first: explicit arguments,
    URINGSTACK_<SECTION>__<KEY> environment variables, the file, defaults.
    See docs/config.md.
    """


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(EXIT_INVALID)


def _load(path: Path | None, *, ignore_env: bool) -> LoadedConfig:
    from uringstack.config import ConfigError, load_config
    from uringstack.pluginmanager import PluginError

    try:
        return load_config(path, env={} if ignore_env else None)
    except RecursionError:
        # tomllib recurses per nesting level: a hostile file must not end in a traceback
        _fail(f"error: {path}: nested too deeply to parse (arrays or tables thousands of levels deep)")
    except ConfigError as exc:
        _fail(str(exc))
    except PluginError as exc:
        _fail(f"plugin error: {exc}")


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--with-env",
    is_flag=True,
    help="Also apply URINGSTACK_* environment variables (default: check the file alone).",
)
def validate(file: Path, with_env: bool) -> None:
    """Check FILE against the core and every installed plugin's section model.

    Prints "valid" and exits 0 (with a note for each setting that is valid
    but does nothing here, such as a core.tune_results file that does not
    exist), or lists every problem as
    `section.key: message (got VALUE; allowed: ...) [source]` and exits 2.
    By default the environment is ignored, so the verdict is about the file
    (which may be meant for another machine); plugins still load as usual,
    since their sections define what the file may contain.
    """
    from uringstack.probe.tune_cache import tune_results_missing

    loaded = _load(file, ignore_env=not with_env)
    sections = ", ".join(loaded.config.sections())
    click.echo(f"valid: {file} (sections: {sections})")
    notes = list(loaded.notes)
    missing = tune_results_missing(loaded.config.core.tune_results)
    if missing:
        notes.append(f"{missing} here: a stack opened here ignores it (its plan says so)")
    for note in notes:
        click.echo(f"note: {note}")


@config.command("show")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config file (default: $URINGSTACK_CONFIG, else none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print values, sources and notes as JSON.")
def show(config_file: Path | None, as_json: bool) -> None:
    """Show every effective setting and where it came from.

    The source column is `default`, `file:PATH`, `env:URINGSTACK_X__Y` or
    `argument`. Sections of disabled plugins that were ignored are listed
    as notes.
    """
    loaded = _load(config_file, ignore_env=False)
    if as_json:
        click.echo(json.dumps(loaded.to_json(), indent=2))
        return
    _render(loaded)


show.help = inspect.cleandoc(show.help or "") + "\n\n" + _ENV_HELP  # (cleandoc: click leaves a set help as is)


def _render(loaded: LoadedConfig) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    owners = {s.name: s.plugin for s in loaded.sections}
    title = f"uringstack config ({loaded.path})" if loaded.path else "uringstack config (no file)"
    table = Table(title=title, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_column("source")
    table.add_column("plugin", style="dim")
    for row in loaded.rows():
        section = row.key.split(".", 1)[0]
        source_style = "dim" if row.source == "default" else "green"
        table.add_row(
            row.key,
            escape(_format_value(row.value)),
            f"[{source_style}]{escape(row.source)}[/]",
            owners.get(section, "core" if section == "core" else ""),
        )
    console.print(table)
    for note in loaded.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


@config.command("schema")
def schema() -> None:
    """Print the JSON schema of the config file for the installed plugins.

    Editors (e.g. Taplo / Even Better TOML) can use it for completion and
    checking; it includes every plugin section, so it changes when plugins
    are installed or disabled (URINGSTACK_CORE__DISABLED_PLUGINS).
    """
    from uringstack.config import config_schema
    from uringstack.pluginmanager import PluginError

    try:
        click.echo(json.dumps(config_schema(), indent=2))
    except PluginError as exc:
        _fail(f"plugin error: {exc}")


validate.help = inspect.cleandoc(validate.help or "") + (
    "\n\nWith --with-env, environment variables URINGSTACK_<SECTION>__<KEY> "
    "(e.g. URINGSTACK_CORE__RING_ENTRIES=512) override the file."
)
