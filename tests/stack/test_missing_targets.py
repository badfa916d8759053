"""A path that does not exist says what is missing (session 28).

On Linux 5.10 opening ``/dev/ng0n1`` (generic char devices came in 5.13)
said "no such file; pass create=True to create it": a regular file under
/dev is never what the caller wants.
"""

from __future__ import annotations

import errno
import pathlib

import pytest

from uringstack.errors import UringIOError
from uringstack.stack import Stack


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/dev/ng97n1", "no such NVMe generic char device: the kernel makes /dev/ngXnY from Linux 5.13"),
        ("/dev/no-such-disk", "(no such device)"),
    ],
)
def test_a_missing_device_node_is_not_offered_create(stack: Stack, path: str, says: str) -> None:
    with pytest.raises(UringIOError) as info:
        stack.open(path)
    assert info.value.errno == errno.ENOENT and says in str(info.value) and "create=True" not in str(info.value)


def test_a_missing_file_still_is(stack: Stack, tmp_path: pathlib.Path) -> None:
    with pytest.raises(UringIOError, match="pass create=True to create it"):
        stack.open(tmp_path / "nope")


@pytest.mark.parametrize(("writable", "says"), [(True, "permission denied for writing; open with writable=False"),
                                                (False, "permission denied for reading")])  # fmt: skip
def test_a_regular_file_refused_is_not_given_the_device_hint(
    stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, writable: bool, says: str
) -> None:
    """EACCES on a regular file said "block and NVMe devices usually need root or the disk
    group" until session 32.  (Root opens any file, so the refusal is injected.)"""
    import uringstack.stack.targets as targets

    path = tmp_path / "f"
    path.write_bytes(b"x")

    def refused(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(targets.os, "open", refused)
    with pytest.raises(UringIOError) as info:
        stack.open(path, writable=writable)
    assert info.value.errno == errno.EACCES and says in str(info.value), str(info.value)
    assert "disk group" not in str(info.value)
