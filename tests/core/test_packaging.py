"""The distribution installs per extra: the Kubernetes extra alone is enough for aideploy_iac."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_kubernetes_extra_alone_imports_the_components(tmp_path: Path) -> None:
    """A clean virtual environment with only ``aideploy[kubernetes]`` imports ``aideploy_iac``."""
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{ROOT}[kubernetes]"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = (
        "import importlib.util, aideploy_iac, aideploy.schema\n"
        "absent = [m for m in ('pulumi_aws', 'pulumi_gcp', 'pulumi_azure_native', 'onnxruntime',"
        " 'torch', 'litestar') if importlib.util.find_spec(m)]\n"
        "assert not absent, absent\n"
        "assert importlib.util.find_spec('pulumi_kubernetes')\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_package_ships_in_the_wheel() -> None:
    """The wheel lists each top-level package of the layout, so none is left out of installs."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert on_disk <= packages, on_disk - packages
