"""How much on-CPU time one ``Wal.append`` costs, warm and after a blocking call (issue 14).

The log's durable write is replaced by a stand-in (no device involved), so
only the log's own code is measured:

* ``--mode stub``: the write returns at once: the log's Python, warm;
* ``--mode sleep``: the write sleeps ``--block-us`` (120 us, about a durable
  4 KiB write here) before it returns, as the real ``pwritev2`` blocks: the
  same Python, run after each block.  The same sleep in a bare loop is
  measured too and is the baseline to subtract.

On-CPU time is the thread's ``/proc/thread-self/schedstat`` run time (the
scheduler's own clock): ``getrusage``'s user/sys split is tick-sampled and
was not reliable for ~100 us operations on this VM.  Only the fallback
backend's write is replaced (``backend="fallback"``); run old and new
alternately in the same session, the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any

import uringstack.plugins.fallback.backend as fallback
from uringstack.wal import Wal, WalConfig


def _run_ns() -> int:
    with open("/proc/thread-self/schedstat") as f:
        return int(f.read().split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["stub", "sleep"], default="sleep")
    ap.add_argument("--appends", type=int, default=8000)
    ap.add_argument("--block-us", type=float, default=120.0)
    ap.add_argument("--record-size", type=int, default=4096)
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    block_s = args.block_us / 1e6

    def written(fd: int, buf: Any, offset: int, flags: int = 0) -> int:
        if args.mode == "sleep":
            time.sleep(block_s)
        return len(buf)

    fallback._pwritev = written  # the stand-in for the durable write
    d = tempfile.mkdtemp(dir=args.dir, prefix="wal-cold-")
    rec = os.urandom(args.record_size)
    n = args.appends
    try:
        with Wal.open(d, WalConfig(segment_size_bytes=256 << 20), backend="fallback") as wal:
            wal.wait_spare()
            for _ in range(200):
                wal.append(rec)
            a = _run_ns()
            for _ in range(n):
                wal.append(rec)
            b = _run_ns()
            for _ in range(n):
                written(-1, rec, 0)
            c = _run_ns()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"{args.mode}: on-CPU per append {(b - a) / n / 1e3:.1f} us, bare stand-in loop {(c - b) / n / 1e3:.1f} us")


if __name__ == "__main__":
    main()
