"""CPython's own FileIO tests (``test.test_fileio``) pointed at ``uringstack.FileIO``.

The same classes ``_pyio.FileIO`` passes (``PyAutoFileTests``/``PyOtherFileTests``),
run once per backend with that backend's stack as the process-wide default.
"""

from __future__ import annotations

import io
import pathlib
import unittest
from typing import Any, ClassVar

import pytest

import uringstack
from tests.requires import cpython_test_module
from tests.stack.test_completion_hook import Recorder
from uringstack.config import load_config
from uringstack.pluginmanager import make_plugin_manager
from uringstack.stack import Stack, open_stack
from uringstack.stack.uring_backend import UringFileIO

from .conftest import BACKENDS, as_default_stack

cpython: Any = cpython_test_module("test_fileio")
pytestmark = pytest.mark.usefixtures("in_tmp_cwd")  # the suite writes TESTFN into the current directory


class _OnBackend:
    backend: ClassVar[str]
    _stack: ClassVar[Stack]
    _ctx: ClassVar[Any]
    FileIO = uringstack.FileIO
    modulename = "uringstack"

    @classmethod
    def setUpClass(cls) -> None:
        cls._stack = open_stack(overrides=BACKENDS[cls.backend])
        cls._ctx = as_default_stack(cls._stack)
        cls._ctx.__enter__()

    @classmethod
    def tearDownClass(cls) -> None:
        cls._ctx.__exit__(None, None, None)
        cls._stack.close()


class _OpenCode:
    def test_open_code(self) -> None:
        # as PyOtherFileTests.test_open_code: same bytes as io.open_code()
        with uringstack.FileIO(__file__, "rb") as f:
            expected = f.read()
        with io.open_code(__file__) as f:
            actual = f.read()
        assert expected == actual


class UringAutoFileTests(_OnBackend, cpython.AutoFileTests, unittest.TestCase):  # type: ignore[misc]
    backend = "uring"


class UringOtherFileTests(_OnBackend, _OpenCode, cpython.OtherFileTests, unittest.TestCase):  # type: ignore[misc]
    backend = "uring"


class FallbackAutoFileTests(_OnBackend, cpython.AutoFileTests, unittest.TestCase):  # type: ignore[misc]
    backend = "fallback"


class FallbackOtherFileTests(_OnBackend, _OpenCode, cpython.OtherFileTests, unittest.TestCase):  # type: ignore[misc]
    backend = "fallback"


def test_the_files_really_go_through_the_stack(tmp_path: pathlib.Path) -> None:
    """The suite above proves nothing if FileIO bypassed the stack: check reads and writes do not.

    Every op reaches the stack's handle (its completion hook sees it).  Whether a
    buffered write then goes to the ring or is done inline is the backend's choice
    (inline where the kernel would punt it to io-wq: ext4 here), not FileIO's."""
    pm = make_plugin_manager()
    rec = Recorder()
    pm.register(rec, "recorder")
    loaded = load_config(env={}, plugin_manager=pm, overrides={**BACKENDS["uring"], "sqpoll.mode": "off"})
    with (
        open_stack(loaded.config, plugin_manager=pm) as stack,
        as_default_stack(stack),
        uringstack.FileIO(tmp_path / "f", "w+") as f,
    ):
        assert f.handle is not None and f.handle in stack._handles
        ring = f.handle.ring
        assert ring is not None
        before = ring.counters()["submitted"]
        f.write(b"x" * 10)
        assert rec.seen == [("write", [10])]
        inline = isinstance(f.handle.io, UringFileIO) and f.handle.io.writes_inline()
        assert ring.counters()["submitted"] == before + (0 if inline else 1)
        before = ring.counters()["submitted"]
        f.seek(0)
        for _ in range(3):
            assert f.read(10) == b"x" * 10
            f.seek(0)
        # at the file position, what the page cache holds copied by this thread (the
        # backend's choice, as for writes); else through the ring
        io = f.handle.io
        here = isinstance(io, UringFileIO) and io._reads_here and io._reads_cached_inline
        assert ring.counters()["submitted"] == before + (0 if here else 3)
        assert rec.seen[1:] == [("read", [10])] * 3
