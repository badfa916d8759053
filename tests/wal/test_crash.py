"""SIGKILL a process that appends from several threads; every acknowledged record must survive.

Rounds: ``URINGSTACK_CRASH_ROUNDS``, default 200 when ``CI`` is set, else 30.
The same log directory lives across all rounds, so each child also recovers
what the previous kill left behind (including kills during recovery itself).
"""

from __future__ import annotations

import os
import pathlib
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from uringstack.wal import Wal, WalConfig
from uringstack.wal.record import crc32c

CHILD = pathlib.Path(__file__).with_name("crash_child.py")
ROUNDS = int(os.environ.get("URINGSTACK_CRASH_ROUNDS", "200" if os.environ.get("CI") else "30"))


def _uring_ok() -> bool:
    try:
        from uringstack.ring import Ring

        Ring(entries=4).close()
        return True
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_never_loses_an_acknowledged_record(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "wal"
    rng = random.Random(int(os.environ.get("URINGSTACK_CRASH_SEED", time.time_ns())))
    backends = ["fallback", "uring"] if _uring_ok() else ["fallback"]
    acked: dict[int, int] = {}  # lsn -> crc32c(payload), over all rounds
    checkpoint = 0
    killed_while_appending = 0
    drivers = {"threads": 0, "asyncio-thread": 0, "asyncio-loop": 0}
    for rnd in range(ROUNDS):
        backend, sync = rng.choice(backends), rng.choice(["dsync", "fdatasync"])
        # appending threads mostly; asyncio tasks with the flusher thread or the loop writing
        driver = rng.choice(["threads", "threads", "asyncio-thread", "asyncio-loop"])
        drivers[driver] += 1
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(d), backend, sync, str(rng.randint(1, 6)), str(rnd), driver],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Kill at a random moment: sometimes during start-up/recovery, mostly mid-append.
        # Mid-append kills wait for "ready" first: on a loaded host the child's start-up
        # (imports, recovery) alone can take longer than any fixed delay.
        head = b""
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            assert proc.stdout is not None
            if not select.select([proc.stdout], [], [], 60)[0]:
                proc.kill()
                pytest.fail(f"round {rnd}: the child did not open the log within 60 s")
            # byte by byte, unbuffered: communicate() below reads the fd directly,
            # so nothing past this line may sit in a Python buffer
            while not head.endswith(b"\n"):
                c = os.read(proc.stdout.fileno(), 1)
                if not c:
                    break
                head += c
            time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        lines = (head + out).split(b"\n")[:-1]  # a line without its newline was never finished
        if lines and lines[0] == b"ready":
            lines = lines[1:]
            killed_while_appending += 1
        for line in lines:
            lsn, crc = map(int, line.split())
            assert lsn not in acked, f"LSN {lsn} acknowledged twice"
            acked[lsn] = crc
        # Recover in this process, check everything, occasionally checkpoint.
        cfg = WalConfig(segment_size_bytes=128 * 1024, max_batch_bytes=16 * 1024, backend="fallback")
        with Wal.open(d, cfg) as wal:
            got = dict(wal.read_from(1))
            for lsn, payload in got.items():  # no corrupt record is ever returned
                assert crc32c(payload[4:]) == int.from_bytes(payload[:4], "little"), lsn
            for lsn, crc in acked.items():
                if lsn >= checkpoint:
                    assert lsn in got, f"round {rnd}: acknowledged LSN {lsn} lost"
                    assert crc32c(got[lsn]) == crc, f"round {rnd}: LSN {lsn} changed"
            # unacknowledged records recovered now become part of the log: later
            # children number after them, so forget acks above the recovered end
            if rng.random() < 0.2 and wal.durable_lsn > 50:
                checkpoint = wal.durable_lsn - 50
                wal.truncate_before(checkpoint)
            top = wal.durable_lsn
        acked = {k: v for k, v in acked.items() if k <= top}
    assert killed_while_appending >= ROUNDS // 3, "kills mostly landed before appending began"
    assert ROUNDS < 20 or all(drivers.values()), f"a driver never ran: {drivers}"
