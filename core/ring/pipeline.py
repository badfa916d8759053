"""Run N prepared ops through a :class:`~uringstack.ring.Ring` at a bounded queue depth.

A general ring helper (it lived in the iopoll plugin until the NVMe plugin
needed it too; plugins may not import each other, so it is core now).

The caller fills a :class:`~uringstack.ring.columns.BatchColumns` once (one entry
per op, by name); this module submits it in chunks of ``chunk`` ops through
windows sharing its memory (:meth:`BatchColumns.window`), keeps at most ``depth`` ops in flight and copies each
chunk's results into one ``int32_t[n]``.  Python work is per chunk, not per
op.

Reaping on an IOPOLL ring: completions of polled I/O are only found when
someone asks the driver to poll, i.e. ``io_uring_enter`` with
``IORING_ENTER_GETEVENTS``.  A plain peek of the CQ ring never makes progress
there.  ``Ring.wait`` ends in liburing's ``io_uring_wait_cqe``, which enters
the kernel with GETEVENTS and ``min_complete=1``; the kernel then spins on the
device's poll queue until at least one completion arrived.  liburing's
submit also passes GETEVENTS on IOPOLL rings, so every submission reaps what
is already done.  Hence: never set ``RingParams.spin_us`` on an IOPOLL ring
(its busy loop only peeks), and always wait the *oldest* chunk so the window
keeps moving.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from uringstack.ring import Batch, Ring
from uringstack.ring.columns import FIELDS, BatchColumns
from uringstack.ring.native import ffi

COLUMN_TYPES: tuple[str, ...] = tuple(FIELDS.values())
"""The C types of the eight columns, in ``struct us_batch`` order (for positional callers)."""


def filled(ctype: str, value: int, n: int) -> Any:
    """A cdata ``ctype[n]`` with every element *value* (one C-level copy)."""
    arr = ffi.new(f"{ctype}[]", n)
    if value:
        one = ffi.new(f"{ctype}[1]", [value])
        size = ffi.sizeof(ctype)
        pattern = ffi.buffer(one)[:] * n
        ffi.memmove(arr, pattern, size * n)
    return arr


def from_bytes(ctype: str, data: bytes | bytearray | memoryview, n: int) -> Any:
    """A cdata ``ctype[n]`` initialised from raw native-endian bytes."""
    arr = ffi.new(f"{ctype}[]", n)
    if len(data) != ffi.sizeof(ctype) * n:
        raise ValueError(f"{len(data)} bytes do not make {n} {ctype}")
    ffi.memmove(arr, data, len(data))
    return arr


def run_pipelined(
    ring: Ring,
    n: int,
    columns: BatchColumns | Sequence[Any],
    *,
    depth: int,
    chunk: int,
    keep: Sequence[object] = (),
) -> Any:
    """Submit ops ``0..n-1`` described by *columns*; return their results as ``int32_t[n]``.

    *columns* is a :class:`BatchColumns` of capacity >= *n* (or, for older
    callers, the eight positional cdata columns, each *n* entries or
    ``ffi.NULL``).  At most ``max(depth, chunk)`` ops
    are in flight.  Every submitted chunk is waited for before returning, even
    when a later submission fails, so no buffer in *keep* is still owned by
    the kernel when this returns or raises.
    """
    cols = columns if isinstance(columns, BatchColumns) else BatchColumns.wrap(max(n, 1), columns)
    if n > cols.capacity:
        raise ValueError(f"run_pipelined: {n} ops but the columns hold {cols.capacity}")
    if n <= 0:
        return ffi.new("int32_t[]", 0)
    chunk = max(1, min(chunk, n))
    depth = max(depth, chunk)
    results = ffi.new("int32_t[]", n)
    pending: deque[tuple[int, int, Batch]] = deque()
    inflight = 0

    def finish_oldest() -> None:
        nonlocal inflight
        start, k, batch = pending.popleft()
        ring.wait(batch)
        ffi.memmove(results + start, batch.results_cdata, 4 * k)
        inflight -= k

    try:
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            while pending and inflight + k > depth:
                finish_oldest()
            # A window points into the parent columns and holds them (pointers do not own memory).
            batch = ring.submit_columns(cols.window(start, k), k, keep)
            pending.append((start, k, batch))
            inflight += k
        while pending:
            finish_oldest()
    finally:
        # Only reached with pending entries when something raised: still wait
        # so the kernel is done with every buffer before the caller sees it.
        while pending:
            _, _, batch = pending.popleft()
            # The first error is the one to report; later ones are consequences.
            with contextlib.suppress(Exception):
                ring.wait(batch)
    return results


def first_nonzero(results: Any, n: int) -> int:
    """Index of the first non-zero ``int32_t`` in *results*, or -1 (one bytes compare)."""
    raw = ffi.buffer(results, 4 * n)[:]
    if raw.count(0) == len(raw):
        return -1
    values = ffi.unpack(results, n)
    return next(i for i, v in enumerate(values) if v != 0)


def first_not_equal(results: Any, n: int, expected: int) -> int:
    """Index of the first result that is not *expected* (e.g. the transfer size), or -1."""
    raw = ffi.buffer(results, 4 * n)[:]
    want = int(expected).to_bytes(4, "little", signed=True) * n
    if raw == want:
        return -1
    values = ffi.unpack(results, n)
    return next(i for i, v in enumerate(values) if v != expected)
