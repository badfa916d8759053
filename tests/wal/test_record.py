from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uringstack.wal.record import (
    HEADER_BYTES,
    Status,
    decode,
    decode_at,
    encode,
    encode_into,
    padded_size,
)

lsns = st.integers(min_value=1, max_value=2**64 - 1)
payloads = st.binary(max_size=2000)


def test_round_trip_simple() -> None:
    assert decode(encode(7, b"hello")) == (7, b"hello")
    assert len(encode(1, b"")) == HEADER_BYTES
    assert len(encode(1, b"x")) == 24


@given(lsns, payloads)
def test_round_trip_property(lsn: int, payload: bytes) -> None:
    raw = encode(lsn, payload)
    assert len(raw) == padded_size(len(payload)) and len(raw) % 8 == 0
    assert decode(raw) == (lsn, payload)
    buf = bytearray(b"\xff" * (len(raw) + 16))  # stale bytes: the padding must be written too
    assert encode_into(buf, 8, lsn, payload) == 8 + len(raw)
    assert bytes(buf[8 : 8 + len(raw)]) == raw
    assert bytes(buf[:8]) == bytes(buf[8 + len(raw) :]) == b"\xff" * 8  # nothing outside the record


@given(lsns, payloads, st.data())
def test_any_single_bit_flip_is_detected(lsn: int, payload: bytes, data: st.DataObject) -> None:
    raw = bytearray(encode(lsn, payload))
    covered = HEADER_BYTES + len(payload)  # padding is not covered (and not data)
    bit = data.draw(st.integers(0, covered * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    d = decode_at(bytes(raw), 0, lsn)
    assert d.status is not Status.OK


@given(lsns, st.binary(min_size=1, max_size=2000), st.data())
def test_torn_record_is_detected(lsn: int, payload: bytes, data: st.DataObject) -> None:
    """A record whose end never reached the disk reads as zeros there: never OK."""
    raw = bytearray(encode(lsn, payload))
    end = HEADER_BYTES + len(payload)
    cut = data.draw(st.integers(4, end - 1))
    if not any(raw[cut:end]):
        return  # the lost bytes were zeros anyway: nothing was lost
    raw[cut:] = bytes(len(raw) - cut)
    assert decode_at(bytes(raw), 0, lsn).status is not Status.OK


def test_zero_header_is_not_a_record() -> None:
    assert decode_at(bytes(64), 0).status is Status.ZERO
    assert decode_at(bytes(8), 0).status is Status.ZERO
    assert decode_at(b"\x01" + bytes(7), 0).status is Status.TRUNCATED


def test_wrong_lsn_is_reported() -> None:
    d = decode_at(encode(5, b"abc"), 0, expected_lsn=6)
    assert d.status is Status.BAD_LSN and d.lsn == 5


def test_lsn_zero_rejected() -> None:
    with pytest.raises(ValueError):
        encode(0, b"x")
    with pytest.raises(ValueError):
        decode(bytes(16))
