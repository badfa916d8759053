"""``core.wait_timeout_s`` / ``core.wait_tick_s``: the ring wait bounds are settings the stack applies.

A hung op is a read from an empty pipe submitted on a ring the stack built:
the kernel holds it until a writer comes.  With ``wait_timeout_s = 1`` the
wait fails in about a second; were the setting ignored, the ring's own 60 s
default would run into the test's timeout.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from uringstack.config import ConfigError, load_config
from uringstack.config.core import CoreConfig
from uringstack.errors import UringIOError
from uringstack.ring import Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi
from uringstack.stack import Stack, open_stack

BOUNDS = {"core.backend": "uring", "sqpoll.mode": "off", "core.wait_timeout_s": 1.0, "core.wait_tick_s": 0.1}


@pytest.fixture
def bounded_stack() -> Iterator[Stack]:
    stack = open_stack(overrides=BOUNDS)
    yield stack
    stack.close()


def _rings(stack: Stack) -> list[Ring]:
    return [ring for worker in stack.workers for ring in worker.rings.values()]


def test_every_ring_the_stack_builds_gets_the_configured_bounds(bounded_stack: Stack) -> None:
    rings = _rings(bounded_stack)
    assert rings
    assert [(r.wait_timeout, r.wait_tick) for r in rings] == [(1.0, 0.1)] * len(rings)


def test_the_defaults_are_the_ring_defaults() -> None:
    core = CoreConfig()
    assert (core.wait_timeout_s, core.wait_tick_s) == (Ring.wait_timeout, Ring.wait_tick)


@pytest.mark.timeout(20)
def test_a_hung_op_on_a_stack_ring_fails_at_the_configured_timeout(bounded_stack: Stack) -> None:
    ring = bounded_stack.workers[0].rings["storage"]
    r, w = os.pipe()
    try:
        buf = bytearray(8)
        pin = ffi.from_buffer(buf)
        keep: list[Any] = [pin, buf]
        t0 = time.monotonic()
        with pytest.raises(UringIOError, match=r"1 op\(s\) not complete after 1 s") as info:
            ring.run(Op.READ, r, addrs=address_of(pin), lens=len(buf), offsets=0, keep=keep)
        elapsed = time.monotonic() - t0
        assert 0.9 < elapsed < 5, f"the wait gave up after {elapsed:.2f} s, not ~1 s (core.wait_timeout_s)"
        assert info.value.errno == errno.ETIMEDOUT
        os.write(w, b"x" * 8)  # let the op finish so the stack closes cleanly
        (batch,) = ring._inflight.values()
        assert ring.wait(batch) == [8]
    finally:
        os.close(r)
        os.close(w)


def test_the_bounds_come_from_the_environment() -> None:
    env = {"URINGSTACK_CORE__WAIT_TIMEOUT_S": "2.5", "URINGSTACK_CORE__WAIT_TICK_S": "0.05"}
    loaded = load_config(env=env)
    assert (loaded.config.core.wait_timeout_s, loaded.config.core.wait_tick_s) == (2.5, 0.05)
    assert loaded.provenance["core.wait_timeout_s"] == "env:URINGSTACK_CORE__WAIT_TIMEOUT_S"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"core.wait_timeout_s": 0}, r"core.wait_timeout_s: input should be greater than 0"),
        ({"core.wait_timeout_s": float("inf")}, r"core.wait_timeout_s: .*finite"),
        ({"core.wait_tick_s": 0}, r"core.wait_tick_s: input should be greater than or equal to 0.001"),
        ({"core.wait_timeout_s": 1, "core.wait_tick_s": 2}, r"core.wait_tick_s: must not exceed core.wait_timeout_s"),
        # the default tick (0.5 s) too: only a given one was checked
        (
            {"core.wait_timeout_s": 0.1},
            r"core.wait_tick_s: must not exceed core.wait_timeout_s \(0.1; the tick is 0.5 unless set",
        ),
        ({"core.wait_timeout_s": "5"}, r"core.wait_timeout_s: input should be a valid number"),
    ],
)
def test_bad_bounds_are_refused_naming_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides, env={})
