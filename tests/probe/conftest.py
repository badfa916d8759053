"""Collection rules for the probe tests."""

from __future__ import annotations

import os

# test_devices_umockdev.py runs only inside umockdev-run, where
# test_umockdev_runner.py starts it once per fixture and checks how many of its
# tests passed. Outside, it is not collected at all: its tests would only show
# as skips of tests that do run (inside the runner), in every -rs summary.
collect_ignore = [] if os.environ.get("UMOCKDEV_DIR") else ["test_devices_umockdev.py"]
