"""The mode ladder: each rung adds one technique, all measured in the same run.

A rung is a small declarative entry: which hot loop drives it, the config
overrides that build its stack, and (for hardware-dependent rungs) the
plugin whose verdict must be "enabled" on this machine.  Adding a rung (for
example once the iopoll backend serves files) is adding one entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LoopKind = Literal["threads", "uring", "pending"]


@dataclass(frozen=True)
class Rung:
    """One mode of the ladder."""

    name: str
    loop: LoopKind
    summary: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    batched: bool = True  # uring loop: whole batches per submit (False: one op per submit)
    fixed: bool = False  # uring loop: registered buffers (READ/WRITE_FIXED) and a fixed file
    requires: str | None = None  # plugin whose verdict must be enabled, else the rung is skipped
    open_options: Mapping[str, Any] = field(default_factory=dict)
    expect_backend: str | None = None  # the rung is skipped when the file is served by another backend


_PLAIN = {
    "sqpoll.mode": "off",
    "fixedbuf.mode": "off",
    "iopoll.mode": "off",
    "nvme_passthrough.mode": "off",
}

LADDER: tuple[Rung, ...] = (
    Rung(
        "fallback",
        "threads",
        "QD threads, each a blocking os.preadv/os.pwritev loop (the usual Python thread pool)",
        {**_PLAIN, "core.backend": "fallback"},
    ),
    Rung(
        "uring-single",
        "uring",
        "io_uring, one op per submit (one io_uring_enter each), QD ops in flight",
        {**_PLAIN, "core.backend": "uring"},
        batched=False,
    ),
    Rung(
        "batched",
        "uring",
        "io_uring, prebuilt batches of --batch ops per submit, pipelined to keep QD in flight",
        {**_PLAIN, "core.backend": "uring"},
    ),
    Rung(
        "+fixedbuf",
        "uring",
        "batched + registered buffers (READ/WRITE_FIXED) and a registered file",
        {**_PLAIN, "core.backend": "uring", "fixedbuf.mode": "on"},
        fixed=True,
    ),
    Rung(
        "+sqpoll",
        "uring",
        "+fixedbuf + SQPOLL: a kernel thread polls the SQ (no io_uring_enter while it is awake)",
        {**_PLAIN, "core.backend": "uring", "fixedbuf.mode": "on", "sqpoll.mode": "on"},
        fixed=True,
    ),
    Rung(
        "+iopoll",
        "pending",
        "O_DIRECT I/O on the per-core IOPOLL ring (completions polled from the device)",
        {**_PLAIN, "core.backend": "uring", "iopoll.mode": "auto"},
        requires="iopoll",
        expect_backend="iopoll",
    ),
    Rung(
        "+passthrough",
        "pending",
        "NVMe Read/Write commands via IORING_OP_URING_CMD on /dev/ngXnY",
        {**_PLAIN, "core.backend": "uring", "nvme_passthrough.mode": "auto"},
        requires="nvme_passthrough",
        open_options={"passthrough": "auto"},
        expect_backend="nvme_passthrough",
    ),
)

RUNGS: dict[str, Rung] = {r.name: r for r in LADDER}


def select(names: list[str] | None) -> list[Rung]:
    """The rungs to run, in ladder order; *names* (None = all) must be rung names."""
    if not names:
        return list(LADDER)
    unknown = [n for n in names if n not in RUNGS]
    if unknown:
        raise ValueError(f"unknown mode(s) {', '.join(unknown)}; modes: {', '.join(RUNGS)}")
    return [r for r in LADDER if r.name in names]
