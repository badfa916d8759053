"""An O_DIRECT transfer the kernel ends inside a logical block, on every backend.

O_DIRECT moves whole blocks, so the handle cannot complete such a transfer
with another O_DIRECT request: the rest would start inside a block.  It used
to try, and raised ``AlignmentError`` ("raised before anything is
submitted") after the data had moved: an aligned 8 KiB read of a 5,000-byte
file failed on every synchronous and asyncio path.  A read that ends inside
a block ends at the end of the file (short, or ``ShortIOError`` with
``exact=True``); a write cut there (a file size limit) raises
``ShortIOError`` with ``transferred`` set.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.errors import ShortIOError
from uringstack.ring.buffers import aligned_buffer
from uringstack.stack import Stack

SIZE = 5000  # not a multiple of any logical block size
DATA = os.urandom(SIZE)


def _reads(h: Any, buf: Any) -> dict[str, Callable[[], Any]]:
    async def awaited() -> int:
        got = await asyncio.wait_for(h.read(len(buf), 0), 30)
        buf[: len(got)] = got
        return len(got)

    return {
        "read_into": lambda: h.read_into(buf, 0),
        "read_many": lambda: h.read_many([0], [buf])[0],
        "readv_into": lambda: h.readv_into([buf], 0),
        "prepared run": lambda: h.prepare_reads([buf]).run([0])[0],
        "await read": lambda: asyncio.run(awaited()),
    }


def test_a_direct_read_across_the_end_of_the_file_is_short(stack: Stack, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    with stack.open(path, direct=True, writable=False) as h:
        buf = aligned_buffer(8192)
        for name, call in _reads(h, buf).items():
            buf[:] = bytes(len(buf))
            assert call() == SIZE, name
            assert buf[:SIZE] == DATA, name
        with pytest.raises(ShortIOError) as ei:
            h.read_many([0], [buf], exact=True)
        assert (ei.value.got, ei.value.expected) == (SIZE, 8192)


def test_a_direct_write_cut_inside_a_block_raises_with_what_was_written(
    stack: Stack, size_limit: Callable[[int | None], None]
) -> None:
    # tmpfs takes O_DIRECT writes cut at any byte (a file size limit); ext4 refuses an
    # unaligned cut write whole (EINVAL), so there is nothing to complete
    shm = pathlib.Path("/dev/shm")
    if not shm.is_dir():
        skip_without("/dev/shm (tmpfs), whose O_DIRECT writes a file size limit cuts at any byte")
    path = shm / f"uringstack-direct-cut-{os.getpid()}"
    try:
        try:
            h = stack.open(path, direct=True, create=True)
        except OSError as e:
            skip_without(f"a tmpfs that takes O_DIRECT (Linux 6.6 or later; here: {e})")
        with h:
            limit = h.block_size + h.block_size // 2
            buf = aligned_buffer(2 * h.block_size)
            buf[:] = b"w" * len(buf)
            size_limit(limit)
            writes: dict[str, Callable[[], Any]] = {
                "write_from": lambda: h.write_from(buf, 0),
                "write_many": lambda: h.write_many([0], [buf]),
                "write_durable": lambda: h.write_durable(buf, 0),
            }
            for name, call in writes.items():
                os.truncate(path, 0)
                with pytest.raises(ShortIOError) as ei:
                    call()
                assert ei.value.transferred == limit, name
                assert os.path.getsize(path) == limit, name
    finally:
        size_limit(None)
        path.unlink(missing_ok=True)
