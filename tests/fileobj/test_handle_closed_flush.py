"""A file object's bytes are never dropped silently when its handle is closed behind it.

``handle.close()`` (called by any code holding the handle: ``f.raw.handle``)
first has the file objects layered over the handle write what they hold --
the text layer's pending text, the buffered layer's buffer, ``FileIO``'s
held and written-behind bytes -- while the handle still serves I/O
(``FileHandle.watch_close``'s *flush*).  A failure there is raised by
``handle.close()`` (the handle still ends closed, as the built-in file after
a failed flush), so nothing is reported written that was not.  In a ``fork()``
child the inherited handle flushes nothing: the parent's bytes are written
once, by the parent.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import uringstack
from uringstack.fileobj.openfile import HOLD_MIN
from uringstack.ring.pending import CompletedPending
from uringstack.stack import Stack

from .conftest import BACKENDS, hold_in_c, open_direct_or_skip

BLOCK = 4096
INITIAL = b"I" * (3 * BLOCK)


def _open(path: pathlib.Path, mode: str, stack: Stack, direct: bool, **kw: Any) -> Any:
    if "b" not in mode:
        kw.update(encoding="ascii", newline="")
    if not direct:
        return uringstack.open(path, mode, stack=stack, **kw)
    return open_direct_or_skip(path, mode, stack, **kw)


def _raw(f: Any) -> Any:
    return f.buffer.raw if hasattr(f, "buffer") else f.raw


def _writes(mode: str, direct: bool) -> list[bytes]:
    """What the test writes: a small piece (it stays in the buffered layer), whole blocks (under
    O_DIRECT with a one-block buffer: written behind), a large ``bytes`` (a write-only buffered
    file holds it without a copy: ``FileIO._hold``), and a tail that stays in the buffer."""
    pieces = [b"a" * 100, b"b" * (4 * BLOCK), b"c" * HOLD_MIN, b"d" * 50]
    return pieces if "b" in mode else [p[:3000] for p in pieces]


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("mode", ["wb", "r+b", "ab", "w", "r+", "a"])
def test_closing_the_handle_directly_writes_every_byte_the_file_object_holds(
    tmp_path: pathlib.Path, stack: Stack, mode: str, direct: bool
) -> None:
    path = tmp_path / "f"
    path.write_bytes(INITIAL)
    pieces = _writes(mode, direct)
    data = b"".join(pieces)
    f = _open(path, mode, stack, direct, buffering=BLOCK if direct else -1)
    for piece in pieces:
        f.write(piece if "b" in mode else piece.decode())
    handle = _raw(f).handle
    handle.close()  # behind the file object's back, before any flush
    assert handle.closed and f.closed
    if mode.startswith("w"):
        expected = data
    elif mode.startswith("a"):
        expected = INITIAL + data
    else:
        expected = data + INITIAL[len(data) :]
    got = path.read_bytes()
    assert len(got) == len(expected), f"{len(expected) - len(got)} bytes written before the close were lost"
    assert got == expected
    f.close()  # nothing left to write: harmless, as for a closed built-in file
    assert path.read_bytes() == expected


def _fail_writes(handle: Any, err: int) -> None:
    """Every write through *handle* fails with *err* (single ops, gathered and written-behind writes)."""

    def one_pinned(write: bool, pin: Any, buf: Any, offset: int) -> int:
        if write:
            raise OSError(err, os.strerror(err))
        raise AssertionError("no read expected")

    def writev_from(buffers: Any, offset: int) -> int:
        raise OSError(err, os.strerror(err))

    def start_write_many(offsets: Any, buffers: Any) -> CompletedPending:
        return CompletedPending([-err] * len(offsets))

    handle._one_pinned = one_pinned
    handle.writev_from = writev_from
    handle.start_write_many = start_write_many


@pytest.mark.parametrize(
    ("mode", "direct", "piece"),
    [
        ("wb", False, b"s" * 100),  # in the buffered layer's buffer
        ("wb", False, b"h" * HOLD_MIN),  # held by FileIO for a gathered write
        ("r+b", False, b"s" * 100),
        ("w", False, b"t" * 100),  # pending in the text layer
        ("wb", True, b"w" * (4 * BLOCK)),  # written behind under O_DIRECT
    ],
    ids=["buffer", "held", "update", "text", "write-behind"],
)
def test_a_failed_flush_is_raised_by_handle_close_and_nothing_is_claimed_written(
    tmp_path: pathlib.Path, stack: Stack, mode: str, direct: bool, piece: bytes
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    f = _open(path, mode, stack, direct, buffering=BLOCK if direct else -1)
    hold_in_c(f)  # (the large bytes held, not written at once by the C step)
    handle = _raw(f).handle
    _fail_writes(handle, errno.ENOSPC)
    f.write(piece if "b" in mode else piece.decode())
    with pytest.raises(OSError) as info:
        handle.close()
    assert info.value.errno == errno.ENOSPC
    assert handle.closed, "the handle ends closed after a failed flush, as the built-in file does"
    assert f.closed
    assert path.read_bytes() == b"", "a failed write must not land"
    f.close()  # the error was raised once, by handle.close()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("closer", ["stack", "handle"])
def test_a_fork_child_closing_what_it_inherited_writes_nothing(
    tmp_path: pathlib.Path, backend: str, closer: str
) -> None:
    """The child's close neither writes the parent's buffered bytes nor tries to (nor fails);
    the parent then writes them, once."""
    path = tmp_path / "f"
    script = textwrap.dedent(
        f"""
        import json, os
        import uringstack
        from uringstack.stack import open_stack
        stack = open_stack(overrides={BACKENDS[backend]!r})
        from uringstack.fileobj._fastio import HeldWrite
        f = uringstack.open({str(path)!r}, "wb", stack=stack)
        if isinstance(vars(f).get("write"), HeldWrite):  # held, not written at once (tests' hold_in_c)
            vars(f)["write"] = HeldWrite(f, f.raw, f.raw._held, f.raw._fd, {HOLD_MIN})
        f.write(b"y" * {HOLD_MIN})  # held by the raw file
        f.write(b"x" * 1000)  # in the buffer
        assert os.stat({str(path)!r}).st_size == 0
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                got = {{"inherited": stack.inherited, "flush tried": False}}
                real_flush = f.flush

                def flush():
                    got["flush tried"] = True  # (the child's handle would refuse the write anyway)
                    real_flush()

                f.flush = flush
                try:
                    if {closer!r} == "stack":
                        stack.close()
                    else:
                        f.raw.handle.close()
                    got["close"] = "ok"
                except BaseException as exc:
                    got["close"] = repr(exc)
                got["closed"] = f.closed
                print(json.dumps(got), flush=True)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        size_after_child = os.stat({str(path)!r}).st_size
        inherited = stack.inherited
        f.close()
        stack.close()
        print(json.dumps({{"status": status, "size": size_after_child, "inherited": inherited}}), flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    child, parent = (json.loads(line) for line in out.stdout.splitlines())
    assert child == {"inherited": True, "flush tried": False, "close": "ok", "closed": True}, child
    assert parent == {"status": 0, "size": 0, "inherited": False}, "the child wrote the parent's bytes"
    assert path.read_bytes() == b"y" * HOLD_MIN + b"x" * 1000, "the parent writes them, once"


def test_a_detached_layer_is_not_flushed_by_the_handle(tmp_path: pathlib.Path, stack: Stack) -> None:
    """``detach()`` flushed the layer and left the raw file to the caller: closing the handle
    then writes what the raw file holds and leaves the detached layer alone."""
    path = tmp_path / "f"
    f = uringstack.open(path, "w", encoding="ascii", stack=stack)
    f.write("abc")
    buffer = f.detach()  # text pending flushed into the buffer
    buffer.write(b"def")
    raw = buffer.detach()  # the buffer flushed into the raw file
    raw.handle.close()
    assert path.read_bytes() == b"abcdef"
    assert raw.closed


class _Layer:
    """An object layered over a handle: its flush closes the handle again and writes through it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.seen: list[object] = []

    def flush(self) -> None:
        self.handle.close()  # a second close() while the first flushes: returns at once
        self.seen.append(self.handle.closed)
        self.handle.write_from(b"flushed", 0)  # the handle still serves I/O during the flush

    def closing(self) -> None:
        self.seen.append("closed")


def test_a_second_close_during_the_flush_returns_at_once_and_the_handle_stays_usable(
    tmp_path: pathlib.Path, stack: Stack
) -> None:
    """Without that, the second close() would close the handle under the first one's flush
    (its writes refused, the plugins' close hooks run twice)."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    handle = stack.open(path, direct=False)
    layer = _Layer(handle)
    handle.watch_close(layer.closing, flush=layer.flush)
    handle.close()
    assert layer.seen == [False, "closed"]
    assert handle.closed
    assert path.read_bytes() == b"flushed"


class _RaisingWatcher:
    def closing(self) -> None:
        raise RuntimeError("a watcher that breaks its contract")


def test_a_raising_close_callback_does_not_leave_the_descriptor_open(tmp_path: pathlib.Path, stack: Stack) -> None:
    """The callback must not raise (its contract); one that did left the handle's descriptor
    open for good until session 32 (the release never ran, a second close() returned at
    once).  Now the close finishes and raises the callback's error at its end."""
    path = tmp_path / "f"
    path.write_bytes(b"x")
    handle = stack.open(path, direct=False)
    fd = handle.io.fd
    watcher = _RaisingWatcher()
    handle.watch_close(watcher.closing)
    with pytest.raises(RuntimeError, match="breaks its contract"):
        handle.close()
    assert handle.closed
    with pytest.raises(OSError) as exc:
        os.fstat(fd)
    assert exc.value.errno == errno.EBADF
    handle.close()  # done: returns at once
