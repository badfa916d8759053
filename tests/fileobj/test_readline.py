"""``readline`` on an unbuffered file: ``io.FileIO``'s results, a few reads per line, not one per byte.

``io.RawIOBase.readline`` reads one byte per call; on an O_DIRECT file each
is a whole-block device read (a 5,000-byte line: 5,000 of them).  The raw
file reads positional pieces instead and moves the position once, past the
line; every result and position must still be the built-in's (its buffered
``readline`` returns what its raw one does, without a syscall per byte).
"""

from __future__ import annotations

import io
import os
import pathlib
import random
from typing import Any

import pytest

import uringstack
from tests.fileobj.conftest import defer_writes, open_direct_or_skip
from uringstack.stack import Stack

# line lengths: empty, short, crossing 4 KiB blocks, and one past the 1 MiB piece cap
_LENGTHS = [0, 1, 5, 80, 300, 4095, 4096, 5000, 70000, (1 << 20) + 5000]
_SIZES: list[Any] = [-1, None, 0, 1, 7, 100, 4096, 10000, 3 << 20, True]


def _lines(seed: int) -> bytes:
    rnd = random.Random(seed)
    lines = [rnd.randbytes(n).replace(b"\n", b"n") + b"\n" for n in rnd.choices(_LENGTHS, k=40)]
    return b"".join(lines) + b"tail without a newline"


def _open(path: pathlib.Path, stack: Stack, direct: bool, mode: str = "rb") -> Any:
    if direct:
        return open_direct_or_skip(path, mode, stack, buffering=0)
    return uringstack.open(path, mode, buffering=0, stack=stack)


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_readline_returns_what_the_builtin_returns(tmp_path: pathlib.Path, stack: Stack, direct: bool) -> None:
    path = tmp_path / "lines"
    path.write_bytes(_lines(1))
    rnd = random.Random(2)
    with _open(path, stack, direct) as ours, open(path, "rb") as theirs:
        for start in (0, 3, 4093):
            ours.seek(start)
            theirs.seek(start)
            while True:
                size = rnd.choice(_SIZES)
                got = ours.readline(size)
                assert got == theirs.readline(size), f"readline({size!r}) at {theirs.tell()}"
                assert ours.tell() == theirs.tell()
                if not got and size != 0:
                    break
        for start in (0, 4097):
            ours.seek(start)
            theirs.seek(start)
            assert ours.readlines() == theirs.readlines()
            ours.seek(start)
            theirs.seek(start)
            assert list(ours) == list(theirs)


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_a_line_takes_a_few_reads_not_one_per_byte(tmp_path: pathlib.Path, stack: Stack, direct: bool) -> None:
    path = tmp_path / "lines"
    path.write_bytes(b"x" * 5000 + b"\n" + b"y" * 300 + b"\n")
    with _open(path, stack, direct) as f:
        reads = 0
        read_bytes = f._read_bytes

        def counted(*args: Any) -> bytes:
            nonlocal reads
            reads += 1
            return read_bytes(*args)  # type: ignore[no-any-return]

        f._read_bytes = counted
        assert f.readline() == b"x" * 5000 + b"\n"
        assert reads <= 2, f"{reads} reads for a 5,001-byte line"
        reads = 0
        assert f.readline() == b"y" * 300 + b"\n"
        assert reads <= 1
        assert f.tell() == 5302


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_readline_sees_the_writes_before_it(tmp_path: pathlib.Path, stack: Stack, direct: bool) -> None:
    path = tmp_path / "lines"
    with _open(path, stack, direct, "w+b") as f:
        want = [b"line %d\n" % i for i in range(6000)]
        for i in range(0, 6000, 30):
            f.write(b"".join(want[i : i + 30]))
        f.seek(0)
        assert [f.readline() for _ in range(200)] == want[:200]
        f.seek(0)
        assert f.readlines() == want
    assert path.read_bytes() == b"".join(want)


def test_readline_errors_are_the_builtins(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a\nb\n")
    with uringstack.open(path, "rb", buffering=0, stack=stack) as ours, open(path, "rb", buffering=0) as theirs:
        for bad in ("x", 1.5):
            with pytest.raises(TypeError) as want:
                theirs.readline(bad)
            with pytest.raises(TypeError, match=str(want.value)):
                ours.readline(bad)
    with pytest.raises(ValueError, match="I/O operation on closed file"):
        ours.readline()
    w = uringstack.open(path, "ab", buffering=0, stack=stack)
    with w, pytest.raises(io.UnsupportedOperation, match="not open for reading"):
        w.readline()
    assert os.path.getsize(path) == 4


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_the_raw_readline_waits_for_writes_behind_it(tmp_path: pathlib.Path, stack: Stack, direct: bool) -> None:
    """A large write through the buffered layer goes to the raw file, which may write it behind
    (here: its batches start only when waited for)."""
    path = tmp_path / "lines"
    want = [b"line %010d\n" % i for i in range(8192)]  # 128 KiB: whole blocks, written behind under O_DIRECT
    if direct:
        f = open_direct_or_skip(path, "w+b", stack, buffering=8192)
    else:
        f = uringstack.open(path, "w+b", 8192, stack=stack)
    with f:
        defer_writes(f.raw)
        f.write(b"".join(want))
        f.raw.seek(0)
        assert [f.raw.readline() for _ in range(3)] == want[:3]
