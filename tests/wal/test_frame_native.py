"""The C record framer (``us_wal_frame``, ``record.BatchFramer``) writes exactly what ``record.encode`` does.

The writer frames every flush's records in one C call; a byte that differs
from the format (a wrong CRC, stale padding, an off-by-one length) would make
recovery cut or reject acknowledged records, so each is compared here with the
Python reference, on a buffer pre-filled with junk (padding must be written).
"""

from __future__ import annotations

import mmap
import os
import random

import crc32c
import pytest

from uringstack.ring.native import lib
from uringstack.wal.record import BatchFramer, Status, decode_at, encode

SIZES = [0, 1, 2, 7, 8, 9, 15, 16, 17, 255, 256, 4080, 4096, 4097, 65536]


@pytest.mark.parametrize("n", SIZES)
def test_crc32c_matches_the_package(n: int) -> None:
    data = os.urandom(n)
    for seed in (0, 1, 0xDEADBEEF):
        want = crc32c.crc32c(data, seed)
        assert lib.us_wal_crc32c(seed, data, n) == want
        assert lib.us_wal_crc32c_table(seed, data, n) == want  # the path of a CPU without SSE4.2


def _junk_buffer(size: int) -> mmap.mmap:
    buf = mmap.mmap(-1, size)
    buf[:] = b"\xa5" * size
    return buf


@pytest.mark.parametrize("seed", range(20))
def test_batch_is_byte_for_byte_encode(seed: int) -> None:
    rnd = random.Random(seed)
    payloads = [rnd.randbytes(rnd.choice([*SIZES[:12], rnd.randrange(0, 3000)])) for _ in range(rnd.randrange(1, 48))]
    lsn = rnd.randrange(1, 1 << 62)
    at = rnd.randrange(0, 4096, 8)
    buf = _junk_buffer(1 << 20)
    framer = BatchFramer(buf)
    try:
        end = framer.frame(at, lsn, payloads)
        want = b"".join(encode(lsn + i, p) for i, p in enumerate(payloads))
        assert buf[at:end] == want
        assert buf[end : end + 8] == b"\xa5" * 8  # nothing written past the batch
        pos = at
        for i, p in enumerate(payloads):
            d = decode_at(buf[:end], pos, expected_lsn=lsn + i)
            assert (d.status, d.payload) == (Status.OK, p)
            pos += d.size
    finally:
        framer.close()
        buf.close()


def test_single_record_and_refusals() -> None:
    buf = _junk_buffer(4096)
    framer = BatchFramer(buf)
    try:
        assert framer.frame(8, 3, [b"abc"]) == 8 + 24
        assert buf[8:32] == encode(3, b"abc")
        with pytest.raises(ValueError, match="do not fit"):
            framer.frame(4096 - 16, 4, [b"x"])  # 24 framed bytes, 16 left
        with pytest.raises(ValueError, match="LSNs start at 1"):
            framer.frame(0, 0, [b"x"])
    finally:
        framer.close()
        framer.close()  # idempotent
        buf.close()  # the C pointer was released: the mmap can close


def test_one_record_batches_in_a_row_then_a_group() -> None:
    """A one-record batch reuses one length array (a lone appender's every flush): each
    frame must carry its own length, and a group after them its own lengths."""
    buf = _junk_buffer(1 << 16)
    framer = BatchFramer(buf)
    try:
        at, lsn, want = 0, 1, b""
        for p in [b"x" * 4096, b"", b"abc", b"y" * 1000]:
            at = framer.frame(at, lsn, [p])
            want += encode(lsn, p)
            lsn += 1
        group = [b"g" * 7, b"h" * 4096]
        at = framer.frame(at, lsn, group)
        want += encode(lsn, group[0]) + encode(lsn + 1, group[1])
        at = framer.frame(at, lsn + 2, [b"z"])
        want += encode(lsn + 2, b"z")
        assert buf[:at] == want
    finally:
        framer.close()
        buf.close()
