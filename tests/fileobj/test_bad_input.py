"""Issue 16, "Bad input": what the built-in refuses, uringstack refuses the same way.

* every mode string the built-in ``open()`` (and ``io.FileIO``) rejects, out of
  all strings of up to three characters over the mode alphabet plus strays, is
  rejected by ``uringstack.open`` (``uringstack.FileIO``) with the same
  exception type and message;
* a file object used after its stack was closed raises the built-in's
  ``ValueError`` for a closed file, and data a buffered writer still held when
  the stack closed reached the file (it was accepted by ``write``: losing it
  silently is not an option).
"""

from __future__ import annotations

import array
import asyncio
import functools
import io
import itertools
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uringstack
import uringstack.aio
from uringstack.stack import Stack, open_stack

from .conftest import BACKENDS


def _rejection(fn: Callable[[], Any]) -> tuple[str, str] | None:
    """The (type, message) of the ValueError/TypeError *fn* raises, or None when it accepts."""
    try:
        obj = fn()
    except (ValueError, TypeError) as exc:
        return type(exc).__name__, str(exc)
    except OSError:  # accepted, then refused by the file system (x on an existing file)
        return None
    obj.close()
    return None


_ALPHABET = "rwaxbt+U \0"
_CANDIDATES = [
    "",
    *("".join(t) for n in (1, 2, 3) for t in itertools.product(_ALPHABET, repeat=n)),
    *["rw+b", "r+b+", "rb+t", "rr+b", "ab+b", "r\n", "r'", 'r"', "rb\t", "é", "rä", "R", "W+"],
]
_OPEN_REJECTS = {m: r for m in _CANDIDATES if (r := _rejection(lambda m=m: open(os.devnull, m))) is not None}  # noqa: SIM115
_FILEIO_REJECTS = {m: r for m in _CANDIDATES if (r := _rejection(lambda m=m: io.FileIO(os.devnull, m))) is not None}


@pytest.fixture(scope="module")
def mode_stack() -> Iterator[Stack]:
    """One stack for the mode checks: a rejected mode must never reach it."""
    with open_stack(overrides=BACKENDS["fallback"]) as s:
        yield s


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("modes") / "f"
    path.write_bytes(b"data")
    return path


def test_the_candidates_cover_every_kind_of_rejection() -> None:
    assert len(_OPEN_REJECTS) > 1000 and len(_FILEIO_REJECTS) > 1000
    messages = {msg.split(":")[0] for _, msg in _OPEN_REJECTS.values()}
    assert {
        "invalid mode",
        "can't have text and binary mode at once",
        "must have exactly one of create/read/write/append mode",
        "Must have exactly one of create/read/write/append mode and at most one plus",
        "embedded null character",
    } <= messages, messages


@pytest.mark.parametrize("mode", sorted(_OPEN_REJECTS))
def test_open_rejects_a_mode_as_the_builtin_does(mode: str, existing: pathlib.Path, mode_stack: Stack) -> None:
    got = _rejection(lambda: uringstack.open(existing, mode, stack=mode_stack))
    assert got == _OPEN_REJECTS[mode]
    assert existing.read_bytes() == b"data"


@pytest.mark.parametrize("mode", sorted(_FILEIO_REJECTS))
def test_fileio_rejects_a_mode_as_io_fileio_does(mode: str, existing: pathlib.Path, mode_stack: Stack) -> None:
    got = _rejection(lambda: uringstack.FileIO(existing, mode, stack=mode_stack))
    assert got == _FILEIO_REJECTS[mode]
    assert existing.read_bytes() == b"data"


@pytest.mark.parametrize("mode", [None, b"r", 1, 1.5, ["r"]])
def test_a_mode_that_is_not_a_string(mode: Any, existing: pathlib.Path, mode_stack: Stack) -> None:
    assert _rejection(lambda: uringstack.open(existing, mode, stack=mode_stack)) == _rejection(
        lambda: open(os.devnull, mode)  # noqa: SIM115
    )
    assert _rejection(lambda: uringstack.FileIO(existing, mode, stack=mode_stack)) == _rejection(
        lambda: io.FileIO(os.devnull, mode)
    )


