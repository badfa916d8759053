"""Parsers for the list values users type into environment variables.

Shared by the models (``mode="before"`` validators) and by the raw pre-read
of ``core.disabled_plugins``, which runs before any model exists.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import AfterValidator, Field

_CPU_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


def _json_list(text: str, value: object) -> object:
    """*text* (which starts with ``[``) decoded as JSON, or *value* unchanged when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return value


def parse_cpu_list(value: object) -> object:
    """Turn ``"0,2,4-7"`` (taskset/cpuset syntax) or ``"[0, 1]"`` into a list of ints.

    Anything else is returned unchanged for pydantic to validate (and reject
    with a proper message).  Exists because a CPU list is the one list users
    type into environment variables, where JSON is awkward.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text == "auto" or not text:
        return text
    if text.startswith("["):
        return _json_list(text, value)
    cpus: list[int] = []
    for part in text.split(","):
        match = _CPU_RANGE.fullmatch(part.strip())
        if match is None:
            return value
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            return value
        cpus.extend(range(lo, hi + 1))
    return cpus


def parse_name_list(value: object) -> object:
    """Turn ``"a,b"`` or ``'["a", "b"]'`` into a list of strings; pass anything else through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return _json_list(text, value)
    return [name.strip() for name in text.split(",") if name.strip()]


def power_of_two_entries(value: int) -> int:
    """*value* when it is a ring size the config takes: a power of two from 2 to 32768
    (the kernel rounds an SQ up to a power of two; a plan showing 100 where the ring
    has 128 says something false; a 1-entry ring's CQ of 2 holds no op besides the 2
    entries every ring keeps for its own SQEs: every batch failed with E2BIG)."""
    from uringstack.ring.kernel import MAX_SQ_ENTRIES

    if not 2 <= value <= MAX_SQ_ENTRIES or value & (value - 1):
        raise ValueError(f"must be a power of two from 2 to {MAX_SQ_ENTRIES}")
    return value


RingEntries = Annotated[
    int,
    AfterValidator(power_of_two_entries),
    Field(json_schema_extra={"allowed": "a power of two from 2 to 32768"}),
]
"""A config field holding a ring size (``[iopoll] entries``; a plugin's own)."""
