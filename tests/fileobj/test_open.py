"""uringstack.open(): the built-in's semantics, read-ahead, write-behind, flush and errors."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pathlib
import shutil
import threading
from typing import Any

import pytest

import uringstack
from uringstack.fileobj.stream import CHUNK, WRITE_DEPTH
from uringstack.ring.pending import CompletedPending
from uringstack.stack import Stack

from .conftest import defer_writes, open_direct_or_skip

MODES = [
    "",
    "rw",
    "rr",
    "rb+b",
    "wt+b",
    "tb",
    "bt",
    "ra",
    "xw",
    "q",
    "r+ +",
    "U",
    "rU",
    "wU",
    "b",
    "t",
    "+",
    "r+",
    "rb",
    "w",
    "wb",
    "a",
    "ab+",
    "x",
    "xb",
    "rt",
    "r+t",
    "at+",
    42,
    None,
    b"r",
]


@pytest.mark.parametrize("mode", MODES, ids=repr)
def test_every_mode_string_behaves_as_the_builtin(mode: Any, tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")

    def outcome(opener: Any, **kw: Any) -> Any:
        try:
            f = opener(path, mode, **kw)
        except Exception as exc:
            return type(exc), str(exc)
        try:
            return "ok", type(f).__mro__[-3].__name__, getattr(f, "mode", None)
        finally:
            f.close()
            path.write_bytes(b"abc")

    builtin = outcome(open)
    ours = outcome(uringstack.open, stack=stack)
    if builtin[0] == "ok":
        assert ours[0] == "ok" and ours[2] == builtin[2]
    else:
        assert ours[0] is builtin[0], (ours, builtin)  # the same exception (messages: _pyio's wording)


@pytest.mark.parametrize("whence", [os.SEEK_END, os.SEEK_HOLE], ids=["SEEK_END", "SEEK_HOLE"])
@pytest.mark.parametrize(("mode", "buffering"), [("w+b", 8192), ("wb", 4096), ("r+b", 1 << 20)])
def test_a_seek_from_the_end_sees_the_writes_still_in_flight(
    tmp_path: pathlib.Path, stack: Stack, mode: str, buffering: int, whence: int
) -> None:
    """O_DIRECT writes go out unwaited (write-behind): a seek that reads the file's size
    waits for them first.  Before, ``seek(0, SEEK_END)`` right after an 8 KiB write
    returned 0, and the next write "at the end" went over the first one."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 5000)
    with open_direct_or_skip(path, mode, stack, buffering=buffering) as f:
        f.write(b"a" * 8192)
        assert f.seek(0, whence) == 8192
        f.write(b"b" * 100)
    assert path.read_bytes() == b"a" * 8192 + b"b" * 100


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("size", [0, 1, 4095, 256 * 1024, 3 * 1024 * 1024 + 17])
def test_sequential_read_matches_the_builtin(size: int, direct: bool, tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    data = os.urandom(size)
    path.write_bytes(data)

    def op() -> Any:
        return open_direct_or_skip(path, "rb", stack) if direct else uringstack.open(path, "rb", stack=stack)

    with op() as f:
        assert hashlib.file_digest(f, "sha256").digest() == hashlib.sha256(data).digest()
    with op() as f:
        got = b"".join(iter(lambda: f.read(70001), b""))
    assert got == data
    with op() as f:
        assert f.read() == data
        assert f.tell() == size == os.lseek(f.fileno(), 0, os.SEEK_CUR)


def test_read_ahead_keeps_several_reads_in_flight(tmp_path: pathlib.Path) -> None:
    """Sequential O_DIRECT reads are served from chunk reads started ahead of the reader, not one read per call:
    the first small read starts one request per chunk up to the end of the file (the window is deeper)."""
    path = tmp_path / "f"
    data = os.urandom(3 * CHUNK + 17)
    path.write_bytes(data)
    with (
        uringstack.open_stack(overrides={"core.backend": "auto"}) as stack,
        open_direct_or_skip(path, "rb", stack) as f,
    ):
        raw = f.raw
        assert raw.handle.backend in ("uring", "iopoll")  # (iopoll: tmp_path on a device with poll queues)
        ring = raw.handle.io.ring
        before = ring.counters()["submitted"]
        out = bytearray(f.read(64 * 1024))
        assert ring.counters()["submitted"] - before == 4  # chunks at 0, 1, 2 and 3 x CHUNK
        while chunk := f.read(64 * 1024):
            out += chunk
        assert out == data
        # 1 MiB+ of data per request: far fewer requests than the reader's 64 KiB calls
        assert ring.counters()["submitted"] - before <= 6


def test_random_reads_do_not_trigger_read_ahead(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    with (
        uringstack.open_stack(overrides={"core.backend": "auto"}) as stack,
        open_direct_or_skip(path, "rb", stack, buffering=0) as f,
    ):
        f._enable_streaming(readahead=True, writebehind=False)
        ring = f.handle.io.ring
        before = ring.counters()["submitted"]
        for off in (900_000, 10_000, 500_000):
            f.seek(off)
            assert f.read(4096) == data[off : off + 4096]
        assert ring.counters()["submitted"] - before == 3


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_interleaved_seek_read_write(direct: bool, tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    model = bytearray(os.urandom(1 << 20))
    path.write_bytes(model)
    import random

    rnd = random.Random(7)
    f = open_direct_or_skip(path, "r+b", stack) if direct else uringstack.open(path, "r+b", stack=stack)
    with f:
        for _ in range(300):
            off = rnd.randrange(0, len(model))
            f.seek(off)
            if rnd.random() < 0.5:
                n = rnd.randrange(1, 300_000)
                assert f.read(n) == bytes(model[off : off + n])
            else:
                blob = os.urandom(rnd.randrange(1, 200_000))
                f.write(blob)
                model[off : off + len(blob)] = blob
        f.seek(0)
        assert f.read() == bytes(model)
    assert path.read_bytes() == bytes(model)


@pytest.mark.parametrize("mode", ["wb", "w+b", "w"])
def test_flush_returns_only_once_the_data_reached_the_kernel(mode: str, tmp_path: pathlib.Path, stack: Stack) -> None:
    """After flush(), another descriptor sees every byte, however late the writes complete."""
    path = tmp_path / "f"
    data = os.urandom(1 << 20).hex()[: 1 << 20]
    with open_direct_or_skip(path, mode, stack) as f:
        defer_writes(f.buffer.raw if "b" not in mode else f.raw)
        for i in range(0, len(data), 100_000):
            f.write(data[i : i + 100_000] if "b" not in mode else data[i : i + 100_000].encode())
        f.flush()
        assert path.read_bytes() == data.encode()
        os.fsync(f.fileno())


def test_fileno_waits_for_the_writes_behind(tmp_path: pathlib.Path, stack: Stack) -> None:
    """``os.fsync(f.fileno())`` must cover every write the file object returned from."""
    path = tmp_path / "f"
    with open_direct_or_skip(path, "wb", stack, buffering=4096) as f:
        defer_writes(f.raw)
        f.write(b"x" * 16384)  # whole blocks, past the buffer: started, not waited for
        f.write(b"y" * 16384)
        fd = f.fileno()
        assert path.read_bytes() == b"x" * 16384 + b"y" * 16384
        os.fsync(fd)


def test_write_behind_reuses_a_buffer_only_after_its_write(tmp_path: pathlib.Path, stack: Stack) -> None:
    """More writes than the depth, each of other bytes: a buffer refilled while in flight would corrupt the file."""
    path = tmp_path / "f"
    chunks = [bytes([i]) * 16384 for i in range(3 * WRITE_DEPTH)]
    with open_direct_or_skip(path, "wb", stack, buffering=4096) as f:
        defer_writes(f.raw)
        for chunk in chunks:
            f.write(chunk)
    assert path.read_bytes() == b"".join(chunks)


def test_text_flush_reaches_the_kernel(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    with uringstack.open(path, "w", encoding="utf-8", stack=stack) as f:
        f.write("é" * 300_000)
        f.flush()
        assert path.read_text(encoding="utf-8") == "é" * 300_000


def _fail_writes(raw: Any, err: int) -> None:
    def start_write_many(offsets: Any, buffers: Any) -> CompletedPending:
        return CompletedPending([-err] * len(offsets))

    raw.handle.start_write_many = start_write_many


def test_a_failed_write_behind_surfaces_at_flush(tmp_path: pathlib.Path, stack: Stack) -> None:
    with open_direct_or_skip(tmp_path / "f", "wb", stack, buffering=4096) as f:
        _fail_writes(f.raw, errno.ENOSPC)
        f.write(b"x" * 16384)  # whole blocks: started, not waited for
        with pytest.raises(OSError) as info:
            f.flush()
        assert info.value.errno == errno.ENOSPC


def test_a_failed_write_behind_surfaces_at_close(tmp_path: pathlib.Path, stack: Stack) -> None:
    f = open_direct_or_skip(tmp_path / "f", "wb", stack, buffering=4096)
    _fail_writes(f.raw, errno.EIO)
    f.write(b"x" * 16384)
    with pytest.raises(OSError) as info:
        f.close()
    assert info.value.errno == errno.EIO
    assert f.closed


def test_copyfileobj_and_append(tmp_path: pathlib.Path, stack: Stack) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(3 << 20)
    src.write_bytes(data)
    with uringstack.open(src, "rb", stack=stack) as fi, uringstack.open(dst, "wb", stack=stack) as fo:
        shutil.copyfileobj(fi, fo)
    assert dst.read_bytes() == data
    with uringstack.open(dst, "ab", stack=stack) as fo:
        assert fo.tell() == len(data)
        fo.write(b"tail")
        assert fo.tell() == len(data) + 4
    assert dst.read_bytes() == data + b"tail"


def test_text_mode_round_trip(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "t"
    lines = [f"ligne {i} é\n" for i in range(20_000)]
    with uringstack.open(path, "w", encoding="utf-8", newline="\r\n", stack=stack) as f:
        f.writelines(lines)
    assert path.read_bytes() == "".join(lines).replace("\n", "\r\n").encode()
    with uringstack.open(path, encoding="utf-8", stack=stack) as f:
        assert f.readlines() == lines
        f.seek(0)
        f.readline()
        cookie = f.tell()
        rest = f.read()
        f.seek(cookie)
        assert f.read() == rest


def test_direct_reads_any_size_and_offset(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    data = os.urandom((1 << 20) + 333)
    path.write_bytes(data)
    try:
        f = uringstack.open(path, "rb", direct=True, stack=stack)
    except OSError as exc:
        pytest.skip(f"O_DIRECT not supported on {tmp_path}: {exc}")
    with f:
        for off, n in [(0, 1), (7, 5000), (4095, 4097), (1 << 20, 1000), (len(data) - 5, 100)]:
            f.seek(off)
            assert f.read(n) == data[off : off + n]
        f.seek(0)
        assert f.read() == data


def test_direct_unaligned_writes_fall_back_to_buffered_for_that_call(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    data = os.urandom((1 << 20) + 333)
    try:
        f = uringstack.open(path, "w+b", direct=True, stack=stack)
    except OSError as exc:
        pytest.skip(f"O_DIRECT not supported on {tmp_path}: {exc}")
    with f:
        f.write(data)
        f.seek(3)
        f.write(b"odd")
        f.flush()
        f.seek(0)
        assert f.read() == data[:3] + b"odd" + data[6:]
    assert path.read_bytes() == data[:3] + b"odd" + data[6:]


def test_direct_raw_read_is_never_silently_short(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    data = os.urandom(10_000)
    path.write_bytes(data)
    try:
        f = uringstack.FileIO(path, "r", direct=True, stack=stack)
    except OSError as exc:
        pytest.skip(f"O_DIRECT not supported on {tmp_path}: {exc}")
    with f:
        buf = bytearray(3000)
        f.seek(9001)
        assert f.readinto(buf) == 999 and bytes(buf[:999]) == data[9001:]


def test_errors_are_the_builtins(tmp_path: pathlib.Path, stack: Stack) -> None:
    def err(opener: Any, *args: Any, **kw: Any) -> tuple[type[BaseException], int | None]:
        try:
            opener(*args, **kw).close()
        except OSError as exc:
            return type(exc), exc.errno
        raise AssertionError("no error")

    missing = tmp_path / "missing"
    assert err(uringstack.open, missing, stack=stack) == err(open, missing) == (FileNotFoundError, errno.ENOENT)
    assert err(uringstack.open, tmp_path, stack=stack) == err(open, tmp_path) == (IsADirectoryError, errno.EISDIR)
    (tmp_path / "x").write_bytes(b"")
    assert err(uringstack.open, tmp_path / "x", "x", stack=stack) == err(open, tmp_path / "x", "x")
    locked = tmp_path / "locked"
    locked.write_bytes(b"secret")
    locked.chmod(0)
    if os.geteuid() != 0:
        assert err(uringstack.open, locked, stack=stack) == err(open, locked) == (PermissionError, errno.EACCES)
    with uringstack.open(tmp_path / "w", "wb", stack=stack) as f, pytest.raises(io.UnsupportedOperation):
        f.read(1)
    with uringstack.open(tmp_path / "x", "rb", stack=stack) as f, pytest.raises(io.UnsupportedOperation):
        f.write(b"a")
    f = uringstack.open(tmp_path / "x", "rb", stack=stack)
    os.close(f.fileno())
    with pytest.raises(OSError) as info:
        f.read(1)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        f.close()
    f.close()


@pytest.mark.parametrize("mode", ["rb", "wb", "r", "w", "r+b"])
def test_a_file_used_after_its_stack_closed_raises_valueerror(mode: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")

    def use(f: Any) -> None:
        if "r" in mode:
            f.read(1)
        else:
            f.write(b"x" if "b" in mode else "x")
            f.flush()

    with open(path, mode) as builtin:
        pass
    with pytest.raises(ValueError) as expected:
        use(builtin)
    stack = uringstack.open_stack()
    f = uringstack.open(path, mode, stack=stack)
    stack.close()
    with pytest.raises(ValueError) as got:
        use(f)
    assert str(got.value) == str(expected.value)  # e.g. "read of closed file", as the built-in
    raw = uringstack.FileIO(path, "r+", stack=(stack2 := uringstack.open_stack()))
    stack2.close()
    for call in (lambda: raw.read(1), lambda: raw.write(b"x"), raw.tell, raw.fileno):
        with pytest.raises(ValueError, match=r"^I/O operation on closed file"):
            call()
    f.close()
    with pytest.raises(ValueError, match="I/O operation on a closed stack: the file was not opened"):
        uringstack.FileIO(path, stack=stack)  # (refused before the open since session 32)


def test_several_threads_share_a_stack(tmp_path: pathlib.Path, stack: Stack) -> None:
    blobs = {i: os.urandom(700_000 + i) for i in range(6)}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            path = tmp_path / f"f{i}"
            for _ in range(3):
                with uringstack.open(path, "wb", stack=stack) as f:
                    f.write(blobs[i])
                with uringstack.open(path, "rb", stack=stack) as f:
                    assert f.read() == blobs[i]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a thread is stuck (lost completion?)"
    assert not errors, errors


def test_one_file_from_several_threads(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    with uringstack.open(path, "wb", stack=stack) as f:

        def writer(k: int) -> None:
            for _ in range(200):
                f.write(bytes([k]) * 1000)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive()
    data = path.read_bytes()
    assert len(data) == 4 * 200 * 1000
    assert sorted(data.count(bytes([k])) for k in range(4)) == [200_000] * 4


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_an_empty_write_leaves_an_append_files_position(tmp_path: pathlib.Path, stack: Stack, direct: bool) -> None:
    """As write(2) of nothing: no move to the end of file (the built-in's ``tell()`` stays)."""
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    f = (
        open_direct_or_skip(path, "a+b", stack, buffering=0)
        if direct
        else uringstack.open(path, "a+b", buffering=0, stack=stack)
    )
    with f:
        assert f.seek(6) == 6
        assert f.write(b"") == 0
        assert f.tell() == 6
        assert f.write(b"d") == 1
        assert f.tell() == 4
    assert path.read_bytes() == b"abcd"
