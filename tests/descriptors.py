"""What a signal sweep checks about descriptors: none left open, none closed twice."""

from __future__ import annotations

import contextlib
import gc
import os
import pathlib
from collections.abc import Callable
from types import CodeType

from tests.signal_points import Interrupt, signal_at, sweep
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


def sweep_descriptors(
    chosen: Callable[[CodeType], bool],
    run: Callable[[], object],
    bystander: pathlib.Path,
    *,
    after: Callable[[str | None], object] = lambda where: None,
    handles: bool = True,
    most: int = 400,
) -> int:
    """Send a real signal at each point of the code *chosen* accepts (tests/signal_points.py)
    while ``run()`` runs; close what it returned, if it has a ``close()``; run ``after(where)``
    (which undoes the run, or checks more); then no other file's descriptor may have been
    closed (:func:`check_no_descriptor_closed_twice` with a file opened at *bystander*) and
    no descriptor may be left open.  Returns how many points there were."""

    def once(at: int) -> str | None:
        before = open_fds()
        made: list[object] = []
        with signal_at(chosen, at) as sent, contextlib.suppress(Interrupt):
            made.append(run())
        for obj in made:
            close = getattr(obj, "close", None)
            if close is not None:
                close()
        del made
        after(sent.where)
        check_no_descriptor_closed_twice(bystander, sent.where, handles)
        left = open_fds() - before
        assert not left, f"a signal {sent.where} left descriptors open: {left}"
        return sent.where

    return sweep(once, most)
