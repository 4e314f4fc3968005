"""Architecture rules that code review alone would let slip, checked on the source tree."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("aideploy", "aideploy_iac", "stacks", "optimizer", "serving", "api")

# Who reads the environment, and why. The foundation's rule is "nothing but the settings reads
# the environment"; serving/config.py is its one accepted, documented exception: the model
# server's container entry point reads its own AIDEPLOY_SERVE_* variables with the standard
# library, because importing pydantic-settings alone costs about 40% of the scale-to-zero
# cold-start floor (see its module docstring and the README). No other exception is allowed.
ENVIRONMENT_READERS = {
    "aideploy/settings.py": "the platform's settings, the one reader by design",
    "serving/config.py": "EXCEPTION: the model server's AIDEPLOY_SERVE_* variables (cold start)",
}
AUTOMATION_API_IMPORTERS = {"api/runners/automation.py"}
PULUMI_CONFIG_READERS = {"stacks/config.py"}


def source_files() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            yield relative, ast.parse(path.read_text(), filename=relative)


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def reads_environment(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name) and dotted(node) in {
            "os.environ",
            "os.getenv",
            "os.environb",
        }:
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name in {"environ", "getenv", "environb"} for alias in node.names)
        ):
            return True
    return False


def imported_modules(tree: ast.Module) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def uses_pulumi_config(tree: ast.Module) -> bool:
    config_names = {"pulumi.Config"} | {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "pulumi"
        for alias in node.names
        if alias.name == "Config"
    }
    return any(
        isinstance(node, ast.Call) and dotted(node.func) in config_names for node in ast.walk(tree)
    )


FILES = list(source_files())


@pytest.mark.parametrize(("path", "tree"), FILES, ids=[path for path, _ in FILES])
def test_only_the_settings_read_the_environment(path: str, tree: ast.Module) -> None:
    assert path in ENVIRONMENT_READERS or not reads_environment(tree), (
        f"{path} reads the environment; go through aideploy.settings"
    )


def test_the_serving_exception_is_current_and_documented() -> None:
    """Each listed reader still reads the environment (no stale exception), and the serving
    exception says so where it lives."""
    trees = dict(FILES)
    for path in ENVIRONMENT_READERS:
        assert reads_environment(trees[path]), f"{path} no longer reads the environment"
    docstring = ast.get_docstring(trees["serving/config.py"]) or ""
    assert "documented exception" in docstring
    assert "cold start" in docstring


@pytest.mark.parametrize(("path", "tree"), FILES, ids=[path for path, _ in FILES])
def test_only_the_automation_runner_imports_the_automation_api(path: str, tree: ast.Module) -> None:
    imports_automation = any(
        module == "pulumi.automation" or module.startswith("pulumi.automation.")
        for module in imported_modules(tree)
    )
    assert path in AUTOMATION_API_IMPORTERS or not imports_automation, path


@pytest.mark.parametrize(("path", "tree"), FILES, ids=[path for path, _ in FILES])
def test_only_stacks_read_pulumi_config(path: str, tree: ast.Module) -> None:
    assert path in PULUMI_CONFIG_READERS or not uses_pulumi_config(tree), path


def test_the_rules_see_what_they_look_for() -> None:
    """The detectors themselves work, so a passing rule means something."""
    assert reads_environment(ast.parse("import os\nx = os.environ['A']"))
    assert reads_environment(ast.parse("from os import getenv"))
    assert not reads_environment(ast.parse("import os\nos.path.join('a')"))
    assert "pulumi.automation" in imported_modules(ast.parse("import pulumi.automation as auto"))
    assert "pulumi.automation" in imported_modules(ast.parse("from pulumi import automation"))
    assert uses_pulumi_config(ast.parse("import pulumi\npulumi.Config('aideploy')"))
    assert uses_pulumi_config(ast.parse("from pulumi import Config\nConfig()"))
    assert not uses_pulumi_config(ast.parse("from alembic.config import Config\nConfig()"))
