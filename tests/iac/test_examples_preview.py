"""The examples and the root project: each Python program builds under the mock engine, and
``pulumi preview`` runs on each with a local file backend where the Pulumi CLI and the
program's cloud credentials exist (otherwise the test skips, saying which is missing).

The previews run on temporary copies with their own ``PULUMI_HOME``, so nothing is written into
the repository (stack files, plugins, backend state).
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aideploy_iac.synth import synthesize

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted(path.parent for path in (ROOT / "examples").glob("*/Pulumi.yaml"))
PULUMI = shutil.which("pulumi")
PYTHON_EXAMPLES = [example for example in EXAMPLES if (example / "__main__.py").is_file()]

# What each program's preview talks to: a cloud's API or a Kubernetes cluster.
NEEDS: dict[str, tuple[str, ...]] = {
    "aws-lambda": ("aws",),
    "azure-container-apps": ("azure",),
    "gcp-cloud-run": ("gcp",),
    "kubernetes-spot-scale-to-zero": ("kubernetes",),
    "multi-cloud-placement": ("aws", "gcp", "azure"),
    "yaml-model-deployment": ("gcp",),
    "root-project": ("kubernetes",),
}
# Provider settings a preview needs besides credentials.
STACK_CONFIG: dict[str, dict[str, str]] = {
    "aws": {"aws:region": "us-east-1"},
    "gcp": {"gcp:project": os.environ.get("GOOGLE_CLOUD_PROJECT", "")},
    "azure": {},
    "kubernetes": {},
}


def _has_any(variables: tuple[str, ...], files: tuple[str, ...]) -> bool:
    return any(os.environ.get(name) for name in variables) or any(
        Path(path).expanduser().is_file() for path in files
    )


CREDENTIALS: dict[str, Callable[[], bool]] = {
    "aws": lambda: _has_any(
        ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE"),
        ("~/.aws/credentials", "~/.aws/config"),
    ),
    "gcp": lambda: (
        bool(os.environ.get("GOOGLE_CLOUD_PROJECT"))
        and _has_any(
            ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CREDENTIALS"),
            ("~/.config/gcloud/application_default_credentials.json",),
        )
    ),
    "azure": lambda: _has_any(
        ("ARM_CLIENT_ID", "AZURE_CLIENT_ID"), ("~/.azure/azureProfile.json",)
    ),
    "kubernetes": lambda: _has_any(("KUBECONFIG",), ("~/.kube/config",)),
}
CREDENTIAL_HINTS = {
    "aws": "AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE or ~/.aws)",
    "gcp": "GCP credentials (application default credentials) and GOOGLE_CLOUD_PROJECT",
    "azure": "Azure credentials (ARM_CLIENT_ID or `az login`)",
    "kubernetes": "a kubeconfig (KUBECONFIG or ~/.kube/config) whose cluster runs KEDA",
}


def _preconditions(program: str) -> None:
    """Skip, naming what is missing, when the preview cannot run here."""
    if PULUMI is None:
        pytest.skip("the Pulumi CLI is not on PATH")
    missing = [CREDENTIAL_HINTS[need] for need in NEEDS[program] if not CREDENTIALS[need]()]
    if missing:
        pytest.skip(f"`pulumi preview` of {program} needs {'; '.join(missing)}")


def _copy_project(source: Path, main: Path | None, destination: Path) -> Path:
    """A copy of a Pulumi project whose relative paths (virtualenv, local packages) are made
    absolute, so it runs from anywhere."""
    destination.mkdir(parents=True)
    project = yaml.safe_load((source / "Pulumi.yaml").read_text())
    runtime = project.get("runtime")
    if isinstance(runtime, dict) and "virtualenv" in runtime.get("options", {}):
        runtime["options"]["virtualenv"] = str(ROOT / ".venv")
    for name, path in (project.get("packages") or {}).items():
        project["packages"][name] = str((source / path).resolve())
    (destination / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    if main is not None:
        shutil.copytree(main, destination / main.name, ignore=shutil.ignore_patterns("__pycache__"))
    elif (source / "__main__.py").is_file():
        shutil.copy(source / "__main__.py", destination / "__main__.py")
    return destination


def _preview(project: Path, program: str, tmp_path: Path, config: dict[str, Any]) -> None:
    assert PULUMI is not None
    environment = {
        **os.environ,
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'backend'}",
        "PULUMI_CONFIG_PASSPHRASE": "aideploy-preview",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    (tmp_path / "backend").mkdir()

    def pulumi(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PULUMI, *args, "--non-interactive"],
            cwd=project,
            env=environment,
            capture_output=True,
            text=True,
            timeout=900,
        )

    created = pulumi("stack", "init", "preview")
    assert created.returncode == 0, created.stderr
    stack_file = project / "Pulumi.preview.yaml"
    stack = yaml.safe_load(stack_file.read_text()) if stack_file.is_file() else {}
    settings = {key: value for need in NEEDS[program] for key, value in STACK_CONFIG[need].items()}
    stack = stack or {}
    stack["config"] = {**(stack.get("config") or {}), **settings, **config}
    stack_file.write_text(yaml.safe_dump(stack, sort_keys=False))
    preview = pulumi("preview", "--stack", "preview")
    assert preview.returncode == 0, preview.stdout + preview.stderr


def test_every_example_has_a_program() -> None:
    assert len(EXAMPLES) >= 6
    for example in EXAMPLES:
        assert example.name in NEEDS, f"say what {example.name}'s preview needs"
        assert (
            example in PYTHON_EXAMPLES or "runtime: yaml" in (example / "Pulumi.yaml").read_text()
        )


@pytest.mark.parametrize("example", PYTHON_EXAMPLES, ids=[path.name for path in PYTHON_EXAMPLES])
def test_example_builds_under_the_mock_engine(example: Path) -> None:
    result = synthesize(lambda: runpy.run_path(str(example / "__main__.py")), stack=example.name)
    [deployment] = result.of_type("aideploy:index:ModelDeployment")
    assert deployment.outputs["endpoint_url"]
    assert "endpoint_url" in result.exports or "placement" in result.exports


def test_the_multi_cloud_example_can_choose_between_clouds() -> None:
    """With a model copy and an image for every cloud, no cloud is ruled out: only Lambda
    outside its ECR image's region is."""
    program: dict[str, Any] = {}
    path = ROOT / "examples" / "multi-cloud-placement" / "__main__.py"
    synthesize(lambda: program.update(runpy.run_path(str(path))))
    decision = program["ranker"].placement
    assert decision is not None
    assert decision.rejected
    assert all(reason.startswith("aws/") and "ECR region" in reason for reason in decision.rejected)


@pytest.mark.pulumi_cli
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_preview(example: Path, tmp_path: Path) -> None:
    _preconditions(example.name)
    project = _copy_project(example, None, tmp_path / example.name)
    _preview(project, example.name, tmp_path, {})


@pytest.mark.pulumi_cli
def test_preview_of_the_root_project(tmp_path: Path) -> None:
    """``pulumi preview`` of the root project (``main: stacks/``) with a deployments stack."""
    _preconditions("root-project")
    project = _copy_project(ROOT, ROOT / "stacks", tmp_path / "aideploy")
    deployment = {
        "name": "sentiment",
        "model_id": "m-1",
        "model_uri": "https://models.example.com/sentiment/model.onnx",
        "deployment_type": "kubernetes",
        "cost_optimization_policy": {"hibernation_enabled": True},
    }
    config = {
        "aideploy:program": "deployments",
        "aideploy:image": "ghcr.io/acme/aideploy-serving:1.0",
        "aideploy:deployments": [deployment],
    }
    _preview(project, "root-project", tmp_path, config)
