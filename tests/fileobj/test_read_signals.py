"""A raising signal (Ctrl-C) anywhere in a file object's read consumes no byte it did not return.

The built-in ``open()``'s reads run in C, where no Python signal handler runs:
a Ctrl-C raises between two reads, never inside one.  A stack file's raw
reads run Python, and a signal can land after the kernel moved the file
position past bytes the read then never returned: ``io.BufferedReader``,
which sees the read raise, keeps nothing, and the bytes are skipped.  Each
sweep sends a real signal (tests/signal_points.py) at each point of one read
in turn; the program catches the exception and carries on: ``tell()`` is the
count of bytes returned so far and reading to the end returns the rest of the
file exactly.

The files are opened on a descriptor with ``closefd=False``, whose reads
look the position up and move it (``lseek``) on every backend: a read at the
file position (io_uring's ``read_here``, offset -1) moves it in the kernel,
where a signal right after cannot be undone without knowing where it was
(an ``lseek`` more per read); and ``io.BufferedReader`` drops the bytes it
copied out of its buffer for a read whose raw read then raised, whatever the
raw file does.  Both are left open (docs/api.md, "Ctrl-C during I/O"); the
buffered scenario reads whole buffers, which ``io.BufferedReader`` reads
straight into the caller's object.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Any

import pytest

import uringstack
from tests.signal_points import Interrupt, code_of, signal_at, sweep
from uringstack.stack import Stack

_CODE = (
    "fileobj/fileio.py",
    "fileobj/openfile.py",
    "fileobj/stream.py",
    "stack/handle.py",
    "stack/uring_backend.py",
    "ring/interrupts.py",
)
_SIZE = 1 << 20
_DATA = bytes(range(256)) * (_SIZE // 256)

# name: (open() keywords, the method, the size of each read, how many reads before the interrupted one)
_SCENARIOS: dict[str, tuple[dict[str, Any], str, int, int]] = {
    # io.BufferedReader reading whole buffers straight into the bytes it returns
    "buffered": ({"buffering": 8192}, "read", 16384, 3),
    # the raw file's read(n) into the bytes returned
    "raw": ({"buffering": 0}, "read", 5000, 3),
    # sequential 64 KiB reads served by the read-ahead window
    "readahead": ({}, "read", 65536, 2),
    # O_DIRECT reads
    "direct": ({"direct": True, "buffering": 0}, "read", 8192, 2),
    # the raw file's readline: positional pieces, then one move of the position (the
    # 33rd line, bytes 7947 to 8203, crosses the first piece's 8 KiB end: two pieces)
    "readline": ({"buffering": 0}, "readline", -1, 32),
    "readline-direct": ({"direct": True, "buffering": 0}, "readline", -1, 32),
}


def _run(tmp: pathlib.Path, stack: Stack, name: str, at: int) -> str | None:
    kw, method, size, before = _SCENARIOS[name]
    path = tmp / "data"
    if not path.exists():
        path.write_bytes(_DATA)
    got = bytearray()
    fd = os.open(path, os.O_RDONLY)
    with contextlib.ExitStack() as done:
        done.callback(os.close, fd)
        f = done.enter_context(uringstack.open(fd, "rb", closefd=False, stack=stack, **kw))
        read = getattr(f, method)
        for _ in range(before):
            got += read(size)
        with signal_at(code_of(files=_CODE), at) as sent, contextlib.suppress(Interrupt):
            got += read(size)
        if sent.where is None:
            got += f.read()
            assert got == _DATA
            return None
        assert f.tell() == len(got), f"{sent.where}: tell() {f.tell()} after {len(got)} bytes returned"
        got += f.read()
    assert len(got) == len(_DATA) and got == _DATA, f"{sent.where}: read {len(got)} bytes, not the file"
    return sent.where


@pytest.mark.parametrize("name", sorted(_SCENARIOS))
def test_a_signal_anywhere_in_a_read(tmp_path: pathlib.Path, stack: Stack, name: str) -> None:
    sweep(lambda at: _run(tmp_path, stack, name, at))
