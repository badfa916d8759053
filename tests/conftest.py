"""Shared fixtures for the whole suite (area fixtures live in each tests/<area>/conftest.py)."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A scratch directory on the same filesystem as the tests' tmp_path (ext4 here)."""
    d = tmp_path / "data"
    d.mkdir()
    return d
