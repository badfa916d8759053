"""The ``uringstack`` command line: one click group, one module per subcommand.

Errors: an expected failure (an OSError such as a full disk or a closed
stdout, bad input raising ValueError, a uringstack error, input nested too
deeply to parse) ends the command with one line on stderr, ``error: ...``,
and exit status 2.  Anything else is a bug and keeps its traceback; so does
every error under ``--debug``.  Warnings (a deprecated config key, a cache
file that could not be written) are one line each on stderr, ``warning: ...``.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import warnings
from typing import Any

import click

# (module, attribute) of each subcommand; each module owns one job.
_SUBCOMMANDS: list[tuple[str, str]] = [
    ("uringstack.cli.probe", "probe"),
    ("uringstack.cli.config", "config"),
    ("uringstack.cli.plan", "plan_command"),
    ("uringstack.cli.wal", "wal"),
    ("uringstack.cli.bench", "bench"),
    ("uringstack.cli.tune", "tune_command"),
]

# Same status as click's usage errors and `config validate`: "fix the input or the environment".
EXIT_ERROR = 2


def _expected_errors() -> tuple[type[BaseException], ...]:
    from uringstack.config import ConfigError
    from uringstack.errors import UringStackError
    from uringstack.pluginmanager import PluginError

    return (OSError, ValueError, RecursionError, UringStackError, ConfigError, PluginError)


def _stdout_failure() -> OSError | None:
    """Flush stdout; return the error if it cannot be written (full disk, closed pipe)."""
    try:
        sys.stdout.flush()
    except OSError as e:
        return e
    return None


def _writes_stdout(exc: BaseException) -> bool:
    """Whether *exc* came from writing to stdout: the innermost Python frame (click.echo,
    rich's console) holds the stream it was writing, and that stream is fd 1."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    for value in tb.tb_frame.f_locals.values():
        if value is sys.stdout or value is sys.__stdout__:
            return True
        fileno = getattr(value, "fileno", None)
        if callable(fileno) and hasattr(value, "write"):
            try:
                if fileno() == 1:
                    return True
            except (OSError, ValueError):
                continue
    return False


def _drop_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's own flush at exit cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (click's test runner)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def describe(exc: BaseException) -> str:
    """One line saying what failed, for an expected error."""
    if isinstance(exc, RecursionError):
        return "input nested too deeply to process"
    if isinstance(exc, OSError) and not str(exc).startswith("[Errno"):
        return str(exc).replace("\n", "; ")
    if isinstance(exc, OSError) and exc.errno is not None:
        msg = exc.strerror or os.strerror(exc.errno)
        return f"{exc.filename}: {msg}" if exc.filename else msg
    return " ".join(str(exc).split("\n")) or type(exc).__name__


class _Cli(click.Group):
    """The root group: turns expected errors into one line and exit 2 (see module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            rv = super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except _expected_errors() as e:
            if debug:
                raise
            if isinstance(e, OSError) and (_writes_stdout(e) or _stdout_failure() is not None):
                _drop_stdout()
                self._fail(ctx, e, "writing to standard output")
            self._fail(ctx, e)
        broken = _stdout_failure()  # small output is still buffered: fail here, not at exit
        if broken is not None:
            _drop_stdout()
            if debug:
                raise broken
            self._fail(ctx, broken, "writing to standard output")
        return rv

    @staticmethod
    def _fail(ctx: click.Context, exc: BaseException, doing: str = "") -> None:
        if isinstance(exc, BrokenPipeError) or getattr(exc, "errno", None) == errno.EPIPE:
            ctx.exit(EXIT_ERROR)  # the reader went away (| head): nothing to tell it
        msg = describe(exc)
        click.echo(f"error: {doing}: {msg}" if doing else f"error: {msg}", err=True)
        ctx.exit(EXIT_ERROR)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uringstack")
@click.option(
    "--debug",
    is_flag=True,
    help="Show the traceback of an error the command line would print as one 'error:' line "
    "(usage errors and the messages a subcommand prints itself, such as wal verify's, stay as they are).",
)
def cli(debug: bool) -> None:
    """uringstack: io_uring storage stacks for Python, configured from a probe of this machine.

    Errors end with one line on stderr and exit status 2 (--debug shows the traceback of those
    the command line reports itself).
    """
    if not debug:
        # A warning (a deprecated config key, a cache not written) is for the user: one line,
        # not the source line of whichever library frame raised it.
        warnings.formatwarning = _one_line_warning


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    return f"warning: {message}\n"


for _module, _attr in _SUBCOMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))


def main() -> None:
    """Console-script entry point."""
    cli()
