"""The examples: each program builds under the mock engine, and ``pulumi preview`` runs on each
with a local file backend where the Pulumi CLI exists."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

from aideploy_iac.synth import synthesize

EXAMPLES = sorted(
    path.parent for path in (Path(__file__).parents[2] / "examples").glob("*/Pulumi.yaml")
)
PULUMI = shutil.which("pulumi")

PYTHON_EXAMPLES = [example for example in EXAMPLES if (example / "__main__.py").is_file()]


def test_every_example_has_a_program() -> None:
    assert len(EXAMPLES) >= 6
    for example in EXAMPLES:
        assert (
            example in PYTHON_EXAMPLES or "runtime: yaml" in (example / "Pulumi.yaml").read_text()
        )


@pytest.mark.parametrize("example", PYTHON_EXAMPLES, ids=[path.name for path in PYTHON_EXAMPLES])
def test_example_builds_under_the_mock_engine(example: Path) -> None:
    result = synthesize(lambda: runpy.run_path(str(example / "__main__.py")), stack=example.name)
    [deployment] = result.of_type("aideploy:index:ModelDeployment")
    assert deployment.outputs["endpoint_url"]
    assert "endpoint_url" in result.exports or "placement" in result.exports


@pytest.mark.pulumi_cli
@pytest.mark.skipif(PULUMI is None, reason="the Pulumi CLI is not on PATH")
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_preview(example: Path, tmp_path: Path) -> None:
    assert PULUMI is not None
    environment = {
        **os.environ,
        "PULUMI_BACKEND_URL": f"file://{tmp_path}",
        "PULUMI_CONFIG_PASSPHRASE": "aideploy-example",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }

    def pulumi(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PULUMI, *args, "--non-interactive"],
            cwd=example,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )

    created = pulumi("stack", "init", "preview")
    assert created.returncode == 0, created.stderr
    preview = pulumi("preview", "--stack", "preview")
    assert preview.returncode == 0, preview.stdout + preview.stderr
