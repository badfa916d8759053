"""Alignment errors before submission, read-only refusal, and device access errors."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path
from typing import Any

import pytest

from uringstack.errors import AlignmentError
from uringstack.flags import SetupFlag
from uringstack.plugins.iopoll.poll import IopollFile
from uringstack.plugins.nvme_passthrough.device import (
    DeviceAccessError,
    NamespaceInUseError,
    PassthroughNamespace,
)


class RecordingRing:
    """Stands in for the Ring: any submission is a test failure."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit_arrays(self, n: int, arrays: Any, keep: Any = ()) -> Any:
        self.submitted += n
        raise AssertionError("submitted despite a misaligned request")


def _unopened_namespace(lba: int) -> tuple[PassthroughNamespace, RecordingRing]:
    # Bypass __init__ (which needs a real /dev/ngXnY) to test the pre-submission checks.
    ns = object.__new__(PassthroughNamespace)
    ring = RecordingRing()
    ns.path, ns.fd, ns.nsid, ns.lba_size, ns.nblocks = "/dev/ngFAKE", 99, 1, lba, 1 << 20
    ns.writable, ns.entries, ns.ring = True, 64, ring  # type: ignore[assignment]
    return ns, ring


def test_passthrough_misaligned_buffer_raises_before_submit() -> None:
    ns, ring = _unopened_namespace(4096)
    raw = mmap.mmap(-1, 3 * 4096)
    view = memoryview(raw)[512 : 512 + 2 * 4096]  # 512 bytes into a page: not 4 KiB aligned
    with pytest.raises(AlignmentError, match="not aligned to the 4096-byte"):
        ns.read_blocks([0, 1], view)
    with pytest.raises(AlignmentError):
        ns.write_blocks([0, 1], view)
    assert ring.submitted == 0
    view.release()


def test_passthrough_short_buffer_and_nblocks() -> None:
    ns, ring = _unopened_namespace(512)
    buf = mmap.mmap(-1, 4096)
    with pytest.raises(ValueError, match="need 8192"):
        ns.read_blocks(list(range(16)), buf)
    with pytest.raises(ValueError, match="nblocks"):
        ns.read_blocks([0], buf, nblocks=0)
    assert ring.submitted == 0


def test_passthrough_read_only_refuses_writes() -> None:
    ns, _ = _unopened_namespace(512)
    ns.writable = False
    with pytest.raises(OSError, match="opened read-only") as info:
        ns.write_blocks([0], mmap.mmap(-1, 4096))
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError, match="opened read-only"):
        ns.flush()


def test_iopoll_file_alignment(tmp_path: Path) -> None:
    f = tmp_path / "data"
    f.write_bytes(b"\0" * 65536)
    try:
        handle = IopollFile(f, check_poll=False)
    except OSError as exc:  # O_DIRECT unsupported by this filesystem
        pytest.skip(f"cannot open O_DIRECT here: {exc}")
    with handle:
        assert handle.ring.flags & SetupFlag.IOPOLL
        assert handle.ring.params.role == "iopoll"
        buf = mmap.mmap(-1, 8192)
        with pytest.raises(AlignmentError, match="offset 100"):
            handle.read_into([100], buf, 4096)
        with pytest.raises(AlignmentError, match="size 1000"):
            handle.read_into([0], buf, 1000)
        with pytest.raises(AlignmentError, match="buffer address"):
            handle.read_into([0], memoryview(buf)[8:4104], 4096)
        with pytest.raises(PermissionError, match="read-only"):
            handle.write_from([0], buf, 4096)
        assert handle.ring.counters()["submitted"] == 0


def test_iopoll_file_refused_on_non_polling_disk(tmp_path: Path) -> None:
    f = tmp_path / "data"
    f.write_bytes(b"\0" * 4096)
    with pytest.raises(OSError, match="IOPOLL") as info:
        IopollFile(f, sysfs_root=tmp_path / "empty-sys")
    assert info.value.errno == errno.EOPNOTSUPP


def test_missing_char_device() -> None:
    with pytest.raises(DeviceAccessError, match="no such device node") as info:
        PassthroughNamespace("/dev/ng-does-not-exist")
    assert info.value.errno == errno.ENOENT


def test_block_device_is_not_a_generic_char_device(tmp_path: Path) -> None:
    f = tmp_path / "plain"
    f.write_bytes(b"")
    with pytest.raises(OSError, match="generic char device"):
        PassthroughNamespace(f)


def test_permission_denied_names_device_and_fix() -> None:
    """Drop to an unprivileged uid in a child and open a root-only device node."""
    target = "/dev/vda" if os.path.exists("/dev/vda") else None
    if target is None or os.geteuid() != 0 or (os.stat(target).st_mode & 0o077):
        pytest.skip("needs root (to drop privileges) and a root-only device node such as /dev/vda")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            PassthroughNamespace(target)
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
    assert "/dev/ng0n1" in text and "mounted at /mnt" in text and "allow_writes_in_use" in text
