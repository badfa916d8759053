"""The udev readers share one context per thread instead of loading libudev each time.

A ``pyudev.Context()`` costs an ``ldconfig -p`` process (``find_library``); the probe's
scan, the usage check and the tuning key made a new one per call.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import pyudev

from tests.requires import skip_without
from uringstack.probe import udev
from uringstack.probe.devices import scan_block_devices
from uringstack.probe.tune_key import block_identity
from uringstack.probe.usage import current_usage


@pytest.fixture
def contexts_made(monkeypatch: pytest.MonkeyPatch) -> list[pyudev.Context]:
    made: list[pyudev.Context] = []
    real = pyudev.Context

    def counting() -> pyudev.Context:
        ctx = real()
        made.append(ctx)
        return ctx

    monkeypatch.setattr(pyudev, "Context", counting)
    # a fresh thread-local, so a context made by an earlier test does not hide a new one
    monkeypatch.setattr(udev, "_local", threading.local())
    return made


def test_the_scan_the_usage_check_and_the_tuning_key_make_one_context(
    contexts_made: list[pyudev.Context], tmp_path: Path
) -> None:
    disks = scan_block_devices()
    if not disks:
        skip_without("a block device that udev lists (the scan found none) for the usage check to look at")
    current_usage(disks[0].name, exclusive=False)
    current_usage(disks[0].name, exclusive=False)
    st = os.stat(tmp_path)
    block_identity(os.major(st.st_dev), os.minor(st.st_dev))
    block_identity(os.major(st.st_dev), os.minor(st.st_dev))
    scan_block_devices()
    assert len(contexts_made) == 1


def test_each_thread_has_its_own_context(contexts_made: list[pyudev.Context]) -> None:
    here = udev.udev_context()
    there: list[pyudev.Context] = []
    t = threading.Thread(target=lambda: there.append(udev.udev_context()))
    t.start()
    t.join()
    assert udev.udev_context() is here
    assert there and there[0] is not here
    assert len(contexts_made) == 2