@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [
        ("rb", {"encoding": "utf-8"}),
        ("rb", {"errors": "strict"}),
        ("rb", {"newline": "\n"}),
        ("b", {"encoding": "utf-8"}),  # the binary check comes before the missing r/w/a/x
        ("r", {"buffering": 0}),
        ("r", {"encoding": 5}),
        ("r", {"errors": 5}),
        ("r", {"newline": 5}),
        ("r", {"newline": "x"}),
        ("r", {"buffering": "1"}),
        ("r", {"buffering": 1.5}),
    ],
)
def test_other_arguments_are_rejected_as_the_builtin_does(
    mode: str, kwargs: dict[str, Any], existing: pathlib.Path, mode_stack: Stack
) -> None:
    expected = _rejection(lambda: open(existing, mode, **kwargs))  # noqa: SIM115
    assert expected is not None
    assert _rejection(lambda: uringstack.open(existing, mode, stack=mode_stack, **kwargs)) == expected


# --- after the stack closed ---------------------------------------------------------------

LAYERS = {  # name: (mode, buffering)
    "raw": ("r+b", 0),
    "reader": ("rb", -1),
    "writer": ("wb", -1),
    "random": ("r+b", -1),
    "text": ("r+", -1),
}
OPS: dict[str, Callable[[Any, bool], Any]] = {
    "read": lambda f, text: f.read(10),
    # ("readinto of closed file" on r+b until session 32; raw and text files have none)
    "read1": lambda f, text: f.read1(5) if hasattr(f, "read1") else "no read1",
    "readline": lambda f, text: f.readline(),
    "write": lambda f, text: f.write("x" if text else b"x"),
    "seek": lambda f, text: f.seek(0),
    "tell": lambda f, text: f.tell(),
    "flush": lambda f, text: f.flush(),
    "fileno": lambda f, text: f.fileno(),
    "truncate": lambda f, text: f.truncate(),
}


