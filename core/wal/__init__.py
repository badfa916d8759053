"""Durable write-ahead log with group commit, writing through a uringstack stack.

>>> with Wal.open("/var/lib/app/wal") as wal:   # doctest: +SKIP
...     lsn = wal.append(b"record")              # returns once durable
"""

from .config import WalConfig
from .errors import WalClosedError, WalCorruptionError, WalFailedError
from .io import WalIO
from .log import Wal
from .recovery import RecoveryMode

__all__ = [
    "RecoveryMode",
    "Wal",
    "WalClosedError",
    "WalConfig",
    "WalCorruptionError",
    "WalFailedError",
    "WalIO",
]
