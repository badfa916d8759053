"""Arguments of the file objects' methods, converted as ``io`` converts them.

``io`` converts a method's argument before it looks at the file, so a call
that is wrong twice (a bad argument on a closed file, or on one not open for
that) raises the argument's ``TypeError``/``OverflowError``, and a bad
argument is refused before anything is read or written.  ``uringstack.FileIO``
and the ``uringstack.aio`` files both convert with these, so the two raise the
same errors as the built-in files they stand in for.
"""

from __future__ import annotations

import operator
from typing import Any

SSIZE_LIMIT = 1 << 63  # a Py_ssize_t holds [-2**63, 2**63)
C_INT_LIMIT = 1 << 31


def type_name(value: object) -> str:
    """A type as CPython's argument errors name it (``None`` for None)."""
    return "None" if value is None else type(value).__name__


def buffer_view(b: Any, writable: bool) -> memoryview:
    """*b* as a flat byte view, or the ``TypeError`` ``io.FileIO.readinto`` (*writable*) or
    ``write`` raises for it (``BufferError`` for a non-contiguous ``write`` argument)."""
    try:
        view = memoryview(b)
    except TypeError:
        view = None
    if writable and (view is None or view.readonly or not view.c_contiguous):
        raise TypeError(f"readinto() argument must be read-write bytes-like object, not {type_name(b)}")
    if view is None:
        raise TypeError(f"a bytes-like object is required, not '{type(b).__name__}'")
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view.cast("B")


def size_argument(size: Any) -> int:
    """*size* as ``io``'s optional size arguments take it (``read``, ``readline``, ``readlines``;
    None: -1), or the error they raise."""
    if size is None:
        return -1
    try:
        n = operator.index(size)
    except TypeError:
        raise TypeError(f"argument should be integer or None, not '{type_name(size)}'") from None
    if not -SSIZE_LIMIT <= n < SSIZE_LIMIT:
        raise OverflowError(f"cannot fit '{type(size).__name__}' into an index-sized integer")
    return n


def index_argument(size: Any) -> int:
    """*size* as a ``Py_ssize_t`` argument that does not take None (``read1``, ``peek``, the
    text ``readline``): the built-in's ``TypeError`` or ``OverflowError`` otherwise."""
    n = operator.index(size)
    if not -SSIZE_LIMIT <= n < SSIZE_LIMIT:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return n


def whence_argument(whence: Any) -> int:
    """*whence* as ``io``'s ``seek`` converts it (a C int), or the error it raises."""
    n = operator.index(whence)  # (its TypeError is the built-in's)
    if not -C_INT_LIMIT <= n < C_INT_LIMIT:
        raise OverflowError("Python int too large to convert to C int")
    return n


def check_stack_arguments(call: str, stack: object, direct: object) -> None:
    """Refuse a *stack* that is no :class:`~uringstack.stack.Stack` and a *direct* that is not
    True, False or None (the config's ``core.direct``), before anything is opened: a string's
    ``"no"`` is truthy, and a stack that is not one failed later on a missing attribute."""
    if direct is not None and type(direct) is not bool:
        raise TypeError(f"{call} argument 'direct' must be True, False or None, not {direct!r}")
    if stack is not None:
        from uringstack.stack import Stack  # (the stack package imports the file objects' users)

        if not isinstance(stack, Stack):
            raise TypeError(f"{call} argument 'stack' must be a uringstack Stack or None, not {type_name(stack)}")
