"""sqpoll: auto's decision, a real SQPOLL ring pinned where the config says, shared pollers."""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable

from tests.requires import skip_without
from uringstack.ring import Ring
from uringstack.ring.flags import SetupFlag
from uringstack.stack import open_stack


def test_auto_is_off_when_every_cpu_runs_a_worker() -> None:
    with open_stack(overrides={"sqpoll.mode": "auto", "sqpoll.min_cpus": 1}) as stack:
        verdict = next(v for v in stack.plan.verdicts if v.plugin == "sqpoll")
        assert len(stack.caps.cpus.allowed) == len(stack.workers)
        assert not verdict.enabled
        assert "compete" in verdict.reason
        assert not any(w.rings["storage"].flags & SetupFlag.SQPOLL for w in stack.workers)


def test_auto_is_off_on_small_machines() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    with open_stack(overrides={"sqpoll.mode": "auto", "core.cores": [cpus[0]], "sqpoll.min_cpus": len(cpus) + 1}) as st:
        verdict = next(v for v in st.plan.verdicts if v.plugin == "sqpoll")
        assert not verdict.enabled
        assert f"rule min_cpus: {len(cpus)} CPUs < {len(cpus) + 1}" in verdict.reason
        assert "no measurement" in verdict.reason and "BENCHMARKS" not in verdict.reason
        assert not st.workers[0].rings["storage"].flags & SetupFlag.SQPOLL


def test_auto_is_on_with_a_spare_cpu() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        import pytest

        pytest.skip("needs 2 CPUs to leave one spare for the poller")
    with open_stack(overrides={"sqpoll.mode": "auto", "core.cores": [cpus[0]], "sqpoll.min_cpus": 2}) as stack:
        ring = stack.workers[0].rings["storage"]
        assert ring.flags & SetupFlag.SQPOLL
        assert ring.params.sq_thread_cpu == cpus[1]


def test_sqpoll_ring_pinned_cpu_read_back_from_proc(tmp_path: pathlib.Path, poller_cpus: Callable[[Ring], str]) -> None:
    cpu = max(os.sched_getaffinity(0))
    first = min(os.sched_getaffinity(0))
    with open_stack(overrides={"sqpoll.mode": "on", "sqpoll.cpu": cpu, "core.cores": [first]}) as stack:
        ring = stack.workers[0].rings["storage"]
        assert ring.flags & SetupFlag.SQPOLL and ring.flags & SetupFlag.SQ_AFF
        info = ring.sq_thread()
        assert info is not None and info[1] == cpu  # the kernel's own fdinfo
        assert poller_cpus(ring) == str(cpu)  # the poller thread's affinity in /proc
        with stack.open(tmp_path / "s", create=True) as h:
            for i in range(200):
                h.write_from(b"x" * 512, i * 512)
            assert h.size() == 200 * 512


