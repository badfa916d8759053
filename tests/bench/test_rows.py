"""The rows measure what their names say: the public API, the other tools, the raw ring."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.streamed_rows import check_streamed_row, record_starts
from uringstack.bench import runner
from uringstack.bench.fio import fio_args
from uringstack.bench.ladder import LADDER, RAW_RING, RUNGS, select, stream_ops
from uringstack.bench.metrics import ModeResult
from uringstack.bench.spec import BenchSpec
from uringstack.probe.blockdev import device_size
from uringstack.stack.handle import FileHandle
from uringstack.stack.prepared import PreparedIO


def _spec(tmp_path: Path, **kw: Any) -> BenchSpec:
    f = tmp_path / "d.bin"
    runner.prepare_file(str(f), 4 << 20)
    base: dict[str, Any] = dict(file_size=4 << 20, duration=0.3, queue_depth=8, direct=False, file=str(f))
    base.update(kw)
    return BenchSpec("randread", **base)


def test_every_row_but_the_raw_ring_is_public_api_or_another_tool() -> None:
    apis = {r.name: r.api for r in LADDER}
    assert apis[RAW_RING] == "raw" and RAW_RING == "raw ring (not public API)"
    assert apis["threadpool preadv"] == apis["aiofiles"] == "tool"
    assert {n for n, a in apis.items() if a == "public"} == {
        "fallback", "uring-single", "batched", "+fixedbuf", "+sqpoll", "streamed", "streamed +fixedbuf",
        "+iopoll", "+passthrough", "streamed +iopoll", "streamed +passthrough", "asyncio read", "asyncio batch",
    }  # fmt: skip
    assert select(["raw"]) == [RUNGS[RAW_RING]]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("mode", "cls", "method"),
    [
        ("batched", PreparedIO, "start"),  # the prepared form of start_read_many
        ("+fixedbuf", PreparedIO, "start"),
        ("uring-single", FileHandle, "start_read_many"),
        ("fallback", FileHandle, "start_read_many"),
    ],
)
def test_handle_rows_go_through_the_file_handle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, cls: type, method: str
) -> None:
    calls = [0]
    real = getattr(cls, method)

    def counting(self: Any, *a: Any, **kw: Any) -> Any:
        calls[0] += 1
        return real(self, *a, **kw)

    monkeypatch.setattr(cls, method, counting)
    spec = _spec(tmp_path, batch=2)
    row = runner.run_mode(spec, RUNGS[mode])
    assert row.status == "ok", row.reason
    per = 1 if mode in ("fallback", "uring-single") else 2
    # every measured op went through FileHandle (warm-up ops too, so at least as many)
    assert calls[0] * per >= row.ops > 0
    assert row.bytes == row.ops * spec.block_size
    if mode == "+fixedbuf":
        assert row.details["registered_buffers"] >= spec.queue_depth
    if mode == "fallback":
        assert row.details["backend"] == "fallback"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["streamed", "streamed +fixedbuf"])
def test_streamed_rows_start_batches_larger_than_the_rings_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A streamed row runs on rings whose max_in_flight is the queue depth and starts
    batches of stream_ops(QD) / 2 ops through PreparedIO; it reports what it moved and no
    latency (a batch's time is not its ops')."""
    seen = record_starts(monkeypatch)
    spec = _spec(tmp_path)
    row = runner.run_mode(spec, RUNGS[mode])
    check_streamed_row(row, spec, seen, "uring")
    if mode == "streamed +fixedbuf":
        assert row.details["registered_buffers"] >= stream_ops(spec.queue_depth)


@pytest.mark.timeout(60)
def test_run_when_one_batch_fills_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [0]
    real = PreparedIO.run

    def counting(self: PreparedIO, *a: Any, **kw: Any) -> Any:
        calls[0] += 1
        return real(self, *a, **kw)

    monkeypatch.setattr(PreparedIO, "run", counting)
    row = runner.run_mode(_spec(tmp_path, queue_depth=1), RUNGS["batched"])
    assert row.status == "ok" and calls[0] >= row.ops > 0
    assert row.enters_per_io == pytest.approx(1.0, abs=0.01)  # submit and wait in one io_uring_enter


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["asyncio read", "asyncio batch", "threadpool preadv", "aiofiles"])
def test_asyncio_and_tool_rows(tmp_path: Path, mode: str) -> None:
    if mode == "aiofiles":
        pytest.importorskip("aiofiles", reason="aiofiles is not installed (pip install 'uringstack[bench]')")
    # 1 s, not 0.3: on a loaded host (load 10 on 2 CPUs) an event loop's first completion
    # came after a 0.33 s window had closed ("no op completed inside the measured window")
    spec = _spec(tmp_path, duration=1.0)
    row = runner.run_mode(spec, RUNGS[mode])
    assert row.status == "ok", row.reason
    assert row.seconds == pytest.approx(spec.duration, rel=0.1)
    assert row.bytes_check(spec.block_size) == "ok" and row.ops > 0


def test_bytes_check_flags_a_row_that_moved_the_wrong_amount() -> None:
    row = ModeResult(mode="x", kind="uringstack", status="ok", ops=1000, bytes=1000 * 4096)
    assert row.bytes_check(4096) == "ok"
    row.bytes = 1000 * 4000
    assert "suspect" in row.bytes_check(4096)
    row.bytes = 0
    assert "suspect" in row.bytes_check(4096)


def test_fio_keeps_the_hot_cache_of_a_buffered_run() -> None:
    assert "--invalidate=0" in fio_args(BenchSpec("randread", direct=False, file="/x"), "io_uring")
    assert "--invalidate=0" not in fio_args(BenchSpec("randread", direct=True, file="/x"), "io_uring")
    hipri = fio_args(BenchSpec("randread", file="/x"), "io_uring hipri")
    assert "--ioengine=io_uring" in hipri and "--hipri=1" in hipri


