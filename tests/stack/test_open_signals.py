"""A raising signal anywhere in opening a file object never closes a descriptor twice nor leaks one.

``uringstack.FileIO`` opens its descriptor and hands it to ``Stack.open(adopt_fd=fd)``.
Until session 41 the handle took that descriptor over, so a signal handler that raised
(Ctrl-C) once the handle had it (in ``Stack.open`` after the stack took the handle in,
or in ``FileIO._adopt`` at the return from ``Stack.open``) left ``FileIO`` closing a
descriptor the dropped handle's reaper closed again, by then another file's (found by
tests/ring/stress_child.py's fileobj mode, sessions 40 and 41).  Now the handle serves a
duplicate (``Stack.open``), so each descriptor has one closer whatever point the signal
hits, and descriptors are stored as they are made (``interrupts.close_popped``), so none
leaks either.

Each point of ``FileIO.__init__``, ``FileIO._adopt``, ``Stack.open`` (and its
``_open_target``) and the reaper's watch it arms gets a real signal in turn
(tests/signal_points.py) while ``uringstack.open`` opens a file; then a new file
takes the lowest free descriptor number (the one a failed open freed), the garbage
collector and the reaper run, and that file's descriptor must still be open; and no
descriptor is left open.  The same for the second handle an
O_DIRECT file opens for an unaligned write (``FileIO._buffered``, through the same
``Stack.open(adopt_fd=)``; session 41 applied the contract there without a sweep).
"""

from __future__ import annotations

import contextlib
import os
import pathlib

import pytest

import uringstack
from tests.descriptors import check_no_descriptor_closed_twice, open_fds, sweep_descriptors
from tests.requires import open_direct
from tests.signal_points import Interrupt, code_of, signal_at, sweep
from uringstack import reaper
from uringstack.fileobj.fileio import FileIO, _serve_reopened
from uringstack.ring.interrupts import open_stored
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["uring", "fallback"])
def test_a_signal_anywhere_in_an_open_closes_each_descriptor_once(tmp_path: pathlib.Path, backend: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(8192))
    chosen = code_of(
        Stack.open, Stack._open_target, FileHandle._close_when_dropped, reaper.watch,
        FileIO.__init__, FileIO._adopt, open_stored,
    )  # fmt: skip
    with open_stack(overrides={"core.cores": [0], "core.backend": backend}) as stack:
        open_file = uringstack.open  # (resolved before the signals: uringstack imports it on first use)
        assert sweep_descriptors(chosen, lambda: open_file(path, "rb", stack=stack), path) > 5


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["uring", "fallback"])
def test_a_signal_anywhere_in_a_handle_open_closes_each_descriptor_once(tmp_path: pathlib.Path, backend: str) -> None:
    """``Stack.open(path)`` opens the file in the backend (``open_target``), not through
    ``adopt_fd``: its descriptor too is stored as it is made and closed once on failure."""
    from uringstack.plugins.fallback.backend import FallbackBackend
    from uringstack.stack import _close_unopened, _hand_over
    from uringstack.stack.targets import close_opened, open_target
    from uringstack.stack.uring_backend import UringBackend

    path = tmp_path / "f"
    path.write_bytes(bytes(8192))
    chosen = code_of(
        Stack.open, Stack._open_target, FileHandle._close_when_dropped, reaper.watch,
        open_target, close_opened, open_stored, UringBackend.open, FallbackBackend.open, _hand_over, _close_unopened,
    )  # fmt: skip
    with open_stack(overrides={"core.cores": [0], "core.backend": backend}) as stack:
        assert sweep_descriptors(chosen, lambda: stack.open(str(path), direct=False), path) > 5


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["uring", "fallback"])
def test_a_signal_anywhere_in_opening_the_buffered_handle_closes_each_descriptor_once(
    tmp_path: pathlib.Path, backend: str
) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(8192))
    os.close(open_direct(path, os.O_RDONLY))  # (skips where the file system refuses O_DIRECT)
    chosen = code_of(
        Stack.open, Stack._open_target, FileHandle._close_when_dropped, reaper.watch,
        FileIO._buffered, _serve_reopened, open_stored,
    )  # fmt: skip
    with open_stack(overrides={"core.cores": [0], "core.backend": backend}) as stack:

        def once(at: int) -> str | None:
            before = open_fds()
            f = FileIO(path, "r+b", stack=stack, direct=True)
            try:
                with signal_at(chosen, at) as sent, contextlib.suppress(Interrupt):
                    assert f.write(b"unaligned") == 9  # a second, buffered handle writes it
            finally:
                f.close()
            check_no_descriptor_closed_twice(path, sent.where)
            left = open_fds() - before
            assert not left, f"a signal {sent.where} left descriptors open: {left}"
            return sent.where

        assert sweep(once, most=400) > 5
