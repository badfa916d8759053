"""Only here to name the compiled parts; all metadata lives in pyproject.toml.

Two: the cffi binding of liburing, and ``uringstack.fileobj._fastio``, a
small CPython extension (the page-cache step of ``uringstack.FileIO.readinto``
with no Python frame, which cffi cannot give: a cffi call is itself reached
through a Python frame, and it takes no Python object).
"""

from setuptools import Extension, setup

setup(
    cffi_modules=["core/ring/_native/build.py:ffibuilder"],
    ext_modules=[
        Extension(
            "uringstack.fileobj._fastio",
            ["core/fileobj/_fastio.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ],
)