def test_warm_file_reads_it_all(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    runner.prepare_file(str(f), 1 << 20)
    assert runner.warm_file(str(f), 1 << 20) >= 0
    assert runner.prepare_file(str(f), 1 << 20) is False


def test_block_device_targets_refuse_writes(loop_device: tuple[str, Path]) -> None:
    dev, _ = loop_device
    for workload in ("randwrite", "seqwrite", "durable-append"):
        with pytest.raises(ValueError, match="block device: only read workloads"):
            runner.check_target(BenchSpec(workload, file=dev))  # type: ignore[arg-type]


def test_block_device_targets_are_read_only(loop_device: tuple[str, Path]) -> None:
    dev, backing = loop_device
    before = backing.read_bytes()
    spec = runner.check_target(BenchSpec("randread", file=dev, file_size=1 << 50))
    assert spec.file_size == device_size(dev) == len(before)
    assert runner.prepare_file(dev, spec.file_size) is False  # never written
    assert runner.device_of(dev)["block"] == os.path.basename(dev)
    assert backing.read_bytes() == before


@pytest.mark.timeout(120)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="scaling to 2 workers needs 2 CPUs")
def test_scale_workers_adds_a_row_pair_and_its_ratio(tmp_path: Path) -> None:
    spec = _spec(tmp_path, duration=0.2)
    doc = runner.run_bench(spec, ["batched"], with_fio=shutil.which("fio") is not None, scale_workers=2)
    rows = {r["mode"]: r for r in doc["results"]}
    one, two = rows["batched"], rows["batched x2"]
    assert one["status"] == two["status"] == "ok", (one["reason"], two["reason"])
    assert len(two["details"]["workers"]) == 2 and two["details"]["scaled_from"] == "batched"
    ratio = doc["summary"]["scaling"]["ratios"]["batched"]
    # the JSON rounds ratios to 4 decimals: allow that beside the relative error
    assert ratio == pytest.approx(two["iops"] / one["iops"], rel=1e-3, abs=5e-5)
    if "fio io_uring x2" in rows:
        assert rows["fio io_uring x2"]["ratio_to_fio"]["iops"] == 1.0
        assert two["ratio_to_fio"]["iops"] == pytest.approx(
            two["iops"] / rows["fio io_uring x2"]["iops"], rel=1e-3, abs=5e-5
        )


def test_a_character_device_target_is_refused_before_anything_writes_it() -> None:
    # prepare_file would have "created" the bench file by writing 1 GiB into it: on an
    # NVMe /dev/ngXnY that overwrites the namespace
    with pytest.raises(ValueError, match="/dev/null is a character device: benchmark the block device"):
        runner.check_target(BenchSpec("randread", file="/dev/null"))


def test_an_nvme_namespace_gets_fio_io_uring_cmd_on_its_char_device(
    loop_device: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from uringstack.bench import fio as fio_mod
    from uringstack.probe.model import BlockDevice
    from uringstack.testing import make_fake_capabilities

    dev, _ = loop_device
    ns = BlockDevice(name=os.path.basename(dev), path=dev, nvme=True, generic_char="/dev/ng7n1",
                     generic_char_accessible=True, nsid=1)  # fmt: skip
    caps = make_fake_capabilities(devices=[ns])
    spec = BenchSpec("randread", file=dev)
    assert runner.fio_engines(spec, caps)[-1] == "io_uring_cmd"
    assert "io_uring_cmd" not in runner.fio_engines(spec, make_fake_capabilities())  # not an NVMe namespace
    assert "io_uring_cmd" not in runner.fio_engines(BenchSpec("randread", file=dev, direct=False), caps)
    jobs: dict[str, str] = {}

    def fake_fio(path: str, job: BenchSpec, engine: str, poll: Any = None) -> ModeResult:
        jobs[engine] = job.file
        return ModeResult(mode=f"fio {engine}", kind="fio", status="ok")

    monkeypatch.setattr(fio_mod, "run_fio", fake_fio)
    rows = runner._run_fio(spec, "fio", None, None, caps=caps)
    assert jobs["io_uring_cmd"] == "/dev/ng7n1" and jobs["io_uring"] == dev
    assert [r.mode for r in rows][-1] == "fio io_uring_cmd"
    args = fio_args(BenchSpec("randread", file="/dev/ng7n1"), "io_uring_cmd")
    assert "--ioengine=io_uring_cmd" in args and "--cmd_type=nvme" in args and "--readonly" in args
    assert not any(a.startswith("--direct") for a in args)  # a char device refuses O_DIRECT opens
    assert "--direct=1" in fio_args(BenchSpec("randread", file="/x"), "io_uring")


def test_a_failed_fio_job_is_reported_by_its_error_not_its_json(tmp_path: Path) -> None:
    """With --output-format=json fio prints a job's error to stdout, then the JSON document:
    the row's reason was the document's last two lines, "] }" (session 32)."""
    from uringstack.bench.fio import run_fio

    fake = tmp_path / "fio"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'fio: pid=42, err=1/file:engines/io_uring.c:1100, func=io_uring_queue_init, "
        "error=Operation not permitted'\n"
        "printf '{\\n  \"jobs\" : [\\n  ]\\n}\\n'\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    row = run_fio(str(fake), BenchSpec("randread", file=str(tmp_path / "d")), "io_uring")
    assert row.status == "failed"
    assert row.reason.startswith("fio: pid=42, err=1/file:engines/io_uring.c:1100"), row.reason
    assert "error=Operation not permitted" in row.reason
