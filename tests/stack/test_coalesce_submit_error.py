"""asyncio: a coalesced flush whose submission the kernel refuses fails its awaits with that error.

Until session 32 an ``io_uring_enter`` refused under ``await h.read(...)`` (EPERM
from a seccomp filter) escaped the loop callback (the loop printed "Exception in
callback Coalescer.flush()" and its traceback) while every await failed with an
unrelated ``UringIOError [Errno 125] read failed: Operation canceled``: the
flush took the batch the refused submission had recorded for one a raising
signal cut short.  Now the awaits of ops that were not submitted raise the
submission's own error (``SubmissionError``, the errno a sync call gets), those
that were submitted complete normally, and the loop logs nothing.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import platform
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import uringstack.ring as ring_module
from tests.requires import skip_without
from uringstack.errors import SubmissionError
from uringstack.stack import FileHandle, open_stack

BLOCK = 4096
READS = 4
SECCOMP = pathlib.Path(__file__).parents[1] / "probe" / "seccomp_deny_uring.py"
UNCHANGED = {"core.backend": "uring", "core.cores": [0], "core.aio_inline_read_budget": 0, "iopoll.mode": "off"}


class RefusingLib:
    """The ring's binding, with ``us_batch_start`` refused by the "kernel" (EPERM) after the
    first *submitted* ops of a batch reached it, as the helper's contract has it: the ops
    that did are awaited in the slot, the others never reach the kernel (``-ECANCELED``)."""

    def __init__(self, real: Any, submitted: int) -> None:
        self._real = real
        self.submitted = submitted
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def us_batch_start(
        self, ring: Any, state: Any, desc: Any, n: int, slot: int, results: Any, *rest: Any
    ) -> int:  # fmt: skip
        k = min(self.submitted, n - 1)
        if k:  # (submitted, not waited for nor reaped: the ring waits for them when it sees the error)
            assert self._real.us_batch_start(ring, state, desc, k, slot, results, rest[0], 0, 0) == 0
        for i in range(k, n):
            results[i] = -errno.ECANCELED
        self.refused += 1
        return -errno.EPERM


@pytest.fixture
def handle(tmp_path: pathlib.Path) -> Iterator[FileHandle]:
    path = tmp_path / "f"
    path.write_bytes(b"".join(bytes([65 + i]) * BLOCK for i in range(READS)))
    with open_stack(overrides=UNCHANGED) as stack, stack.open(path) as h:
        if h.backend != "uring":
            skip_without(f"an io_uring handle ({h.backend_reason})")
        yield h


def _gather(h: FileHandle, logged: list[dict[str, Any]]) -> list[Any]:
    """READS reads awaited at once (one flush), with what the loop's exception handler got."""

    async def main() -> list[Any]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: logged.append(context))
        return await asyncio.gather(*(h.read(BLOCK, i * BLOCK) for i in range(READS)), return_exceptions=True)

    return asyncio.run(main())


@pytest.mark.parametrize("submitted", [0, 2], ids=["nothing submitted", "half submitted"])
def test_a_refused_flush_fails_the_unsubmitted_awaits_with_the_submission_error(
    handle: FileHandle, monkeypatch: pytest.MonkeyPatch, submitted: int
) -> None:
    refusing = RefusingLib(ring_module.lib, submitted)
    monkeypatch.setattr(ring_module, "lib", refusing)
    with pytest.raises(SubmissionError) as sync:
        handle.read_many([0, BLOCK], [bytearray(BLOCK), bytearray(BLOCK)])
    logged: list[dict[str, Any]] = []
    got = _gather(handle, logged)
    assert refusing.refused == 2  # (the sync batch's, then the flush's: one batch)
    assert logged == []  # nothing escaped the loop's callback
    assert got[:submitted] == [bytes([65 + i]) * BLOCK for i in range(submitted)]
    for exc in got[submitted:]:
        assert type(exc) is type(sync.value), exc
        assert exc.errno == sync.value.errno == errno.EPERM
    monkeypatch.undo()
    assert _gather(handle, logged) == [bytes([65 + i]) * BLOCK for i in range(READS)]  # the ring is fine
    assert logged == []


def test_a_refused_write_and_read_many_flush(handle: FileHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other coalesced awaits: a write, and read_many_async requests (lists of ops)."""
    monkeypatch.setattr(ring_module, "lib", RefusingLib(ring_module.lib, 0))
    logged: list[dict[str, Any]] = []

    async def main() -> list[Any]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: logged.append(context))
        return await asyncio.gather(
            handle.write(b"w" * BLOCK, 0),
            handle.read_many_async([0, BLOCK], [bytearray(BLOCK), bytearray(BLOCK)]),
            return_exceptions=True,
        )

    got = asyncio.run(main())
    assert logged == []
    assert [(type(e), getattr(e, "errno", None)) for e in got] == [(SubmissionError, errno.EPERM)] * 2
    monkeypatch.undo()
    assert pathlib.Path(handle.path).read_bytes()[:BLOCK] == b"A" * BLOCK  # the write never ran


@pytest.mark.skipif(
    platform.machine() != "x86_64" or sys.platform != "linux", reason="the BPF filter is written for x86_64"
)
def test_io_uring_enter_blocked_by_a_real_seccomp_filter(tmp_path: pathlib.Path) -> None:
    """The prober's case: the stack is built on io_uring, then a real seccomp filter makes
    every ``io_uring_enter`` of the loop's thread fail with EPERM."""
    path = tmp_path / "f"
    path.write_bytes(b"r" * BLOCK)
    child = textwrap.dedent(
        f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(SECCOMP.parent)!r})
        import seccomp_deny_uring as seccomp
        import uringstack

        stack = uringstack.open_stack(overrides={UNCHANGED!r})
        h = stack.open({str(path)!r})
        if h.backend != "uring":
            print("SKIP", h.backend_reason)
            os._exit(0)
        seccomp.install_filter(deny=("enter",))  # this thread only (prctl, no TSYNC)

        async def main():
            try:
                print("READ", len(await asyncio.wait_for(h.read({BLOCK}, 0), 30)))
            except Exception as e:
                print("RAISED", type(e).__name__, e.errno, flush=True)

        asyncio.run(main())
        sys.stdout.flush()
        os._exit(0)  # (closing would need io_uring_enter too)
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, env=os.environ)
    if proc.stdout.startswith("SKIP"):
        skip_without(f"an io_uring handle ({proc.stdout.strip()})")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"RAISED SubmissionError {errno.EPERM}", proc.stdout + proc.stderr
    assert "Exception in callback" not in proc.stderr, proc.stderr
