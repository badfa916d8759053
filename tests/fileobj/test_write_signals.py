"""A raising signal (Ctrl-C) anywhere in a file object's write loses, moves and doubles nothing.

Each sweep sends a real signal (tests/signal_points.py) at each point of one
``write()`` of a ``uringstack.open(..., "wb")`` file in turn, and then checks
what a program that caught the exception finds, both ways it can go on:

* **stop**: it closes the file.  The file holds every write that returned,
  then at most the interrupted one, each at its place (a prefix of the data);
* **carry on**: it asks ``tell()`` and writes the rest of the data from there.
  The file holds the data exactly, once.

Nothing may hang: the file's lock is never left held.  Before these tests a
signal right after the lock was taken hung every later call (``close()``
too), an interrupted gathered write dropped the held bytes of writes that had
returned, a chunk held but not counted was written twice, and a write made
but interrupted after it was written again further on by ``io.BufferedWriter``.
"""

from __future__ import annotations

import contextlib
import pathlib
import threading
from typing import Any

import pytest

import uringstack
from tests.signal_points import Interrupt, code_of, signal_at, sweep
from uringstack.stack import Stack

from .conftest import hold_in_c

_CODE = ("fileobj/fileio.py", "fileobj/openfile.py", "fileobj/stream.py", "stack/handle.py")
_CH = 64 * 1024

# name: (chunks, open() keywords, the writes to interrupt)
_SCENARIOS: dict[str, tuple[list[Any], dict[str, Any], tuple[int, ...]]] = {
    # large bytes held without a copy; the 4th reaches the limit (a gathered write)
    "held": ([bytes([i]) * _CH for i in range(1, 8)], {"buffering": 4 * _CH}, (3, 4)),
    # bytearrays copied into the buffered writer, whose flush writes the raw file
    "copied": ([bytearray([i]) * 10000 for i in range(1, 12)], {"buffering": 32 * 1024}, (3,)),
    # small writes between large bytes: copies held after the large ones
    "mixed": (
        [bytes([i]) * _CH if i % 2 else bytearray([i]) * 1000 for i in range(1, 12)],
        {"buffering": 8 * _CH},
        (6, 8),
    ),
    # O_DIRECT write-behind, up to its depth in flight
    "direct": ([bytes([i]) * _CH for i in range(1, 13)], {"direct": True, "buffering": _CH}, (3, 10)),
    # "held" through the write's C step (_fastio.HeldWrite): its only Python code is the
    # gathered write at the limit, FileIO._release (a write that only holds has no point
    # where a signal handler runs: it returns before one can)
    "held-c-step": ([bytes([i]) * _CH for i in range(1, 8)], {"buffering": 4 * _CH}, (3,)),
}
_C_STEP = {"held-c-step"}
"""Scenarios whose writes take the C step; the others sweep the Python step's every point."""


def _run(tmp: pathlib.Path, stack: Stack, name: str, k: int, at: int, carry: bool) -> str | None:
    """One write interrupted at point *at*; None when that write had fewer points."""
    chunks, kw, _ = _SCENARIOS[name]
    whole = b"".join(bytes(c) for c in chunks)
    path = tmp / f"{name}-{k}-{at}-{carry}"
    f = uringstack.open(path, "wb", stack=stack, **kw)
    if name in _C_STEP:
        assert "write" in vars(f), "no C step to test"
        hold_in_c(f)  # (a chunk it writes at once runs no Python: no point to interrupt)
    else:
        vars(f).pop("write", None)  # the class's write: the Python step
    for c in chunks[:k]:
        f.write(c)
    with signal_at(code_of(files=_CODE), at) as sent, contextlib.suppress(Interrupt):
        f.write(chunks[k])
    if sent.where is None:
        f.close()
        return None
    errors: list[BaseException] = []

    def go_on() -> None:
        try:
            if carry:
                f.write(whole[f.tell() :])
            f.close()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=go_on, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"{sent.where}: the file hung after the signal"
    assert not errors, f"{sent.where}: {errors[0]!r}"
    data = path.read_bytes()
    path.unlink()
    if carry:
        assert data == whole, f"{sent.where}: carrying on wrote {len(data)} bytes, not the {len(whole)} written"
    else:
        lo = sum(len(c) for c in chunks[:k])
        assert lo <= len(data) <= lo + len(chunks[k]), (
            f"{sent.where}: {len(data)} bytes, not {lo} to {lo + len(chunks[k])}"
        )
        assert data == whole[: len(data)], f"{sent.where}: the file is not the data written"
    return sent.where


@pytest.mark.parametrize("carry", [False, True], ids=["stop", "carry-on"])
@pytest.mark.parametrize("name", sorted(_SCENARIOS))
def test_a_signal_anywhere_in_a_write(tmp_path: pathlib.Path, stack: Stack, name: str, carry: bool) -> None:
    for k in _SCENARIOS[name][2]:
        sweep(lambda at, k=k: _run(tmp_path, stack, name, k, at, carry))
