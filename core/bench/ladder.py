"""The mode ladder: each rung adds one technique, all measured in the same run.

A rung is a small declarative entry: which hot loop drives it, the config
overrides that build its stack (so the plugins really choose), and (for
hardware-dependent rungs) the plugin whose verdict must be "enabled" on
this machine.  Every rung but the last runs through the public API
(``FileHandle``) or is a tool a Python user would pick instead; the raw-ring
row is labelled as such.  Adding a rung is adding one entry here; a ``streamed``
rung is :func:`streamed` of the rung whose stack and handle it drives otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LoopKind = Literal["api", "asyncio", "asyncio-batch", "threadpool", "aiofiles", "raw"]
Api = Literal["public", "tool", "raw"]


@dataclass(frozen=True)
class Rung:
    """One mode of the ladder."""

    name: str
    loop: LoopKind
    summary: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    batched: bool = True  # uring loop: whole batches per submit (False: one op per submit)
    fixed: bool = False  # uring loop: registered buffers (READ/WRITE_FIXED) and a fixed file
    prepared: bool = False  # api loop: handle.prepare_reads/prepare_writes, else read_many/start_read_many
    streamed: bool = False  # api loop: core.max_in_flight = QD, two batches of stream_ops(QD) / 2 ops in turn
    requires: str | None = None  # plugin whose verdict must be enabled, else the rung is skipped
    open_options: Mapping[str, Any] = field(default_factory=dict)
    expect_backend: str | None = None  # the rung is skipped when the file is served by another backend

    def buffer_count(self, queue_depth: int) -> int:
        """Buffers a worker of this rung leases (and the fixedbuf pool registers): one per op
        in flight, or a streamed rung's :func:`stream_ops`."""
        return stream_ops(queue_depth) if self.streamed else queue_depth

    @property
    def api(self) -> Api:
        """What the row measures: the public API, another tool, or the ring under the API."""
        return "raw" if self.loop == "raw" else "tool" if self.loop in ("threadpool", "aiofiles") else "public"


_PLAIN = {
    "sqpoll.mode": "off",
    "fixedbuf.mode": "off",
    "iopoll.mode": "off",
    "nvme_passthrough.mode": "off",
}

RAW_RING = "raw ring (not public API)"


def streamed(base: Rung, name: str, summary: str) -> Rung:
    """*base* driven the streamed way (``core.max_in_flight`` = QD, two prepared batches of
    :func:`stream_ops` / 2 started in turn): the same stack and handle, one flag apart."""
    return dataclasses.replace(base, name=name, summary=summary, streamed=True)


_BATCHED = Rung(
    "batched",
    "api",
    "io_uring handle, prepare_reads once per batch of --batch buffers, then .start(offsets) batches "
    "kept QD deep (.run when one batch is QD)",
    {**_PLAIN, "core.backend": "uring"},
    prepared=True,
)

_FIXEDBUF = Rung(
    "+fixedbuf",
    "api",
    "batched on buffers from handle.lease_buffers (registered: READ/WRITE_FIXED under O_DIRECT) and a registered file",
    {**_PLAIN, "core.backend": "uring", "fixedbuf.mode": "on"},
    fixed=True,
    prepared=True,
)


def _on_plugin_handle(name: str, summary: str, plugin: str, **open_options: str) -> Rung:
    """A batched rung on the handle *plugin* serves: *plugin* in ``auto``, the row skipped
    with the plan's reason unless its verdict is "enabled", the handle's backend checked."""
    return Rung(
        name,
        "api",
        summary,
        {**_PLAIN, "core.backend": "uring", f"{plugin}.mode": "auto"},
        prepared=True,
        requires=plugin,
        open_options=open_options,
        expect_backend=plugin,
    )


_IOPOLL = _on_plugin_handle(
    "+iopoll",
    "batched (prepare_reads, .start batches kept QD deep) on the per-core IOPOLL ring: O_DIRECT, "
    "completions polled from the device",
    "iopoll",
)

_PASSTHROUGH = _on_plugin_handle(
    "+passthrough",
    "batched (prepare_reads, .start batches kept QD deep) as NVMe Read commands via "
    "IORING_OP_URING_CMD on the namespace's /dev/ngXnY",
    "nvme_passthrough",
    passthrough="auto",
)


