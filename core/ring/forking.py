"""Which process an object belongs to: a fork() child must not use what its parent opened.

After ``fork()`` the child shares the parent's io_uring instances (their
submission and completion queues are shared memory), its registered files and
buffers, and the parent's epoll registrations; the thread-pool and worker
threads do not exist in the child.  Every stack, handle and ring records the
fork generation it was created in; a child (whose generation was bumped by
``os.register_at_fork``) gets :class:`~uringstack.errors.ForkedChildError` on
first use, and its close/GC only drops its own copies of the descriptors,
never cancelling, unregistering or waiting on anything the parent owns.
"""

from __future__ import annotations

import os

from uringstack.errors import ForkedChildError

_generation = 0


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def generation() -> int:
    """The current fork generation (0 in the process that imported uringstack first)."""
    return _generation


def inherited(created_in: int) -> bool:
    """True if an object created in generation *created_in* was inherited through fork()."""
    return created_in != _generation


def check(created_in: int, what: str) -> None:
    """Raise :class:`ForkedChildError` if the object (described by *what*) was inherited through fork()."""
    if created_in != _generation:
        raise ForkedChildError(
            f"{what} was opened by the parent of this forked process (pid {os.getpid()}) and cannot "
            "be used here: it shares the parent's rings and threads. Open a new stack in the child "
            "(uringstack.open_stack()), or fork before opening one"
        )
