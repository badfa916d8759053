"""aiofiles's own test suite (from its sdist) run against ``uringstack.aio.open``.

The sdist is fetched with pip into a cache directory on first use (never
committed); offline, the test is skipped with the reason.  A stand-in
``aiofiles`` package (``aiofiles_shim/``) maps ``aiofiles.open``,
``aiofiles.threadpool.open`` and ``aiofiles.os`` to uringstack, and a small
plugin runs the ``async def`` tests (in place of pytest-asyncio).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tarfile

import pytest

AIOFILES = "aiofiles==25.1.0"
CACHE = pathlib.Path(os.environ.get("URINGSTACK_TEST_CACHE", pathlib.Path.home() / ".cache" / "uringstack-tests"))
SHIM = pathlib.Path(__file__).parent / "aiofiles_shim"
SUITES = [
    "tests/threadpool/test_binary.py",
    "tests/threadpool/test_text.py",
    "tests/threadpool/test_open.py",
    "tests/test_simple.py",
    "tests/test_os.py",
]
# Left out: test_tempfile.py (aiofiles.tempfile: not provided), test_stdio.py
# (aiofiles.stdin/stdout: not files a stack serves), test_wrap.py and
# test_concurrency.py (aiofiles.threadpool.wrap / sync_open: its thread-pool internals).


def _sdist_tests() -> pathlib.Path:
    version = AIOFILES.split("==")[1]
    root = CACHE / f"aiofiles-{version}"
    if (root / "tests").is_dir():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-binary",
            ":all:",
            "--no-deps",
            "-q",
            "-d",
            str(CACHE),
            AIOFILES,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    archive = CACHE / f"aiofiles-{version}.tar.gz"
    if got.returncode != 0 or not archive.exists():
        pytest.skip(f"cannot fetch the {AIOFILES} sdist (offline?): {got.stderr.strip()[-300:]}")
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    return root


def test_aiofiles_suite_passes_against_uringstack(tmp_path: pathlib.Path) -> None:
    root = _sdist_tests()
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "uringstack_aio_runner",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(root),
        "-o",
        "addopts=",
        f"--basetemp={tmp_path / 'base'}",
        *SUITES,
    ]
    if os.geteuid() == 0:
        # root passes every access() check, so aiofiles's own test_access fails
        # under root with aiofiles itself too
        args += ["--deselect", "tests/test_os.py::test_access"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SHIM), os.environ.get("PYTHONPATH", "")]))
    which = subprocess.run(
        [sys.executable, "-c", "import aiofiles; print(aiofiles.threadpool.open.__module__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert which.stdout.strip() == "uringstack.aio", "the suite would not test uringstack"
    run = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
    tail = run.stdout[-3000:]
    summary = re.search(r"(\d+) passed", tail)
    assert run.returncode == 0 and summary, f"aiofiles's suite on uringstack.aio.open:\n{tail}\n{run.stderr[-2000:]}"
    assert int(summary.group(1)) >= 180, tail  # 186 tests in these files (185 as root)
