"""Kernels before 5.18 register an eventfd only once the ring is idle.

``IORING_REGISTER_EVENTFD`` quiesces the ring there: it returns once every
request in flight completed, so with a read of an idle pipe in flight the
asyncio bridge's first await (which registered the ring's eventfd then) hung
for good: found running tests/ring on Debian 11's 5.10 in the NVMe VM.  Such
kernels get the eventfd registered when the ring is made, and the bridge
claims it.  Here the kernel's rule is modelled (a registration with ops in
flight fails the test instead of blocking); the VM run shows the real one.
"""

from __future__ import annotations

import asyncio
import os

import pytest

import uringstack.ring as ring_module
from uringstack.ring import Ring, _eventfd_register_quiesces, aio
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi

ANY_POS = -1 & 0xFFFFFFFFFFFFFFFF  # "current position": a pipe has no offsets


def test_which_kernels_quiesce() -> None:
    assert _eventfd_register_quiesces("5.10.0-46-amd64")  # Debian 11
    assert _eventfd_register_quiesces("5.17.15")
    assert not _eventfd_register_quiesces("5.18.0")
    assert not _eventfd_register_quiesces("6.1.0-57-amd64")  # Debian 12
    assert _eventfd_register_quiesces("not-a-release")  # unknown: the safe side


@pytest.mark.timeout(30)
def test_the_first_await_with_an_op_in_flight_needs_no_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring_module, "EVENTFD_REGISTER_QUIESCES", True)
    real = Ring.register_eventfd

    def quiescing(self: Ring, fd: int) -> None:
        if self.inflight:
            raise AssertionError(f"registering an eventfd with {self.inflight} op(s) in flight blocks (< 5.18)")
        real(self, fd)

    monkeypatch.setattr(Ring, "register_eventfd", quiescing)
    r, w = os.pipe()
    ring = Ring(entries=8)
    try:
        idle, buf = bytearray(1), bytearray(1)
        pins = [ffi.from_buffer(b, require_writable=True) for b in (idle, buf)]
        in_flight = ring.submit(
            Op.READ, r, addrs=int(ffi.cast("uintptr_t", pins[0])), lens=1, offsets=ANY_POS, keep=[pins[0]]
        )

        async def main() -> list[int]:
            asyncio.get_running_loop().call_later(0.05, os.write, w, b"xy")
            batch = ring.submit(
                Op.READ, r, addrs=int(ffi.cast("uintptr_t", pins[1])), lens=1, offsets=ANY_POS, keep=[pins[1]]
            )
            return await aio.wait_batch(ring, batch)  # type: ignore[arg-type]

        assert asyncio.run(asyncio.wait_for(main(), 10)) == [1]
        assert ring.wait(in_flight) == [1]  # type: ignore[arg-type]
        assert sorted(idle + buf) == sorted(b"xy")
    finally:
        ring.close()
        os.close(r)
        os.close(w)


def test_an_unclaimed_eventfd_is_closed_with_its_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring_module, "EVENTFD_REGISTER_QUIESCES", True)
    ring = Ring(entries=4)
    efd = ring.eventfd
    assert efd is not None
    os.fstat(efd)
    ring.close()
    with pytest.raises(OSError):
        os.fstat(efd)
