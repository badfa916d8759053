"""What a signal sweep checks about descriptors: none left open, none closed twice."""

from __future__ import annotations

import contextlib
import gc
import os
import pathlib

from uringstack import reaper


def open_fds() -> set[str]:
    """The numbers of this process's open descriptors."""
    return set(os.listdir("/proc/self/fd"))


def check_no_descriptor_closed_twice(path: pathlib.Path, where: str | None, handles: bool = True) -> None:
    """A new file takes the lowest free number (the one a failed open freed); after the
    collector and the reaper ran, it must still be open (a handle left open behind that
    open would have the reaper close the number again once dropped).  Code that makes no
    handle (*handles* false) may run where no reaper thread was started: none is waited for."""
    bystander = os.open(path, os.O_RDONLY)
    try:
        gc.collect()
        assert not handles or reaper.drain(10), "the reaper did not finish"
        os.fstat(bystander)  # EBADF: a second close of its number
    except OSError as e:
        raise AssertionError(f"a signal {where}: another file's descriptor was closed ({e})") from e
    finally:
        with contextlib.suppress(OSError):
            os.close(bystander)
