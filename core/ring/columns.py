"""``BatchColumns``: the ops of one submission as named, reusable C columns.

The C side (``struct us_batch`` in ``_native/uring_helpers.h``) prepares one
SQE per op from parallel arrays: ``opcodes``, ``fds``, ``addrs``, ``lens``,
``offs``, ``op_flags``, ``sqe_flags`` and ``buf_index``.  A
:class:`BatchColumns` allocates those arrays once for a *capacity* and keeps
its own ``struct us_batch`` pointing at them, so a caller that submits the
same shape of batch again and again (a prepared read, a benchmark loop, a
log writer) rewrites only the columns that change, by name, and submits with
:meth:`uringstack.ring.Ring.submit_columns`.

Reuse rule: the columns describe memory the kernel reads or writes until the
batch's completions are reaped, so a :class:`BatchColumns` whose last batch is
still in flight refuses to be submitted again (:class:`BatchInFlightError`);
it may be refilled and resubmitted as soon as that batch finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from uringstack.errors import BatchInFlightError
from uringstack.ring.native import ffi


class SubmittedBatch(Protocol):
    """What the columns read of the last batch submitted from them (a :class:`uringstack.ring.Batch`).

    A protocol rather than the class: the ring module builds batches from
    columns, so the columns must not import it back.
    """

    @property
    def n(self) -> int: ...

    @property
    def finished(self) -> bool: ...


FIELDS: dict[str, str] = {
    "opcodes": "uint8_t",
    "fds": "int32_t",
    "addrs": "uint64_t",
    "lens": "uint32_t",
    "offs": "uint64_t",
    "op_flags": "uint32_t",
    "sqe_flags": "uint8_t",
    "buf_index": "uint16_t",
}
"""Column name -> C element type, in ``struct us_batch`` order."""

REQUIRED = ("opcodes", "fds")
"""Columns the C side always reads; the others may be left unset (every op 0)."""


class BatchColumns:
    """Named cdata columns for up to *capacity* ops, allocated once and reused.

    Each column is ``ffi.NULL`` (every op reads 0) until it is set with
    :meth:`fill` (one value for every op) or :meth:`set` (one value per op),
    or allocated with :meth:`column` to be written element by element
    (``cols.column("offs")[i] = off``).  ``n`` is how many ops the next
    submission takes (default: the capacity).
    """

    __slots__ = ("_consts", "_keep", "batch", "capacity", "desc", "n", "ready")

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"BatchColumns capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.n = capacity
        self.desc: Any = ffi.new("struct us_batch *")
        """The ``struct us_batch`` the ring hands to C; its column pointers are these columns."""
        self.batch: SubmittedBatch | None = None
        """The last batch submitted from these columns (``None``: never submitted)."""
        # Owners of the column memory (the desc only points into it).
        self._keep: dict[str, Any] = {}
        # Columns known to hold one constant (an int) or one progression ((start, step): fill_range)
        # over the whole capacity: refilling them is skipped.
        self._consts: dict[str, int | tuple[int, int]] = {}
        self.ready = False
        """True once the required columns (opcodes, fds) have memory: C reads them unconditionally."""

    @classmethod
    def wrap(cls, n: int, arrays: Sequence[Any]) -> BatchColumns:
        """Columns over eight ready cdata arrays in ``struct us_batch`` order (no copy; ``ffi.NULL`` allowed)."""
        if len(arrays) != len(FIELDS):
            raise ValueError(f"expected {len(FIELDS)} columns ({', '.join(FIELDS)}), got {len(arrays)}")
        cols = cls(n)
        for name, arr in zip(FIELDS, arrays, strict=True):
            if arr != ffi.NULL:
                cols._keep[name] = arr
                setattr(cols.desc, name, arr)
        cols.ready = all(name in cols._keep for name in REQUIRED)
        return cols

    # --- state ---------------------------------------------------------------
    @property
    def in_flight(self) -> bool:
        """True while the last batch submitted from these columns has not completed."""
        return self.batch is not None and not self.batch.finished

    def check_reusable(self) -> None:
        """Raise :class:`BatchInFlightError` if the last batch from these columns is still in flight."""
        if self.batch is not None and not self.batch.finished:
            raise BatchInFlightError(
                f"these batch columns (capacity {self.capacity}) are still in flight: "
                f"{self.batch.n} op(s) submitted from them have not completed; wait for that batch "
                "before refilling or resubmitting them (or use another BatchColumns)"
            )

    def check_ready(self) -> None:
        """Raise ``ValueError`` naming the required columns that were never set."""
        missing = [name for name in REQUIRED if name not in self._keep]
        if missing:
            raise ValueError(f"batch columns {', '.join(missing)} are not set (every op needs an opcode and an fd)")
        self.ready = True

    # --- filling by name ------------------------------------------------------
    def column(self, name: str) -> Any:
        """The cdata ``ctype[capacity]`` behind column *name*, allocated (zeroed) on first use.

        The caller may write it element by element: it is no longer known to hold
        what :meth:`fill` or :meth:`fill_range` put there (their next call writes again)."""
        arr = self._keep.get(name)
        if arr is not None:
            self._consts.pop(name, None)
        else:
            ctype = FIELDS.get(name)
            if ctype is None:
                raise ValueError(f"unknown batch column {name!r}; columns: {', '.join(FIELDS)}")
            arr = ffi.new(f"{ctype}[]", self.capacity)
            self._keep[name] = arr
            setattr(self.desc, name, arr)
            self._consts[name] = 0
            self.ready = all(r in self._keep for r in REQUIRED)
        return arr

    def adopt(self, name: str, array: Any) -> None:
        """Point column *name* at an existing cdata array of at least ``capacity`` elements of its type.

        No copy: the array may be shared by several BatchColumns (C reads
        columns only while submitting) and is held by this object."""
        ctype = FIELDS.get(name)
        if ctype is None:
            raise ValueError(f"unknown batch column {name!r}; columns: {', '.join(FIELDS)}")
        kind = ffi.typeof(array)
        if kind.kind not in ("array", "pointer") or kind.item != ffi.typeof(ctype):
            raise ValueError(f"column {name!r} needs a {ctype} array, got {kind.cname}")
        if kind.kind == "array" and len(array) < self.capacity:
            raise ValueError(f"column {name!r}: a {len(array)}-element array for {self.capacity} ops")
        self._keep[name] = array
        self._consts.pop(name, None)
        setattr(self.desc, name, array)
        self.ready = all(r in self._keep for r in REQUIRED)

    def set(self, name: str, values: Sequence[int]) -> None:
        """Write one value per op into column *name* from op 0 (at most ``capacity`` values)."""
        arr = self.column(name)
        k = len(values)
        if k > self.capacity:
            raise ValueError(f"{k} values for column {name!r} of a {self.capacity}-op BatchColumns")
        try:
            arr[0:k] = values
        except OverflowError:
            raise ValueError(
                f"column {name!r} ({FIELDS[name]}): a value out of range in {list(values)[:8]!r}"
            ) from None
        self._consts.pop(name, None)

    def fill(self, name: str, value: int) -> None:
        """Give every op the same *value* in column *name* (a no-op when it already holds it)."""
        if self._consts.get(name) == value:
            return
        arr = self.column(name)
        try:
            arr[0 : self.capacity] = [value] * self.capacity
        except OverflowError:
            raise ValueError(f"column {name!r} ({FIELDS[name]}): value {value} out of range") from None
        self._consts[name] = value

    def fill_range(self, name: str, start: int, step: int) -> None:
        """Give op ``i`` the value ``start + i * step`` in column *name* (a no-op when it already holds them).

        Ops of one size laid out back to back in one buffer (their addresses), kept
        across submissions that reuse the buffer."""
        key = (start, step)
        if self._consts.get(name) == key:
            return
        arr = self.column(name)
        try:
            end = start + self.capacity * step
            arr[0 : self.capacity] = range(start, end, step) if step else [start] * self.capacity
        except OverflowError:
            raise ValueError(f"column {name!r} ({FIELDS[name]}): {start} + i * {step} out of range") from None
        self._consts[name] = key

    def clear(self, name: str) -> None:
        """Make column *name* read 0 for every op (``NULL`` to C: no memory is touched)."""
        if name not in FIELDS:
            raise ValueError(f"unknown batch column {name!r}; columns: {', '.join(FIELDS)}")
        if name in REQUIRED:
            raise ValueError(f"column {name!r} is required and cannot be cleared")
        self._keep.pop(name, None)
        self._consts.pop(name, None)
        setattr(self.desc, name, ffi.NULL)

    def get(self, name: str) -> list[int]:
        """Column *name* for the next ``n`` ops, as ints (0s for an unset column)."""
        arr = self._keep.get(name)
        if arr is None:
            if name not in FIELDS:
                raise ValueError(f"unknown batch column {name!r}; columns: {', '.join(FIELDS)}")
            return [0] * self.n
        return [int(v) for v in arr[0 : self.n]]

    def is_set(self, name: str) -> bool:
        """True when column *name* has memory (else C reads 0 for every op)."""
        return name in self._keep

    def window(self, start: int, n: int) -> BatchColumns:
        """Columns for ops ``start .. start + n - 1`` of these, sharing their memory (for chunked submission)."""
        if start < 0 or n <= 0 or start + n > self.capacity:
            raise ValueError(f"window {start}+{n} outside a {self.capacity}-op BatchColumns")
        sub = BatchColumns(n)
        for name, arr in self._keep.items():
            sub._keep[name] = arr  # the parent array owns the memory the pointer points into
            setattr(sub.desc, name, arr + start)
        sub.ready = self.ready
        return sub

    def __repr__(self) -> str:
        state = "in flight" if self.in_flight else "idle"
        return f"<BatchColumns n={self.n}/{self.capacity} {state} set={sorted(self._keep)}>"
