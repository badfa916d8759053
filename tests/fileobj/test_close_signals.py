"""A raising signal (Ctrl-C) anywhere in a file object's ``close()`` loses nothing written.

The built-in ``open()``'s ``close()`` flushes in C, where no Python signal
handler runs, so a Ctrl-C during it never costs the data of writes that
returned.  A uringstack file's flush runs Python (the buffered layer's
``flush()``, the raw file's held bytes and write-behind), and
``io.BufferedWriter.close``/``io.IOBase.close`` close the file even when that
flush raised: the buffer's bytes were then gone.  Each sweep sends a real
signal (tests/signal_points.py) at each point of one ``close()`` in turn and
checks that the file ends holding every byte written, and that the file
object is closed or, when the signal came before anything was done, still
open and closed by a second ``close()``.  Nothing may hang.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

import pytest

import uringstack
from tests.signal_points import Interrupt, Stop, code_of, signal_at, sweep
from uringstack.stack import Stack, open_stack

_CODE = (
    "fileobj/fileio.py",
    "fileobj/openfile.py",
    "fileobj/closing.py",
    "fileobj/stream.py",
    "ring/interrupts.py",
)
_STACK_CODE = (*_CODE, "stack/handle.py")
_CPU = sorted(os.sched_getaffinity(0))[0]
_CH = 64 * 1024

# name: (what is written before the close, open() arguments)
_SCENARIOS: dict[str, tuple[list[Any], dict[str, Any]]] = {
    # large bytes held without a copy, not yet written when close() begins
    "held": ([bytes([i]) * _CH for i in range(1, 4)], {"mode": "wb", "buffering": 8 * _CH}),
    # bytearrays copied into the buffered writer's buffer
    "copied": ([bytearray([i]) * 10000 for i in range(1, 4)], {"mode": "wb", "buffering": 64 * 1024}),
    # a read-write file's buffer
    "random": ([bytearray([i]) * 10000 for i in range(1, 4)], {"mode": "w+b", "buffering": 64 * 1024}),
    # O_DIRECT write-behind with writes in flight, through the buffered layer and the raw file
    "direct": ([bytes([i]) * _CH for i in range(1, 5)], {"mode": "wb", "direct": True, "buffering": _CH}),
    "direct-raw": ([bytes([i]) * _CH for i in range(1, 5)], {"mode": "wb", "direct": True, "buffering": 0}),
    # text pending in the text layer (6,000 bytes, under its 8 KiB chunk) over a buffer
    # without room for it (9,000 of 12,288 bytes taken)
    "text": ([chr(65 + i) * 3000 for i in range(5)], {"mode": "w", "encoding": "ascii", "buffering": 12288}),
}


def _run(tmp: pathlib.Path, stack: Stack, name: str, at: int) -> str | None:
    """One close() interrupted at point *at*; None when it had fewer points."""
    chunks, kw = _SCENARIOS[name]
    whole = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
    path = tmp / f"{name}-{at}"
    f = uringstack.open(path, stack=stack, **kw)
    for c in chunks:
        f.write(c)
    fds = len(os.listdir("/proc/self/fd"))
    raised: BaseException | None = None
    with signal_at(code_of(files=_CODE), at) as sent:
        try:
            f.close()
        except BaseException as e:
            raised = e
    where = sent.where
    if where is None:
        assert raised is None, repr(raised)
        assert path.read_bytes() == whole
        return None
    assert isinstance(raised, Interrupt), f"{where}: close() raised {raised!r}, not the signal's exception"
    del raised
    if not f.closed:
        f.close()  # the signal came before close() did anything: it is still open
    data = path.read_bytes()
    assert data == whole, f"{where}: {len(data)} bytes in the file, not the {len(whole)} written"
    assert len(os.listdir("/proc/self/fd")) == fds - 1, f"{where}: a descriptor was left open"
    return where


@pytest.mark.parametrize("name", sorted(_SCENARIOS))
def test_a_signal_anywhere_in_close(tmp_path: pathlib.Path, stack: Stack, name: str) -> None:
    sweep(lambda at: _run(tmp_path, stack, name, at))


def _run_stack_close(tmp: pathlib.Path, at: int, own_code: bool) -> str | None:
    """A stack closed with a file object and a bare handle open: Ctrl-C (a BaseException)
    at point *at* of the file's close and the handles' (which the stack's close runs),
    and with *own_code* of the stack's close itself, between its steps.  Nothing written
    is lost, every handle and worker thread ends closed, no descriptor is left, and the
    close takes seconds at most.  Without *own_code* the stack's close must finish by
    itself; with it, a signal before its teardown began leaves the stack open for a
    second close(), as a signal before the call would."""
    fds = len(os.listdir("/proc/self/fd"))
    stack = open_stack(overrides={"core.backend": "uring", "core.cores": [_CPU], "sqpoll.mode": "off"})
    chunks = [bytearray([i]) * 10000 for i in range(1, 4)]
    whole = b"".join(chunks)
    path = tmp / f"stack-{own_code}-{at}"
    f = uringstack.open(path, "wb", stack=stack)
    for c in chunks:
        f.write(c)
    other = stack.open(tmp / "other", create=True)
    code = (*_STACK_CODE, "stack/__init__.py", "in_progress.py", "reaper.py") if own_code else _STACK_CODE
    raised: BaseException | None = None
    began = time.monotonic()
    with signal_at(code_of(files=code), at, raising=Stop) as sent:
        try:
            stack.close()
        except BaseException as e:
            raised = e
    where = sent.where
    took = time.monotonic() - began
    assert took < 10, f"{where}: the close took {took:.0f} s (a call queued to a stopped worker waits)"
    assert where is None or isinstance(raised, Stop), f"{where}: {raised!r}, not the signal's exception"
    assert where is not None or raised is None, repr(raised)
    del raised
    if own_code and not stack.closed:
        stack.close()
    assert stack.closed and f.closed and other.closed, f"{where}: the stack's close stopped at the signal"
    assert not any(w.alive for w in stack.workers), f"{where}: a worker thread still runs"
    data = path.read_bytes()
    assert data == whole, f"{where}: {len(data)} bytes in the file, not the {len(whole)} written"
    assert len(os.listdir("/proc/self/fd")) == fds, f"{where}: a descriptor was left open"
    return where


@pytest.mark.parametrize("own_code", [False, True], ids=["in-closes-it-runs", "in-its-own-code-too"])
def test_a_signal_anywhere_in_a_stacks_close(tmp_path: pathlib.Path, own_code: bool) -> None:
    sweep(lambda at: _run_stack_close(tmp_path, at, own_code))
