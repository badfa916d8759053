"""Parsers and small pieces of the benchmark: fio JSON, strace -c, the spec, the ladder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uringstack.bench.fio import fio_args, parse_fio
from uringstack.bench.ladder import LADDER, select
from uringstack.bench.spec import BenchSpec, offset_list
from uringstack.bench.syscalls import parse_strace_total

DATA = Path(__file__).parent / "data"


def test_parse_captured_fio_randread() -> None:
    doc = json.loads((DATA / "fio-randread-io_uring.json").read_text())
    spec = BenchSpec("randread", queue_depth=32)
    row = parse_fio(doc, spec, "fio io_uring")
    job = doc["jobs"][0]["read"]
    assert row.status == "ok" and row.kind == "fio"
    assert row.ops == job["total_ios"] and row.iops == pytest.approx(job["iops"])
    assert row.mb_s == pytest.approx(job["bw_bytes"] / 1e6)
    assert row.lat_us["p50"] == pytest.approx(job["lat_ns"]["percentile"]["50.000000"] / 1000)
    assert row.lat_us["p50"] <= row.lat_us["p99"] <= row.lat_us["p99_9"]
    assert row.cpu_pct == pytest.approx(doc["jobs"][0]["usr_cpu"] + doc["jobs"][0]["sys_cpu"])
    assert row.seconds == pytest.approx(job["runtime"] / 1000)


def test_parse_fio_without_jobs_fails() -> None:
    with pytest.raises(ValueError):
        parse_fio({"jobs": []}, BenchSpec("randread"), "fio io_uring")


def test_fio_args_mirror_the_spec() -> None:
    spec = BenchSpec(
        "durable-append",
        block_size=8192,
        queue_depth=1,
        workers=2,
        file_size=1 << 24,
        duration=2.0,
        file="/x/f",
        durability="fdatasync",
    )
    args = fio_args(spec, "io_uring")
    for want in (
        "--rw=write",
        "--bs=8192",
        "--iodepth=1",
        "--ioengine=io_uring",
        "--direct=1",
        "--numjobs=2",
        "--runtime=2000ms",
        "--fdatasync=1",
        "--filename=/x/f",
        f"--size={1 << 23}",
        f"--offset_increment={1 << 23}",
    ):
        assert want in args
    assert "--sync=dsync" in fio_args(BenchSpec("durable-append"), "io_uring")


STRACE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 61.20    0.145621           4     33012           io_uring_enter
  9.10    0.021650          10      2010       120 openat
------ ----------- ----------- --------- --------- ----------------
100.00    0.237960           6     39876       512 total
"""


def test_parse_strace_total() -> None:
    assert parse_strace_total(STRACE) == 39876
    assert parse_strace_total(STRACE.replace("       512 total", " total")) == 39876
    with pytest.raises(ValueError):
        parse_strace_total("nothing here")


def test_offsets_are_aligned_and_inside_the_region() -> None:
    spec = BenchSpec("randread", block_size=4096, file_size=1 << 20)
    offs = offset_list(spec, 0, 1000)
    assert len(offs) == 1000 and all(o % 4096 == 0 and 0 <= o < 1 << 20 for o in offs)
    assert len(set(offs)) > 100  # random, not constant
    seq = BenchSpec("seqwrite", block_size=4096, file_size=1 << 20, workers=2)
    w1 = offset_list(seq, 1, 0)
    assert w1[0] == 1 << 19 and w1 == sorted(w1) and w1[-1] == (1 << 20) - 4096


def test_spec_validation_and_batch() -> None:
    assert BenchSpec("randread", queue_depth=32).batch_size == 4
    assert BenchSpec("randread", queue_depth=2, batch=16).batch_size == 2
    with pytest.raises(ValueError, match="block size"):
        BenchSpec("randread", block_size=1000).validate()
    spec = BenchSpec("randread", duration=3.0, file="f")
    assert BenchSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_ladder_order_and_selection() -> None:
    names = [r.name for r in LADDER]
    assert names[:5] == ["fallback", "uring-single", "batched", "+fixedbuf", "+sqpoll"]
    assert names[-1] == "raw ring (not public API)"
    assert [r.name for r in select(["+sqpoll", "fallback"])] == ["fallback", "+sqpoll"]
    with pytest.raises(ValueError, match="unknown"):
        select(["nope"])
    assert all(r.requires for r in LADDER if r.name in ("+iopoll", "+passthrough"))


def test_workers_and_cpus_the_process_cannot_have_are_refused() -> None:
    """``-w 3`` on 2 CPUs ran 2 workers and reported 3 (and fio ran 3 jobs); ``--cpus 99``
    failed every row after starting (session 31)."""
    import os

    from uringstack.bench.spec import BenchSpec

    n = len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=rf"--workers {n + 1} needs as many CPUs, one per worker: {n} available"):
        BenchSpec("randread", workers=n + 1).validate()
    first = min(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=r"--workers 2 needs as many CPUs, one per worker: 1 available"):
        BenchSpec("randread", workers=2, cpus=[first]).validate()
    with pytest.raises(ValueError, match=r"--cpus: CPUs \[4096\] are not available to this process"):
        BenchSpec("randread", cpus=[4096]).validate()
    BenchSpec("randread", workers=1, cpus=[first]).validate()


def test_a_cpu_list_that_does_not_parse_is_a_usage_error() -> None:
    from click.testing import CliRunner

    from uringstack.cli import cli

    result = CliRunner().invoke(cli, ["bench", "randread", "--cpus", "abc", "--no-fio", "-t", "0.05"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for --cpus: 'abc' is not a CPU list" in result.output
