"""The "Known kernel defects" section of ``uringstack probe`` (kept apart from the verdicts)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from uringstack.probe.defects import PATTERNS, DefectFinding
from uringstack.probe.model import Capabilities


def _effect(d: DefectFinding) -> str:
    """What the defect means for uringstack: the pattern it rules out, or how it is worked around."""
    if d.worked_around:
        return f"rules out nothing; worked around: {d.worked_around}"
    return f"rules out {PATTERNS.get(d.rules_out, d.rules_out)}"


def defect_lines(caps: Capabilities) -> list[str]:
    """One line per known defect of the probed kernel, or one line saying there is none."""
    version = f"{caps.kernel_release}" + (
        f" (Debian {caps.kernel_debian_version})" if caps.kernel_debian_version else ""
    )
    note = [f"kernel version: {caps.kernel_version_note}"] if caps.kernel_version_note else []
    if not caps.kernel_defects:
        return [f"no known defect for kernel {version}; features are judged by what the probe tried", *note]
    return [
        *(f"{d.id}: {_effect(d)} ({d.matched}); evidence: {'; '.join(d.evidence)}" for d in caps.kernel_defects),
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
    t = Table(title="Known kernel defects of this kernel (patterns ruled out, or worked around)")
    t.add_column("id", no_wrap=True)
    t.add_column("effect on uringstack", overflow="fold")
    t.add_column("why it applies", overflow="fold")
    for d in caps.kernel_defects:
        t.add_row(d.id, _effect(d), d.matched)
    console.print(t)
    for d in caps.kernel_defects:
        console.print(f"  {d.id}: {d.title}", soft_wrap=True, highlight=False, markup=False)
        for e in d.evidence:
            console.print(f"    evidence: {e}", soft_wrap=True, highlight=False, markup=False)
        if d.worked_around:
            # Nothing is ruled out, so there is no override to offer.
            continue
        console.print(
            f"    override (only on a kernel known to carry the fix): [core] accept_kernel_defects = [\"{d.id}\"]",
            soft_wrap=True, highlight=False, markup=False,
        )  # fmt: skip
