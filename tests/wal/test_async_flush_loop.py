"""``async_flush = "loop"``: the event loop writes the batches its appender tasks wait on.

By default the flusher thread writes every batch and the loop never blocks; the
opt-in saves the two thread hand-offs per flush (docs/wal.md).  These tests pin
who writes, that nothing is lost or hangs when a write fails, and that blocking
appenders in other threads still share the log."""

from __future__ import annotations

import asyncio
import errno
import pathlib
import threading
from typing import Any

import pytest
from pydantic import ValidationError

from tests.wal.test_batching import GatedBackend, _count_wal_posts
from uringstack.wal import Wal, WalConfig, WalFailedError

LOOP = WalConfig(async_flush="loop")


async def _appenders(wal: Wal, tasks: int, each: int) -> list[int]:
    async def one(i: int) -> list[int]:
        return [await wal.append_async(b"t%d-%d" % (i, k)) for k in range(each)]

    per_task = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(tasks))), 20)
    return sorted(lsn for lsns in per_task for lsn in lsns)


@pytest.mark.parametrize("mode", ["thread", "loop"])
def test_who_writes_the_batches_of_asyncio_appenders(wal_dir: pathlib.Path, backend_name: str, mode: str) -> None:
    be = GatedBackend(hold=0)
    with Wal.open(wal_dir, WalConfig(async_flush=mode), backend=backend_name, wrap_io=be) as wal:  # type: ignore[arg-type]
        lsns = asyncio.run(_appenders(wal, 16, 20))
        assert lsns == list(range(1, 321))
        records = dict(wal.read_from(1))
        assert sorted(records) == lsns and records[1].startswith(b"t")
        flushes = wal.counters()["flushes"]
    writers = set(be.threads)
    assert writers == ({"MainThread"} if mode == "loop" else {"wal-flusher"}), writers
    assert flushes < 320  # the tasks' appends of one tick still share a write


def test_the_loop_resolves_its_own_flush_without_a_thread_wake_up(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, LOOP, backend="fallback") as wal:

        async def main() -> tuple[list[int], int]:
            posted = _count_wal_posts(asyncio.get_running_loop())
            return await _appenders(wal, 8, 10), len(posted)

        lsns, posted = asyncio.run(main())
        assert lsns == list(range(1, 81))
        assert posted == 0  # flushed on the loop: resolved with call_soon, no self-pipe write


def test_a_failed_loop_write_fails_every_waiter_and_the_log(wal_dir: pathlib.Path) -> None:
    be = GatedBackend(hold=0, fail_at=0)
    with Wal.open(wal_dir, LOOP, backend="fallback", wrap_io=be) as wal:

        async def main() -> list[Any]:
            futs = [wal.append_async(b"a%d" % i) for i in range(10)]
            return list(await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 10))

        results = asyncio.run(main())
        assert len(results) == 10 and all(isinstance(r, WalFailedError) for r in results), results
        assert all(r.errno == errno.EIO for r in results)
        assert wal.durable_lsn == 0 and be.threads == ["MainThread"]  # nothing written after it
        with pytest.raises(WalFailedError):
            wal.append(b"late")


def test_blocking_appenders_in_threads_share_the_log_with_a_flushing_loop(wal_dir: pathlib.Path) -> None:
    be = GatedBackend(hold=0)
    with Wal.open(wal_dir, LOOP, backend="fallback", wrap_io=be) as wal:
        stop = threading.Event()
        synced: list[int] = []

        def blocking() -> None:
            while not stop.is_set():
                synced.append(wal.append(b"s%d" % len(synced)))

        ts = [threading.Thread(target=blocking) for _ in range(2)]
        for t in ts:
            t.start()
        try:
            lsns = asyncio.run(_appenders(wal, 16, 30))
        finally:
            stop.set()
            for t in ts:
                t.join(10)
        assert not any(t.is_alive() for t in ts)
        assert len(lsns) == 480 and len(set(lsns) | set(synced)) == 480 + len(synced)
        records = dict(wal.read_from(1))
        assert sorted(records) == list(range(1, wal.durable_lsn + 1))
        assert set(lsns) | set(synced) <= set(records)
    # (who wrote which batch depends on who found the log idle: test_who_writes_... pins the loop's part)


def test_loop_flushing_needs_no_group_commit_delay() -> None:
    with pytest.raises(ValidationError, match=r"async_flush = 'loop'.*max_delay_us = 0"):
        WalConfig(async_flush="loop", max_delay_us=100)
    with pytest.raises(ValidationError):
        WalConfig(async_flush="inline")  # type: ignore[arg-type]
