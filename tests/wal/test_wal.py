from __future__ import annotations

import asyncio
import itertools
import os
import pathlib
import threading
import time
from typing import Any

import pytest

from uringstack.stack.handle import FileHandle
from uringstack.wal import RecoveryMode, Wal, WalClosedError, WalConfig
from uringstack.wal.segment import list_segments


def test_append_read_reopen(wal_dir: pathlib.Path, backend_name: str, small_config: WalConfig) -> None:
    with Wal.open(wal_dir, small_config, backend=backend_name) as wal:
        assert wal.backend == backend_name
        lsns = [wal.append(f"rec{i}".encode() * (i % 50)) for i in range(300)]
        assert lsns == list(range(1, 301))
        assert wal.durable_lsn == 300
        assert list(wal.read_from(299)) == [(299, b"rec298" * 48), (300, b"rec299" * 49)]
    with Wal.open(wal_dir, small_config, backend=backend_name) as wal:
        got = list(wal.read_from(1))
        assert [lsn for lsn, _ in got] == list(range(1, 301))
        assert all(p == f"rec{i}".encode() * (i % 50) for i, (_, p) in enumerate(got))
        assert wal.append(b"after reopen") == 301
    with Wal.open(wal_dir, small_config, backend=backend_name) as wal:
        assert list(wal.read_from(301)) == [(301, b"after reopen")]


def test_segment_rollover_and_truncate_before(
    wal_dir: pathlib.Path, backend_name: str, small_config: WalConfig
) -> None:
    payload = os.urandom(1000)
    with Wal.open(wal_dir, small_config, backend=backend_name) as wal:
        for _ in range(400):  # ~400 KB through 64 KiB segments
            wal.append(payload)
        segs = wal.segments()
        assert len(segs) >= 6
        # segments are contiguous and named by their first LSN
        for (_f1, l1, _), (f2, _, p2) in itertools.pairwise(segs):
            assert f2 == l1 + 1
            assert p2.name == f"{f2:020d}.wal"
        cut = segs[3][0] + 1  # a checkpoint inside the 4th segment
        removed = wal.truncate_before(cut)
        assert removed == 3
        assert [p for _, p in list_segments(wal_dir)] == [p for _, _, p in wal.segments()]
        got = list(wal.read_from(1))
        assert got[0][0] == segs[3][0] and got[-1][0] == 400
        live = len(wal.segments())
        assert wal.truncate_before(10**9) == live - 1
        assert len(wal.segments()) == 1  # the active segment always stays
    with Wal.open(wal_dir, small_config, backend=backend_name) as wal:
        assert wal.next_lsn == 401
        assert all(p == payload for _, p in wal.read_from(1))


def test_read_from_is_a_snapshot_that_a_checkpoint_does_not_cut(wal_dir: pathlib.Path, small_config: WalConfig) -> None:
    """``read_from`` is documented as a snapshot: a ``truncate_before`` (a checkpoint,
    perhaps in another thread) after the call must not break an iteration begun before it,
    nor one not yet begun (it raised a bare FileNotFoundError at the first removed file)."""
    payloads = [os.urandom(1000) for _ in range(300)]
    with Wal.open(wal_dir, small_config, backend="fallback") as wal:
        for p in payloads:
            wal.append(p)
        started, unstarted = wal.read_from(1), wal.read_from(2)
        assert next(started) == (1, payloads[0])
        assert wal.truncate_before(200) >= 3
        assert list(started) == list(enumerate(payloads, start=1))[1:]
        assert list(unstarted) == list(enumerate(payloads, start=1))[1:]
        assert next(wal.read_from(1))[0] > 1  # a new snapshot sees the checkpoint
        fds = len(os.listdir("/proc/self/fd"))
        dropped = wal.read_from(1)  # holds its segments' files until it is finished or dropped
        assert len(os.listdir("/proc/self/fd")) > fds
        del dropped
        assert len(os.listdir("/proc/self/fd")) == fds


