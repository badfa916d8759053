"""Human-readable rendering of a :class:`Capabilities` report, and one verdict per feature.

The verdicts answer the question a user runs ``uringstack probe`` for: which of
io_uring's fast paths can this process use here, and if one cannot be used,
what exactly stands in the way.  Each feature's verdict is its plugin's own
``uringstack_check_support`` answer: the probe renders them, it does not
second-guess them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from uringstack.probe.model import Capabilities

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.pluginmanager import UringstackPluginManager

# Opcodes the storage path submits; the report shows these explicitly.
KEY_OPCODES = ("READ", "WRITE", "READV", "WRITEV", "READ_FIXED", "WRITE_FIXED", "FSYNC",
               "URING_CMD")  # fmt: skip


@dataclass(frozen=True)
class FeatureCheck:
    """One line of the verdict: a feature, whether it is usable, and why (not)."""

    feature: str
    usable: bool
    reason: str

    def line(self) -> str:
        """``"SQPOLL: usable (...)"`` or ``"IOPOLL: not usable: why"``."""
        if self.usable:
            return f"{self.feature}: usable" + (f" ({self.reason})" if self.reason else "")
        return f"{self.feature}: not usable: {self.reason}"


def _size(nbytes: int) -> str:
    if nbytes < 0:
        return "unlimited"
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{nbytes} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(nbytes)  # pragma: no cover - loop always returns


def verdicts(
    caps: Capabilities,
    plugin_manager: UringstackPluginManager | None = None,
    config: StackConfig | None = None,
) -> list[FeatureCheck]:
    """One :class:`FeatureCheck` for io_uring itself, then one per plugin verdict.

    The plugin lines are the plugins' own ``uringstack_check_support``
    answers for *config* (the same verdicts ``uringstack plan`` prints), so
    the probe and the plan cannot disagree and third-party plugins appear
    too.  Without a plugin manager (``uringstack probe --no-plugins``) only
    the io_uring line is given.
    """
    uring = caps.uring
    if uring.usable:
        # (an unread opcode table is not "0 opcodes": plugins would read it as the kernel lacking them)
        ops = f"opcodes unknown: {uring.opcode_error}" if uring.opcode_error else f"{len(uring.opcodes)} opcodes"
        checks = [FeatureCheck("io_uring", True, f"{ops}, kernel {caps.kernel_release}")]
    else:
        checks = [FeatureCheck("io_uring", False, uring.reason)]
    if plugin_manager is None or config is None:
        return checks
    from uringstack.plan import plan_caps

    # the report the plan is made from: the measurements of `uringstack tune` decide `auto`
    # (without them the probe said "no measurement" where the plan followed one), and a
    # feature whose rings do not fit RLIMIT_MEMLOCK is off, as in the plan
    caps = plan_caps(caps, config, plugin_manager)
    for v in plugin_manager.check_support(caps=caps, config=config):
        if v is None:
            continue
        reason = v.reason + (f"; hint: {v.hint}" if v.hint else "")
        checks.append(FeatureCheck(v.plugin, v.enabled, reason))
    return checks


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


def render(
    caps: Capabilities,
    console: Console | None = None,
    *,
    plugin_manager: UringstackPluginManager | None = None,
    config: StackConfig | None = None,
) -> None:
    """Print the report as rich tables followed by the verdict lines (see :func:`verdicts`)."""
    con = console or Console()
    uring = caps.uring

    kt = Table(title="Kernel and io_uring", show_header=False)
    kt.add_column("fact", style="bold")
    kt.add_column("value", overflow="fold")
    kt.add_row("system", f"{caps.system} {caps.kernel_release} (Python {caps.python})")
    kt.add_row("io_uring usable", _yes(uring.usable))
    if not uring.usable:
        kt.add_row("blocker", uring.blocker)
        kt.add_row("reason", uring.reason)
    sysctl = uring.io_uring_disabled_sysctl
    kt.add_row("kernel.io_uring_disabled", "absent" if sysctl is None else str(sysctl))
    if uring.usable:
        kt.add_row("features", f"0x{uring.feature_bits:x}: " + " ".join(uring.features))
        key = " ".join(op for op in KEY_OPCODES if op in uring.opcodes)
        if uring.opcode_error:
            kt.add_row("opcodes", f"unknown: {uring.opcode_error}")
        else:
            kt.add_row("opcodes", f"{len(uring.opcodes)} supported; storage: {key}")
    con.print(kt)

    ft = Table(title="Setup flags (each tried by creating a ring)")
    ft.add_column("flag")
    ft.add_column("accepted")
    ft.add_column("error", overflow="fold")
    for flag, support in uring.setup_flags.items():
        ft.add_row(flag, _yes(support.accepted), support.error)
    con.print(ft)

    mt = Table(title="Memory and CPUs", show_header=False)
    mt.add_column("fact", style="bold")
    mt.add_column("value", overflow="fold")
    mem = caps.memlock
    mt.add_row("RLIMIT_MEMLOCK", f"soft {_size(mem.soft_bytes)}, hard {_size(mem.hard_bytes)}")
    mt.add_row("CAP_IPC_LOCK", _yes(mem.cap_ipc_lock))
    if mem.rings_charged is not None:
        mt.add_row("ring memory charged to it", _yes(mem.rings_charged))
    soft, hard = (("unlimited" if n < 0 else str(n)) for n in (caps.nofile.soft, caps.nofile.hard))
    mt.add_row("RLIMIT_NOFILE", f"soft {soft}, hard {hard}")
    mt.add_row("CPUs online", _cpus(caps.cpus.online))
    mt.add_row("CPUs allowed", _cpus(caps.cpus.allowed))
    nodes = "; ".join(f"node{n}: {_cpus(c)}" for n, c in sorted(caps.cpus.numa_nodes.items()))
    mt.add_row("NUMA nodes", nodes or "none reported")
    con.print(mt)

    if caps.device_scan_error:
        con.print(f"[yellow]device scan failed:[/] {caps.device_scan_error}")
    elif caps.devices:
        # No column rules and collapsed padding: nine columns fit 80 characters.
        dt = Table(title="Block devices", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
        for col in ("device", "model", "size", "LBS/PBS", "rot", "poll", "NVMe", "char dev",
                    "used"):  # fmt: skip
            # Only free-text columns may wrap; numbers split over lines are unreadable.
            free = col in ("model", "char dev")
            width = 10 if col == "model" else None
            dt.add_column(col, overflow="fold", no_wrap=not free, min_width=width)
        notes: list[str] = []
        for d in caps.devices:
            nvme = f"{d.controller} ns{d.nsid}" if d.nvme else "-"
            char = d.generic_char or "-"
            if d.generic_char:
                char += " (open ok)" if d.generic_char_accessible else " (no access)"
            dt.add_row(d.name, d.model, _size(d.size_bytes),
                       f"{d.logical_block_size}/{d.physical_block_size}",
                       "yes" if d.rotational else "no", _yes(d.io_poll), nvme, char,
                       _yes(d.in_use))  # fmt: skip
            # Long explanations go below the table so the table fits 80 columns.
            if not d.io_poll:
                notes.append(f"{d.name}: io_poll off: {d.io_poll_reason}")
            if d.generic_char_error:
                notes.append(f"{d.name}: char device: {d.generic_char_error}")
            notes.extend(f"{d.name}: in use: {u}" for u in d.usage)
            if d.irq_cpus:
                notes.append(f"{d.name}: completion interrupts on CPU {_cpus(d.irq_cpus).split(': ')[1]}")
        con.print(dt)
        for note in notes:
            con.print(f"  {note}", soft_wrap=True, highlight=False, markup=False)

    # --- known kernel defects (core/probe/defects_report.py) ---
    from uringstack.probe.defects_report import render_defects

    render_defects(caps, con)
    # --- end of known kernel defects ---

    con.print("[bold]Verdict[/]")
    for check in verdicts(caps, plugin_manager, config):
        style = "green" if check.usable else "red"
        # soft_wrap: one verdict per physical line, so `grep` finds it whole.
        con.print(f"  {check.line()}", style=style, soft_wrap=True, highlight=False, markup=False)


def _cpus(cpus: list[int]) -> str:
    return f"{len(cpus)}: " + ",".join(str(c) for c in cpus)
