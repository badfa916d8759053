"""Differential test of ``FileHandle``: seeded random call sequences against an in-memory file.

Each seed picks a backend (io_uring, with or without registered buffers, or the
fallback) and O_DIRECT or not, then makes 5 to 40 random calls: every
synchronous, started, prepared and asyncio read and write, durable writes
(bound or not), leases, ``size()``, and bad input (offsets that are negative,
not integers or past ``2**63 - 1``, buffers that are not writable, not
contiguous or not buffers, unpaired batches, misaligned O_DIRECT requests).
Buffers are of every kind a caller may pass: ``bytearray``, ``bytes``,
``memoryview``, ``mmap``, ``array('i')``/``array('d')``, ctypes arrays and
``memoryview.cast('Q')`` (whose ``len()`` counts items, not bytes).

Every result and every byte read must match the model; bad input must raise
(``TypeError``, ``ValueError``, ``BufferError`` or ``OSError``) and change
nothing; the file is compared with the model throughout.  Seeds:
``HANDLE_DIFF_SEEDS`` (default 40).
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import mmap
import os
import pathlib
import random
from collections.abc import Callable
from typing import Any

import pytest

from uringstack.ring.buffers import RegisteredBuffer, aligned_buffer
from uringstack.stack import open_stack
from uringstack.stack.handle import FileHandle

SEEDS = int(os.environ.get("HANDLE_DIFF_SEEDS", "40"))
BLOCK = 4096
REFUSALS = (TypeError, ValueError, BufferError, OSError)


def _view(buf: Any) -> memoryview:
    return buf.view if isinstance(buf, RegisteredBuffer) else memoryview(buf)


def _nbytes(buf: Any) -> int:
    return _view(buf).nbytes


def _raw(buf: Any) -> bytes:
    return bytes(_view(buf).cast("B"))


class Model:
    """The file as it must be."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.data[offset : offset + n])

    def write(self, offset: int, data: bytes) -> None:
        if not data:
            return  # (an empty write does not extend a file)
        if offset > len(self.data):
            self.data.extend(bytes(offset - len(self.data)))
        self.data[offset : offset + len(data)] = data


