"""The checks every backend applies to a caller's offsets and buffers, in one place.

A batch is refused whole before anything is submitted: a backend that runs its
ops one after another (the fallback's pool, a buffered write done inline) would
otherwise have written the ops before a bad one when it raises.  The same
offset gets the same error on every backend, instead of whatever the layer
below says (``OverflowError`` from ``os.preadv``, a cffi column's range error,
``EINVAL`` from the kernel for an offset it reads as a negative ``loff_t``).
"""

from __future__ import annotations

import mmap
import operator
from collections.abc import Sequence
from typing import Any

from uringstack.ring.buffers import RegisteredBuffer

# An SQE's offset is a u64 the kernel reads as a signed loff_t; preadv takes an off_t.
OFFSET_LIMIT = 1 << 63


def nbytes(buf: Any) -> int:
    """The length of *buf* in bytes (``len()`` counts items: 4 per item of an ``array('i')``)."""
    kind = type(buf)
    if kind is bytearray or kind is bytes:
        return len(buf)
    if kind is memoryview:
        return int(buf.nbytes)
    if kind is RegisteredBuffer or isinstance(buf, mmap.mmap):
        return len(buf)
    with memoryview(buf) as view:  # (released at once: an mmap with an export cannot be closed)
        return int(view.nbytes)


def offset_problem(offset: Any) -> tuple[type[Exception], str, str] | None:
    """What is wrong with *offset* as a file offset (the error's type, the value as shown,
    and why), or None: it is an int in ``[0, 2**63)``."""
    try:
        value = operator.index(offset)
    except TypeError:
        return TypeError, repr(offset), "is not an integer"
    if value < 0:
        return ValueError, str(value), "is negative"
    if value >= OFFSET_LIMIT:
        return ValueError, str(value), "is past the largest file offset (2**63 - 1)"
    return None


def check_offset(path: str, offset: Any) -> int:
    """*offset* as an int, or the ``TypeError``/``ValueError`` naming what is wrong with it."""
    problem = offset_problem(offset)
    if problem is not None:
        kind, shown, why = problem
        raise kind(f"{path}: offset {shown} {why}")
    return operator.index(offset)


def check_offsets(path: str, offsets: Sequence[Any]) -> Sequence[int]:
    """*offsets*, or the ``TypeError``/``ValueError`` naming the first that is not an int in
    ``[0, 2**63)``.  Objects with ``__index__`` (``numpy.int64``) are offsets too: they are
    returned as a new list of ints, since cffi's columns take only ints.

    The common case (plain ints in range) costs a ``min``, a ``max`` and a ``sum``."""
    if not offsets:
        return offsets
    try:
        if min(offsets) >= 0 and max(offsets) < OFFSET_LIMIT and type(sum(offsets)) is int:
            return offsets
    except TypeError:
        pass  # (something not a number: found below)
    for i, off in enumerate(offsets):
        problem = offset_problem(off)
        if problem is not None:
            kind, shown, why = problem
            raise kind(f"{path}: offset {shown} (op {i} of the batch) {why}")
    return list(map(operator.index, offsets))
