"""Tasks sharing one ``uringstack.aio`` file: every operation whole, in call order.

docs/api.md promises that operations on one file object are serialised, as
with an ``asyncio.Lock``. Each round here starts several tasks at once
(``asyncio.gather``), one operation each. Their results must be what the same
operations give, applied one after another in call order: to an in-memory
model of the file (binary) or to the built-in text file.

A script of this found two breaks of that promise. The binary file's
``tell()`` took no turn, so it returned the position before a write or seek
called earlier, still waiting. The text file took no turns of its own: a
text read makes several binary calls with decoding state between them, so
reads in two tasks interleaved, returned each other's text, and lost some.
"""

from __future__ import annotations

import asyncio
import pathlib
import random
from typing import Any

import pytest

import uringstack.aio
from uringstack.stack import Stack

pytestmark = pytest.mark.timeout(120)

_SIZES = [0, 1, 7, 512, 4095, 4096, 4097, 8192, 65536, 100_000]


class _Model:
    """A seekable binary file in memory: plain POSIX read/write/seek semantics."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        out = bytes(self.data[self.pos : end])
        self.pos += len(out)
        return out

    def readline(self, limit: int = -1) -> bytes:
        nl = self.data.find(b"\n", self.pos)
        end = len(self.data) if nl < 0 else nl + 1
        if limit >= 0:
            end = min(end, self.pos + limit)
        return self.read(max(end - self.pos, 0))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        while line := self.readline():
            lines.append(line)
            if 0 < hint <= sum(map(len, lines)):
                break
        return lines

    def write(self, b: bytes) -> int:
        if b:
            if self.pos > len(self.data):
                self.data.extend(bytes(self.pos - len(self.data)))
            self.data[self.pos : self.pos + len(b)] = b
            self.pos += len(b)
        return len(b)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else len(self.data) + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        del self.data[size:]
        self.data.extend(bytes(size - len(self.data)))
        return size

    def flush(self) -> None:
        return None


def _operation(rnd: random.Random, size: int) -> tuple[str, tuple[Any, ...]]:
    op = rnd.choice(["read", "read", "readline", "readlines", "seek", "seek", "tell", "write", "write", "truncate",
                     "flush"])  # fmt: skip
    if op == "read":
        return op, (rnd.choice([-1, *_SIZES]),)
    if op == "readline":
        return op, (rnd.choice([-1, 5, 300]),)
    if op == "readlines":
        return op, (rnd.choice([-1, 0, 1, 5000]),)
    if op == "seek":
        return op, rnd.choice([(rnd.randrange(size + 1), 0), (size + 100, 0), (0, 0), (0, 2), (100, 1)])
    if op == "write":
        data = rnd.randbytes(rnd.choice(_SIZES)).replace(b"\n", b"n")
        return op, (data + b"\n" if rnd.random() < 0.3 else data,)
    if op == "truncate":
        return op, (rnd.choice([None, 0, rnd.randrange(size + 5000)]),)
    return op, ()


@pytest.mark.parametrize("seed", range(12))
def test_concurrent_binary_operations_run_whole_in_call_order(tmp_path: pathlib.Path, stack: Stack, seed: int) -> None:
    rnd = random.Random(seed)
    path = tmp_path / "f"
    init = rnd.randbytes(rnd.choice([0, 5000, 1 << 20]))
    path.write_bytes(init)
    model = _Model(init)
    buffering = rnd.choice([0, 4096, 100_000])

    async def main() -> None:
        async with uringstack.aio.open(path, "r+b", buffering=buffering, stack=stack) as f:
            for round_ in range(15):
                ops = [_operation(rnd, len(model.data)) for _ in range(rnd.choice([2, 4, 8, 16]))]
                got = await asyncio.gather(*(getattr(f, op)(*args) for op, args in ops))
                for (op, args), result in zip(ops, got, strict=True):
                    want = getattr(model, op)(*args)
                    shown = [(o, [len(a) if isinstance(a, bytes) else a for a in x]) for o, x in ops]
                    assert result == want, f"round {round_}: {op} in {shown}"

    asyncio.run(main())
    assert path.read_bytes() == bytes(model.data)


def test_tell_waits_for_the_write_called_before_it(tmp_path: pathlib.Path, stack: Stack) -> None:
    async def main() -> None:
        async with uringstack.aio.open(tmp_path / "f", "w+b", buffering=0, stack=stack) as f:
            write = asyncio.ensure_future(f.write(b"x" * 100_000))
            seek = asyncio.ensure_future(f.seek(7))
            await asyncio.sleep(0)  # both started: the write holds the turn, the seek waits for it
            assert await f.tell() == 7
            assert await write == 100_000 and await seek == 7

    asyncio.run(main())


@pytest.mark.parametrize("seed", range(6))
def test_concurrent_text_reads_run_whole_in_call_order(tmp_path: pathlib.Path, stack: Stack, seed: int) -> None:
    rnd = random.Random(seed)
    path = tmp_path / "t"
    path.write_text("".join(rnd.choice("abc xyz\n\né€\t0123") for _ in range(300_000)), encoding="utf-8")

    async def main() -> None:
        async with uringstack.aio.open(path, "r+", encoding="utf-8", stack=stack) as f:
            with open(path, encoding="utf-8") as builtin:
                for round_ in range(10):
                    ops: list[tuple[str, tuple[Any, ...]]] = [
                        rnd.choice([("read", (rnd.choice([1, 100, 5000, 70000]),)), ("readline", ()), ("tell", ())])
                        for _ in range(rnd.choice([2, 4, 8]))
                    ]
                    got = await asyncio.gather(*(getattr(f, op)(*args) for op, args in ops))
                    for (op, args), result in zip(ops, got, strict=True):
                        want = getattr(builtin, op)(*args)
                        if op != "tell":  # (cookies differ in form: what follows them is compared)
                            assert result == want, f"round {round_}: {op}{args} in {ops}"

    asyncio.run(main())
