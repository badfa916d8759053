"""Bad arguments get one clear error before anything is submitted, on every backend."""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.errors import UringIOError
from uringstack.ring.buffers import aligned_buffer
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle

DATA = bytes(range(256)) * 32  # 8 KiB


def test_negative_offset_is_a_value_error_naming_it(handle: FileHandle) -> None:
    buf = bytearray(16)
    for call in (
        lambda: handle.read_into(buf, -4096),
        lambda: handle.write_from(b"x" * 16, -1),
        lambda: handle.read_many([0, -8], [buf, bytearray(8)]),
        lambda: handle.write_many([-1], [b"x"]),
        lambda: handle.start_read_many([-1], [buf]),
        lambda: handle.start_write_many([0, -16], [b"a", b"b"]),
        lambda: handle.write_durable(b"x", -2),
        lambda: handle.readv_into([buf], -16),
    ):
        with pytest.raises(ValueError, match=r"offset -\d+ .*is negative"):
            call()
    with pytest.raises(ValueError, match=r"offset -5 .*is negative"):
        asyncio.run(handle.read(4, -5))
    with pytest.raises(ValueError, match=r"offset -5 .*is negative"):
        asyncio.run(handle.write(b"abc", -5))
    assert os.pread(handle.fd, len(DATA) + 1, 0) == DATA  # nothing was written


def test_offsets_and_buffers_must_pair_up(handle: FileHandle) -> None:
    with pytest.raises(ValueError, match="2 offsets but 1 buffers"):
        handle.read_many([0, 8], [bytearray(8)])


def test_negative_read_size_is_a_value_error(handle: FileHandle) -> None:
    with pytest.raises(ValueError, match="read size -1 is negative"):
        asyncio.run(handle.read(-1, 0))
    assert asyncio.run(handle.read(0, 0)) == b""
    assert asyncio.run(handle.read(5, 1)) == DATA[1:6]


def test_a_buffer_over_4_gib_is_served(handle: FileHandle) -> None:
    # An SQE length is 32 bits; the backend must split, not fail with
    # "does not fit 'uint32_t'".  Only the pages the kernel fills are touched.
    try:
        big = mmap.mmap(-1, (4 << 30) + 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        skip_without(f"the kernel refuses a 4 GiB mapping with {ram / 2**30:.1f} GiB of RAM (overcommit heuristic)")
    try:
        assert handle.read_into(big, 0) == len(DATA)  # short only at end of file
        assert big[: len(DATA)] == DATA
    finally:
        big.close()


def test_unknown_open_option_is_refused(stack: Stack, tmp_path: pathlib.Path) -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) 'bogus'.*passthrough"):
        stack.open(tmp_path / "f", create=True, bogus=1)
    assert not (tmp_path / "f").exists()
    with stack.open(tmp_path / "f", create=True, passthrough="auto") as h:  # a declared option
        assert h.write_from(b"ok", 0) == 2


def test_a_character_device_that_is_not_nvme_is_refused_plainly(stack: Stack) -> None:
    with pytest.raises(UringIOError) as info:
        stack.open("/dev/null")
    message = str(info.value)
    assert "not an NVMe generic char device" in message
    assert "required but impossible" not in message


def test_release_of_a_buffer_not_leased_is_an_error(handle: FileHandle) -> None:
    (leased,) = handle.lease_buffers(1, 4096)
    with pytest.raises(ValueError, match="did not hand out"):
        handle.release_buffers([bytearray(4096)])
    with pytest.raises(ValueError, match="did not hand out"):
        handle.release_buffers([aligned_buffer(4096)])
    handle.release_buffers([leased])
    with pytest.raises(ValueError):
        handle.release_buffers([leased])  # twice


@pytest.fixture
def pooled() -> Iterator[Stack]:
    s = open_stack(
        overrides={
            "core.cores": [sorted(os.sched_getaffinity(0))[0]],
            "fixedbuf.mode": "on",
            "fixedbuf.count": 8,
            "fixedbuf.buffer_size": 8192,
            "fixedbuf.files": 4,
        }
    )
    yield s
    s.close()


def test_lease_above_the_pool_size_takes_nothing(pooled: Stack, tmp_path: pathlib.Path) -> None:
    with pooled.open(tmp_path / "f", create=True) as h:
        pool = pooled.workers[0].buffers.for_ring(h.ring)
        assert pool is not None
        with pytest.raises(BufferError, match=r"lease_buffers\(9\).*8 buffers"):
            h.lease_buffers(9)
        assert pool.available() == 8
        held = h.lease_buffers(6)
        with pytest.raises(BufferError):
            h.lease_buffers(3)  # only 2 free: all or nothing
        assert pool.available() == 2
        h.release_buffers(held)
        leases = h.lease_buffers(8)  # the pool is whole again
        assert len(leases) == 8
        h.release_buffers(leases)
        assert pool.available() == 8