def _named_poller(ring: Ring, timeout_s: float = 10.0) -> tuple[int, int] | None:
    """``ring.sq_thread()`` once fdinfo names the poller: 5.10 and 6.1 print -1 for as
    long as a busy poller holds the ring's lock (its idle time after the last op)."""
    deadline = time.monotonic() + timeout_s
    while (info := ring.sq_thread()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return info


def test_rings_share_one_poller_with_attach_wq() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    with open_stack(overrides={"sqpoll.mode": "on", "sqpoll.share": True}) as stack:
        rings = [w.rings["storage"] for w in stack.workers]
        assert all(r.flags & SetupFlag.SQPOLL for r in rings)
        if len(cpus) > 1:
            assert rings[1].flags & SetupFlag.ATTACH_WQ
            assert rings[1].params.attach_to == f"core{cpus[0]}/storage"
        pollers = {_named_poller(r) for r in rings}
        assert len(pollers) == 1 and None not in pollers
        # The plan says where the shared poller runs, and only once: it showed each
        # attached ring's own "poller on cpu N", a CPU the kernel ignores for them
        poller = pollers.pop()
        assert poller is not None
        cpu = poller[1]
        planned = [r for w in stack.plan.workers for r in w.rings if r.role == "storage"]
        assert planned[0].sq_thread_cpu == cpu
        assert all(r.sq_thread_cpu is None and r.attach_to == planned[0].name for r in planned[1:])
        assert not any(r.flags & SetupFlag.SQ_AFF for r in rings[1:])


def test_rings_get_their_own_poller_without_share() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        import pytest

        pytest.skip("needs 2 CPUs for two workers")
    with open_stack(overrides={"sqpoll.mode": "on", "sqpoll.share": False}) as stack:
        rings = [w.rings["storage"] for w in stack.workers]
        assert not any(r.flags & SetupFlag.ATTACH_WQ for r in rings)
        assert len({r.sq_thread() for r in rings}) == len(rings)


def _enters_for_100_batches(path: pathlib.Path, overrides: dict[str, object]) -> int:
    """Submit 100 batches and find each completion by peeking only (never waiting)."""
    with open_stack(overrides={"core.cores": [0], **overrides}) as stack, stack.open(path) as h:
        ring = h.io.ring  # type: ignore[attr-defined]
        bufs = [bytearray(4096) for _ in range(32)]
        offs = [i * 4096 for i in range(32)]
        h.read_many(offs, bufs)  # the poller is awake after this
        start = ring.counters()["enters"]
        for _ in range(100):
            pending = h.start_read_many(offs, bufs)
            deadline = time.monotonic() + 10
            while not pending.done():  # done() peeks at the CQ without a syscall
                assert time.monotonic() < deadline, "completion never arrived"
            assert pending.wait() == [4096] * 32
        return int(ring.counters()["enters"] - start)


def test_sqpoll_submits_without_entering_the_kernel(tmp_path: pathlib.Path) -> None:
    """Counts io_uring_enter calls, not time.  A plain ring enters once per submit;
    with SQPOLL the kernel thread picks the SQEs up by itself (an enter only wakes it
    after idle_ms).  The <= 0.01 enters per I/O target under load is measured by
    `uringstack bench`, not here."""
    (tmp_path / "r").write_bytes(os.urandom(1 << 20))
    assert _enters_for_100_batches(tmp_path / "r", {"sqpoll.mode": "off"}) == 100
    assert _enters_for_100_batches(tmp_path / "r", {"sqpoll.mode": "on", "sqpoll.idle_ms": 10_000}) <= 2


def test_auto_with_min_spare_cpus_0_shares_the_workers_cpus() -> None:
    """min_spare_cpus = 0 allows SQPOLL with every CPU running a worker: the verdict
    says the poller shares a worker's CPU (it raised IndexError looking for a spare one)."""
    with open_stack(overrides={"sqpoll.mode": "auto", "sqpoll.min_cpus": 1, "sqpoll.min_spare_cpus": 0}) as stack:
        verdict = next(v for v in stack.plan.verdicts if v.plugin == "sqpoll")
        assert len(stack.caps.cpus.allowed) == len(stack.workers)
        assert verdict.enabled, verdict.reason
        # (one poller for every ring with share, the default: the kernel gives attached rings
        # the first ring's thread; the reason said each ring's poller shared its worker's CPU)
        assert f"one poller, on CPU {stack.workers[0].cpu} beside its worker, serves every ring" in verdict.reason
        ring = stack.workers[0].rings["storage"]
        assert ring.flags & SetupFlag.SQPOLL
        assert ring.params.sq_thread_cpu == stack.workers[0].cpu


def _waited_batches(path: pathlib.Path, overrides: dict[str, object], pause_s: float = 0.0) -> dict[str, int]:
    """Ring counters over 20 waited ``read_many`` batches (after a warm-up batch)."""
    with open_stack(overrides={"core.cores": [0], "sqpoll.mode": "on", **overrides}) as stack, stack.open(path) as h:
        ring = h.io.ring  # type: ignore[attr-defined]
        bufs = [bytearray(4096) for _ in range(32)]
        offs = [i * 4096 for i in range(32)]
        h.read_many(offs, bufs)
        before = ring.counters()
        for _ in range(20):
            if pause_s:
                time.sleep(pause_s)
            assert h.read_many(offs, bufs) == [4096] * 32
        after = ring.counters()
        return {k: after[k] - before[k] for k in ("enters", "spins")}


def test_spin_us_busy_polls_the_cq_instead_of_entering_the_kernel(tmp_path: pathlib.Path) -> None:
    """``spin_us``: a waiter peeks at the CQ that long before it sleeps in io_uring_enter.

    With SQPOLL the submit needs no syscall, so a waiter that spins long enough
    never enters the kernel; with ``spin_us = 0`` it never spins (it sleeps in
    the kernel unless the batch is already complete when it looks)."""
    (tmp_path / "r").write_bytes(os.urandom(1 << 20))
    spinning = _waited_batches(tmp_path / "r", {"sqpoll.spin_us": 1_000_000, "sqpoll.idle_ms": 10_000})
    assert spinning["spins"] > 0 and spinning["enters"] <= 2, spinning
    sleeping = _waited_batches(tmp_path / "r", {"sqpoll.spin_us": 0, "sqpoll.idle_ms": 10_000})
    assert sleeping["spins"] == 0, sleeping


def test_idle_ms_is_how_long_the_poller_stays_awake(tmp_path: pathlib.Path) -> None:
    """``idle_ms``: after that much idleness the poller sleeps, and the next submit
    must wake it with an io_uring_enter (IORING_SQ_NEED_WAKEUP); a poller with a
    longer idle time is still awake after the same pause.  The waits spin up to
    a second, so the only enters counted are the wake-ups."""
    (tmp_path / "r").write_bytes(os.urandom(1 << 20))
    waits_spin = {"sqpoll.spin_us": 1_000_000}
    awake = _waited_batches(tmp_path / "r", {**waits_spin, "sqpoll.idle_ms": 10_000}, pause_s=0.05)
    assert awake["enters"] <= 2, awake
    asleep = _waited_batches(tmp_path / "r", {**waits_spin, "sqpoll.idle_ms": 5}, pause_s=0.05)
    assert asleep["enters"] >= 15, asleep  # one wake-up per batch after each 50 ms pause


def test_a_kernel_whose_sqpoll_serves_only_registered_files_gets_no_sqpoll() -> None:
    """Before 5.11 (no IORING_FEAT_SQPOLL_NONFIXED) the poller serves only registered files:
    every op on another descriptor completes with -EBADF.  auto leaves SQPOLL off saying so,
    and on is a plan error naming it.  (Debian 11's 5.10 reports the feature: its io_uring
    is a backport of a later one.)"""
    import pytest

    from uringstack.config import load_config
    from uringstack.plan import make_plan
    from uringstack.pluginmanager import make_plugin_manager
    from uringstack.testing import make_fake_capabilities
    from uringstack.types import PlanError

    caps = make_fake_capabilities(cores=8)
    caps.uring.features.remove("SQPOLL_NONFIXED")
    pm = make_plugin_manager(autoload=True)

    def config(mode: str) -> object:
        overrides = {"sqpoll.mode": mode, "core.cores": [0], "sqpoll.min_cpus": 2}
        return load_config(None, env={}, overrides=overrides, plugin_manager=pm).config

    plan = make_plan(caps, config("auto"), pm)  # type: ignore[arg-type]
    verdict = next(v for v in plan.verdicts if v.plugin == "sqpoll")
    assert not verdict.enabled and "IORING_FEAT_SQPOLL_NONFIXED" in verdict.reason
    with pytest.raises(PlanError, match="SQPOLL_NONFIXED"):
        make_plan(caps, config("on"), pm)  # type: ignore[arg-type]
    caps.uring.features.append("SQPOLL_NONFIXED")  # the control: the same machine with the feature
    plan = make_plan(caps, config("auto"), make_plugin_manager(autoload=True))  # type: ignore[arg-type]
    assert next(v for v in plan.verdicts if v.plugin == "sqpoll").enabled


def test_the_spare_cpu_rule_counts_the_cpus_free_of_workers() -> None:
    """With one worker on a 2-CPU machine and min_spare_cpus = 2 the reason said "all 2
    CPUs run workers"."""
    cpus = sorted(os.sched_getaffinity(0))
    overrides = {
        "sqpoll.mode": "auto",
        "core.cores": [cpus[0]],
        "sqpoll.min_cpus": 1,
        "sqpoll.min_spare_cpus": len(cpus),
    }
    with open_stack(overrides=overrides) as stack:
        verdict = next(v for v in stack.plan.verdicts if v.plugin == "sqpoll")
    assert not verdict.enabled
    expect = f"{len(cpus) - 1} CPU(s) free of workers (1 of {len(cpus)} run one) < {len(cpus)}"
    assert expect in verdict.reason


def test_a_cpu_online_but_outside_the_allowed_set_is_a_plan_error_naming_the_allowed_cpus() -> None:
    """Under ``taskset -c 1`` with ``sqpoll.cpu = 0`` the plan said "poller on cpu 0", the
    kernel refused SQ_AFF (EINVAL: a CPU the process may not run on), the pinning was
    dropped with a note and the poller floated: only "online" was checked."""
    import pytest

    from uringstack.config import load_config
    from uringstack.plan import make_plan
    from uringstack.probe.model import CpuInfo
    from uringstack.testing import make_fake_capabilities
    from uringstack.types import PlanError

    caps = make_fake_capabilities(cpus=CpuInfo(online=[0, 1, 2, 3], allowed=[1, 2], numa_nodes={0: [0, 1, 2, 3]}))

    def plan(mode: str, cpu: int) -> object:
        loaded = load_config(None, env={}, overrides={"sqpoll.mode": mode, "sqpoll.cpu": cpu, "core.cores": [1]})
        return make_plan(caps, loaded.config, loaded.plugin_manager)

    for mode in ("on", "auto"):  # auto too: an explicit CPU is never silently dropped
        with pytest.raises(PlanError, match=r"sqpoll\.cpu = 0: CPU 0 is online but not among") as info:
            plan(mode, 0)
        assert "allowed CPUs: 1, 2" in str(info.value)
    plan("on", 2)  # allowed: pinned as asked
    plan("off", 0)  # off: the key is unused


TASKSET_CHILD = r"""
import json
import uringstack
try:
    with uringstack.open_stack(overrides={"sqpoll.mode": "on", "sqpoll.cpu": 0}) as stack:
        print(json.dumps({"opened": True}))
except uringstack.PlanError as e:
    print(json.dumps({"plan_error": str(e)}))
"""


def test_under_taskset_a_poller_cpu_outside_the_affinity_is_refused_by_the_plan() -> None:
    import json
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or cpus[0] != 0:
        skip_without("CPU 0 and another allowed CPU (taskset)")
    out = subprocess.run(
        ["taskset", "-c", str(cpus[1]), sys.executable, "-c", TASKSET_CHILD],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "plan_error" in report, report
    assert f"allowed CPUs: {cpus[1]}" in report["plan_error"], report
