"""Record framing: ``crc32c | length | lsn | payload | zero padding``.

Every record starts on an 8-byte boundary.  The CRC32C covers the length, the
LSN and the payload, so a torn record (part of it never reached the disk and
still reads as the pre-written zeros) and a flipped bit are both caught.  An
all-zero header is never a valid record (LSNs start at 1 and the CRC of a zero
header is not zero), which is what lets a scanner tell the pre-written,
never-used tail of a segment from a damaged record.
"""

from __future__ import annotations

import enum
import mmap
import struct
from dataclasses import dataclass

import crc32c as _crc32c

from uringstack.ring.native import ffi as _ffi
from uringstack.ring.native import lib as _lib

HEADER = struct.Struct("<IIQ")
HEADER_BYTES = HEADER.size  # 16
ALIGN_BYTES = 8
MAX_PAYLOAD_BYTES = (1 << 32) - 1

_LEN_LSN = struct.Struct("<IQ")


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C (Castagnoli) of *data*, continuing from *value*."""
    return int(_crc32c.crc32c(data, value))


def padded_size(payload_bytes: int) -> int:
    """Bytes one record with *payload_bytes* of payload occupies on disk."""
    return (HEADER_BYTES + payload_bytes + ALIGN_BYTES - 1) & ~(ALIGN_BYTES - 1)


_CRC = struct.Struct("<I")
_PADDING = [bytes(i) for i in range(ALIGN_BYTES)]


def encode(lsn: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Frame *payload* as the record with sequence number *lsn* (padding included)."""
    n = len(payload)
    if lsn < 1:
        raise ValueError(f"LSNs start at 1, got {lsn}")
    if n > MAX_PAYLOAD_BYTES:
        raise ValueError(f"record of {n} bytes exceeds the format limit {MAX_PAYLOAD_BYTES}")
    # It runs once per record under the writer's lock: one CRC call over one
    # concatenation costs half of CRC-ing the header and the payload separately.
    body = _LEN_LSN.pack(n, lsn) + payload
    return b"".join((_CRC.pack(_crc32c.crc32c(body)), body, _PADDING[-n & (ALIGN_BYTES - 1)]))


def encode_into(
    buf: bytearray | memoryview | mmap.mmap, offset: int, lsn: int, payload: bytes, view: memoryview | None = None
) -> int:
    """Frame *payload* as record *lsn* directly into *buf* at *offset*; return the offset after it.

    The bytes are exactly :func:`encode`'s, padding included (the buffer may
    hold stale bytes of an earlier batch), without building the record as a
    separate object first: the writer frames ``append_async`` records into its
    staging buffer this way.  *view* is a memoryview of *buf* the caller keeps
    open across many records (the CRC reads the framed bytes in place).
    """
    n = len(payload)
    if lsn < 1:
        raise ValueError(f"LSNs start at 1, got {lsn}")
    end = offset + HEADER_BYTES + n
    _LEN_LSN.pack_into(buf, offset + 4, n, lsn)
    buf[offset + HEADER_BYTES : end] = payload
    mv = view if view is not None else memoryview(buf)
    _CRC.pack_into(buf, offset, _crc32c.crc32c(mv[offset + 4 : end]))
    pad = -n & (ALIGN_BYTES - 1)
    if pad:
        buf[end : end + pad] = _PADDING[pad]
    return end + pad


class BatchFramer:
    """Frames whole batches of payloads into one writable buffer, in C (``us_wal_frame``).

    The writer's staging buffer is framed once per flush: one call for the
    batch, not a Python loop per record (CRC32C with SSE4.2 where the CPU has
    it).  The bytes are exactly :func:`encode`'s.  :meth:`close` before the
    buffer is closed (the C pointer keeps it exported).
    """

    __slots__ = ("_buf", "_one", "_ptr", "_size")

    def __init__(self, buf: mmap.mmap | bytearray) -> None:
        self._buf = buf
        self._size = len(buf)
        self._ptr = _ffi.from_buffer("uint8_t[]", buf, require_writable=True)
        self._one = _ffi.new("uint32_t[1]")  # the length array of a one-record batch, reused

    def frame(self, at: int, lsn: int, payloads: list[bytes]) -> int:
        """Frame *payloads* as records *lsn*, *lsn* + 1, ... at offset *at*; return the offset after them."""
        if lsn < 1:
            raise ValueError(f"LSNs start at 1, got {lsn}")
        n = len(payloads)
        if n == 1:  # a lone appender's every flush: no allocation
            data = payloads[0]
            lens = self._one
            lens[0] = len(data)
        else:
            data = b"".join(payloads)
            lens = _ffi.new("uint32_t[]", [len(p) for p in payloads])
        end = int(_lib.us_wal_frame(self._ptr, self._size, at, lsn, data, lens, n))
        if end < 0:
            raise ValueError(f"{n} records of {len(data)} bytes do not fit the buffer at offset {at}")
        return end

    def close(self) -> None:
        """Release the C pointer to the buffer (idempotent)."""
        if self._ptr is not None:
            _ffi.release(self._ptr)
            self._ptr = None


class Status(enum.Enum):
    """What a scanner found at one offset."""

    OK = "ok"
    ZERO = "zero"  # an all-zero header: the unused, pre-written end of a segment
    TRUNCATED = "truncated"  # header or payload runs past the end of the data
    BAD_CRC = "bad_crc"
    BAD_LSN = "bad_lsn"  # intact CRC but not the LSN that must come next


@dataclass(frozen=True, slots=True)
class Decoded:
    """Result of :func:`decode_at`: the status and, when OK, the record."""

    status: Status
    lsn: int = 0
    payload: bytes = b""
    size: int = 0  # bytes the record occupies, padding included


_ZERO_HEADER = bytes(HEADER_BYTES)


def decode_at(buf: bytes | memoryview | mmap.mmap, offset: int, expected_lsn: int | None = None) -> Decoded:
    """Decode the record starting at *offset* of *buf*.

    With *expected_lsn* an intact record carrying any other LSN is reported as
    :attr:`Status.BAD_LSN` (stale or misplaced data).
    """
    end = len(buf)
    if offset + HEADER_BYTES > end:
        tail = bytes(buf[offset:end])
        return Decoded(Status.ZERO if not any(tail) else Status.TRUNCATED)
    head = bytes(buf[offset : offset + HEADER_BYTES])
    if head == _ZERO_HEADER:
        return Decoded(Status.ZERO)
    crc, n, lsn = HEADER.unpack(head)
    size = padded_size(n)
    if offset + HEADER_BYTES + n > end:
        return Decoded(Status.TRUNCATED)
    payload = bytes(buf[offset + HEADER_BYTES : offset + HEADER_BYTES + n])
    if crc32c(payload, crc32c(head[4:])) != crc:
        return Decoded(Status.BAD_CRC)
    if lsn < 1 or (expected_lsn is not None and lsn != expected_lsn):
        return Decoded(Status.BAD_LSN, lsn=lsn)
    return Decoded(Status.OK, lsn=lsn, payload=payload, size=size)


def decode(data: bytes) -> tuple[int, bytes]:
    """Decode one framed record (the inverse of :func:`encode`); raise ValueError if damaged."""
    d = decode_at(data, 0)
    if d.status is not Status.OK:
        raise ValueError(f"not a valid record: {d.status.value}")
    return d.lsn, d.payload
