"""A row on an SQPOLL ring is compared with fio's SQPOLL job too (``fio io_uring sqpoll``):
fio with ``--sqthread_poll=1``, its SQ thread pinned where the rung's plan pins the poller."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from uringstack.bench import fio as fio_mod
from uringstack.bench import runner
from uringstack.bench.fio import fio_args
from uringstack.bench.ladder import Rung, select
from uringstack.bench.metrics import ModeResult
from uringstack.bench.spec import BenchSpec
from uringstack.testing import make_fake_capabilities


def test_the_sqpoll_job_polls_on_registered_buffers_with_its_thread_pinned() -> None:
    spec = BenchSpec("randread", queue_depth=1, file="/x", cpus=[1])
    args = fio_args(spec, "io_uring sqpoll", 0)
    assert "--ioengine=io_uring" in args and "--cpus_allowed=1" in args
    assert {"--sqthread_poll=1", "--fixedbufs=1", "--sqthread_poll_cpu=0"} <= set(args)
    assert not any(a.startswith("--sqthread_poll_cpu") for a in fio_args(spec, "io_uring sqpoll"))  # unpinned
    plain = fio_args(spec, "io_uring", 0)
    assert not any(a.startswith(("--sqthread_poll", "--fixedbufs")) for a in plain)


def test_the_poller_cpu_is_the_one_the_rungs_plan_pins() -> None:
    caps = make_fake_capabilities(cores=[0, 1])
    on_1 = BenchSpec("randread", queue_depth=1, file=__file__, cpus=[1, 0])
    # the worker on CPU 1: the plan puts the poller on the spare CPU 0 (and on CPU 1 for a worker on 0)
    assert runner.planned_poller(on_1, select(["batched", "+sqpoll"]), caps) == runner.Poller("+sqpoll", 0)
    assert runner.planned_poller(BenchSpec("randread", file="/x", cpus=[0, 1]), select(["+sqpoll"]), caps) == (
        runner.Poller("+sqpoll", 1)
    )
    # two workers, no spare CPU: each poller shares its worker's CPU, the first ring's is on CPU 1
    two = BenchSpec("randread", file="/x", cpus=[1, 0], workers=2)
    assert runner.planned_poller(two, select(["+sqpoll"]), caps) == runner.Poller("+sqpoll", 1)
    # no SQPOLL row, or a kernel that refuses SQPOLL (the row fails and says why): no SQPOLL job
    assert runner.planned_poller(on_1, select(["batched", "+fixedbuf"]), caps) is None
    refused = make_fake_capabilities(cores=[0, 1], rejected_flags=["SQPOLL"])
    assert runner.planned_poller(on_1, select(["+sqpoll"]), refused) is None
    assert "io_uring sqpoll" not in runner.fio_engines(on_1, caps)
    assert "io_uring sqpoll" in runner.fio_engines(on_1, caps, runner.Poller("+sqpoll", 0))


def _res(mode: str, iops: float, p50: float, p99: float, kind: str, flags: list[str]) -> ModeResult:
    return ModeResult(
        mode=mode,
        kind=kind,
        api="fio" if kind == "fio" else "public",
        status="ok",
        ops=int(iops),
        bytes=int(iops) * 4096,
        seconds=1.0,
        iops=iops,
        lat_us={"p50": p50, "p99": p99, "p99_9": 2 * p99, "mean": p50},
        cpu_pct=100.0,
        details={} if kind == "fio" else {"ring_flags": flags},
    )


# per call of each row or fio job: (IOPS, p50, p99); fio's SQPOLL job bursts in the second call
SERIES = {
    "fio io_uring": [(100.0, 50.0, 100.0)] * 3,
    "fio libaio": [(100.0, 50.0, 100.0)] * 3,
    "fio io_uring sqpoll": [(200.0, 30.0, 60.0), (2000.0, 3.0, 6.0), (200.0, 30.0, 60.0)],
    "batched": [(90.0, 55.0, 110.0)] * 3,
    "+sqpoll": [(180.0, 33.0, 66.0), (180.0, 33.0, 66.0), (190.0, 36.0, 72.0)],
}


@pytest.mark.parametrize("rounds", [1, 3])
def test_a_row_on_an_sqpoll_ring_gets_its_ratios_to_fios_sqpoll_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rounds: int
) -> None:
    # a 2-CPU machine whatever this host has (the plan on 1 CPU is covered above): the
    # probe's capabilities and the worker CPUs are given, the rows and fio are stand-ins
    monkeypatch.setattr("uringstack.probe.probe", lambda *a, **k: make_fake_capabilities(cores=[0, 1]))
    calls: dict[str, list[int | None]] = {}

    def nth(mode: str) -> tuple[float, float, float]:
        return SERIES[mode][len(calls.setdefault(mode, [])) % 3]

    def fake_fio(path: str, spec: BenchSpec, engine: str, poll: Any = None, sqpoll_cpu: int | None = None) -> Any:
        mode = f"fio {engine}"
        res = _res(mode, *nth(mode), "fio", [])
        calls[mode].append(sqpoll_cpu)
        return res

    def fake_mode(spec: BenchSpec, rung: Rung, caps: Any = None, tick: Any = None, io: bool = True) -> ModeResult:
        flags = ["SQPOLL", "SQ_AFF"] if rung.name == "+sqpoll" else []
        res = _res(rung.name, *nth(rung.name), "uringstack", flags)
        calls[rung.name].append(None)
        return res

    monkeypatch.setattr(fio_mod, "fio_path", lambda: "fio")
    monkeypatch.setattr(fio_mod, "fio_version", lambda path: "fio-3.33")
    monkeypatch.setattr(fio_mod, "run_fio", fake_fio)
    monkeypatch.setattr(runner, "run_mode", fake_mode)
    f = tmp_path / "d.bin"
    spec = BenchSpec("randread", queue_depth=1, file=str(f), file_size=1 << 20, duration=0.3, direct=False, cpus=[1, 0])
    doc = runner.run_bench(spec, ["batched", "+sqpoll"], rounds=rounds)
    worker = doc["worker_cpus"]["cpus"][0]
    job = doc["fio"]["sqpoll_job"]
    # the poller is where the +sqpoll rung's plan puts it: a CPU without the worker
    assert job["rung"] == "+sqpoll" and job["sq_thread_cpu"] in (0, 1)
    assert job["sq_thread_cpu"] != worker
    assert calls["fio io_uring sqpoll"] == [job["sq_thread_cpu"]] * rounds  # every slice pinned alike
    rows = {r["mode"]: r for r in doc["results"]}
    assert "fio io_uring sqpoll" in rows and rows["fio io_uring sqpoll"]["bytes_check"] == "ok"
    vs = rows["+sqpoll"]["details"]["vs_fio_sqpoll"]
    assert "vs_fio_sqpoll" not in rows["batched"]["details"]
    assert vs["reference"] == "fio io_uring sqpoll"
    # its ratio to plain fio stays in ratio_to_fio
    assert rows["+sqpoll"]["ratio_to_fio"]["p50"] == pytest.approx(0.66, rel=1e-3)
    if rounds == 1:
        assert vs["p50"] == pytest.approx(33.0 / 30.0, rel=1e-3) and vs["iops"] == pytest.approx(0.9, rel=1e-3)
    else:
        # the medians of the per-round pairs (fio's burst in round 1 is one pair of three), not the totals'
        p50s = [33 / 30, 33 / 3, 36 / 30]
        assert vs["ratio_rounds"]["p50"] == pytest.approx(p50s, rel=1e-3)
        assert vs["p50"] == pytest.approx(statistics.median(p50s), rel=1e-3)
        assert vs["p99"] == pytest.approx(72 / 60, rel=1e-3)
    # without an SQPOLL row, no SQPOLL job runs
    calls.clear()
    doc = runner.run_bench(spec, ["batched"], rounds=rounds)
    assert doc["fio"]["sqpoll_job"] is None and "fio io_uring sqpoll" not in calls


def test_the_sqpoll_jobs_cpu_counts_fios_sq_thread(tmp_path: Path) -> None:
    # fio reports its job thread's CPU only (RUSAGE_THREAD): a stand-in "fio" whose report says
    # 1 % while a thread of its own (as the SQ thread is) burns 0.3 s of CPU
    report = json.loads((Path(__file__).parent / "data" / "fio-randread-io_uring.json").read_text())
    report["jobs"][0].update(usr_cpu=1.0, sys_cpu=0.0)
    doc = tmp_path / "report.json"
    doc.write_text(json.dumps(report))
    fake = tmp_path / "fio"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import threading, time\n"
        "def spin():\n"
        "    end = time.thread_time() + 0.3\n"
        "    while time.thread_time() < end: pass\n"
        "t = threading.Thread(target=spin); t.start(); t.join()\n"
        f"print(open({str(doc)!r}).read())\n"
    )
    fake.chmod(0o755)
    spec = BenchSpec("randread", file="/x", cpus=[0])
    plain = fio_mod.run_fio(str(fake), spec, "io_uring")
    assert plain.status == "ok" and plain.cpu_pct == pytest.approx(1.0)  # fio's own figure
    t0 = time.monotonic()
    polled = fio_mod.run_fio(str(fake), spec, "io_uring sqpoll", sqpoll_cpu=0)
    wall = time.monotonic() - t0
    assert polled.details["fio_cpu_pct"] == pytest.approx(1.0) and "--sqthread_poll_cpu=0" in polled.details["command"]
    # the whole child's CPU (the spinning thread's 0.3 s at least) over its wall time
    assert polled.cpu_pct >= 100.0 * 0.3 / wall > 1.0
