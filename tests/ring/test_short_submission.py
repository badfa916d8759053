"""Ops after one that fails while the kernel sets it up still run (session 29).

``io_uring_enter`` stops consuming the SQ at an op that fails during setup
(an fsync with an unknown flag on every kernel; on 5.10 also a write on a
read-only or bad descriptor) and returns the count it took, unless the ring
has IORING_SETUP_SUBMIT_ALL. The rest stayed queued: no later wait submits,
so their completions never came and the batch hung until ``wait_timeout``
("a hung device?"). The submitter now submits what was left at once.
On 5.10 the public API met it: an asyncio write on a read-only handle
coalesced with other ops (tests/ring/test_coalesce.py) hung them all.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
from collections.abc import Iterator

import pytest

from uringstack.ring import Ring
from uringstack.ring.aio import wait_batch
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi
from uringstack.ring.params import RingParams

BS = 4096
BAD_FSYNC_FLAG = 0x80  # not IORING_FSYNC_DATASYNC: every kernel refuses it while preparing the op


@pytest.fixture
def ring() -> Iterator[Ring]:
    r = Ring(RingParams(entries=8))
    r.wait_timeout = 5.0  # a lost completion fails the test in seconds
    yield r
    r.close()


@pytest.fixture
def data(tmp_path: pathlib.Path) -> Iterator[int]:
    fd = os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT)
    os.pwrite(fd, b"a" * BS + b"b" * BS, 0)
    yield fd
    os.close(fd)


def _reads_after_a_bad_fsync(fd: int) -> tuple[dict[str, object], bytearray]:
    buf = bytearray(2 * BS)
    pin = ffi.from_buffer(buf)
    addr = int(ffi.cast("uintptr_t", pin))
    cols: dict[str, object] = {
        "addrs": [0, addr, addr + BS],
        "lens": [0, BS, BS],
        "offsets": [0, 0, BS],
        "op_flags": [BAD_FSYNC_FLAG, 0, 0],
        "keep": [pin, buf],
    }
    return cols, buf


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", [True, False], ids=["submit-and-wait", "start-then-wait"])
def test_ops_after_an_op_refused_at_setup_complete(ring: Ring, data: int, wait: bool) -> None:
    cols, buf = _reads_after_a_bad_fsync(data)
    batch = ring.submit([Op.FSYNC, Op.READ, Op.READ], data, wait=wait, **cols)
    assert ring.wait(batch) == [-errno.EINVAL, BS, BS]
    assert bytes(buf) == b"a" * BS + b"b" * BS


@pytest.mark.timeout(30)
def test_ops_after_an_op_refused_at_setup_complete_on_the_event_loop(ring: Ring, data: int) -> None:
    """The asyncio bridge never enters the kernel to wait (the ring's eventfd wakes
    the loop), so what a submission left queued had no later call to send it."""
    cols, buf = _reads_after_a_bad_fsync(data)

    async def main() -> list[int]:
        batch = ring.submit([Op.FSYNC, Op.READ, Op.READ], data, **cols)
        return await asyncio.wait_for(wait_batch(ring, batch), 5)

    assert asyncio.run(main()) == [-errno.EINVAL, BS, BS]
    assert bytes(buf) == b"a" * BS + b"b" * BS


def test_a_short_submission_is_counted(ring: Ring, data: int) -> None:
    """The kernel refuses the fsync flag while preparing the op (5.10, 6.1, 6.12 and
    the host's kernel) and stops the submission there: counted, finished at once."""
    cols, _ = _reads_after_a_bad_fsync(data)
    ring.run([Op.FSYNC, Op.READ, Op.READ], data, **cols)
    counters = ring.counters()
    assert counters["short_submits"] == 1
    assert counters["submitted"] == 3