def _outcome(fn: Callable[[], Any]) -> tuple[str, str]:
    try:
        return "returned", repr(fn())
    except Exception as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_file_used_after_its_stack_closed_fails_as_a_closed_builtin_file(
    tmp_path: pathlib.Path, backend: str, layer: str
) -> None:
    mode, buffering = LAYERS[layer]
    path = tmp_path / "f"
    path.write_bytes(b"0123456789" * 100)
    builtin = open(path, mode, buffering=buffering)  # noqa: SIM115
    builtin.close()
    stack = open_stack(overrides=BACKENDS[backend])
    f = uringstack.open(path, mode, buffering=buffering, stack=stack)
    stack.close()
    assert f.closed
    text = "b" not in mode
    for name, op in OPS.items():
        got = _outcome(functools.partial(op, f, text))
        assert got == _outcome(functools.partial(op, builtin, text)), name
    assert _outcome(f.close) == ("returned", "None")  # closing again is harmless, as for the built-in


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(("mode", "direct"), [("wb", False), ("w", False), ("r+b", False), ("wb", True), ("ab", False)])
def test_data_a_buffered_writer_holds_reaches_the_file_when_its_stack_closes(
    tmp_path: pathlib.Path, backend: str, mode: str, direct: bool
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    stack = open_stack(overrides=BACKENDS[backend])
    f = uringstack.open(path, mode, stack=stack, direct=direct)
    f.write("accepted" if "b" not in mode else b"accepted")  # stays in the buffered layer
    stack.close()
    assert f.closed
    assert path.read_bytes() == b"accepted", "write() accepted the data, the stack's close dropped it"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_raw_fileio_after_its_stack_closed(tmp_path: pathlib.Path, backend: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    stack = open_stack(overrides=BACKENDS[backend])
    raw = uringstack.FileIO(path, "r+", stack=stack)
    stack.close()
    with pytest.raises(ValueError, match=r"^I/O operation on closed file$"):
        raw.read(1)
    with pytest.raises(ValueError, match=r"^I/O operation on closed file$"):
        raw.write(b"x")
    raw.close()
    assert path.read_bytes() == b"abc"


# --- bad arguments to the methods -------------------------------------------------------

BAD_ARGUMENTS = [None, 1.5, "x", b"x", -1, 1 << 63, 1 << 64, [1], bytearray(b"ab"), memoryview(b"abcd")[::2],
                 array.array("i", [1]), True, object()]  # fmt: skip
METHODS: dict[str, Callable[[Any, Any], Any]] = {
    "read": lambda f, a: f.read(a),
    "readinto": lambda f, a: f.readinto(a),
    "readline": lambda f, a: f.readline(a),
    "readlines": lambda f, a: f.readlines(a),
    "write": lambda f, a: f.write(a),
    "writelines": lambda f, a: f.writelines(a),
    "seek": lambda f, a: f.seek(a),
    "seek whence": lambda f, a: f.seek(0, a),
    "truncate": lambda f, a: f.truncate(a),
}


def _with_file(opener: Callable[..., Any], path: pathlib.Path, mode: str, closed: bool, call: Any) -> tuple[Any, ...]:
    path.write_bytes(b"hello\nworld\n" * 10)
    f = opener(path, mode, buffering=0)
    try:
        if closed:
            f.close()
        got = _outcome(call(f))
        at = None if closed else f.tell()
    finally:
        f.close()
    return got[0], at, path.read_bytes()


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
@pytest.mark.parametrize("mode", ["rb", "wb", "r+b", "ab"])
def test_a_bad_argument_fails_as_io_fileio_fails(tmp_path: pathlib.Path, mode: str, closed: bool, stack: Stack) -> None:
    # io.FileIO converts its argument before it checks the file: a call wrong twice (a bad
    # argument on a closed file, or on one not open for it) raises the argument's error
    path = tmp_path / "f"
    opener = functools.partial(uringstack.open, stack=stack)
    for name, method in METHODS.items():
        for arg in BAD_ARGUMENTS:

            def call(f: Any, method: Callable[[Any, Any], Any] = method, arg: Any = arg) -> Callable[[], Any]:
                return lambda: method(f, arg)

            want = _with_file(open, path, mode, closed, call)
            assert _with_file(opener, path, mode, closed, call) == want, f"{name}({arg!r})"


_BAD_STACK_ARGUMENTS = [("direct", "yes"), ("direct", 0), ("stack", "x"), ("stack", 5)]


@pytest.mark.parametrize(
    ("opener", "argument", "value"),
    # (aio.open has aiofiles' signature: no direct argument)
    [
        (o, a, v)
        for o in ("open", "FileIO", "aio.open")
        for a, v in _BAD_STACK_ARGUMENTS
        if (o, a) != ("aio.open", "direct")
    ],
)
def test_a_bad_stack_or_direct_argument_is_refused_before_anything_is_opened(
    tmp_path: pathlib.Path, opener: str, argument: str, value: object
) -> None:
    # a stack that is not one failed after the file was created ("'str' object has no
    # attribute 'closed'"), and direct="yes" in Stack.open's words
    path = tmp_path / "new"
    call: dict[str, Callable[[], Any]] = {
        "open": lambda: uringstack.open(path, "wb", **{argument: value}),
        "FileIO": lambda: uringstack.FileIO(path, "wb", **{argument: value}),
        "aio.open": lambda: asyncio.run(_aio_open(path, **{argument: value})),
    }
    with pytest.raises(TypeError, match=rf"argument '{argument}' must be .*{type(value).__name__}|not {value!r}"):
        call[opener]()
    assert not path.exists()


async def _aio_open(path: pathlib.Path, **kwargs: Any) -> None:
    f = await uringstack.aio.open(path, "wb", **kwargs)
    await f.close()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("mode", ["wb", "w+b", "xb", "ab", "w"])
def test_opening_on_a_closed_stack_leaves_the_file_alone(tmp_path: pathlib.Path, backend: str, mode: str) -> None:
    """It truncated (``w``) or created (``x``) the file before the stack's refusal (session 32)."""
    path = tmp_path / "f"
    if "x" not in mode:
        path.write_bytes(b"keep me")
    stack = open_stack(overrides=BACKENDS[backend])
    stack.close()
    with pytest.raises(ValueError, match="closed stack: the file was not opened"):
        uringstack.open(path, mode, stack=stack)
    if "x" in mode:
        assert not path.exists()
    else:
        assert path.read_bytes() == b"keep me"