def test_group_commit_groups(wal_dir: pathlib.Path, backend_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends made while a flush is in flight go out together in the next one.

    Each flush is held 10 ms, so that the other threads' appends meet it however the
    machine schedules them: with bare flushes the count depended on the load (603 flushes
    for 1,600 records once, with two busy VMs beside the run)."""
    real_bind = FileHandle.bind_write_durable

    def slow_bind(self: FileHandle, *args: Any, **kwargs: Any) -> Any:
        write = real_bind(self, *args, **kwargs)

        def held(buf: Any, offset: int) -> int:
            time.sleep(0.01)
            return write(buf, offset)

        return held

    monkeypatch.setattr(FileHandle, "bind_write_durable", slow_bind)
    cfg = WalConfig(segment_size_bytes=1 << 20, max_batch_bytes=64 * 1024, sync="fdatasync")
    threads, per_thread = 16, 100
    with Wal.open(wal_dir, cfg, backend=backend_name) as wal:
        results: list[list[int]] = [[] for _ in range(threads)]

        def work(i: int) -> None:
            for k in range(per_thread):
                results[i].append(wal.append(f"{i}:{k}".encode()))

        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        c = wal.counters()
        total = threads * per_thread
        assert sorted(lsn for r in results for lsn in r) == list(range(1, total + 1))
        # each thread's own appends are ordered
        assert all(r == sorted(r) for r in results)
        assert c["flushes"] < total / 4, c
        records = dict(wal.read_from(1))
        for i, r in enumerate(results):
            assert [records[lsn] for lsn in r] == [f"{i}:{k}".encode() for k in range(per_thread)]


def _flushes_for_a_paced_stream(wal_dir: pathlib.Path, max_delay_us: int) -> int:
    """20 ``append_async`` calls 5 ms apart (none awaited until the end): how many flushes.

    The stream starts once the next segment's background zero-fill is done
    (``wait_spare``), as the bench's rows do: while it runs, the device writes a
    whole segment of zeros ahead of the log's flushes (~90 ms for 64 MiB on a
    virtio disk), so the control's first flushes would take several 5 ms ticks
    each and batch what arrived meanwhile (5 flushes measured, not 20)."""
    with Wal.open(wal_dir, WalConfig(max_delay_us=max_delay_us, backend="fallback")) as wal:
        assert wal.wait_spare(60)

        async def main() -> list[int]:
            futs = []
            for _ in range(20):
                futs.append(wal.append_async(b"x"))
                await asyncio.sleep(0.005)
            return list(await asyncio.gather(*futs))

        assert asyncio.run(main()) == list(range(1, 21))
        return int(wal.counters()["flushes"])


def test_max_delay_batches_a_single_slow_stream(tmp_path: pathlib.Path) -> None:
    """``max_delay_us`` holds a flush open that long for more records: a stream of
    appends 5 ms apart becomes one or two flushes with 500 ms, and (the control)
    about one flush per append without a delay."""
    assert _flushes_for_a_paced_stream(tmp_path / "delayed", 500_000) <= 2
    assert _flushes_for_a_paced_stream(tmp_path / "undelayed", 0) >= 8


def test_asyncio_gather(wal_dir: pathlib.Path, backend_name: str, small_config: WalConfig) -> None:
    with Wal.open(wal_dir, small_config, backend=backend_name) as wal:

        async def main() -> list[int]:
            futs = [wal.append_async(f"a{i}".encode()) for i in range(500)]
            lsns = await asyncio.gather(*futs)
            assert wal.durable_lsn >= max(lsns)
            return list(lsns)

        threads_before = threading.active_count()
        lsns = asyncio.run(main())
        assert threading.active_count() <= threads_before + 1
        assert lsns == list(range(1, 501))
        assert wal.counters()["flushes"] < 100
        # past max_batch_bytes: batches were cut inside the queue, each record framed with its own LSN
        assert list(wal.read_from(1)) == [(i + 1, f"a{i}".encode()) for i in range(500)]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="extra"):
        WalConfig(segment_size=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="multiple"):
        WalConfig(segment_size_bytes=65537)
    with pytest.raises(ValueError, match="fit in a segment"):
        WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=64 * 1024)
    assert WalConfig().recovery is RecoveryMode.TOLERATE_TAIL


def test_record_larger_than_batch_rejected(wal_dir: pathlib.Path, small_config: WalConfig) -> None:
    with Wal.open(wal_dir, small_config, backend="fallback") as wal:
        with pytest.raises(ValueError, match="max_batch_bytes"):
            wal.append(bytes(small_config.max_batch_bytes))
        assert wal.append(bytes(small_config.max_batch_bytes - 16)) == 1


def test_closed_and_locked(wal_dir: pathlib.Path) -> None:
    wal = Wal.open(wal_dir, backend="fallback")
    with pytest.raises(BlockingIOError, match="locked"):
        Wal.open(wal_dir, backend="fallback")
    wal.close()
    wal.close()
    with pytest.raises(WalClosedError):
        wal.append(b"x")
    Wal.open(wal_dir, backend="fallback").close()


def test_auto_backend(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, backend="auto") as wal:
        assert wal.backend in ("uring", "fallback") and wal.backend_reason.startswith("auto: ")
        wal.append(b"x")


def test_direct_io_off_and_buffered(wal_dir: pathlib.Path, small_config: WalConfig) -> None:
    with Wal.open(wal_dir, small_config, backend="fallback", direct_io="off") as wal:
        assert not wal.direct_io
        wal.append(b"x" * 5000)
    with Wal.open(wal_dir, small_config, backend="fallback", direct_io="on") as wal:
        assert wal.direct_io
        wal.append(b"y")
        assert [p[:1] for _, p in wal.read_from(1)] == [b"x", b"y"]
