"""Completion-interrupt CPUs of a device, from a fake sysfs/procfs tree and from this machine."""

from __future__ import annotations

import os
from pathlib import Path

from uringstack.probe.irq import device_irq_cpus
from uringstack.probe.system import parse_cpulist

INTERRUPTS = """\
           CPU0       CPU1       CPU2       CPU3
 35:          0          1          0          0  PCI-MSIX-0000:00:02.0   0-edge      virtio1-config
 36:          0    5778574          0          0  PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
 37:        100          0     200000          0  PCI-MSIX-0000:00:02.0   2-edge      virtio1-req.1
 38:          0          0          0          0  PCI-MSIX-0000:00:02.0   3-edge      virtio1-req.2
 40:         99          0          0          0  PCI-MSIX-0000:00:09.0   0-edge      other
NMI:          0          0          0          0   Non-maskable interrupts
"""


def fake_tree(root: Path) -> tuple[Path, Path]:
    sysfs, proc = root / "sys", root / "proc"
    function = sysfs / "devices/pci0000:00/0000:00:02.0"
    (function / "virtio1").mkdir(parents=True)
    (function / "msi_irqs").mkdir()
    for irq in (35, 36, 37, 38):
        (function / "msi_irqs" / str(irq)).write_text("msix\n")
    (sysfs / "block/vda").mkdir(parents=True)
    os.symlink(function / "virtio1", sysfs / "block/vda/device")
    (sysfs / "block/zram0").mkdir(parents=True)
    proc.mkdir()
    (proc / "interrupts").write_text(INTERRUPTS)
    for irq, cpus in {35: "1", 36: "1", 37: "2", 38: "3", 40: "0"}.items():
        (proc / "irq" / str(irq)).mkdir(parents=True)
        (proc / "irq" / str(irq) / "effective_affinity_list").write_text(cpus + "\n")
    return sysfs, proc


def test_busy_queue_vectors_decide(tmp_path: Path) -> None:
    sysfs, proc = fake_tree(tmp_path)
    # 36 and 37 carry completions; 35 (config, 1 interrupt) and 38 (silent) do not count
    assert device_irq_cpus("vda", sysfs, proc) == [1, 2]


def test_device_without_msi_is_unknown(tmp_path: Path) -> None:
    sysfs, proc = fake_tree(tmp_path)
    assert device_irq_cpus("zram0", sysfs, proc) == []
    assert device_irq_cpus("nosuch", sysfs, proc) == []


def test_cpu_list_syntax() -> None:
    assert parse_cpulist("0-2,5\n") == [0, 1, 2, 5]
    assert parse_cpulist("3") == [3]


def test_this_machines_root_disk_reports_allowed_cpus() -> None:
    import uringstack.probe

    caps = uringstack.probe.probe()
    for dev in caps.devices:
        assert set(dev.irq_cpus) <= set(caps.cpus.online)
