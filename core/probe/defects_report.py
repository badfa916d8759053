"""The "Known kernel defects" section of ``uringstack probe`` (kept apart from the verdicts)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from uringstack.probe.defects import PATTERNS
from uringstack.probe.model import Capabilities


def defect_lines(caps: Capabilities) -> list[str]:
    """One line per known defect of the probed kernel, or one line saying there is none."""
    version = f"{caps.kernel_release}" + (
        f" (Debian {caps.kernel_debian_version})" if caps.kernel_debian_version else ""
    )
    note = [f"kernel version: {caps.kernel_version_note}"] if caps.kernel_version_note else []
    if not caps.kernel_defects:
        return [f"no known defect for kernel {version}; features are judged by what the probe tried", *note]
    return [
        *(
            f"{d.id}: rules out {PATTERNS.get(d.rules_out, d.rules_out)} ({d.matched}); "
            f"evidence: {'; '.join(d.evidence)}"
            for d in caps.kernel_defects
        ),
        *note,
    ]


def render_defects(caps: Capabilities, console: Console) -> None:
    """Print the defects that apply to this kernel as a table (or one line when none does)."""
    if caps.kernel_version_note:
        console.print(
            f"[bold yellow]Kernel version not fully understood[/]: {escape(caps.kernel_version_note)}",
            soft_wrap=True, highlight=False,
        )  # fmt: skip
    if not caps.kernel_defects:
        console.print(f"[bold]Known kernel defects[/]: {defect_lines(caps)[0]}", soft_wrap=True, highlight=False)
        return
    t = Table(title="Known kernel defects (patterns ruled out on this kernel)")
    t.add_column("id", no_wrap=True)
    t.add_column("rules out", overflow="fold")
    t.add_column("why it applies", overflow="fold")
    for d in caps.kernel_defects:
        t.add_row(d.id, PATTERNS.get(d.rules_out, d.rules_out), d.matched)
    console.print(t)
    for d in caps.kernel_defects:
        console.print(f"  {d.id}: {d.title}", soft_wrap=True, highlight=False, markup=False)
        for e in d.evidence:
            console.print(f"    evidence: {e}", soft_wrap=True, highlight=False, markup=False)
        console.print(
            f"    override (only on a kernel known to carry the fix): [core] accept_kernel_defects = [\"{d.id}\"]",
            soft_wrap=True, highlight=False, markup=False,
        )  # fmt: skip
