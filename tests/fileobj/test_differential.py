"""Random sequences of file operations on ``uringstack.open()`` and the built-in ``open()``, side by side.

Twin files, the same seeded sequence of reads (``read``, ``read()``,
``readinto``, ``read1``, ``readline``), seeks (every ``whence``, past the end),
``tell``, writes (empty to 9 MiB), ``truncate`` and ``flush``, in every binary
mode, buffered and not, with and without O_DIRECT, on both backends: every
result and exception type, and the final contents, must be the built-in's.

Its first form, a script, found three bugs the targeted tests had missed: ``seek(0, SEEK_END)`` after
an O_DIRECT write returned the size before it (the next write then went over
it), an empty write moved an append file's position to its end, and (with
random read sizes) a read crossing the end of the read-ahead window raised
IndexError.  Buffer sizes are explicit and whole blocks under O_DIRECT: with
``buffering=-1``, or an O_DIRECT buffer rounded up to whole blocks, the two
buffered layers flush at other moments, and ``tell()`` of an append file with
bytes still buffered differs as it would between two built-in files of other
buffer sizes.  ``read1`` may return less than the built-in's (its size is
the buffer's business): the shorter must be a prefix of the longer.  The
built-in's ``+`` modes get CPython 3.12.3's ``read1`` (``_builtin``): Python
3.11's reads stale bytes with writes still buffered and then writes them in
the wrong place, which ``uringstack.open`` does not (with ``DIFF_SEEDS=120``,
4 sequences differed against the unfixed built-in, none against the fixed)."""

from __future__ import annotations

import io
import os
import pathlib
import random
from typing import Any

import pytest

import uringstack
from uringstack.stack import Stack

from .conftest import open_direct_or_skip

pytestmark = pytest.mark.timeout(120)

SIZES = [0, 1, 7, 512, 4095, 4096, 4097, 8192, 65536, 100_000, 1 << 20, (4 << 20) + 3, 9 << 20]
OPS = ["read", "read", "readinto", "readall", "readline", "seek", "seek", "tell", "write", "write"]
OPS += ["truncate", "flush", "read1"]
READS = {"read", "readinto", "readall", "readline", "read1"}


def _args(op: str, rnd: random.Random, size: int) -> tuple[Any, ...]:
    n = rnd.choice(SIZES)
    if op in ("read", "readinto", "read1"):
        return (n,)
    if op == "seek":
        offset = rnd.choice([0, rnd.randrange(size + 1), size, size + 100, rnd.randrange(-(1 << 20), 1 << 20)])
        whence = rnd.choice([os.SEEK_SET, os.SEEK_SET, os.SEEK_CUR, os.SEEK_END])
        return (max(offset, 0), whence) if whence == os.SEEK_SET else (offset, whence)
    if op == "write":
        return (rnd.randbytes(n),)
    if op == "truncate":
        return (rnd.choice([None, 0, rnd.randrange(0, 10 << 20)]),)
    return ()


def _call(f: Any, op: str, args: tuple[Any, ...], unbuffered: bool) -> tuple[str, Any]:
    try:
        if op == "readinto":
            b = bytearray(args[0])
            n = f.readinto(b)
            return ("ok", None if n is None else bytes(b[:n]))
        if op == "readall":
            return ("ok", f.read())
        if op == "read1" and unbuffered:
            return ("ok", f.read(*args))
        return ("ok", getattr(f, op)(*args))
    except Exception as e:  # (compared by type with the built-in's)
        return ("error", type(e).__name__)


def _shown(result: tuple[str, Any]) -> tuple[str, Any]:
    kind, value = result
    return (kind, f"{len(value)} bytes" if isinstance(value, bytes) else value)


# Sixteen seeds, and five of 400 tried that fail on the code before the fixes (the sixteen
# do not): 77, 126, 211 and 252 without the seek's drain, 190 without the read-ahead's
# fix (the empty write has a test of its own).  More: DIFF_SEEDS=400, eight minutes here.
SEEDS = sorted({*range(int(os.environ.get("DIFF_SEEDS", "16"))), 77, 126, 190, 211, 252})


class _BufferedRandomFixed(io.BufferedRandom):
    """The built-in layer with CPython 3.12.3's ``read1`` (gh-115059): Python 3.11's reads the
    raw file with writes still buffered, returns stale bytes and then writes in the wrong
    place (``uringstack.open``'s layer has the fix: tests/fileobj/test_read1_after_write.py)."""

    def read1(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._size
        if size == 0:
            return super().read1(0)
        chunk = bytearray(size)
        del chunk[self.readinto1(chunk) :]
        return bytes(chunk)

    def __init__(self, raw: io.RawIOBase, size: int) -> None:
        super().__init__(raw, size)
        self._size = size


def _builtin(path: pathlib.Path, mode: str, buffering: int) -> Any:
    """The built-in ``open()``, its ``+`` modes' ``read1`` fixed as in later Pythons."""
    if "+" not in mode or not buffering:
        return open(path, mode, buffering=buffering)
    return _BufferedRandomFixed(io.FileIO(path, mode.replace("b", "")), buffering)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_operations_match_the_builtin(tmp_path: pathlib.Path, stack: Stack, seed: int) -> None:
    rnd = random.Random(seed)
    mode = rnd.choice(["rb", "r+b", "w+b", "a+b", "wb", "ab"])
    direct = rnd.random() < 0.4
    buffering = rnd.choice([0, 4096, 8192, 100_000, 1 << 20])
    if direct and buffering:
        buffering = -(-buffering // 4096) * 4096  # (O_DIRECT rounds it up to whole blocks: the built-in gets the same)
    init = rnd.randbytes(rnd.choice([0, 5000, 4 << 20, (8 << 20) - 4096, (8 << 20) + 77]))
    ours_path, theirs_path = tmp_path / "ours", tmp_path / "theirs"
    ours_path.write_bytes(init)
    theirs_path.write_bytes(init)
    if direct:
        ours: Any = open_direct_or_skip(ours_path, mode, stack, buffering=buffering)
    else:
        ours = uringstack.open(ours_path, mode, buffering=buffering, stack=stack)
    theirs: Any = _builtin(theirs_path, mode, buffering)
    done: list[str] = [f"mode={mode} buffering={buffering} direct={direct} size={len(init)}"]
    try:
        for i in range(rnd.choice([20, 60, 120])):
            op = rnd.choice(OPS)
            if op in READS and mode in ("wb", "ab"):
                op = "write"
            elif op in ("write", "truncate") and mode == "rb":
                op = "read"
            elif op == "readline" and direct and not buffering:
                op = "read"  # (as when the seeds below were chosen; test_readline.py has its own)
            args = _args(op, rnd, os.path.getsize(theirs_path))
            done.append(f"{i}: {op}{tuple(len(a) if isinstance(a, bytes) else a for a in args)}")
            got = _call(ours, op, args, not buffering)
            want = _call(theirs, op, args, not buffering)
            if op == "read1" and got[0] == want[0] == "ok" and got != want:
                short, long = sorted((got[1], want[1]), key=len)
                assert long.startswith(short), "\n".join(done)
                theirs.seek(ours.tell())
                continue
            # (lengths first: pytest's own report of two differing 9 MiB values is no help)
            assert _shown(got) == _shown(want), "\n".join(done[:1] + done[-10:])
            assert got == want, "\n".join(done[:1] + done[-10:])
    finally:
        ours.close()
        theirs.close()
    assert ours_path.read_bytes() == theirs_path.read_bytes(), "\n".join(done[:1] + done[-10:])
