"""cffi API-mode build of uringstack's binding against the system liburing.

API (out-of-line) mode is required: liburing's ``io_uring_prep_*`` helpers are
``static inline`` and only a C compiler can call them.  The cdef lives in
``uring_helpers.h`` and the C helpers in ``uring_helpers.c`` (plus the WAL's
record framer, ``wal_helpers.h``/``.c``); this script only
glues them together (the xattr/pynacl layout).
"""

from __future__ import annotations

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "uring_helpers.h").read_text() + (HERE / "wal_helpers.h").read_text())

_source = (HERE / "uring_helpers.c").read_text() + "\n" + (HERE / "wal_helpers.c").read_text()
_options = {"extra_compile_args": ["-O2", "-Wall", "-Wno-unused-function"]}
try:
    # Prefer pkg-config so a liburing in a non-default prefix is found.
    ffibuilder.set_source_pkgconfig("uringstack.ring._uring", ["liburing"], _source, **_options)
except Exception:  # pkg-config or its liburing.pc is missing: the Debian default path works
    ffibuilder.set_source("uringstack.ring._uring", _source, libraries=["uring"], **_options)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
