"""Per-write latency of the WAL's durable write pattern vs variants (standalone, no uringstack).

Each variant writes QD1 durable writes with O_DIRECT to a pre-written (zero-filled,
fsynced) file, in short slices alternated over several rounds, and reports the
median per-round mean/p50/p99 write latency and CPU per write.

Variants:
  overlap      8 KiB at offset k*4 KiB (each block written twice: the WAL's 1 x 4 KiB pattern)
  seq8k        8 KiB at offset k*8 KiB (fio --bs=8k)
  seq4k        4 KiB at offset k*4 KiB (fio --bs=4k)
A fourth field, cached (default) or dropped, leaves the file's clean pages in the
page cache (as a WAL segment after its buffered zero-fill) or drops them first
(posix_fadvise DONTNEED: what fio's default --invalidate=1 does).
The durability step (RWF_DSYNC per call vs O_DSYNC open flag) and the syscall
(pwritev with one iovec vs pwrite) and the CPU (--cpu) are options.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import statistics
import time

BLOCK = 4096


def prepare(path: str, size: int) -> None:
    with open(path, "wb") as f:
        chunk = bytes(1 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def run(
    path: str, size: int, variant: str, sync: str, call: str, seconds: float, start: int, cache: str
) -> dict[str, float]:
    if cache == "dropped":  # what fio's default --invalidate=1 does before a job
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    elif cache == "cached":  # the state a segment is in after its buffered zero-fill
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    flags = os.O_WRONLY | os.O_DIRECT | (os.O_DSYNC if sync == "odsync" else 0)
    fd = os.open(path, flags)
    length, step = {"overlap": (8192, 4096), "seq8k": (8192, 8192), "seq4k": (4096, 4096)}[variant]
    buf = mmap.mmap(-1, length)
    buf[:] = b"x" * length
    mv = memoryview(buf)
    lat: list[int] = []
    off = start
    c0 = time.process_time_ns()
    s0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    end = time.perf_counter_ns() + int(seconds * 1e9)
    try:
        while True:
            if off + length > size:
                off = 0
            t0 = time.perf_counter_ns()
            if call == "pwrite":
                if sync == "rwf":
                    raise SystemExit("pwrite has no flags: use --sync odsync")
                n = os.pwrite(fd, mv, off)
            elif sync == "rwf":
                n = os.pwritev(fd, [mv], off, os.RWF_DSYNC)
            else:
                n = os.pwritev(fd, [mv], off)
            t1 = time.perf_counter_ns()
            assert n == length
            lat.append(t1 - t0)
            off += step
            if t1 > end:
                break
    finally:
        os.close(fd)
    cpu = time.process_time_ns() - c0
    sys_s = resource.getrusage(resource.RUSAGE_SELF).ru_stime - s0
    lat.sort()
    return {
        "n": len(lat),
        "mean_us": statistics.fmean(lat) / 1e3,
        "p50_us": lat[len(lat) // 2] / 1e3,
        "p99_us": lat[int(len(lat) * 0.99)] / 1e3,
        "cpu_us_per_write": cpu / len(lat) / 1e3,
        "sys_us_per_write": sys_s * 1e6 / len(lat),
        "next": off,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=".")
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slice", type=float, default=2.0)
    ap.add_argument("--variants", default="overlap/rwf/pwritev,seq8k/rwf/pwritev,seq8k/odsync/pwrite")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    a = ap.parse_args()
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    path = os.path.join(a.dir, "wal_write_probe.dat")
    size = a.size_mb << 20
    prepare(path, size)
    variants = [tuple(v.split("/")) for v in a.variants.split(",")]
    rows: dict[str, list[dict[str, float]]] = {"/".join(v): [] for v in variants}
    pos = {"/".join(v): 0 for v in variants}
    try:
        for _ in range(a.rounds):
            for v in variants:
                key = "/".join(v)
                r = run(path, size, v[0], v[1], v[2], a.slice, pos[key], v[3] if len(v) > 3 else "cached")
                pos[key] = int(r.pop("next"))
                rows[key].append(r)
    finally:
        os.unlink(path)
    out = {k: {m: round(statistics.median(r[m] for r in rs), 1) for m in rs[0]} for k, rs in rows.items()}
    if a.json:
        print(json.dumps(out, indent=1))
        return
    for k, v in out.items():
        print(
            f"{k:28s} n={v['n']:6.0f} mean={v['mean_us']:7.1f} p50={v['p50_us']:7.1f} p99={v['p99_us']:8.1f}"
            f" cpu/write={v['cpu_us_per_write']:5.1f} sys/write={v['sys_us_per_write']:5.1f} us"
        )


if __name__ == "__main__":
    main()
