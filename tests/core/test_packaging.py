"""The distribution installs per extra: the Kubernetes extra alone is enough for aideploy_iac."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLOUD_SDKS = ("pulumi_aws", "pulumi_gcp", "pulumi_azure_native")
HEAVY = ("onnxruntime", "torch", "litestar", "numpy")

# Run in the clean environment from a directory outside the repository, so the import can only
# come from what pip installed (the editable install's path hook), never from the working tree
# being on sys.path by accident.
PROBE = f"""
import importlib, importlib.metadata, importlib.util, json, pkgutil, sys
from pathlib import Path
assert "" not in sys.path, sys.path
import aideploy_iac, aideploy.schema
origin = json.loads(importlib.metadata.distribution("aideploy").read_text("direct_url.json"))
assert origin["dir_info"].get("editable"), origin
absent = [m for m in {CLOUD_SDKS + HEAVY!r} if importlib.util.find_spec(m)]
assert not absent, f"installed without being asked for: {{absent}}"
assert importlib.util.find_spec("pulumi_kubernetes"), "the kubernetes extra is missing"
for module in pkgutil.walk_packages(aideploy_iac.__path__, "aideploy_iac."):
    importlib.import_module(module.name)
assert Path(aideploy_iac.__file__).is_relative_to({str(ROOT)!r}), aideploy_iac.__file__
print("ok")
"""


def index_reachable(python: Path) -> tuple[bool, str]:
    """Whether pip can reach its package index (as configured here: PyPI, a mirror, a proxy)."""
    command = [str(python), "-m", "pip", "index", "versions", "pulumi-kubernetes"]
    try:
        result = subprocess.run(
            [*command, "--retries", "1", "--timeout", "20"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "no answer within 120 s"
    last_line = (result.stderr.strip().splitlines() or [""])[-1]
    return result.returncode == 0, last_line


@pytest.mark.slow
def test_editable_kubernetes_extra_alone_imports_the_components(tmp_path: Path) -> None:
    """``pip install -e '.[kubernetes]'`` in a clean virtual environment, then every module of
    ``aideploy_iac`` imports with no cloud SDK, onnxruntime, torch or the API stack present."""
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    reachable, why = index_reachable(python)
    if not reachable:
        pytest.skip(f"the package index is unreachable, nothing can be installed: {why}")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[kubernetes]"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = subprocess.run(
        [str(python), "-I", "-c", PROBE],
        cwd=outside,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_every_package_ships_in_the_wheel() -> None:
    """The wheel lists each top-level package of the layout, so none is left out of installs."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert on_disk <= packages, on_disk - packages
