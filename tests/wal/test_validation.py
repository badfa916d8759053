"""Bad records are refused before anything is queued (issue 12, items 8 and 13)."""

from __future__ import annotations

import array
import asyncio
import pathlib

import pytest

from uringstack.wal import Wal, WalConfig

CFG = WalConfig(segment_size_bytes=256 * 1024, max_batch_bytes=65536, backend="fallback")


def test_append_many_validates_the_whole_group_first(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, CFG) as wal:
        with pytest.raises(TypeError, match=r"record 1: .*got str"):
            wal.append_many([b"a", "b", b"c"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="record 2 "):
            wal.append_many([b"a", b"b", bytes(70_000)])
        assert wal.next_lsn == 1 and wal.durable_lsn == 0
        assert wal.append_many([b"x", bytearray(b"y"), memoryview(b"z")]) == [1, 2, 3]
    with Wal.open(wal_dir, CFG) as wal:
        assert list(wal.read_from(1)) == [(1, b"x"), (2, b"y"), (3, b"z")]


def test_append_refuses_non_bytes(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, CFG) as wal:
        for bad in ("text", 5, None, [1, 2]):
            with pytest.raises(TypeError, match="bytes-like"):
                wal.append(bad)  # type: ignore[arg-type]
        assert wal.next_lsn == 1


def test_wide_memoryview_is_stored_as_its_bytes(wal_dir: pathlib.Path) -> None:
    """len() of a memoryview counts items, not bytes: framing must use the byte count."""
    a = array.array("I", [1, 2, 3])
    with Wal.open(wal_dir, CFG) as wal:
        assert wal.append(memoryview(a)) == 1
        assert wal.append(a) == 2  # any buffer, framed by its bytes
        with pytest.raises(TypeError, match="non-contiguous"):
            wal.append(memoryview(b"abcdef")[::2])
    with Wal.open(wal_dir, CFG, recovery="absolute") as wal:
        assert list(wal.read_from(1)) == [(1, a.tobytes()), (2, a.tobytes())]


def test_async_append_validates_before_queuing(wal_dir: pathlib.Path) -> None:
    async def go(wal: Wal) -> int:
        with pytest.raises(TypeError, match="bytes-like"):
            wal.append_async("text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_batch_bytes"):
            wal.append_async(bytes(65536))
        return await asyncio.wait_for(wal.append_async(b"ok"), 10)

    with Wal.open(wal_dir, CFG) as wal:
        assert asyncio.run(go(wal)) == 1


def test_record_size_limit_message_is_exact(wal_dir: pathlib.Path) -> None:
    """max_batch_bytes bounds the framed record (16-byte header, 8-byte padding): the
    largest payload is 65520 for 65536, and the message says so."""
    with Wal.open(wal_dir, CFG) as wal:
        assert wal.append(bytes(65520)) == 1
        with pytest.raises(ValueError) as ei:
            wal.append(bytes(65521))
        msg = str(ei.value)
        assert "65521" in msg and "65536" in msg and "65520" in msg, msg
        assert "framed" in msg


def test_an_lsn_that_is_not_an_int_is_a_type_error(wal_dir: pathlib.Path) -> None:
    # 1.5 read from LSN 2; a string passed truncate_before while one segment was live
    # (nothing compared) and failed half-way through the list once there were more
    cfg = WalConfig(segment_size_bytes=16 * 1024, max_batch_bytes=4096, backend="fallback")
    with Wal.open(wal_dir, cfg) as wal:
        wal.append_many([bytes(3000)] * 12)  # several segments
        for bad in (1.5, "3", None, b"1"):
            with pytest.raises(TypeError, match=r"Wal.read_from\(\): an LSN is an int"):
                wal.read_from(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"Wal.truncate_before\(\): an LSN is an int"):
                wal.truncate_before(bad)  # type: ignore[arg-type]
        assert [lsn for lsn, _ in wal.read_from(1)] == list(range(1, 13))  # nothing truncated


def test_a_path_that_is_a_file_is_not_a_directory_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "wal"
    path.write_bytes(b"not a log")
    with pytest.raises(NotADirectoryError, match="a WAL is a directory"):
        Wal.open(path, CFG)
    assert path.read_bytes() == b"not a log"


def test_open_takes_a_mapping_config_checked_as_a_walconfig(tmp_path: pathlib.Path) -> None:
    """A config file's ``[wal]`` table is a dict: it used to fail on a missing attribute,
    after the directory was made and locked."""
    fields = {"segment_size_bytes": 256 * 1024, "max_batch_bytes": 65536, "backend": "fallback"}
    with Wal.open(tmp_path / "log", fields, async_flush="loop") as wal:
        assert wal.config == WalConfig(**fields, async_flush="loop")  # keyword overrides over the mapping
        assert wal.append(b"x") == 1
    with pytest.raises(ValueError, match="nope"):
        Wal.open(tmp_path / "bad", {**fields, "nope": 1})
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("config", "wal.toml", r"'config' must be a WalConfig, a mapping of its fields or None, not str"),
        ("config", 5, r"'config' must be .* not int"),
        ("stack", "fallback", r"'stack' must be a uringstack Stack or None, not str"),
    ],
)
def test_open_refuses_a_config_or_stack_of_another_type_before_touching_the_directory(
    tmp_path: pathlib.Path, argument: str, value: object, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Wal.open(tmp_path / "log", **{argument: value})
    assert not (tmp_path / "log").exists()
