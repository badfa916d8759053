"""A ``uringstack.FileIO`` dropped unclosed gives back what it holds, as ``io.FileIO`` does.

With ``closefd=False`` the caller's descriptor stays open and no ResourceWarning is
given (``io.FileIO``'s behaviour), but the duplicate descriptor the file's handle
serves was leaked until session 34: its ``__del__`` closed only files that owned
their descriptor."""

from __future__ import annotations

import gc
import os
import pathlib
import warnings

import uringstack


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_dropped_file_over_a_borrowed_descriptor_gives_back_its_own(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"borrowed descriptor")
    fd = os.open(path, os.O_RDONLY)
    try:
        uringstack.FileIO(fd, closefd=False).close()  # (the default stack built first: its fds stay)
        before = _fds()
        f = uringstack.FileIO(fd, closefd=False)
        assert f.read(8) == b"borrowed"
        assert _fds() != before  # the handle serves a descriptor of its own
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del f
            gc.collect()
        assert _fds() == before, "the handle's duplicate descriptor was leaked"
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], caught
        assert os.pread(fd, 8, 9) == b"descript"  # the caller's own is still open
    finally:
        os.close(fd)


def test_a_dropped_file_that_owns_its_descriptor_warns_and_closes_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"owned")
    uringstack.FileIO(path).close()
    before = _fds()
    f = uringstack.FileIO(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del f
        gc.collect()
    assert _fds() == before
    assert [w for w in caught if issubclass(w.category, ResourceWarning)], caught
