"""What is wrong with a configuration: :class:`ConfigProblem` and :class:`ConfigError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from uringstack.errors import UringStackError

NO_VALUE: Any = object()
"""The ``value`` of a problem that has no input to show (e.g. a missing section)."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration."""

    key: str
    """Dotted key, e.g. ``sqpoll.mode`` (or just the section for an unknown section)."""
    message: str
    value: Any = NO_VALUE
    allowed: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}" if self.key else self.message
        extra: list[str] = []
        shown = show_value(self.value) if self.value is not NO_VALUE else None
        # (left out only where the message starts with it, "'x' is not one of ...": a bound's
        # own digits, "greater than 0", used to hide the value 0 that broke it)
        if shown is not None and not self.message.startswith(f"{shown} "):
            extra.append(f"got {shown}")
        if self.allowed and self.allowed not in self.message:
            extra.append(f"allowed: {self.allowed}")
        if extra:
            text += f" ({'; '.join(extra)})"
        if self.source:
            text += f" [{self.source}]"
        return text


class ConfigError(UringStackError):
    """The configuration is invalid; ``problems`` lists each issue.

    ``str(error)`` is one line per problem:
    ``section.key: message (got VALUE; allowed: ...) [source]``.
    """

    def __init__(self, problems: list[ConfigProblem], header: str = "invalid uringstack config") -> None:
        self.problems = problems
        self.header = header
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{header}:\n{lines}" if problems else header)


def unknown_section_message(name: str, known: Iterable[str]) -> str:
    """``unknown section``, with the closest real section when there is one (like misspelled hooks)."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"unknown section, did you mean {close[0]!r}?" if close else "unknown section"


def show_value(value: Any) -> str:
    """*value* as the user would write it in a message: strings quoted, TOML booleans, tables named."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):  # (its items as TOML: [true] showed Python's [True])
        return "[" + ", ".join(map(show_value, value)) + "]"
    return repr(value)
