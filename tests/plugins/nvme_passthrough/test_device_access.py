"""Opening a generic char device: access errors, the wrong kind of node, the probe's identity, the in-use error."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.requires import skip_without
from uringstack.plugins.nvme_passthrough.device import (
    DeviceAccessError,
    NamespaceInUseError,
    identify_namespace,
    open_char_device,
)
from uringstack.probe.model import BlockDevice


def test_missing_char_device() -> None:
    opened: list[int] = []
    with pytest.raises(DeviceAccessError, match="no such device node") as info:
        open_char_device("/dev/ng-does-not-exist", False, opened)
    assert info.value.errno == errno.ENOENT
    assert opened == []  # (nothing stored for the caller to close)


def test_block_device_is_not_a_generic_char_device(tmp_path: Path) -> None:
    f = tmp_path / "plain"
    f.write_bytes(b"")
    fd = os.open(f, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="generic char device"):
            identify_namespace(fd, str(f), BlockDevice(name="nvme0n1", path="/dev/nvme0n1", nsid=1))
    finally:
        os.close(fd)


def test_a_namespace_the_probe_did_not_list_is_refused_before_any_ioctl() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)  # a char device, but no namespace in the report
    try:
        with pytest.raises(OSError, match="lists no namespace") as info:
            identify_namespace(fd, "/dev/ng7n1", None)
        assert info.value.errno == errno.ENODEV
    finally:
        os.close(fd)


def test_permission_denied_names_device_and_fix() -> None:
    """Drop to an unprivileged uid in a child and open a root-only device node."""
    target = "/dev/vda" if os.path.exists("/dev/vda") else None
    if target is None or os.geteuid() != 0 or (os.stat(target).st_mode & 0o077):
        skip_without("needs root (to drop privileges) and the root-only device node /dev/vda")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.close(open_char_device(target, False, []))
            msg = "opened?!"
        except DeviceAccessError as exc:
            msg = f"{exc.errno}|{exc}"
        except BaseException as exc:
            msg = f"other|{type(exc).__name__}: {exc}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    err, _, msg = data.decode().partition("|")
    assert err == str(errno.EACCES), data
    assert target in msg and "root" in msg and "udev" in msg


def test_in_use_error_message() -> None:
    err = NamespaceInUseError("/dev/ng0n1", "nvme0n1", ["nvme0n1 is mounted at /mnt (ext4)"])
    assert isinstance(err, PermissionError)
    text = str(err)
    assert "/dev/ng0n1" in text and "mounted at /mnt" in text and "[core] allow_writes_in_use" in text
