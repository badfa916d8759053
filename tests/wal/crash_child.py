"""Crash-test child: append from several threads, report each acknowledged record.

Usage: crash_child.py DIR BACKEND SYNC THREADS SEED [DRIVER]

DRIVER is ``threads`` (the default: THREADS appending threads) or
``asyncio-thread`` / ``asyncio-loop``: THREADS * 4 asyncio tasks appending with
``append_async`` on one event loop, beside one appending thread, with the log's
``async_flush`` set to ``thread`` or ``loop``.  About 30% of a thread's appends
go through ``append_many`` (1-4 records).  Each
payload starts with its own CRC32C so the parent can check any record it
reads back, acknowledged or not.  One line per acknowledged record, ``LSN CRC``,
written with a single os.write (atomic on a pipe), only after the append returned.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading

from uringstack.wal import Wal, WalConfig
from uringstack.wal.record import crc32c


def main() -> None:
    directory, backend, sync, threads, seed = sys.argv[1:6]
    driver = sys.argv[6] if len(sys.argv) > 6 else "threads"
    flush = driver.removeprefix("asyncio-") if driver.startswith("asyncio-") else "thread"
    cfg = WalConfig(segment_size_bytes=128 * 1024, max_batch_bytes=16 * 1024, backend=backend, sync=sync,  # type: ignore[arg-type]
                    async_flush=flush)  # type: ignore[arg-type]  # fmt: skip
    wal = Wal.open(directory, cfg)
    os.write(1, b"ready\n")

    def work(i: int) -> None:
        rng = random.Random(f"{seed}:{i}")
        while True:
            payloads = []
            for _ in range(1 if rng.random() < 0.7 else rng.randint(1, 4)):  # some go through append_many
                body = rng.randbytes(rng.randint(0, 3000))
                payloads.append(crc32c(body).to_bytes(4, "little") + body)
            lsns = [wal.append(payloads[0])] if len(payloads) == 1 else wal.append_many(payloads)
            os.write(1, "".join(f"{lsn} {crc32c(p)}\n" for lsn, p in zip(lsns, payloads, strict=True)).encode())

    if driver == "threads":
        ts = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(int(threads))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return

    async def task(i: int) -> None:
        rng = random.Random(f"{seed}:task{i}")
        while True:
            body = rng.randbytes(rng.randint(0, 600))
            payload = crc32c(body).to_bytes(4, "little") + body
            lsn = await wal.append_async(payload)
            os.write(1, f"{lsn} {crc32c(payload)}\n".encode())

    async def run_tasks() -> None:
        await asyncio.gather(*(task(i) for i in range(int(threads) * 4)))

    threading.Thread(target=work, args=(-1,), daemon=True).start()
    asyncio.run(run_tasks())


if __name__ == "__main__":
    main()
