"""A lost completion fails within seconds with a message; it never hangs the suite.

The injection is what a buggy reap loop does: ``us_test_drop_cqe`` consumes a
posted CQE without the ring's bookkeeping seeing it, so the batch stays
counted in flight for ever.  Before the bound, ``Ring.close`` (the teardown
of every test) waited for it in ``us_cancel_all`` until an outer timeout.
"""

from __future__ import annotations

import errno
import os
import pathlib
import time

import pytest

from uringstack import ring as ring_module
from uringstack.errors import UringIOError
from uringstack.ring import Batch, Ring, inflight
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi, lib
from uringstack.stack import open_stack


def _drop_one_completion(ring: Ring, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while lib.us_test_drop_cqe(ring._ring) != 1:
        assert time.monotonic() < deadline, "the op never completed, so there was nothing to drop"
        time.sleep(0.001)


def test_default_bounds_are_seconds_not_the_pytest_timeout() -> None:
    assert Ring.close_timeout <= 10
    assert inflight.CLOSE_TIMEOUT_S <= 10


@pytest.mark.timeout(30)
def test_ring_close_with_a_lost_completion_fails_fast_and_keeps_the_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ring, "close_timeout", 1.0)
    ring = Ring(entries=8)
    keep = bytearray(64)
    batch = ring.submit(Op.NOP, -1, keep=[keep])
    _drop_one_completion(ring)
    assert ring.inflight == 1  # the bookkeeping still waits for it
    t0 = time.monotonic()
    with pytest.raises(UringIOError, match=r"1 op\(s\) did not complete within 1 s .*lost completion") as info:
        ring.close()
    assert time.monotonic() - t0 < 5
    assert info.value.errno == errno.ETIMEDOUT
    assert ring.closed
    assert batch in ring_module._ORPHANED  # its buffers are kept, never freed under the kernel
    ring_module._ORPHANED.remove(batch)


@pytest.mark.timeout(60)
def test_stack_close_with_a_lost_completion_fails_fast_naming_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    # the stack sets each ring's close bound, and the handle's, from core.close_timeout_s
    # (the handle's default, inflight.CLOSE_TIMEOUT_S, is 10 s: the bound below fails with it)
    stack = open_stack(overrides={"core.backend": "auto", "sqpoll.mode": "off", "core.close_timeout_s": 1.0})
    h = stack.open(path)
    ring = h.io.ring  # type: ignore[attr-defined]
    p = h.start_read_many([0], [bytearray(4096)])  # no other thread reaps this ring meanwhile
    _drop_one_completion(ring)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"{path}: 1 op\(s\) in 1 batch\(es\) still not complete"):
        h.close()
    assert os.fstat(h.fd)  # deliberately left open: the lost op may still target it
    with pytest.raises(UringIOError, match="did not complete within"):
        stack.close()
    assert time.monotonic() - t0 < 10
    assert not p.done()
    os.close(h.fd)
    ring_module._ORPHANED.clear()


@pytest.mark.timeout(30)
def test_ops_given_up_on_are_not_waited_for_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack's teardown unregisters the registered buffers (fixedbuf, on by default),
    which drains the ring, then closes it: with a lost op both waited close_timeout, so
    ``stack.close()`` took twice ``core.close_timeout_s``."""
    monkeypatch.setattr(Ring, "close_timeout", 1.0)
    ring = Ring(entries=8)
    ring.register_buffers([bytearray(4096)])
    drains: list[int] = []
    real = ring._drain_all_locked
    monkeypatch.setattr(ring, "_drain_all_locked", lambda: (drains.append(1), real())[1])
    batch = ring.submit(Op.NOP, -1)
    _drop_one_completion(ring)
    with pytest.raises(UringIOError, match=r"1 op\(s\) did not complete within 1 s"):
        ring.unregister_buffers()
    ring.close()  # (reported above; nothing new to wait for)
    assert drains == [1]
    assert batch in ring_module._ORPHANED
    ring_module._ORPHANED.remove(batch)


def test_a_raising_completion_callback_loses_no_other_completion() -> None:
    ring = Ring(entries=8)
    try:
        seen: list[Batch] = []

        def boom(_: Batch) -> None:
            raise ValueError("callback failed")

        first = ring.submit(Op.NOP, -1)
        first.add_done_callback(boom)
        second = ring.submit(Op.NOP, -1)
        second.add_done_callback(seen.append)
        with pytest.raises(ValueError, match="callback failed"):
            ring.wait(second)
        assert first.finished and second.finished
        assert seen == [second]
        assert ring.inflight == 0
        assert ring.wait(second) == [0]
    finally:
        ring.close()


@pytest.mark.timeout(30)
def test_sync_wait_with_a_lost_completion_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel posted the CQE but something consumed it behind the bookkeeping's back:
    the kernel holds nothing for this batch any more, so waiting would never end."""
    monkeypatch.setattr(Ring, "close_timeout", 1.0)
    ring = Ring(entries=8)
    batch = ring.submit(Op.NOP, -1)
    _drop_one_completion(ring)
    t0 = time.monotonic()
    with pytest.raises(UringIOError, match=r"ring \w+: 1 op\(s\) .*lost completion") as info:
        ring.wait(batch)
    assert time.monotonic() - t0 < 5
    assert info.value.errno == errno.ETIMEDOUT
    assert not batch.finished and ring.inflight == 1  # still owned: nothing was freed under the kernel
    with pytest.raises(UringIOError, match="lost completion"):
        ring.wait_any()
    with pytest.raises(UringIOError, match="did not complete within"):
        ring.close()
    ring_module._ORPHANED.clear()


@pytest.mark.timeout(30)
def test_sync_wait_on_an_op_the_kernel_still_holds_stops_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung op (here a read from an empty pipe) is not lost: the kernel holds it.  The
    wait gives up at Ring.wait_timeout with a message, and the batch stays waitable."""
    monkeypatch.setattr(Ring, "wait_timeout", 1.0)
    r, w = os.pipe()
    ring = Ring(entries=8)
    try:
        buf = bytearray(16)
        pin = ffi.from_buffer(buf)
        batch = ring.submit(Op.READ, r, addrs=address_of(pin), lens=len(buf), offsets=0, keep=[pin, buf])
        t0 = time.monotonic()
        with pytest.raises(UringIOError, match=r"ring \w+: 1 op\(s\) not complete after 1 s") as info:
            ring.wait(batch)
        assert 0.9 < time.monotonic() - t0 < 5
        assert info.value.errno == errno.ETIMEDOUT
        assert not batch.finished
        os.write(w, b"hello")
        assert ring.wait(batch) == [5]
        assert bytes(buf[:5]) == b"hello"
    finally:
        ring.close()
        os.close(r)
        os.close(w)


def test_the_wait_bounds_are_documented() -> None:
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "api.md").read_text()
    assert f"`Ring.wait_timeout` ({Ring.wait_timeout:g} s" in doc
    assert f"`Ring.wait_tick` ({Ring.wait_tick:g} s)" in doc
