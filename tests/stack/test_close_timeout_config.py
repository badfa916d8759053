"""``core.close_timeout_s``: the bound of a ring's close is a setting the stack applies.

A lost completion (``us_test_drop_cqe`` consumes a CQE behind the ring's
bookkeeping) makes closing the ring wait for a completion that never comes.
With ``close_timeout_s = 1`` the stack's close fails in about a second; were
the setting ignored, the ring's own 10 s default would run past the bound the
test asserts.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from uringstack import ring as ring_module
from uringstack.cli import cli
from uringstack.config import ConfigError, load_config
from uringstack.config.core import CoreConfig
from uringstack.errors import UringIOError
from uringstack.ring import Ring
from uringstack.ring.flags import Op
from uringstack.ring.native import lib
from uringstack.stack import Stack, open_stack

SETTINGS = {"core.backend": "uring", "sqpoll.mode": "off", "core.close_timeout_s": 1.0}


@pytest.fixture
def stack() -> Iterator[Stack]:
    stack = open_stack(overrides=SETTINGS)
    yield stack
    stack.close()


def test_every_ring_the_stack_builds_gets_the_configured_close_timeout(stack: Stack) -> None:
    rings = [ring for worker in stack.workers for ring in worker.rings.values()]
    assert rings
    assert [r.close_timeout for r in rings] == [1.0] * len(rings)


def test_the_default_is_the_ring_default() -> None:
    assert CoreConfig().close_timeout_s == Ring.close_timeout


@pytest.mark.timeout(30)
def test_stack_close_with_a_lost_completion_fails_at_the_configured_timeout() -> None:
    stack = open_stack(overrides=SETTINGS)
    ring = stack.workers[0].rings["storage"]
    batch = stack.workers[0].call(lambda: ring.submit(Op.NOP, -1))
    deadline = time.monotonic() + 5
    while lib.us_test_drop_cqe(ring._ring) != 1:
        assert time.monotonic() < deadline, "the NOP never completed, so there was nothing to drop"
    t0 = time.monotonic()
    try:
        with pytest.raises(UringIOError, match=r"1 op\(s\) did not complete within 1 s") as info:
            stack.close()
        elapsed = time.monotonic() - t0
        assert 0.9 < elapsed < 5, f"close gave up after {elapsed:.2f} s, not ~1 s (core.close_timeout_s)"
        assert info.value.errno == errno.ETIMEDOUT
        assert batch in ring_module._ORPHANED  # its buffers are kept, never freed under the kernel
    finally:
        ring_module._ORPHANED.clear()


def test_the_close_timeout_comes_from_the_environment() -> None:
    loaded = load_config(env={"URINGSTACK_CORE__CLOSE_TIMEOUT_S": "2.5"})
    assert loaded.config.core.close_timeout_s == 2.5
    assert loaded.provenance["core.close_timeout_s"] == "env:URINGSTACK_CORE__CLOSE_TIMEOUT_S"


def test_config_show_lists_the_close_timeout_and_its_source() -> None:
    env = {"URINGSTACK_CORE__CLOSE_TIMEOUT_S": "4"}
    shown = CliRunner(env=env).invoke(cli, ["config", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["config"]["core"]["close_timeout_s"] == 4.0
    assert data["provenance"]["core.close_timeout_s"] == "env:URINGSTACK_CORE__CLOSE_TIMEOUT_S"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, r"core.close_timeout_s: input should be greater than 0"),
        (float("inf"), r"core.close_timeout_s: .*finite"),
        ("5", r"core.close_timeout_s: input should be a valid number"),
        (86401, r"core.close_timeout_s: input should be less than or equal to 86400"),
    ],
)
def test_bad_close_timeouts_are_refused_naming_the_key(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={"core.close_timeout_s": value}, env={})
