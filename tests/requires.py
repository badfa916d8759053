"""Skips for a facility this machine lacks, each saying where the test does run.

The guards below never fire on the development host or in CI's host suite
(``bash .ci/run``, see its ``-rs`` summary): they exist for other machines
(io_uring blocked by seccomp, an old kernel, a tmpfs /tmp, no root).  Tests that
need NVMe hardware say so themselves and run in the NVMe VM (tests/nvme).
"""

from __future__ import annotations

import errno
import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from uringstack.ring.flags import SetupFlag

WHERE = "it runs on the development host and in CI's host suite (bash .ci/run), which have it"


def skip_without(missing: str) -> NoReturn:
    """Skip: *missing* names what this machine lacks; the reason adds where the test runs."""
    pytest.skip(f"{missing}; {WHERE}")


def open_direct(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open(path, flags | O_DIRECT)``; skip where the file system refuses O_DIRECT (tmpfs before 6.6)."""
    try:
        return os.open(path, flags | os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        skip_without(f"{os.path.dirname(os.fspath(path))} refuses O_DIRECT ({exc})")


def require_setup_flag(flag: SetupFlag, since: str) -> None:
    """Skip unless this kernel accepts the io_uring setup *flag* (which came in Linux *since*)."""
    from uringstack.ring.params import try_setup_flag

    err = try_setup_flag(flag)
    if err:
        skip_without(
            f"kernel {os.uname().release} refuses IORING_SETUP_{flag.name} "
            f"({errno.errorcode.get(err, err)}; it came in Linux {since})"
        )


def cpython_test_module(name: str) -> ModuleType:
    """CPython's own ``test.<name>`` (``test_fileio``, ``test_io``).

    Not a skip: scripts/setup.sh installs the package where the distribution
    ships it apart (Debian's ``libpythonX.Y-testsuite``), so a missing one is a
    broken setup, said as such."""
    try:
        return importlib.import_module(f"test.{name}")
    except ImportError as exc:
        raise ImportError(
            f"this Python has no `test` package (test.{name}: {exc}); scripts/setup.sh installs it "
            "(Debian: libpythonX.Y-testsuite)"
        ) from exc
