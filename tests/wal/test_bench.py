from __future__ import annotations

import pathlib
import shutil

import pytest
from click.testing import CliRunner

from uringstack.bench.wal_cmd import wal_bench_command
from uringstack.wal.bench import _fio_pattern, run_wal_bench
from uringstack.wal.config import WalConfig


def test_run_wal_bench_measures_all_rows(tmp_path: pathlib.Path) -> None:
    r = run_wal_bench(tmp_path, appenders=4, record_size=256, duration_s=1.0, backend="fallback",
                      rounds=2, fio_file_bytes=8 << 20)  # fmt: skip
    for row in ("wal", "naive"):
        assert r[row]["records"] > 0
        assert 0 < r[row]["p50_us"] <= r[row]["p99_us"] <= r[row]["p999_us"]
    assert r["wal"]["backend"] == "fallback" and r["wal"]["records_per_flush"] >= 1
    assert r["ratios"]["records_per_s_vs_naive"] > 0
    if shutil.which("fio"):
        assert r["fio"]["records_per_s"] > 0 and r["ratios"]["p99_vs_fio"] > 0
        # submit-to-completion percentiles (what an append's latency includes), never below clat's
        assert r["fio"]["percentiles_of"] == "lat" and r["fio"]["p50_us"] >= r["fio"]["clat_p50_us"]
        # the reference writes like the log: pwrite (the fallback), O_DSYNC (the default sync), its O_DIRECT
        opts = r["fio"]["command"].split()
        assert {"--ioengine=psync", "--sync=dsync", f"--direct={int(r['wal']['direct_io'])}"} <= set(opts)
    else:
        assert "skipped" in r["fio"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # cleaned up


def test_run_wal_bench_asyncio_row(tmp_path: pathlib.Path) -> None:
    r = run_wal_bench(tmp_path, appenders=8, record_size=64, duration_s=1.0, backend="fallback",
                      rounds=2, fio_file_bytes=8 << 20, use_asyncio=True)  # fmt: skip
    aio = r["wal_asyncio"]
    assert aio["records"] > 0 and 0 < aio["p50_us"] <= aio["p99_us"]
    assert aio["records_per_flush"] >= 1
    assert 0 < aio["write_us_per_flush"] <= aio["cycle_us_per_flush"]
    assert 0 < aio["enqueue_p50_us"] <= aio["enqueue_p99_us"] < aio["p99_us"]  # the call only, not the wait
    assert r["ratios"]["asyncio_records_per_s_vs_naive"] > 0
    assert all("wal_asyncio" in rnd and "wal" in rnd for rnd in r["rounds"])


def test_bench_command_prints_table(tmp_path: pathlib.Path) -> None:
    res = CliRunner().invoke(
        wal_bench_command,
        ["--appenders", "2", "--record-size", "100", "--duration", "0.5", "--rounds", "1",
         "--backend", "posix", "--dir", str(tmp_path), "--asyncio"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert all(w in res.output for w in ("uringstack", "WAL threads", "WAL asyncio", "naive", "fio", "enqueue p99"))
    assert "flush / write us" in res.output  # each WAL row's flush cycle and the durable write in it


def test_a_missing_dir_is_refused_not_made(tmp_path: pathlib.Path) -> None:
    """As ``bench fileobj --dir``: until session 32 a mistyped ``--dir`` was made, parents
    and all, and left behind."""
    missing = tmp_path / "typo" / "dir"
    res = CliRunner().invoke(wal_bench_command, ["--duration", "0.5", "--dir", str(missing)])
    assert res.exit_code == 2, res.output
    assert "--dir" in res.output and "does not exist" in res.output, res.output
    with pytest.raises(FileNotFoundError, match="no such directory"):
        run_wal_bench(missing, appenders=1, record_size=64, duration_s=0.5, backend="fallback")
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    ("backend", "sync", "direct", "want"),
    [
        ("uring", "dsync", True, ["--ioengine=io_uring", "--sync=dsync", "--direct=1"]),
        ("uring", "fdatasync", True, ["--ioengine=io_uring", "--fdatasync=1", "--direct=1"]),
        ("fallback", "fdatasync", False, ["--ioengine=psync", "--fdatasync=1", "--direct=0"]),
    ],
)
def test_fio_reference_uses_the_logs_write_pattern(backend: str, sync: str, direct: bool, want: list[str]) -> None:
    assert _fio_pattern(backend, sync, direct) == want


def test_bench_wal_json_names_its_run_for_benchmarks_md(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench wal --json` carries what the generator places a run by: workload, date, command, machine."""
    import json

    from uringstack.bench import wal_cmd

    measured = {"params": {"appenders": 1}, "wal": {"backend": "fallback", "direct_io": True}, "ratios": {}}
    monkeypatch.setattr(wal_cmd, "run_wal_bench", lambda *a, **k: measured)
    r = CliRunner().invoke(wal_bench_command, ["--dir", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["workload"] == "wal" and doc["schema"] == "uringstack.bench-wal/1"
    assert doc["started_at"][:2] == "20" and doc["command"].startswith("uringstack")
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["kernel"]
    assert doc["params"] == measured["params"] and doc["wal"] == measured["wal"]


def test_block_bytes_per_write_is_the_mean_flush_to_the_nearest_block() -> None:
    from uringstack.wal.bench import _block_bytes_per_write

    assert _block_bytes_per_write(3 * 8192, 3) == 8192  # a 4 KiB record: header + payload span two blocks
    assert _block_bytes_per_write(4160, 1) == 4096  # small records crossing a block boundary now and then
    assert _block_bytes_per_write(2 * 4096 + 3 * 8192, 5) == 8192  # mostly 8 KiB writes
    assert _block_bytes_per_write(4096 * 5, 5) == 4096
    assert _block_bytes_per_write(0, 0) == 4096


def test_fio_reference_at_the_logs_bytes_per_write(tmp_path: pathlib.Path) -> None:
    """A 4 KiB record is an 8 KiB flush: a second fio row writes 8 KiB, separating the format's cost."""
    r = run_wal_bench(tmp_path, appenders=1, record_size=4096, duration_s=1.0, backend="fallback",
                      rounds=1, fio_file_bytes=8 << 20)  # fmt: skip
    assert r["wal"]["bytes_per_flush"] >= 8192  # 16-byte header + 4 KiB payload, behind the kept tail
    # a flush cycle and the durable write inside it
    assert 0 < r["wal"]["write_us_per_flush"] <= r["wal"]["cycle_us_per_flush"]
    same = r["fio_wal_bytes"]
    if shutil.which("fio") is None:
        assert "skipped" in same
        return
    assert same["bs"] == 8192 and "--bs=8k" in same["command"].split(), same
    assert r["fio"]["bs"] == 4096 and "--bs=4k" in r["fio"]["command"].split()
    assert same["pattern"] == r["fio"]["pattern"] and same["records_per_s"] > 0
    for k in ("fio_wal_bytes_p99_vs_fio", "p99_vs_fio_wal_bytes", "p50_vs_fio_wal_bytes"):
        assert r["ratios"][k] > 0, k


def test_no_second_fio_row_when_the_log_writes_4k(tmp_path: pathlib.Path) -> None:
    r = run_wal_bench(tmp_path, appenders=1, record_size=64, duration_s=0.5, backend="fallback",
                      rounds=1, fio_file_bytes=8 << 20)  # fmt: skip
    assert r["wal"]["bytes_per_flush"] < 4096 * 1.5
    assert "skipped" in r["fio_wal_bytes"] and "fio_wal_bytes_p99_vs_fio" not in r["ratios"]


def test_run_wal_bench_leaves_what_was_in_its_directory(tmp_path: pathlib.Path) -> None:
    """``bench wal --dir`` works in a directory of its own inside: it took the names ``bench-wal``,
    ``fio.dat`` and ``naive.log`` in the directory itself, overwrote and then removed them."""
    (tmp_path / "bench-wal").mkdir()
    (tmp_path / "bench-wal" / "mine").write_bytes(b"keep")
    for name in ("fio.dat", "naive.log"):
        (tmp_path / name).write_bytes(b"mine: " + name.encode())
    r = run_wal_bench(tmp_path, appenders=1, record_size=64, duration_s=0.6, backend="fallback",
                      rounds=1, fio_file_bytes=1 << 20)  # fmt: skip
    assert r["params"]["directory"] == str(tmp_path)
    assert (tmp_path / "bench-wal" / "mine").read_bytes() == b"keep"
    for name in ("fio.dat", "naive.log"):
        assert (tmp_path / name).read_bytes() == b"mine: " + name.encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-wal", "fio.dat", "naive.log"]


def test_bench_async_flush_reaches_the_log_and_its_json(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench wal --async-flush loop` measures the opt-in: the log it opens has it, the JSON says so."""
    import json

    from uringstack.bench import wal_cmd

    seen: list[str] = []

    def fake(*args: object, **kw: object) -> dict[str, object]:
        cfg = args[5] if len(args) > 5 else kw.get("config")
        assert isinstance(cfg, WalConfig)
        seen.append(cfg.async_flush)
        return {"params": {"async_flush": cfg.async_flush}, "wal": {}, "ratios": {}}

    monkeypatch.setattr(wal_cmd, "run_wal_bench", fake)
    for mode in ("thread", "loop"):
        r = CliRunner().invoke(wal_bench_command, ["--dir", str(tmp_path), "--json", "--async-flush", mode])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["params"]["async_flush"] == mode
    assert seen == ["thread", "loop"]
    loop_cfg = WalConfig(async_flush="loop")
    r = run_wal_bench(tmp_path, appenders=4, record_size=64, duration_s=0.5, backend="fallback",
                      config=loop_cfg, rounds=1, use_asyncio=True, fio_file_bytes=8 << 20)  # fmt: skip
    assert r["params"]["async_flush"] == "loop" and r["wal_asyncio"]["records_per_s"] > 0
