"""BatchColumns: named, reusable batch columns, and the ring refusing columns still in flight."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

from uringstack.errors import AlignmentError, BatchInFlightError, SubmissionError
from uringstack.ring import MisalignedOffsetError, Ring
from uringstack.ring.columns import FIELDS, BatchColumns
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi

BS = 4096


@pytest.fixture
def ring() -> Iterator[Ring]:
    r = Ring(entries=64)
    yield r
    r.close()


@pytest.fixture
def datafile(tmp_path: pathlib.Path) -> Iterator[tuple[int, bytes]]:
    data = os.urandom(BS * 64)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    yield fd, data
    os.close(fd)


def _addr(pin: object) -> int:
    return int(ffi.cast("uintptr_t", pin))


def test_named_columns_are_filled_once_and_resubmitted_with_new_offsets(
    ring: Ring, datafile: tuple[int, bytes]
) -> None:
    fd, data = datafile
    bufs = [bytearray(BS) for _ in range(8)]
    pins = [ffi.from_buffer(b) for b in bufs]
    cols = BatchColumns(8)
    cols.fill("opcodes", Op.READ)
    cols.fill("fds", fd)
    cols.set("addrs", [_addr(p) for p in pins])
    cols.fill("lens", BS)
    for round_ in range(3):  # the same columns, only the offsets change
        offsets = [((i * 7 + round_ * 13) % 64) * BS for i in range(8)]
        cols.set("offs", offsets)
        batch = ring.submit_columns(cols, keep=(pins, bufs), wait=True)
        assert ring.wait(batch) == [BS] * 8
        for buf, off in zip(bufs, offsets, strict=True):
            assert bytes(buf) == data[off : off + BS]
    assert cols.get("lens") == [BS] * 8
    assert cols.get("op_flags") == [0] * 8  # never set: NULL to C, 0 for every op
    assert not cols.is_set("op_flags")


def test_a_submission_of_fewer_ops_than_the_capacity(ring: Ring, datafile: tuple[int, bytes]) -> None:
    fd, data = datafile
    buf = bytearray(BS * 2)
    pin = ffi.from_buffer(buf)
    cols = BatchColumns(16)
    cols.fill("opcodes", Op.READ)
    cols.fill("fds", fd)
    cols.set("addrs", [_addr(pin), _addr(pin) + BS])
    cols.fill("lens", BS)
    cols.set("offs", [5 * BS, 9 * BS])
    assert ring.wait(ring.submit_columns(cols, 2, keep=(pin, buf), wait=True)) == [BS, BS]
    assert bytes(buf) == data[5 * BS : 6 * BS] + data[9 * BS : 10 * BS]
    with pytest.raises(ValueError, match=r"n=17 outside 1\.\.16"):
        ring.submit_columns(cols, 17)


def test_columns_still_in_flight_are_refused_then_reusable(ring: Ring) -> None:
    r, w = os.pipe()
    try:
        buf = bytearray(16)
        pin = ffi.from_buffer(buf)
        cols = BatchColumns(1)
        cols.fill("opcodes", Op.READ)
        cols.fill("fds", r)
        cols.set("addrs", [_addr(pin)])
        cols.fill("lens", 16)
        first = ring.submit_columns(cols, keep=(pin, buf))  # an empty pipe: stays in flight
        assert cols.in_flight
        with pytest.raises(BatchInFlightError, match="still in flight: 1 op"):
            ring.submit_columns(cols, keep=(pin, buf))
        with pytest.raises(BatchInFlightError):
            cols.check_reusable()
        os.write(w, b"x" * 16)
        assert ring.wait(first) == [16]
        assert not cols.in_flight
        second = ring.submit_columns(cols, keep=(pin, buf))
        os.write(w, b"y" * 16)
        assert ring.wait(second) == [16] and bytes(buf) == b"y" * 16
    finally:
        os.close(r)
        os.close(w)


def test_a_refused_submission_leaves_the_columns_reusable(ring: Ring) -> None:
    cols = BatchColumns(1)
    cols.fill("opcodes", 250)  # no such opcode: the C side refuses the batch before any SQE
    cols.fill("fds", -1)
    with pytest.raises(SubmissionError):
        ring.submit_columns(cols)
    assert not cols.in_flight
    cols.fill("opcodes", Op.NOP)
    assert ring.wait(ring.submit_columns(cols, wait=True)) == [0]


def test_offsets_off_the_alignment_are_refused_by_the_submitting_call_before_anything_is_queued(ring: Ring) -> None:
    """``offset_align`` (a prepared O_DIRECT restart's check, made in C by the submitting
    call): an offset that is not a multiple refuses the batch with nothing queued, counted
    or kept in flight, the columns reusable; multiples go through (also past 2**32)."""
    cols = BatchColumns(4)
    cols.fill("opcodes", Op.NOP)
    cols.fill("fds", -1)
    offs = cols.column("offs")
    free = len(ring._free_slots)
    for bad in ([0, BS, 2 * BS + 512, 3 * BS], [BS + 1, 0, 0, 0], [0, 0, 0, (1 << 40) + 4095]):
        offs[0:4] = bad
        before = ring.counters()["submitted"]
        with pytest.raises(MisalignedOffsetError, match="not a multiple of 4096") as info:
            ring.submit_columns(cols, offset_align=BS)
        assert isinstance(info.value, AlignmentError) and info.value.align == BS
        assert ring.counters()["submitted"] == before and ring.inflight == 0
        assert not cols.in_flight and len(ring._free_slots) == free
    # only the first n ops are checked; 0 (the default) checks nothing
    offs[0:4] = [0, 1 << 40, 7 * BS, 1]
    assert ring.wait(ring.submit_columns(cols, 3, offset_align=BS, wait=True)) == [0, 0, 0]
    assert ring.wait(ring.submit_columns(cols, wait=True)) == [0, 0, 0, 0]
    assert ring.wait(ring.submit_columns(cols, offset_align=512, n=2, wait=True)) == [0, 0]
    with pytest.raises(ValueError, match="not a power of two"):
        ring.submit_columns(cols, offset_align=3000)
    assert ring.inflight == 0 and len(ring._free_slots) == free


def test_required_columns_missing_is_a_clear_error_not_a_crash(ring: Ring) -> None:
    cols = BatchColumns(2)
    cols.fill("opcodes", Op.NOP)
    with pytest.raises(ValueError, match="batch columns fds are not set"):
        ring.submit_columns(cols)
    with pytest.raises(ValueError, match="'fds' is required"):
        cols.clear("fds")


def test_bad_names_and_values_are_named(ring: Ring) -> None:
    cols = BatchColumns(2)
    with pytest.raises(ValueError, match=r"unknown batch column .offsets.*offs"):
        cols.set("offsets", [0, 1])
    with pytest.raises(ValueError, match=r"column 'offs' \(uint64_t\): a value out of range"):
        cols.set("offs", [0, -1])
    with pytest.raises(ValueError, match="3 values for column 'lens' of a 2-op"):
        cols.set("lens", [1, 2, 3])
    with pytest.raises(ValueError, match="needs a uint32_t array"):
        cols.adopt("lens", ffi.new("uint8_t[]", 2))
    with pytest.raises(ValueError, match="capacity must be positive"):
        BatchColumns(0)
    assert list(FIELDS) == ["opcodes", "fds", "addrs", "lens", "offs", "op_flags", "sqe_flags", "buf_index"]


def test_submit_arrays_shim_still_submits_positional_columns(ring: Ring, datafile: tuple[int, bytes]) -> None:
    fd, data = datafile
    buf = bytearray(BS)
    pin = ffi.from_buffer(buf)
    arrays = [
        ffi.new("uint8_t[]", [Op.READ]), ffi.new("int32_t[]", [fd]), ffi.new("uint64_t[]", [_addr(pin)]),
        ffi.new("uint32_t[]", [BS]), ffi.new("uint64_t[]", [3 * BS]), ffi.NULL, ffi.NULL, ffi.NULL,
    ]  # fmt: skip
    assert ring.wait(ring.submit_arrays(1, arrays, (pin, buf), wait=True)) == [BS]
    assert bytes(buf) == data[3 * BS : 4 * BS]


def test_fill_range_writes_a_progression_and_rewrites_after_other_writes() -> None:
    cols = BatchColumns(4)
    cols.fill_range("addrs", 1000, 16)
    assert cols.get("addrs") == [1000, 1016, 1032, 1048]
    cols.fill_range("addrs", 2000, 16)  # another buffer: written again, not taken as the same
    assert cols.get("addrs") == [2000, 2016, 2032, 2048]
    cols.set("addrs", [1, 2, 3, 4])
    cols.fill_range("addrs", 2000, 16)  # set() overwrote it: the same progression is written again
    assert cols.get("addrs") == [2000, 2016, 2032, 2048]
    cols.column("addrs")[1] = 7  # an element written in place
    cols.fill_range("addrs", 2000, 16)
    assert cols.get("addrs") == [2000, 2016, 2032, 2048]
    cols.fill("lens", 5)
    cols.column("lens")[0] = 9
    cols.fill("lens", 5)  # (fill too: column() forgets what it knew)
    assert cols.get("lens") == [5] * 4
    cols.fill_range("offs", 3, 0)
    assert cols.get("offs") == [3] * 4
    with pytest.raises(ValueError, match="out of range"):
        cols.fill_range("lens", 2**32 - 2, 1)
