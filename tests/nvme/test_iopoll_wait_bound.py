"""Waits on an IOPOLL ring are bounded like any other: the kernel is never asked to spin.

On an IOPOLL ring the kernel ignores the ``IORING_ENTER_EXT_ARG`` timeout that
bounds :meth:`Ring.wait` elsewhere: ``io_uring_enter(GETEVENTS)`` with
``min_complete > 0`` spins in ``io_iopoll_check`` (and in ``blk_mq_poll``)
until enough completions came or the scheduler wants the CPU back, so a hung
polled command could hold the waiting thread in one syscall with no deadline.
The ring therefore polls with ``min_complete = 0`` (one non-spinning pass per
syscall) and checks the deadline and the lost-completion count between
passes.  The first test pins that rule at the syscall level (strace): a
wait on an IOPOLL ring never hands ``min_complete > 0`` to the kernel.  The
others check that a lost completion on a polled ring fails in about the tick.
Runs inside ../shared/nvme-vm (scripts/test-nvme.sh) on /dev/nvme0n1, whose
queue polls on every kernel of the matrix.
"""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.requires import skip_without
from uringstack import ring as ring_module
from uringstack.errors import UringIOError
from uringstack.ring import Batch, Ring
from uringstack.ring.buffers import address_of, aligned_buffer
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi, lib

from .conftest import BLK

pytestmark = pytest.mark.nvme

BS = 4096

# One child process: a few synchronous polled reads (submit with wait, then wait;
# single ops through Ring.rw_one),
# a read left in flight and waited for, a lost completion, and the close.  It prints
# the IOPOLL ring's fd so the strace of it can be filtered to that ring.
CHILD = textwrap.dedent(
    """
    import os, sys
    from uringstack.errors import UringIOError
    from uringstack.ring import Ring
    from uringstack.ring.buffers import address_of, aligned_buffer
    from uringstack.ring.flags import Op, SetupFlag
    from uringstack.ring.native import ffi, lib

    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
    ring = Ring(entries=8, flags=SetupFlag.IOPOLL)
    ring.wait_tick, ring.wait_timeout, ring.close_timeout = 0.2, 1.0, 1.0
    print("ring-fd", ring.fd, flush=True)
    buf = aligned_buffer(4096)
    pin = ffi.from_buffer(buf)
    for i in range(8):
        assert ring.run(Op.READ, fd, addrs=address_of(pin), lens=4096, offsets=i * 4096, keep=[pin, buf]) == [4096]
    for i in range(8):  # single waited ops: us_rw_one polls for them in the call
        assert ring.rw_one(Op.READ, fd, pin, 4096, i * 4096, 0, 0, pin) == 4096
    batch = ring.submit(Op.READ, fd, addrs=address_of(pin), lens=4096, offsets=0, keep=[pin, buf])
    assert ring.wait(batch) == [4096]
    lost = ring.submit(Op.READ, fd, addrs=address_of(pin), lens=4096, offsets=0, keep=[pin, buf])
    while not lib.us_test_drop_cqe_polled(ring._ring):
        pass
    try:
        ring.wait(lost)
    except UringIOError as exc:
        print("wait raised", exc.errno, flush=True)
    try:
        ring.close()
    except UringIOError as exc:
        print("close raised", exc.errno, flush=True)
    """
)

# io_uring_enter(fd, to_submit, min_complete, flags, argp, argsz) as strace prints it
ENTER = re.compile(r"io_uring_enter\((\d+), (\d+), (\d+), ([^,]+),")


def _submit_read(ring: Ring, fd: int) -> Batch:
    buf = aligned_buffer(BS)
    pin = ffi.from_buffer(buf)
    return ring.submit(Op.READ, fd, addrs=address_of(pin), lens=BS, offsets=0, keep=[pin, buf])


def _drop_polled_completion(ring: Ring) -> None:
    deadline = time.monotonic() + 10
    while lib.us_test_drop_cqe_polled(ring._ring) != 1:
        assert time.monotonic() < deadline, "the polled read never completed, so there was nothing to drop"


