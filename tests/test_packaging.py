"""Every package directory is listed in pyproject.toml (else a wheel would miss it), and a
built wheel carries the PEP 561 markers."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for name, directory in mapping.items():
        base = ROOT / directory
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if rel.parts and rel.parts[0] in {"plugins"} and name == "uringstack":
                continue
            found.add(".".join((name, *rel.parts)))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "listed but no such package directory"


def _build_wheel(tmp_path: pathlib.Path) -> pathlib.Path:
    # Built from a copy so the test leaves no build/ or egg-info in the checkout;
    # --no-build-isolation: the venv already has setuptools, wheel and cffi (no network).
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.o")
    for name in ("core", "plugins"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [wheel] = out.glob("uringstack-*.whl")
    return wheel


def test_wheel_ships_pep561_markers(tmp_path: pathlib.Path) -> None:
    """A plugin author's mypy sees uringstack's types only if the wheel has py.typed."""
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
    assert "uringstack/py.typed" in names
    assert "uringstack/plugins/py.typed" in names
    assert "uringstack/hookspecs.py" in names  # guards the test: it looked at the real wheel
    # the compiled parts: the cffi binding and FileIO.readinto's C step, with its stub
    assert any(n.startswith("uringstack/ring/_uring") and n.endswith(".so") for n in names)
    assert any(n.startswith("uringstack/fileobj/_fastio") and n.endswith(".so") for n in names)
    assert "uringstack/fileobj/_fastio.pyi" in names
