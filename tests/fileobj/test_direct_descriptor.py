"""``uringstack.open(fd, direct=...)`` and ``Stack.open(adopt_fd=fd)``: *direct* against the O_DIRECT flag.

The handle served the caller's descriptor as it was: its aligned reads went
through the page cache (the host: ``direct=True`` did nothing), and an IOPOLL
ring, which takes only O_DIRECT, failed every read with EOPNOTSUPP (found on
the NVMe VM's ext4).  The handle now gets an O_DIRECT descriptor of its own on
the same file; the caller's keeps its flags and its position is the file's.

The other way round, a descriptor opened with O_DIRECT (given, or from an
``opener``) was taken as buffered: every unaligned read or write failed with
EINVAL from the kernel.  ``uringstack.open`` now serves it as ``direct=True``;
``Stack.open`` takes the descriptor's flag when *direct* is not given and
refuses a *direct* that contradicts it."""

from __future__ import annotations

import fcntl
import os
import pathlib
from collections.abc import Iterator

import pytest

import uringstack
from tests.descriptors import open_fds
from tests.requires import open_direct, skip_without
from uringstack.stack import Stack, open_stack


def _flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


@pytest.mark.parametrize("closefd", [True, False])
@pytest.mark.parametrize("mode", ["rb", "r+b", "ab"])
def test_a_buffered_descriptor_is_served_with_o_direct(
    tmp_path: pathlib.Path, stack: Stack, closefd: bool, mode: str
) -> None:
    path = tmp_path / "f"
    data = os.urandom(3 * 4096 + 100)
    path.write_bytes(data)
    flags = {"rb": os.O_RDONLY, "r+b": os.O_RDWR, "ab": os.O_WRONLY | os.O_APPEND}[mode]
    before = open_fds()
    fd = os.open(path, flags)
    try:
        f = uringstack.open(fd, mode, closefd=closefd, direct=True, buffering=0, stack=stack)
    except OSError as exc:
        os.close(fd)
        skip_without(f"the tmp directory {tmp_path} refuses O_DIRECT ({exc})")
    handle = f.handle
    assert handle is not None and handle.direct
    assert _flags(handle.fd) & os.O_DIRECT, "the handle's descriptor has no O_DIRECT"
    assert not _flags(fd) & os.O_DIRECT  # the caller's open file description is left as it was
    if mode == "ab":
        assert f.write(b"tail") == 4
    else:
        assert f.read(5000) == data[:5000]
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5000  # the position is the caller's descriptor's
        if mode == "r+b":
            assert f.write(b"xyz") == 3
    f.close()
    if closefd:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed with the file, as io.FileIO closes it
    else:
        os.fstat(fd)  # still the caller's
        os.close(fd)
    assert open_fds() == before  # the handle's own descriptor closed too
    want = {"rb": data, "r+b": data[:5000] + b"xyz" + data[5003:], "ab": data + b"tail"}[mode]
    assert path.read_bytes() == want


def test_a_descriptor_opened_with_o_direct_is_served_as_it_is(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(8192))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        skip_without(f"the tmp directory {tmp_path} refuses O_DIRECT ({exc})")
    with uringstack.open(fd, "rb", direct=True, buffering=0, stack=stack) as f:
        assert f.handle is not None
        # not reopened: the handle's descriptor is Stack.open's duplicate of it (one open
        # file description: the same flags and offset)
        assert fcntl.fcntl(f.handle.fd, fcntl.F_GETFL) & os.O_DIRECT
        os.lseek(fd, 4096, os.SEEK_SET)
        assert os.lseek(f.handle.fd, 0, os.SEEK_CUR) == 4096
        assert len(f.read(100)) == 100


@pytest.mark.parametrize("how", ["fd", "opener"])
def test_an_o_direct_descriptor_is_served_as_direct(tmp_path: pathlib.Path, stack: Stack, how: str) -> None:
    """Unaligned reads and writes through the file object work on it (aligned internally), where
    taken as buffered they failed with EINVAL, as the built-in ``open()``'s do."""
    path = tmp_path / "f"
    data = os.urandom(3 * 4096 + 100)
    path.write_bytes(data)
    if how == "fd":
        f = uringstack.open(open_direct(path, os.O_RDWR), "r+b", stack=stack)
    else:
        open_direct(path, os.O_RDONLY).__index__()  # (skips where O_DIRECT is refused)
        f = uringstack.open(path, "r+b", stack=stack, opener=lambda p, fl: os.open(p, fl | os.O_DIRECT))
    with f:
        handle = f.raw.handle
        assert handle is not None and handle.direct
        assert _flags(f.fileno()) & os.O_DIRECT
        assert f.read(100) == data[:100]
        f.seek(5000)
        assert f.read(7) == data[5000:5007]
        f.seek(10)
        assert f.write(b"hello") == 5
        f.seek(0, os.SEEK_END)
        assert f.write(b"tail") == 4
    assert path.read_bytes() == data[:10] + b"hello" + data[15:] + b"tail"


@pytest.fixture
def direct_by_default() -> Iterator[Stack]:
    s = open_stack(overrides={"core.direct": True})
    yield s
    s.close()


def test_stack_open_takes_direct_from_the_adopted_descriptor(tmp_path: pathlib.Path, direct_by_default: Stack) -> None:
    """*direct* not given: the descriptor's flag decides, not ``core.direct`` (true here)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 8192)
    fd = os.open(path, os.O_RDONLY)
    with direct_by_default.open(path, writable=False, adopt_fd=fd) as h:
        assert not h.direct
        assert h.read_into(bytearray(10), 3) == 10  # unaligned: fine on a buffered handle
    os.close(fd)  # (the caller's: the handle served a duplicate)
    fd = open_direct(path, os.O_RDONLY)
    with direct_by_default.open(path, writable=False, adopt_fd=fd) as h:
        assert h.direct
    os.close(fd)
    with direct_by_default.open(path, writable=False) as h:  # no descriptor: core.direct
        assert h.direct


@pytest.mark.parametrize(
    ("o_direct", "direct", "match"),
    [(False, True, "opened without O_DIRECT"), (True, False, "opened with O_DIRECT")],
    ids=["buffered-fd-direct-handle", "direct-fd-buffered-handle"],
)
def test_stack_open_refuses_a_descriptor_direct_contradicts(
    tmp_path: pathlib.Path, stack: Stack, o_direct: bool, direct: bool, match: str
) -> None:
    """``Stack.open(path, direct=..., adopt_fd=fd)`` is where the mismatch is decided for every
    caller: refused before anything is served (FileIO reopens, or serves as direct, first)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    fd = open_direct(path, os.O_RDONLY) if o_direct else os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ValueError, match=match):
            stack.open(path, direct=direct, writable=False, adopt_fd=fd)
        os.fstat(fd)  # (a refused open leaves it to the caller)
    finally:
        os.close(fd)