LADDER: tuple[Rung, ...] = (
    Rung(
        "fallback",
        "api",
        "the fallback plugin's handle (core.backend = fallback): its thread pool, QD one-op batches in flight",
        {**_PLAIN, "core.backend": "fallback"},
        batched=False,
        expect_backend="fallback",
    ),
    Rung(
        "uring-single",
        "api",
        "io_uring handle, QD one-op start_read_many batches in flight (one io_uring_enter each)",
        {**_PLAIN, "core.backend": "uring"},
        batched=False,
    ),
    _BATCHED,
    _FIXEDBUF,
    Rung(
        "+sqpoll",
        "api",
        "+fixedbuf on an SQPOLL ring (a kernel thread polls the SQ: no io_uring_enter while it is awake)",
        {**_PLAIN, "core.backend": "uring", "fixedbuf.mode": "on", "sqpoll.mode": "on"},
        fixed=True,
        prepared=True,
    ),
    streamed(
        _BATCHED,
        "streamed",
        "io_uring handle on a ring whose core.max_in_flight is QD: prepare_reads over each half of 32 x QD "
        "buffers (at least 1024), .start(offsets) of the halves in turn, oldest waited on; the ring refills "
        "each completion's place at once",
    ),
    streamed(
        _FIXEDBUF,
        "streamed +fixedbuf",
        "streamed on buffers from handle.lease_buffers (registered: READ/WRITE_FIXED under O_DIRECT) "
        "and a registered file",
    ),
    _IOPOLL,
    _PASSTHROUGH,
    streamed(
        _IOPOLL,
        "streamed +iopoll",
        "streamed on the per-core IOPOLL ring: O_DIRECT, completions polled from the device",
    ),
    streamed(
        _PASSTHROUGH,
        "streamed +passthrough",
        "streamed as NVMe Read commands via IORING_OP_URING_CMD on the namespace's /dev/ngXnY",
    ),
    Rung(
        "asyncio read",
        "asyncio",
        "asyncio: QD tasks, each `await f.read(size, off)` (writes: `await f.write`) in turn",
        {**_PLAIN, "core.backend": "uring"},
        batched=False,
    ),
    Rung(
        "asyncio batch",
        "asyncio-batch",
        "asyncio: QD/batch tasks, each awaiting a whole read_many_async of --batch ops",
        {**_PLAIN, "core.backend": "uring"},
    ),
    Rung(
        "threadpool preadv",
        "threadpool",
        "not uringstack: a ThreadPoolExecutor of QD threads running os.preadv/os.pwritev, QD futures in flight",
        {**_PLAIN, "core.backend": "fallback"},
        batched=False,
    ),
    Rung(
        "aiofiles",
        "aiofiles",
        "not uringstack: QD asyncio tasks, each its own aiofiles file: await seek, await readinto/write",
        {**_PLAIN, "core.backend": "fallback"},
        batched=False,
    ),
    Rung(
        RAW_RING,
        "raw",
        "not the public API: prebuilt BatchColumns resubmitted with Ring.submit_columns, registered buffers",
        {**_PLAIN, "core.backend": "uring", "fixedbuf.mode": "on"},
        fixed=True,
        prepared=True,
    ),
)

RUNGS: dict[str, Rung] = {r.name: r for r in LADDER}


def stream_ops(queue_depth: int) -> int:
    """Ops per call of a ``streamed`` rung: enough that the queue runs dry only at the end of
    a call (32 refills of each place), and at least 1024."""
    return max(1024, 32 * queue_depth)


ALIASES = {"raw": RAW_RING}  # short names accepted by --modes


def select(names: list[str] | None) -> list[Rung]:
    """The rungs to run, in ladder order; *names* (None = all) must be rung names."""
    if not names:
        return list(LADDER)
    names = [ALIASES.get(n, n) for n in names]
    unknown = [n for n in names if n not in RUNGS]
    if unknown:
        raise ValueError(f"unknown mode(s) {', '.join(unknown)}; modes: {', '.join(RUNGS)}")
    return [r for r in LADDER if r.name in names]
