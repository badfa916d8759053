"""A raising signal anywhere in ``Stack.open`` never leaves a descriptor to be closed twice.

``uringstack.FileIO`` hands its descriptor to ``Stack.open(adopt_fd=fd)`` and closes it
itself if the open raises.  A signal handler that raised (Ctrl-C) after the stack had
taken the handle in (``_handles``, the reaper's watch) and before ``open`` returned made
the open raise with the handle still open: ``FileIO`` closed its descriptor, and the
reaper, once the handle was dropped, closed the same number again, by then another
file's (found by tests/ring/stress_child.py's fileobj mode, session 40).  ``Stack.open``
now closes such a handle before the exception goes on, with a duplicate of the caller's
descriptor, which stays the caller's.

Each point of ``Stack.open`` and of the reaper's watch it arms gets a real signal in turn
(tests/signal_points.py) while ``uringstack.open`` opens a file; then a new file takes the
lowest free descriptor number (the one a failed open freed), the garbage collector and
the reaper run, and that file's descriptor must still be open; and no descriptor is left
open.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pathlib

import pytest

import uringstack
from tests.signal_points import Interrupt, code_of, signal_at, sweep
from uringstack import reaper
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["uring", "fallback"])
def test_a_signal_anywhere_in_an_open_closes_each_descriptor_once(tmp_path: pathlib.Path, backend: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(8192))
    chosen = code_of(Stack.open, FileHandle._close_when_dropped, reaper.watch)
    with open_stack(overrides={"core.cores": [0], "core.backend": backend}) as stack:
        open_file = uringstack.open  # (resolved before the signals: uringstack imports it on first use)

        def once(at: int) -> str | None:
            before = _open_fds()
            f = None
            with signal_at(chosen, at) as sent, contextlib.suppress(Interrupt):
                f = open_file(path, "rb", stack=stack)
            if f is not None:
                f.close()
            # A file opened now takes the number a failed open freed; a handle left open
            # behind that open would have the reaper close the number again once dropped.
            bystander = os.open(path, os.O_RDONLY)
            try:
                gc.collect()
                assert reaper.drain(10), "the reaper did not finish"
                os.fstat(bystander)  # EBADF: a second close of its number
            except OSError as e:
                raise AssertionError(f"a signal {sent.where}: another file's descriptor was closed ({e})") from e
            finally:
                with contextlib.suppress(OSError):
                    os.close(bystander)
            left = _open_fds() - before
            assert not left, f"a signal {sent.where} left descriptors open: {left}"
            return sent.where

        assert sweep(once, most=400) > 5
