"""A read after a write still in the buffer of a ``+`` mode file reads the write, where it was made.

Python 3.11's ``io.BufferedRandom.read1`` (CPython gh-115059, fixed in 3.12.3
and 3.13) read the raw file at its position while writes were still in the
buffer: it returned the bytes those writes cover, as they were, and the writes
then landed after what it read.  ``TextIOWrapper`` reads through ``read1``, so
on an ``r+`` text file ``read()``, ``seek(0)``, ``write(...)``, ``readline()``
returned the old text and appended the new.  The built-in ``open()`` does it
for writes under its 4 KiB buffer; ``uringstack.open``'s 128 KiB buffer made it
reach far more writes (a 9 KB write, found by a differential fuzz of text
files).  The reference here is the same file in memory (``io.BytesIO``, whose
``read1`` is right, under the same ``TextIOWrapper`` for text), not the
built-in.
"""

from __future__ import annotations

import io
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

import uringstack
from uringstack.stack import Stack

INITIAL = b"L" * 605

# name: the steps after open, each (method, arguments); writes are at 0 after a read to the end
_BINARY: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    "read1-at-end": [("read", ()), ("seek", (0,)), ("write", (b"W" * 300,)), ("read1", (100,))],
    "read1-default-size": [("read", ()), ("seek", (0,)), ("write", (b"W" * 9003,)), ("read1", ())],
    "read1-past-a-short-write": [("read", ()), ("seek", (0,)), ("write", (b"W" * 300,)), ("read1", (-1,))],
    "read1-after-read-ahead": [("read", (10,)), ("seek", (0,)), ("write", (b"W" * 300,)), ("read1", (50,))],
    "read1-zero": [("read", ()), ("seek", (0,)), ("write", (b"W" * 300,)), ("read1", (0,)), ("read1", (5,))],
}
_TEXT: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    "readline": [("read", ()), ("seek", (0,)), ("write", ("W" * 300,)), ("readline", ())],
    "read-n": [("read", ()), ("seek", (0,)), ("write", ("\rline\n" * 40,)), ("read", (100,))],
    "big-write-then-read": [
        ("readlines", ()),
        ("seek", (0,)),
        ("write", ("\r" + "z" * 9000 + "\n",)),
        ("read", (100,)),
    ],
}


def _run(f: Any, steps: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
    return [getattr(f, name)(*args) for name, args in steps]


def _check(
    tmp: pathlib.Path,
    open_ours: Callable[[pathlib.Path], Any],
    reference: Any,
    steps: list[tuple[str, tuple[Any, ...]]],
) -> None:
    path = tmp / "file"
    path.write_bytes(INITIAL)
    with open_ours(path) as f:
        got = _run(f, steps)
        got.append(f.tell())
    expected = _run(reference, steps)
    expected.append(reference.tell())
    reference.flush()
    raw = reference.buffer.getvalue() if isinstance(reference, io.TextIOWrapper) else reference.getvalue()
    assert got == expected, "what the reads returned"
    assert path.read_bytes() == raw, "where the writes landed"


@pytest.mark.parametrize("name", sorted(_BINARY))
def test_binary(tmp_path: pathlib.Path, stack: Stack, name: str) -> None:
    _check(tmp_path, lambda p: uringstack.open(p, "r+b", stack=stack), io.BytesIO(INITIAL), _BINARY[name])


@pytest.mark.parametrize("newline", [None, "\r\n"])
@pytest.mark.parametrize("name", sorted(_TEXT))
def test_text(tmp_path: pathlib.Path, stack: Stack, name: str, newline: str | None) -> None:
    reference = io.TextIOWrapper(io.BytesIO(INITIAL), encoding="latin-1", newline=newline)
    _check(
        tmp_path,
        lambda p: uringstack.open(p, "r+", encoding="latin-1", newline=newline, stack=stack),
        reference,
        _TEXT[name],
    )


def test_read1_keeps_its_arguments_and_errors(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "file"
    path.write_bytes(INITIAL)
    with uringstack.open(path, "r+b", stack=stack) as f:
        assert f.read1(None) == INITIAL  # (None is -1, as the C layer takes it)
        with pytest.raises(TypeError):
            f.read1("3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="closed"):
        f.read1(1)
