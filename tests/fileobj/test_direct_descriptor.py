"""``uringstack.open(fd, direct=True)`` on a descriptor the caller opened without O_DIRECT.

The handle served the caller's descriptor as it was: its aligned reads went
through the page cache (the host: ``direct=True`` did nothing), and an IOPOLL
ring, which takes only O_DIRECT, failed every read with EOPNOTSUPP (found on
the NVMe VM's ext4).  The handle now gets an O_DIRECT descriptor of its own on
the same file; the caller's keeps its flags and its position is the file's."""

from __future__ import annotations

import fcntl
import os
import pathlib

import pytest

import uringstack
from tests.requires import skip_without
from uringstack.stack import Stack


def _flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("closefd", [True, False])
@pytest.mark.parametrize("mode", ["rb", "r+b", "ab"])
def test_a_buffered_descriptor_is_served_with_o_direct(
    tmp_path: pathlib.Path, stack: Stack, closefd: bool, mode: str
) -> None:
    path = tmp_path / "f"
    data = os.urandom(3 * 4096 + 100)
    path.write_bytes(data)
    flags = {"rb": os.O_RDONLY, "r+b": os.O_RDWR, "ab": os.O_WRONLY | os.O_APPEND}[mode]
    before = _open_fds()
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
    assert _open_fds() == before  # the handle's own descriptor closed too
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
        assert f.handle is not None and f.handle.fd == fd  # no second descriptor
        assert len(f.read(100)) == 100


def test_stack_open_refuses_a_buffered_descriptor_for_a_direct_handle(tmp_path: pathlib.Path, stack: Stack) -> None:
    """``Stack.open(path, direct=True, adopt_fd=fd)`` is where the mismatch is decided for every
    caller: refused before anything is served (FileIO reopens the descriptor first)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ValueError, match="opened without O_DIRECT"):
            stack.open(path, direct=True, writable=False, adopt_fd=fd)
        os.fstat(fd)  # (a refused open leaves it to the caller)
    finally:
        os.close(fd)