def test_release_of_another_pools_buffer_is_an_error(pooled: Stack, tmp_path: pathlib.Path) -> None:
    with (
        open_stack(
            overrides={
                "core.cores": [pooled.workers[0].cpu],
                "fixedbuf.mode": "on",
                "fixedbuf.count": 8,
                "fixedbuf.buffer_size": 8192,
            }
        ) as other,
        other.open(tmp_path / "g", create=True) as g,
        pooled.open(tmp_path / "f", create=True) as h,
    ):
        (foreign,) = g.lease_buffers(1)
        with pytest.raises(ValueError, match="not a lease of this handle's buffer pool"):
            h.release_buffers([foreign])
        g.release_buffers([foreign])


class _Index:
    """An offset type that is not int but converts losslessly (as numpy.int64 does)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def _offset_calls(handle: FileHandle, bad: object) -> list[tuple[str, Any]]:
    """Every call taking an offset, with *bad* as its offset (for a batch: the second op's)."""
    buf = bytearray(16)
    return [
        ("read_into", lambda: handle.read_into(buf, bad)),
        ("write_from", lambda: handle.write_from(b"x" * 16, bad)),
        ("read_many", lambda: handle.read_many([0, bad], [buf, bytearray(8)])),
        ("write_many", lambda: handle.write_many([0, bad], [b"a" * 8, b"b" * 8])),
        ("start_read_many", lambda: handle.start_read_many([0, bad], [buf, bytearray(8)]).wait()),
        ("start_write_many", lambda: handle.start_write_many([0, bad], [b"a" * 8, b"b" * 8]).wait()),
        ("write_durable", lambda: handle.write_durable(b"x", bad)),
        ("write_durable dsync", lambda: handle.write_durable(b"x", bad, sync="dsync")),
        ("readv_into", lambda: handle.readv_into([buf], bad)),
        ("writev_from", lambda: handle.writev_from([b"a" * 8, b"b"], bad)),
        ("prepared run", lambda: _prepared(handle, lambda p: p.run([0, bad]))),
        ("prepared start", lambda: _prepared(handle, lambda p: p.start([0, bad]).wait())),
        ("prepared one", lambda: _prepared(handle, lambda p: p.run([bad]), n=1)),
        ("prepared one, bound", lambda: _prepared_read_twice(handle, bad)),
        ("read", lambda: asyncio.run(handle.read(4, bad))),
        ("read_into_async", lambda: asyncio.run(handle.read_into_async(buf, bad))),
        ("write", lambda: asyncio.run(handle.write(b"abc", bad))),
        ("read_many_async", lambda: asyncio.run(handle.read_many_async([0, bad], [buf, bytearray(8)]))),
        ("write_many_async", lambda: asyncio.run(handle.write_many_async([0, bad], [b"a" * 8, b"b" * 8]))),
    ]


def _prepared_read_twice(handle: FileHandle, bad: object) -> object:
    """A single prepared read at *bad* after one at 0: the first call binds the op (run_one)."""
    with handle.prepare_reads([bytearray(8)]) as p:
        p.run([0])
        return p.run([bad])


def _prepared(handle: FileHandle, call: Any, n: int = 2) -> object:
    with handle.prepare_writes([b"P" * 8 for _ in range(n)]) as p:
        return call(p)


@pytest.mark.parametrize("bad", [1.5, "16", None])
def test_an_offset_that_is_not_an_integer_is_a_type_error_naming_it(handle: FileHandle, bad: object) -> None:
    # Before anything is submitted: a backend running a batch's ops one after another
    # (the fallback's pool, an inline buffered write) had written op 0 when op 1 raised.
    for name, call in _offset_calls(handle, bad):
        with pytest.raises(TypeError, match=rf"offset {re.escape(repr(bad))} .*is not an integer"):
            call()
        assert os.pread(handle.fd, len(DATA) + 1, 0) == DATA, f"{name} wrote before refusing"


@pytest.mark.parametrize("bad", [1 << 63, (1 << 64) - 1, 1 << 64, 1 << 70])
def test_an_offset_past_the_largest_file_offset_is_a_value_error_naming_it(handle: FileHandle, bad: int) -> None:
    # 2**63 up to 2**64 fit an SQE's u64 offset, which the kernel reads as a negative
    # loff_t (EINVAL after the ops before it ran); preadv raised OverflowError
    for name, call in _offset_calls(handle, bad):
        with pytest.raises(ValueError, match=rf"offset {bad} .*is past the largest file offset \(2\*\*63 - 1\)"):
            call()
        assert os.pread(handle.fd, len(DATA) + 1, 0) == DATA, f"{name} wrote before refusing"


def test_an_index_object_is_an_offset(handle: FileHandle) -> None:
    buf = bytearray(8)
    assert handle.read_many([_Index(0), _Index(16)], [bytearray(4), buf]) == [4, 8]
    assert buf == DATA[16:24]
    assert handle.write_durable(b"DUR", _Index(100)) == 3
    assert handle.write_many([_Index(200)], [b"MANY"]) == [4]
    with handle.prepare_writes([b"PREP"]) as p:
        assert p.run([_Index(300)]) == [4]
    data = os.pread(handle.fd, len(DATA), 0)
    assert (data[100:103], data[200:204], data[300:304]) == (b"DUR", b"MANY", b"PREP")


@pytest.mark.parametrize(
    ("argument", "value"),
    [("writable", "no"), ("writable", 0), ("create", "yes"), ("direct", "yes"), ("direct", 1), ("core", "0")],
)
def test_a_flag_that_is_not_a_bool_is_a_type_error(stack: Stack, tmp_path: pathlib.Path, argument: str, value: object
                                                   ) -> None:  # fmt: skip
    # "no" is truthy: writable="no" opened the file for writing
    path = tmp_path / "f"
    path.write_bytes(DATA)
    with pytest.raises(TypeError, match=rf"argument '{argument}' must be .*not {re.escape(repr(value))}"):
        stack.open(path, **{argument: value})


def test_a_directory_or_an_empty_path_fails_with_open_2s_errno(stack: Stack, tmp_path: pathlib.Path) -> None:
    with pytest.raises(UringIOError) as isdir:
        stack.open(tmp_path)
    assert isdir.value.errno == errno.EISDIR
    with pytest.raises(UringIOError) as empty:  # not the working directory, which os.path.abspath("") is
        stack.open("")
    assert empty.value.errno == errno.ENOENT
    with pytest.raises(UringIOError) as empty_create:
        stack.open("", create=True)
    assert empty_create.value.errno == errno.ENOENT


@pytest.mark.parametrize(("count", "size"), [(1.5, 4096), ("2", 4096), (1, "4096"), (1, 4096.0), (None, 4096)])
def test_lease_buffers_takes_ints(handle: FileHandle, count: object, size: object) -> None:
    with pytest.raises(TypeError, match=r"lease_buffers\(count=.*\): count and size are ints"):
        handle.lease_buffers(count, size)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "error"),
    [(None, TypeError), ("text", TypeError), (memoryview(bytearray(64))[::2], BufferError)],
    ids=["None", "str", "non-contiguous"],
)
def test_a_write_batch_with_a_bad_buffer_writes_nothing(
    handle: FileHandle, bad: object, error: type[Exception]
) -> None:
    """A waited buffered write batch is written by the calling thread op by op; a buffer it
    could not take raised at its turn, after the ops before it reached the file (session 31:
    5,000 good ops written, then ``TypeError``). It is refused whole now, as a bad offset is."""
    before = os.pread(handle.fd, len(DATA) + 16, 0)
    with pytest.raises(error):
        handle.write_many([0, 4], [b"abcd", bad])
    with pytest.raises(error):
        handle.writev_from([b"abcd", bad], 0)
    assert os.pread(handle.fd, len(DATA) + 16, 0) == before


