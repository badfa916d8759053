"""A pipe's read end as the coalescer sees a file, for reads the kernel holds until a test writes."""

from __future__ import annotations


class PipeIO:
    """What the coalescer reads of a file (``CoalescedFile``), for a pipe's read end (a handle
    opens regular files and devices only): a read on it stays in the kernel until the test
    writes to the pipe."""

    def __init__(self, fd: int) -> None:
        self.path = f"pipe:{fd}"
        self.fd = fd
        self.fixed_index = None
        self.completion_hook = None
