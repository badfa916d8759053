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