def test_a_zero_length_async_read_on_o_direct_checks_its_offset(stack: Stack, tmp_path: pathlib.Path) -> None:
    """As ``read_into``'s zero-length read does (docs/api.md: O_DIRECT offsets are still
    checked); ``await read(0, 3)`` returned ``b""`` (session 31)."""
    from uringstack.errors import AlignmentError

    path = tmp_path / "f"
    path.write_bytes(DATA)
    try:
        h = stack.open(path, direct=True)
    except OSError as exc:
        skip_without(f"{tmp_path} refuses O_DIRECT ({exc})")
    with h:
        with pytest.raises(AlignmentError):
            h.read_into(bytearray(0), 3)
        with pytest.raises(AlignmentError):
            asyncio.run(h.read(0, 3))
        assert asyncio.run(h.read(0, h.block_size)) == b""


@pytest.mark.parametrize("config", [{"core": {"backend": "fallback"}}, 5])
def test_open_stack_refuses_a_config_that_is_no_stackconfig_and_points_at_overrides(config: object) -> None:
    """A dict was told to pass "the plugin_manager the config was loaded with", as if loaded."""
    with pytest.raises(TypeError, match=rf"must be a StackConfig .*not {type(config).__name__}; .*overrides="):
        open_stack(config)  # type: ignore[arg-type]
