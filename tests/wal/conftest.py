"""Fixtures for the WAL tests: small segments so rollover happens, both backends."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.requires import skip_without
from uringstack.wal import WalConfig


def _uring_available() -> str | None:
    try:
        from uringstack.ring import Ring

        Ring(entries=4).close()
        return None
    except Exception as e:  # any reason io_uring is unusable here
        return f"io_uring unavailable: {e}"


_URING_SKIP = _uring_available()


@pytest.fixture(params=["fallback", "uring"])
def backend_name(request: pytest.FixtureRequest) -> str:
    if request.param == "uring" and _URING_SKIP:
        skip_without(_URING_SKIP)
    return str(request.param)


@pytest.fixture
def small_config() -> WalConfig:
    return WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024)


@pytest.fixture
def wal_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    d = tmp_path / "wal"
    yield d
