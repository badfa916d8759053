"""Types of the C extension ``uringstack.ring._futures`` (source: ``_futures.c``)."""

from typing import Any

def set_result_unless_done(fut: Any, value: Any, /) -> bool:
    """``fut.set_result(value)`` unless *fut* is done (cancelled with its task); True if set.

    No Python frame runs between the check and the set, so neither a raising
    signal handler nor a cancellation can come between them."""