class Run:
    """One seed's calls on one handle."""

    def __init__(self, rng: random.Random, handle: FileHandle, model: Model, direct: bool) -> None:
        self.path = pathlib.Path(handle.path)
        self.rng = rng
        self.h = handle
        self.model = model
        self.direct = direct
        self.loop = asyncio.new_event_loop()

    # --- inputs ---------------------------------------------------------------------
    def size(self) -> int:
        choices = [BLOCK, 2 * BLOCK, 16 * BLOCK] if self.direct else [0, 1, 7, 8, 16, 100, 4096, 5000, 65536]
        return self.rng.choice(choices)

    def offset(self) -> int:
        end = len(self.model.data)
        off = self.rng.choice([0, self.rng.randrange(0, end + 9000), end, end + 1])
        return off - off % BLOCK if self.direct else off

    def buffer(self, n: int, *, for_write: bool = False) -> Any:
        """A buffer of about *n* bytes (a multiple of 8 for the wide-item kinds), random kind and bytes."""
        rng = self.rng
        if self.direct:
            mem = aligned_buffer(max(n, BLOCK))
            mem[:n] = rng.randbytes(n)
            return memoryview(mem)[:n] if n != len(mem) or rng.random() < 0.5 else mem
        kinds = ["bytearray", "memoryview", "mmap", "array_i", "array_d", "ctypes", "cast_q"]
        kind = rng.choice([*kinds, "bytes"] if for_write else kinds)
        if kind in ("array_i", "array_d", "ctypes", "cast_q"):
            n -= n % 8
        fill = rng.randbytes(n)
        if kind == "bytes":
            return fill
        if kind == "memoryview":
            return memoryview(bytearray(fill))
        if kind == "mmap" and n:
            mem = mmap.mmap(-1, n)
            mem[:] = fill
            return mem
        if kind in ("array_i", "array_d"):
            return array.array(kind[-1], fill)
        if kind == "ctypes":
            c = (ctypes.c_uint64 * (n // 8))()
            ctypes.memmove(c, fill, n)
            return c
        if kind == "cast_q":
            return memoryview(bytearray(fill)).cast("Q")
        return bytearray(fill)

    # --- checks ---------------------------------------------------------------------
    def check_read(self, what: str, buf: Any, offset: int, got: int) -> None:
        want = self.model.read(offset, _nbytes(buf))
        assert got == len(want), f"{what}: {got} bytes read, the file has {len(want)} at {offset}"
        assert _raw(buf)[:got] == want, f"{what}: wrong bytes into a {type(buf).__name__}"

    def check_disk(self, what: str) -> None:
        # (through the path: the handle's descriptor may be O_DIRECT)
        assert self.path.read_bytes() == bytes(self.model.data), f"after {what}"

    def run_async(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # --- calls ----------------------------------------------------------------------
    def read_one(self) -> None:
        buf, off = self.buffer(self.size()), self.offset()
        if self.rng.random() < 0.5:
            self.check_read("read_into", buf, off, self.h.read_into(buf, off))
        else:
            self.check_read("read_into_async", buf, off, self.run_async(self.h.read_into_async(buf, off)))

    def read(self) -> None:
        n, off = self.size(), self.offset()
        assert self.run_async(self.h.read(n, off)) == self.model.read(off, n), "read"

    def write_one(self) -> None:
        buf, off = self.buffer(self.size(), for_write=True), self.offset()
        how = self.rng.choice(["write_from", "write", "durable", "dsync", "bound"])
        if how == "write_from":
            got = self.h.write_from(buf, off)
        elif how == "write":
            got = self.run_async(self.h.write(buf, off))
        elif how == "bound":
            got = self.h.bind_write_durable(self.rng.choice(["dsync", "fdatasync"]))(buf, off)
        else:
            got = self.h.write_durable(buf, off, sync="dsync" if how == "dsync" else "fdatasync")
        assert got == _nbytes(buf), f"{how}: {got} of {_nbytes(buf)} bytes"
        self.model.write(off, _raw(buf))

    def read_batch(self) -> None:
        k = self.rng.randrange(1, 6)
        bufs = [self.buffer(self.size()) for _ in range(k)]
        offs = [self.offset() for _ in range(k)]
        how = self.rng.choice(["read_many", "read_many_async", "start", "prepared", "prepared_async"])
        if how == "read_many":
            got = self.h.read_many(offs, bufs)
        elif how == "read_many_async":
            got = self.run_async(self.h.read_many_async(offs, bufs))
        elif how == "start":
            got = self.h.start_read_many(offs, bufs).wait()
        else:
            with self.h.prepare_reads(bufs) as p:
                got = p.run(offs) if how == "prepared" else self.run_async(p.run_async(offs))
        for buf, off, n in zip(bufs, offs, got, strict=True):
            if how == "start" and 0 <= n < len(self.model.read(off, _nbytes(buf))):
                continue  # results unchecked: a short read is the caller's to complete
            self.check_read(how, buf, off, n)

    def write_batch(self) -> None:
        bufs = [self.buffer(self.size(), for_write=True) for _ in range(self.rng.randrange(1, 5))]
        offs, at = [], self.offset()
        for buf in bufs:  # apart: a batch's writes have no order between them
            offs.append(at)
            at += _nbytes(buf) + self.rng.choice([0, BLOCK, 3 * BLOCK])
        order = list(range(len(bufs)))
        self.rng.shuffle(order)
        bufs, offs = [bufs[i] for i in order], [offs[i] for i in order]
        how = self.rng.choice(["write_many", "write_many_async", "start", "prepared"])
        if how == "write_many":
            got = self.h.write_many(offs, bufs)
        elif how == "write_many_async":
            got = self.run_async(self.h.write_many_async(offs, bufs))
        elif how == "start":
            got = self.h.start_write_many(offs, bufs).wait()
        else:
            with self.h.prepare_writes(bufs) as p:
                got = p.run(offs)
        assert got == [_nbytes(b) for b in bufs], how
        for buf, off in zip(bufs, offs, strict=True):
            self.model.write(off, _raw(buf))

    def readv(self) -> None:
        bufs = [self.buffer(self.size()) for _ in range(self.rng.randrange(1, 4))]
        off = self.offset()
        got = self.h.readv_into(bufs, off)
        want = self.model.read(off, sum(map(_nbytes, bufs)))
        assert got == len(want), "readv_into"
        assert b"".join(map(_raw, bufs))[:got] == want, "readv_into: wrong bytes"

    def writev(self) -> None:
        bufs = [self.buffer(self.size(), for_write=True) for _ in range(self.rng.randrange(1, 4))]
        off = self.offset()
        assert self.h.writev_from(bufs, off) == sum(map(_nbytes, bufs)), "writev_from"
        self.model.write(off, b"".join(map(_raw, bufs)))

    def lease(self) -> None:
        bufs = self.h.lease_buffers(self.rng.randrange(0, 4), self.rng.choice([BLOCK, 2 * BLOCK]))
        for buf in bufs:
            off = self.offset()
            self.check_read("leased read_into", buf, off, self.h.read_into(buf, off))
        self.h.release_buffers(bufs)

    def size_matches(self) -> None:
        assert self.h.size() == len(self.model.data), "size()"

    def bad_input(self) -> None:
        h, loop = self.h, self.loop
        not_writable = b"x" * 32
        noncontiguous = memoryview(bytearray(64))[::2]
        bad_buffer = self.rng.choice([noncontiguous, "text", None, 5])
        calls: list[Callable[[], object]] = [
            lambda: h.read_many([0, -BLOCK], [bytearray(BLOCK), bytearray(BLOCK)]),
            lambda: h.write_many([0, BLOCK], [bytearray(BLOCK)]),
            lambda: h.write_many([0, self.rng.choice([1.5, "16", 1 << 63])], [b"a" * BLOCK, b"b" * BLOCK]),
            lambda: h.read_into(self.rng.choice([not_writable, bad_buffer]), 0),
            lambda: h.read_many([0], [self.rng.choice([not_writable, bad_buffer])]),
            lambda: h.readv_into([bad_buffer], 0),
            lambda: loop.run_until_complete(h.read_into_async(bad_buffer, 0)),
            lambda: h.write_from(bad_buffer, 0),
            lambda: h.write_many([0], [bad_buffer]),
            lambda: h.writev_from([bad_buffer], 0),
            lambda: loop.run_until_complete(h.write(bad_buffer, 0)),
            lambda: h.write_durable(bad_buffer, 0),
            lambda: h.write_durable(b"x", 0, sync="bogus"),  # type: ignore[arg-type]
            lambda: loop.run_until_complete(h.read(-1, 0)),
            lambda: h.release_buffers([bytearray(10)]),
        ]
        if self.direct:  # misaligned: refused; buffered, the same call is a plain write
            calls.append(lambda: h.write_from(b"x" * 100, 3))
        call = self.rng.choice(calls)
        with pytest.raises(REFUSALS):
            call()

    CALLS = ("read_one", "read", "write_one", "read_batch", "write_batch", "readv", "writev", "lease",
             "size_matches", "bad_input")  # fmt: skip


def _one_seed(seed: int, tmp_path: pathlib.Path) -> None:
    rng = random.Random(seed)
    backend = rng.choice(["uring", "uring+fixedbuf", "fallback"])
    direct = rng.random() < 0.3
    overrides: dict[str, object] = {"core.backend": "fallback"}
    if backend != "fallback":
        overrides = {"core.backend": "auto", "fixedbuf.mode": "on" if backend.endswith("fixedbuf") else "off"}
    initial = rng.randbytes(rng.choice([0, 100, BLOCK, 65536, 70000]))
    if direct:
        initial = initial[: len(initial) - len(initial) % BLOCK]
    path = tmp_path / f"seed{seed}"
    path.write_bytes(initial)
    with open_stack(overrides=overrides) as stack, stack.open(path, direct=direct) as handle:
        run = Run(rng, handle, Model(initial), direct)
        done: list[str] = []
        try:
            for _ in range(rng.randrange(5, 40)):
                name = rng.choice(Run.CALLS)
                done.append(name)
                getattr(run, name)()
                if name == "bad_input" or rng.random() < 0.3:
                    run.check_disk(name)
            run.check_disk("the last call")
        except BaseException as exc:
            exc.add_note(f"seed {seed} ({backend}, direct={direct}): {' '.join(done)}")
            raise
        finally:
            run.loop.close()


@pytest.mark.parametrize("seed", range(SEEDS))
def test_handle_calls_match_the_model(seed: int, tmp_path: pathlib.Path) -> None:
    _one_seed(seed, tmp_path)
