"""A failed read or write whose exception is kept in a reference cycle does not crash the interpreter.

``io.BufferedWriter``/``BufferedReader`` hand the raw file a ``memoryview`` of
their buffer; the handle pins it (a cffi buffer, which exports the view).  The
exception of a failed op refers to the frames that held both; kept in a cycle
(stored with the frame that caught it, ``pytest.raises``, a logger) the
garbage collector of Python 3.11 segfaults breaking it (CPython gh-77894, fixed
in 3.12).  ``uringstack.FileIO`` clears the failed call's frames and drops its
pin before raising.  Each case runs in a child interpreter: the crash is a
segfault.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

from .conftest import BACKENDS

_SCRIPT = """
import errno, gc, os
import uringstack
from uringstack.ring.native import ffi
from uringstack.stack import open_stack

stack = open_stack(overrides={overrides!r})
path = {path!r}


def fail(*args):
    # pins the buffer as the handle's own single-op paths do, then fails as a device would
    pins = [ffi.from_buffer("char[]", a) for a in args if isinstance(a, memoryview)]
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def failed_op():
    f = uringstack.open(path, {mode!r}, stack=stack)
    handle = f.raw.handle
    handle._one_pinned = handle._read_here = fail
    try:
        f.write(b"s" * 100) and f.flush() if "w" in {mode!r} else f.read(10)
    except OSError as exc:
        kept = exc  # a cycle: this frame -> kept -> its traceback -> this frame
    del handle._one_pinned, handle._read_here  # the handle's own again
    f.close()
    return kept


for _ in range(3):
    failed = failed_op()
    assert failed.errno == errno.EIO, failed
    del failed
    gc.collect()
stack.close()
print("survived")
"""


@pytest.mark.parametrize("mode", ["wb", "rb"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_kept_exception_of_a_failed_buffered_op_is_collected_safely(
    tmp_path: pathlib.Path, backend: str, mode: str
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"r" * 100)
    script = textwrap.dedent(_SCRIPT).format(overrides=BACKENDS[backend], path=str(path), mode=mode)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "survived", (out.returncode, out.stderr[-2000:])