@pytest.mark.timeout(120)
def test_no_wait_on_an_iopoll_ring_asks_the_kernel_to_spin() -> None:
    strace = shutil.which("strace")
    if strace is None:
        skip_without("strace (this test reads the io_uring_enter calls of a child process)")
    done = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=io_uring_enter", "-e", "signal=none", sys.executable, "-c", CHILD, str(BLK)],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ring_fd = re.search(r"^ring-fd (\d+)$", done.stdout, re.M)
    assert ring_fd is not None, done.stdout
    assert f"wait raised {errno.ETIMEDOUT}" in done.stdout, done.stdout
    assert f"close raised {errno.ETIMEDOUT}" in done.stdout, done.stdout
    calls = [m.groups() for m in ENTER.finditer(done.stderr) if m.group(1) == ring_fd.group(1)]
    waits = [c for c in calls if "IORING_ENTER_GETEVENTS" in c[3]]
    assert waits, done.stderr[-2000:]
    spinning = [c for c in waits if int(c[2]) > 0]
    assert not spinning, (
        f"{len(spinning)} of {len(waits)} GETEVENTS enters on the IOPOLL ring asked for min_complete > 0, "
        f"which the kernel does not bound by the wait's timeout: {spinning[:5]}"
    )


@pytest.mark.timeout(60)
def test_a_lost_completion_on_an_iopoll_ring_fails_within_the_tick(polled_ring: Ring, blk_fd: int) -> None:
    batch = _submit_read(polled_ring, blk_fd)
    _drop_polled_completion(polled_ring)
    t0 = time.monotonic()
    with pytest.raises(UringIOError, match=r"1 op\(s\) awaited, 1 .*lost completion") as info:
        polled_ring.wait(batch)
    assert time.monotonic() - t0 < 3
    assert info.value.errno == errno.ETIMEDOUT
    assert not batch.finished and polled_ring.inflight == 1  # still owns its buffer
    t0 = time.monotonic()
    with pytest.raises(UringIOError, match="lost completion"):
        polled_ring.wait_any()
    assert time.monotonic() - t0 < 3
    t0 = time.monotonic()
    with pytest.raises(UringIOError, match=r"did not complete within 1 s"):
        polled_ring.close()
    assert time.monotonic() - t0 < 4
    assert batch in ring_module._ORPHANED
    ring_module._ORPHANED.remove(batch)


@pytest.mark.timeout(60)
def test_polled_waits_still_complete(polled_ring: Ring, blk_fd: int) -> None:
    """The bounded polling loop is still a wait: every read completes with its length."""
    for _ in range(20):
        buf = aligned_buffer(BS)
        pin = ffi.from_buffer(buf)
        assert polled_ring.run(Op.READ, blk_fd, addrs=address_of(pin), lens=BS, offsets=0, keep=[pin, buf]) == [BS]
    batches = [_submit_read(polled_ring, blk_fd) for _ in range(6)]
    assert polled_ring.wait(batches[-1]) == [BS]
    while polled_ring.inflight:
        polled_ring.wait_any()
    assert all(b.finished and b.results == [BS] for b in batches)


@pytest.mark.timeout(60)
def test_a_batch_larger_than_the_rings_does_not_wait_out_its_tick(polled_ring: Ring, blk_fd: int) -> None:
    """A batch bigger than the SQ is submitted in parts and the parts already reaped leave the
    CQ; the submitting wait must not then poll for its full tick for CQEs that cannot come."""
    polled_ring.wait_tick = polled_ring.wait_timeout = 5.0
    n = 8 * polled_ring.cq_entries  # more than the SQ and the CQ hold
    bufs = [aligned_buffer(BS) for _ in range(n)]
    pins = [ffi.from_buffer(b) for b in bufs]
    t0 = time.monotonic()
    results = polled_ring.run(
        Op.READ, blk_fd, addrs=[address_of(p) for p in pins], lens=BS, offsets=[i * BS for i in range(n)],
        keep=[pins, bufs],
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert results == [BS] * n
    assert elapsed < 2.5, f"{n} polled reads took {elapsed:.2f} s: the submission waited out its 5 s tick"
