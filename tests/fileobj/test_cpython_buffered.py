"""CPython's own buffered and text layer tests (``test.test_io``) pointed at ``uringstack.open``'s layers.

``uringstack.open`` puts its own subclasses of ``io.BufferedRandom``,
``io.BufferedWriter`` and ``io.TextIOWrapper`` over its raw file (their
``flush()`` waits for write-behind, their ``close()`` survives Ctrl-C, their
``read1`` writes out the buffer first).  These run CPython's tests of the C
layers (``CBufferedRandomTest``, ``CBufferedWriterTest``,
``CTextIOWrapperTest``: mock raw files, ``BytesIO`` and real files) with our
classes in their place, as ``test_cpython_fileio.py`` does for ``FileIO``.
What differs on purpose is listed in ``_DIFFERENCES`` with the reason, and run
as an expected failure (an unexpected pass fails the run).
"""

from __future__ import annotations

import io
import unittest
from typing import Any

import pytest

from tests.requires import cpython_test_module
from uringstack.fileobj import openfile

cpython: Any = cpython_test_module("test_io")
pytestmark = pytest.mark.usefixtures("in_tmp_cwd")  # the suite writes TESTFN into the current directory


def _c_namespace() -> dict[str, Any]:
    """What ``test_io.load_tests`` gives its ``C...`` classes: the ``io`` names and the C mocks."""
    mocks = (
        cpython.MockRawIO,
        cpython.MisbehavedRawIO,
        cpython.MockFileIO,
        cpython.CloseFailureIO,
        cpython.MockNonBlockWriterIO,
        cpython.MockUnseekableIO,
        cpython.MockRawIOWithoutRead,
        cpython.SlowFlushRawIO,
    )
    names = {name: getattr(io, name) for name in [*io.__all__, "IncrementalNewlineDecoder"]}
    names.update((m.__name__, getattr(cpython, "C" + m.__name__)) for m in mocks)
    return names


_CLOSE = (
    "our close() flushes, then runs the C close (which calls the raw close() again when the first "
    "raised): with both failing, the close error's context is the close error, not the flush's"
)
_DIFFERENCES = {
    "test_close_error_on_close": _CLOSE,
    "test_nonnormalized_close_error_on_close": _CLOSE,
    "test_slow_close_from_thread": (
        "a write from another thread while close() flushes is taken and written by the close "
        "(docs/api.md, 'Ctrl-C during I/O'), where the C layer raises ValueError"
    ),
}
_TEXT_DIFFERENCES = {
    **{name: why for name, why in _DIFFERENCES.items() if name != "test_slow_close_from_thread"},
    "test_override_destructor": "a subclass's overridden flush() runs twice at close (ours, then the C close's)",
    "test_repr": "the C repr names _io.TextIOWrapper for the subclass",
}


def _prepare(cls: type, differences: dict[str, str]) -> type:
    for name, obj in _c_namespace().items():
        setattr(cls, name, obj)
    for name in differences:
        setattr(cls, name, unittest.expectedFailure(getattr(cls, name)))
    return cls


class TestBufferedRandom(cpython.CBufferedRandomTest):
    tp = openfile.BufferedRandom


class TestBufferedWriter(cpython.CBufferedWriterTest):
    tp = openfile.BufferedWriter


class TestTextBufferedWriter(cpython.CBufferedWriterTest):
    tp = openfile.TextBufferedWriter


class TestTextIOWrapper(cpython.CTextIOWrapperTest):
    is_C = True


for _cls in (TestBufferedRandom, TestBufferedWriter, TestTextBufferedWriter):
    _prepare(_cls, _DIFFERENCES)
del _cls  # (a module-level name bound to a TestCase would be collected twice)
_prepare(TestTextIOWrapper, _TEXT_DIFFERENCES)
# (after _prepare: its io namespace would put the C classes back)
TestTextIOWrapper.TextIOWrapper = openfile.TextIOWrapper
TestTextIOWrapper.BufferedRandom = openfile.BufferedRandom
TestTextIOWrapper.BufferedWriter = openfile.BufferedWriter
