"""Only here to name the compiled parts; all metadata lives in pyproject.toml.

Four: the cffi binding of liburing, and three small CPython extensions for
what cffi cannot give (a cffi call is itself reached through a Python frame,
and it takes no Python object): ``uringstack.fileobj._fastio`` (the
page-cache step of ``uringstack.FileIO.readinto`` and a write-only file's
``write``, with no Python frame) and ``uringstack.ring._futures`` (an asyncio
future resolved from another thread unless its task was cancelled, with no
Python frame between the check and the set), ``uringstack.ring._exports`` (a
memoryview's buffer exported again by an object the garbage collector does not
track, so that a pin of it in a reference cycle cannot crash CPython 3.11:
gh-77894).
"""

from setuptools import Extension, setup

C_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]

setup(
    cffi_modules=["core/ring/_native/build.py:ffibuilder"],
    ext_modules=[
        Extension(
            "uringstack.fileobj._fastio",
            ["core/fileobj/_fastio.c"],
            extra_compile_args=C_FLAGS,
        ),
        Extension(
            "uringstack.ring._futures",
            ["core/ring/_futures.c"],
            extra_compile_args=C_FLAGS,
        ),
        Extension(
            "uringstack.ring._exports",
            ["core/ring/_exports.c"],
            extra_compile_args=C_FLAGS,
        ),
    ],
)
