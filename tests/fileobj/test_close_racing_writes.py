"""A write from another thread while ``close()`` runs is either written or refused, never dropped.

``io.BufferedWriter.close`` (and ``BufferedRandom``'s) calls the layer's
``flush()`` once more, then takes the buffer's lock and closes the raw file
under it.  ``uringstack.open()``'s layers have a Python ``flush`` (the buffer's,
then the raw file's); a write that took the lock in between was copied into
the buffer, its length returned, and its bytes dropped with the raw file.
Close now runs the layer's own C flush there, as the built-in does.  (The
built-in keeps a narrower window of its own: the lock handed to a waiting
writer between that flush and the raw close.)"""

from __future__ import annotations

import pathlib

import pytest

import uringstack
from uringstack.stack import Stack

from .conftest import write_from_another_thread


@pytest.mark.parametrize("mode", ["wb", "ab", "w+b", "r+b"])
def test_a_write_while_close_flushes_the_raw_file_is_written(tmp_path: pathlib.Path, stack: Stack, mode: str) -> None:
    """Another thread's small write made while close flushes the raw file (the window of
    the Python flush: after the buffer's bytes went to the raw file) reaches the file."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    f = uringstack.open(path, mode, stack=stack)
    raw = f.raw
    accepted: list[bytes] = []
    errors: list[BaseException] = []
    real_flush, real_close = raw.flush, raw.close
    raw_closing = False

    def raw_flush_then_another_threads_write() -> None:
        real_flush()
        if not raw_closing:  # (the raw close runs under the buffer's lock: the write would wait for it)
            write_from_another_thread(f, b"%d;" % len(accepted), accepted, errors)

    def raw_close() -> None:
        nonlocal raw_closing
        raw_closing = True
        real_close()

    f.write(b"first;")
    raw.flush, raw.close = raw_flush_then_another_threads_write, raw_close
    f.close()
    assert errors == []
    assert accepted  # the window was reached
    assert path.read_bytes() == b"first;" + b"".join(accepted)
    assert f.closed and raw.closed


def test_close_leaves_the_layers_flush_as_it_was(tmp_path: pathlib.Path, stack: Stack) -> None:
    """The C flush is close's only (an instance attribute removed once close returned)."""
    f = uringstack.open(tmp_path / "f", "wb", stack=stack)
    f.close()
    assert "flush" not in vars(f)
    with pytest.raises(ValueError, match="closed"):
        f.flush()
