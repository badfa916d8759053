"""``closed`` of a file object is one flag, and the handle's close sets it, whoever closes the handle.

``uringstack.FileIO.closed`` is a getter in C (``io.BufferedReader`` and
``BufferedWriter`` read it before every call), so it no longer asks the handle:
the handle tells the file when its close begins (``FileHandle.watch_close``,
held weakly).  A handle closed directly, or by a stack closed in a ``fork()``
child (which closes handles, not file objects), still makes the file closed, and
every call then fails as on a closed built-in file.  The owners' ``closed``
(stack, handle, the io_uring backend object) are public and read-only where the
owner's state is private.
"""

from __future__ import annotations

import gc
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import weakref

import pytest

import uringstack
from uringstack.stack import Stack, open_stack

from .conftest import BACKENDS

CLOSED = "closed file"  # (io.FileIO: "I/O operation on closed file", buffered: "read of closed file", ...)


@pytest.mark.parametrize(("mode", "buffering"), [("rb", 0), ("rb", -1), ("wb", 0), ("wb", -1), ("r+b", -1)])
def test_a_handle_closed_behind_the_file_closes_it_for_every_layer(
    tmp_path: pathlib.Path, stack: Stack, mode: str, buffering: int
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789" * 1000)
    f = uringstack.open(path, mode, buffering=buffering, stack=stack)
    raw = f if buffering == 0 else f.raw
    handle = raw.handle
    assert handle is not None and not handle.closed and not raw.closed and not f.closed
    handle.close()
    assert raw.closed, "the handle was closed: the raw file must say closed"
    assert f.closed, "the buffered layer reads the raw file's closed"
    op = f.read if "r" in mode else f.write
    with pytest.raises(ValueError, match=CLOSED):
        op(b"x" if "w" in mode else 1)
    f.close()  # nothing left to close: harmless, as for a closed built-in file
    f.close()


def test_a_stack_closed_in_a_fork_child_closes_the_child_s_file_objects(tmp_path: pathlib.Path) -> None:
    """In a child, closing the inherited stack only abandons its handles (no file object is
    closed through the stack there): the handles' close still makes the files closed."""
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    script = textwrap.dedent(
        f"""
        import json, os, sys
        import uringstack
        from uringstack.stack import open_stack
        stack = open_stack(overrides={BACKENDS["uring"]!r})
        f = uringstack.open({str(path)!r}, "rb", stack=stack)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                stack.close()
                got = {{"raw": f.raw.closed, "buffered": f.closed}}
                try:
                    f.read(1)
                    got["read"] = "returned"
                except ValueError as exc:
                    got["read"] = str(exc)
                print(json.dumps(got), flush=True)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        parent_reads = f.read(3)
        f.close()
        stack.close()
        print(json.dumps({{"status": status, "parent": parent_reads.decode()}}), flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    child, parent = (json.loads(line) for line in out.stdout.splitlines())
    assert parent == {"status": 0, "parent": "abc"}, "the parent's file is untouched"
    assert child["raw"] and child["buffered"], child
    assert "closed file" in child["read"], child


def test_the_handle_holds_its_file_object_weakly(tmp_path: pathlib.Path, stack: Stack) -> None:
    """A file dropped without close() is finalized (and closed, with ResourceWarning) at once,
    as a built-in one is: the handle's reference to it must not make a cycle only the GC breaks."""
    path = tmp_path / "f"
    path.write_bytes(b"x")
    f = uringstack.FileIO(path, "rb", stack=stack)
    handle = f.handle
    assert handle is not None
    ref = weakref.ref(f)
    gc.disable()
    try:
        with pytest.warns(ResourceWarning):
            del f
        assert ref() is None, "the file object outlived its last reference"
    finally:
        gc.enable()
    assert handle.closed


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_owners_report_closed_publicly_and_read_only(tmp_path: pathlib.Path, backend: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    stack = open_stack(overrides=BACKENDS[backend])
    handle = stack.open(path, direct=False)
    assert not stack.closed and not handle.closed
    if backend == "uring":
        assert not handle.io.closed
    name = "closed"
    for owner in (stack, handle):
        with pytest.raises(AttributeError):
            setattr(owner, name, True)
    assert not stack.closed and not handle.closed
    handle.close()
    assert handle.closed and not stack.closed
    if backend == "uring":
        assert handle.io.closed
    stack.close()
    assert stack.closed


def test_reinitialising_a_file_closed_behind_it_serves_the_new_file(tmp_path: pathlib.Path, stack: Stack) -> None:
    """``__init__`` again (as io.FileIO allows) after the handle was closed behind the file:
    nothing of the old handle is used for the new descriptor (here a pipe, which has no handle)."""
    path = tmp_path / "f"
    path.write_bytes(b"old")
    f = uringstack.FileIO(path, "rb", stack=stack)
    handle = f.handle
    assert handle is not None
    handle.close()
    r, w = os.pipe()
    try:
        os.write(w, b"new")
        uringstack.FileIO.__init__(f, r, "rb", stack=stack)
        assert not f.closed
        assert f.read(3) == b"new"
    finally:
        f.close()
        os.close(w)
