"""Which CPUs take a block device's completion interrupts.

A thread that waits for completions on the CPU where the device's interrupt
arrives is woken without a cross-CPU IPI: on the 2-vCPU development VM a QD1
read pinned there took ~60 µs at p50 against ~89 µs pinned to the other CPU
(virtio-blk delivers all its completions to one CPU).  The probe reports the
CPUs so that benchmarks and single-worker stacks can put their worker there.

Found from sysfs and procfs only: the device's PCI function lists its MSI
vectors in ``msi_irqs/``; ``/proc/interrupts`` says which of them fire; and
``/proc/irq/N/effective_affinity_list`` where each is delivered.
"""

from __future__ import annotations

import os
from pathlib import Path

from uringstack.probe.system import parse_cpulist


def _interrupt_counts(proc: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    try:
        lines = (proc / "interrupts").read_text().splitlines()
    except OSError:
        return counts
    ncpu = len(lines[0].split()) if lines else 0
    for line in lines[1:]:
        head, _, rest = line.partition(":")
        if not head.strip().isdigit():
            continue
        fields = rest.split()
        counts[int(head)] = sum(int(f) for f in fields[:ncpu] if f.isdigit())
    return counts


def _msi_function(device_dir: Path) -> Path | None:
    """The nearest ancestor of *device_dir* (a PCI function) that has MSI vectors."""
    current = device_dir.resolve()
    for _ in range(6):
        if (current / "msi_irqs").is_dir():
            return current
        if current.parent == current:
            break
        current = current.parent
    return None


def device_irq_cpus(disk: str, sysfs: Path = Path("/sys"), proc: Path = Path("/proc")) -> list[int]:
    """CPUs that receive the completion interrupts of block device *disk* (e.g. ``vda``).

    Only vectors that have fired count (a config or idle queue vector says
    nothing about where I/O completes).  Empty when unknown: no MSI (virtual
    devices such as zram, loop, dm), or no vector has fired yet.
    """
    node = sysfs / "class" / "block" / disk
    if (node / "partition").exists():
        node = node.resolve().parent  # a partition completes on its disk's queues
    function = _msi_function((node if node.exists() else sysfs / "block" / disk) / "device")
    if function is None:
        return []
    counts = _interrupt_counts(proc)
    vectors = {int(e): counts.get(int(e), 0) for e in os.listdir(function / "msi_irqs") if e.isdigit()}
    busiest = max(vectors.values(), default=0)
    cpus: set[int] = set()
    for irq, count in vectors.items():
        # queue vectors carry the completions; a config vector fires a handful of times
        if count == 0 or count * 100 < busiest:
            continue
        entry = str(irq)
        for name in ("effective_affinity_list", "smp_affinity_list"):
            try:
                cpus.update(parse_cpulist((proc / "irq" / entry / name).read_text()))
                break
            except (OSError, ValueError):
                continue
    return sorted(cpus)
