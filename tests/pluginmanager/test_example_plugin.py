"""The example third-party plugin, installed with pip and found through its entry point."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "uringstack-example-plugin"

# Runs in a fresh interpreter whose sys.path has the pip --target directory,
# so the plugin is discovered exactly as an installed package would be.
CHILD = textwrap.dedent(
    """
    import json, sys
    import importlib.metadata as md
    from uringstack.config import load_config
    from uringstack.ring.params import RingParams
    from uringstack.testing import make_fake_capabilities

    # Block the built-ins: this test is about the third-party path, not
    # whether every built-in plugin imports on this machine.
    builtins = sorted({ep.name for d in md.distributions() if d.metadata["Name"] == "uringstack"
                       for ep in d.entry_points if ep.group == "uringstack"})
    env = {"URINGSTACK_CORE__DISABLED_PLUGINS": ",".join(builtins)}
    env.update(json.loads(sys.argv[1]))
    loaded = load_config(env=env)
    pm = loaded.plugin_manager
    caps = make_fake_capabilities(cores=2)
    params = RingParams(entries=loaded.config.core.ring_entries, role="storage", core=0)
    pm.ring_params(params, caps, loaded.config)
    out = {
        "plugins": pm.plugin_names(),
        "dists": {i.name: i.distribution for i in pm.plugin_info()},
        "sections": list(loaded.config.sections()),
        "provenance": loaded.provenance,
        "entries": params.entries,
        "flags": [f.name for f in type(params.flags) if f in params.flags],
        "reasons": params.reasons,
        "verdicts": [v.model_dump(mode="json") for v in pm.check_support(caps, loaded.config)],
    }
    try:
        from uringstack.plan import make_plan
    except ImportError:
        out["plan"] = None
    else:
        plan = make_plan(caps, loaded.config, pm)
        out["plan"] = json.loads(plan.model_dump_json())
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    target = tmp_path_factory.mktemp("example-site")
    build = tmp_path_factory.mktemp("example-build")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    subprocess.run(["cp", "-r", str(EXAMPLE), str(build)], check=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(build / EXAMPLE.name),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return target


def run_child(site: pathlib.Path, env: dict[str, str]) -> dict[str, object]:
    child_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("URINGSTACK_")}
    child_env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(env)],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=site,  # not the repo: its stale build metadata must not shadow the install
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_example_plugin_is_loaded_through_its_entry_point(installed: pathlib.Path) -> None:
    out = run_child(installed, {})
    assert out["plugins"] == ["example"]
    assert out["dists"] == {"example": "uringstack-example-plugin"}
    assert out["sections"] == ["core", "example"]
    assert out["entries"] == 1024
    assert "COOP_TASKRUN" in out["flags"]  # type: ignore[operator]
    reasons = out["reasons"]
    assert any("entries 256 -> 1024" in r for r in reasons)  # type: ignore[attr-defined]
    [verdict] = out["verdicts"]  # type: ignore[misc]
    assert verdict["plugin"] == "example" and verdict["enabled"] is True
    # ...and it changes the plan: every worker's storage ring carries its decision.
    plan = out["plan"]
    assert isinstance(plan, dict), "uringstack.plan.make_plan is missing"
    rings = [ring for worker in plan["workers"] for ring in worker["rings"]]
    storage = [r for r in rings if r["role"] == "storage"]
    assert len(storage) == 2  # fake machine: 2 cores
    assert all(r["entries"] == 1024 and "COOP_TASKRUN" in r["flags"] for r in storage)
    assert all(any(x.startswith("example: entries") for x in r["reasons"]) for r in storage)
    assert plan["verdicts"][0]["plugin"] == "example"


def test_example_plugin_config_from_env(installed: pathlib.Path) -> None:
    out = run_child(installed, {"URINGSTACK_EXAMPLE__MIN_ENTRIES": "4096"})
    assert out["entries"] == 4096
    assert out["provenance"]["example.min_entries"] == "env:URINGSTACK_EXAMPLE__MIN_ENTRIES"  # type: ignore[index]
    out = run_child(installed, {"URINGSTACK_EXAMPLE__MODE": "off"})
    assert out["entries"] == 256 and out["flags"] == []


def test_example_plugin_can_be_disabled(installed: pathlib.Path) -> None:
    # The child already disables the built-ins; adding "example" leaves no plugin.
    builtins = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(','.join(sorted("
         "{e.name for d in m.distributions() if d.metadata['Name'] == 'uringstack' "
         "for e in d.entry_points if e.group == 'uringstack'})))"],
        capture_output=True, text=True, check=True, cwd=installed,
    ).stdout.strip()  # fmt: skip
    out = run_child(installed, {"URINGSTACK_CORE__DISABLED_PLUGINS": f"{builtins},example"})
    assert out["plugins"] == []
    assert out["sections"] == ["core"]
    assert out["entries"] == 256
