"""Crash-test child: append from several threads, report each acknowledged record.

Usage: crash_child.py DIR BACKEND SYNC THREADS SEED

About 30% of the appends go through ``append_many`` (1-4 records).  Each
payload starts with its own CRC32C so the parent can check any record it
reads back, acknowledged or not.  One line per acknowledged record, ``LSN CRC``,
written with a single os.write (atomic on a pipe), only after the append returned.
"""

from __future__ import annotations

import os
import random
import sys
import threading

from uringstack.wal import Wal, WalConfig
from uringstack.wal.record import crc32c


def main() -> None:
    directory, backend, sync, threads, seed = sys.argv[1:6]
    cfg = WalConfig(segment_size_bytes=128 * 1024, max_batch_bytes=16 * 1024, backend=backend, sync=sync)  # type: ignore[arg-type]
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

    ts = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(int(threads))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


if __name__ == "__main__":
    main()
