"""What a benchmark run measures: the workload and its parameters.

A :class:`BenchSpec` is plain data (JSON round-trippable) because the same
spec is handed to a child process when ``--syscalls`` re-runs a mode under
``strace``, and is echoed in the ``--json`` output so a result always says
what produced it.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

WorkloadName = Literal["randread", "randwrite", "seqwrite", "durable-append"]
Durability = Literal["dsync", "fdatasync"]


@dataclass(frozen=True)
class Workload:
    """One access pattern: direction, order, and whether every write is durable."""

    name: WorkloadName
    write: bool
    sequential: bool
    durable: bool
    fio_rw: str
    summary: str


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("randread", False, False, False, "randread", "uniform random reads of block-size blocks"),
        Workload(
            "randwrite",
            True,
            False,
            False,
            "randwrite",
            "uniform random writes of block-size blocks",
        ),
        Workload(
            "seqwrite",
            True,
            True,
            False,
            "write",
            "sequential writes, wrapping at the end of the file",
        ),
        Workload(
            "durable-append",
            True,
            True,
            True,
            "write",
            "sequential writes, each durable (O_DSYNC or write+fdatasync) before it is acked",
        ),
    )
}


@dataclass(frozen=True)
class BenchSpec:
    """Parameters shared by every mode (and fio) of one run."""

    workload: WorkloadName
    block_size: int = 4096
    queue_depth: int = 32
    workers: int = 1
    file_size: int = 1 << 30
    duration: float = 5.0
    direct: bool = True
    file: str = ""
    durability: Durability = "dsync"
    batch: int = 0  # ops per submit in the batched rungs; 0 = queue_depth // 8 (at least 1)
    ramp: float = -1.0  # warm-up excluded from the numbers; < 0 = min(0.5 s, duration / 10)
    seed: int = 1
    cpus: list[int] = field(default_factory=list)  # worker CPUs; empty = the first `workers` allowed

    @property
    def wl(self) -> Workload:
        return WORKLOADS[self.workload]

    @property
    def batch_size(self) -> int:
        """Ops per submission in the batched rungs (never more than the queue depth)."""
        # QD/8 measured best for QD 32 on 2 vCPUs: a batch frees its slots only when its
        # slowest op completes, so big batches leave the queue partly empty (QD/4: 0.58-0.75x
        # fio, QD/8: ~0.85-1.0x, see BENCHMARKS.md)
        b = self.batch if self.batch > 0 else max(1, self.queue_depth // 8)
        return min(b, self.queue_depth)

    @property
    def ramp_s(self) -> float:
        return self.ramp if self.ramp >= 0 else min(0.5, self.duration / 10)

    def worker_cpus(self) -> list[int]:
        """CPUs that get a worker (pinned), one per ``workers``."""
        if self.cpus:
            return list(self.cpus[: self.workers])
        allowed = sorted(os.sched_getaffinity(0))
        return [allowed[i % len(allowed)] for i in range(self.workers)]

    def region(self, worker: int) -> tuple[int, int]:
        """(start, length) of the file a worker's sequential stream covers: disjoint slices."""
        if not self.wl.sequential or self.workers == 1:
            return 0, self.file_size
        per = self.file_size // self.workers // self.block_size * self.block_size
        return worker * per, per

    def validate(self) -> None:
        """Raise ValueError naming the bad parameter."""
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload {self.workload!r}: choose one of {', '.join(WORKLOADS)}")
        if self.block_size <= 0 or (self.direct and self.block_size % 512):
            raise ValueError(f"block size {self.block_size}: must be positive (a multiple of 512 with O_DIRECT)")
        if self.queue_depth < 1 or self.workers < 1:
            raise ValueError("queue depth and workers must be at least 1")
        if self.file_size < self.block_size * self.workers:
            raise ValueError(f"file size {self.file_size} is smaller than one block per worker")
        if self.duration <= 0:
            raise ValueError("duration must be positive")
        allowed = os.sched_getaffinity(0)
        absent = sorted(set(self.cpus) - allowed)
        if absent:
            raise ValueError(f"--cpus: CPUs {absent} are not available to this process (allowed: {sorted(allowed)})")
        usable = len(set(self.cpus)) if self.cpus else len(allowed)
        if self.workers > usable:
            # (worker_cpus gave the first CPUs only: the run had fewer workers than it reported,
            # and fio's reference job ran --numjobs of the reported count)
            raise ValueError(f"--workers {self.workers} needs as many CPUs, one per worker: {usable} available")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchSpec:
        return cls(**data)


def offset_list(spec: BenchSpec, worker: int, count: int) -> list[int]:
    """Byte offsets a worker visits, in order: a random or sequential stream of *count*.

    Precomputed so the hot loops never call the random generator; the
    streams wrap around (a random stream of 2^18 offsets over a 1 GiB file is
    as cache-hostile as a fresh draw, since O_DIRECT bypasses the page cache).
    """
    start, length = spec.region(worker)
    blocks = max(1, length // spec.block_size)
    if spec.wl.sequential:
        # the whole region in order (capped), so a stream covers the file before wrapping
        return [start + i * spec.block_size for i in range(min(blocks, 1 << 20))]
    rng = random.Random(spec.seed * 7919 + worker)
    return [start + rng.randrange(blocks) * spec.block_size for _ in range(count)]
