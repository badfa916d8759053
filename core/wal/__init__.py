"""Durable write-ahead log with group commit over io_uring or POSIX I/O.

>>> with Wal.open("/var/lib/app/wal") as wal:   # doctest: +SKIP
...     lsn = wal.append(b"record")              # returns once durable
"""

from .config import WalConfig
from .errors import WalClosedError, WalCorruptionError, WalFailedError
from .io import PosixBackend, UringBackend, WalBackend, make_backend
from .log import Wal
from .recovery import RecoveryMode

__all__ = [
    "PosixBackend",
    "RecoveryMode",
    "UringBackend",
    "Wal",
    "WalBackend",
    "WalClosedError",
    "WalConfig",
    "WalCorruptionError",
    "WalFailedError",
    "make_backend",
]
