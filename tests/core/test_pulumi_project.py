"""The root Pulumi project: ``pulumi up`` on a fresh machine gets a .venv with what ``stacks/``
imports. The Pulumi CLI is not available here, so this checks what it reads: Pulumi.yaml's
python runtime (pip toolchain, the project's .venv) and the requirements.txt it installs."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
_EDITABLE = re.compile(r"^-e \.\[(?P<extras>[a-z0-9,-]+)\]$")


def provider_modules() -> set[str]:
    """Every ``pulumi_*`` provider SDK that the components and the stacks import."""
    modules: set[str] = set()
    for package in ("aideploy_iac", "stacks"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                modules.update(name.split(".")[0] for name in names if name.startswith("pulumi_"))
    return modules


def test_pulumi_yaml_runs_stacks_in_the_project_venv() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))
    runtime = project["runtime"]
    assert runtime["name"] == "python"
    assert runtime["options"] == {"toolchain": "pip", "virtualenv": ".venv"}
    assert (ROOT / project["main"] / "__main__.py").is_file()


def test_requirements_install_every_provider_the_stacks_import() -> None:
    """A provider SDK imported by a component but missing from requirements.txt would make
    ``pulumi up`` fail on a fresh machine only for that cloud."""
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    [editable] = [match for line in lines if (match := _EDITABLE.match(line))]
    extras = set(editable["extras"].split(","))
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert extras <= set(optional)
    installed = {
        re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].replace("-", "_")
        for extra in extras
        for requirement in optional[extra]
    }
    imported = provider_modules()
    assert imported, "the detector found no provider import at all"
    assert imported <= installed, imported - installed
