"""A ring's parameters are checked before the kernel sees them (session 28).

Before, ``entries=0`` or ``cq_entries`` below ``entries`` reached
``io_uring_setup``, whose EINVAL ring creation took for an unknown optional
flag: it dropped every flag it could, then blamed "setup flags ... required".
A plan's ring made ``R_DISABLED`` or polled (IOPOLL) where buffered I/O goes
passed the plan and failed every operation later.
"""

from __future__ import annotations

import errno
import os
import pathlib
from typing import Any

import pytest

from uringstack.errors import RingSetupError
from uringstack.ring import Ring
from uringstack.ring.flags import Op, SetupFlag
from uringstack.ring.native import ffi
from uringstack.ring.params import RingParams


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"entries": 0}, "entries=0"),
        ({"entries": 65536}, "entries=65536"),
        ({"entries": True}, "entries=True"),
        ({"entries": 64, "cq_entries": 32}, "cq_entries=32 is below entries=64"),
        ({"cq_entries": 1 << 17}, "cq_entries=131072"),
        ({"sq_thread_idle_ms": -1}, "sq_thread_idle_ms=-1"),
        ({"sq_thread_cpu": -2}, "sq_thread_cpu=-2"),
        ({"spin_us": 1.5}, "spin_us=1.5"),
        ({"entries": 1}, "a CQ of 2 entries holds no op"),
        ({"entries": 2, "cq_entries": 2}, "a CQ of 2 entries holds no op"),
    ],
)
def test_unusable_parameters_are_refused_before_the_kernel(
    fields: dict[str, Any], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uringstack.ring import params as ring_params

    tried: list[int] = []
    real = ring_params._init
    monkeypatch.setattr(ring_params, "_init", lambda e, f, p: (tried.append(e), real(e, f, p))[1])
    params = RingParams(**fields)
    assert any(named in p for p in params.problems())
    with pytest.raises(RingSetupError) as info:
        Ring(params)
    assert info.value.errno == errno.EINVAL
    assert named in str(info.value)
    assert tried == []  # no flag dropped over it: io_uring_setup was never called


@pytest.mark.parametrize(
    ("flags", "named"),
    [(SetupFlag.R_DISABLED, "R_DISABLED: nothing enables the ring"), (SetupFlag.IOPOLL, "IOPOLL on the storage ring")],
)
def test_a_plan_refuses_a_ring_the_stack_cannot_use(flags: SetupFlag, named: str) -> None:
    params = RingParams(flags=flags)
    assert params.problems() == []  # the kernel takes it (a test may make such a ring)
    assert any(named in p for p in params.plan_problems())


def test_polled_rings_keep_iopoll_and_defaults_pass() -> None:
    assert RingParams().plan_problems() == []
    assert RingParams(role="iopoll", flags=SetupFlag.IOPOLL, required=SetupFlag.IOPOLL).plan_problems() == []
    assert RingParams(entries=8, cq_entries=8, sq_thread_cpu=0, sq_thread_idle_ms=0).problems() == []


def test_einval_with_only_required_flags_left_names_them_not_a_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from uringstack.ring import params as ring_params

    monkeypatch.setattr(ring_params, "_init", lambda e, f, p: (-errno.EINVAL, None, None))
    with pytest.raises(RingSetupError) as info:
        Ring(RingParams(entries=8, flags=SetupFlag.SQE128 | SetupFlag.COOP_TASKRUN, required=SetupFlag.SQE128))
    text = str(info.value)
    assert "only its required setup flags left" in text and "SQE128" in text and "entries 8" in text


@pytest.mark.parametrize("fields", [{"entries": 2}, {"entries": 1, "cq_entries": 4}])
def test_the_smallest_rings_taken_run_a_batch(fields: dict[str, Any], tmp_path: pathlib.Path) -> None:
    """The bound above is the real one: a CQ of 3 or more entries runs a batch (session 31:
    ``core.ring_entries = 1`` was taken, and every batch on its rings failed with E2BIG)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 8192)
    fd = os.open(path, os.O_RDONLY)
    try:
        with Ring(RingParams(**fields)) as ring:
            buf = bytearray(4096)
            pin = ffi.from_buffer(buf)
            address = int(ffi.cast("uintptr_t", pin))
            assert ring.run(Op.READ, fd, addrs=address, lens=4096, offsets=0, keep=[pin]) == [4096]
    finally:
        os.close(fd)
