"""``aideploy synth``: the resource graph without a cloud account, and errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aideploy.cli import app

DOCUMENT = {
    "name": "sentiment",
    "model_id": "m-1",
    "model_uri": "s3://acme/sentiment.onnx",
    "deployment_type": "kubernetes",
    "resource_requirements": {"cpu": "2", "memory": "4Gi"},
    "cost_optimization_policy": {"use_spot_instances": True, "hibernation_enabled": True},
    "target": {"cloud": "aws", "region": "us-east-1"},
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return path


def test_prints_the_graph_and_writes_the_kubernetes_objects(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = _write(tmp_path, "sentiment.yaml", DOCUMENT)
    out = tmp_path / "manifests"
    result = runner.invoke(
        app, ["synth", str(path), "--output", str(out), "--image", "ghcr.io/a/serve:1"]
    )
    assert result.exit_code == 0, result.output
    assert "sentiment-kubernetes-deployment" in result.output
    assert "kubernetes:apps/v1:Deployment" in result.output
    assert "wrote 6 Kubernetes object(s)" in result.output
    written = {file.name: yaml.safe_load(file.read_text()) for file in out.glob("*.yaml")}
    assert written["sentiment-kubernetes-scaled-object.yaml"]["kind"] == "ScaledObject"
    deployment = written["sentiment-kubernetes-deployment.yaml"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/a/serve:1"


def test_json_output_is_the_full_graph(runner: CliRunner, tmp_path: Path) -> None:
    documents = [
        {**DOCUMENT, "image": "ghcr.io/a/serve:1"},
        {
            "name": "ranker",
            "model_id": "m-2",
            "model_uri": "gs://acme/ranker.onnx",
            "image": "ghcr.io/a/serve:1",
            "deployment_type": "serverless",
            "target": {"cloud": "gcp"},
        },
    ]
    path = _write(tmp_path, "both.json", documents)
    result = runner.invoke(app, ["synth", str(path), "--json"])
    assert result.exit_code == 0, result.output
    graph = json.loads(result.output)
    by_name = {resource["name"]: resource for resource in graph["resources"]}
    assert by_name["ranker-cloud-run"]["parent"] == "ranker"
    assert (
        by_name["ranker-cloud-run-service"]["inputs"]["template"]["scaling"]["maxInstanceCount"]
        == 5
    )
    assert graph["exports"]["ranker"]["target_kind"] == "gcp-cloud-run"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {**DOCUMENT, "image": "x", "scaling_policy": {"min_instances": 4, "max_instances": 2}},
            "scaling_policy.min_instances: must be <= max_instances (2), got 4",
        ),
        (
            {
                **DOCUMENT,
                "image": "x",
                "deployment_type": "serverless",
                "resource_requirements": {"gpu": 1},
            },
            "resource_requirements.gpu: AWS Lambda has no GPUs",
        ),
        ({**DOCUMENT}, "sentiment.image: no serving image"),
        ({**DOCUMENT, "image": "x", "colour": "blue"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_documents_exit_2_with_one_line(
    runner: CliRunner, tmp_path: Path, document: dict[str, object], message: str
) -> None:
    result = runner.invoke(app, ["synth", str(_write(tmp_path, "bad.yaml", document))])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_unreadable_files_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["synth", str(tmp_path / "absent.yaml")])
    assert missing.exit_code == 2
    assert "No such file" in missing.output
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = runner.invoke(app, ["synth", str(broken)])
    assert result.exit_code == 2
    assert "not valid JSON" in result.output


def test_secrets_never_reach_the_output(runner: CliRunner, tmp_path: Path) -> None:
    """The usage token is a Pulumi secret: the graph and the written Secret show a placeholder."""
    document = {
        **DOCUMENT,
        "image": "ghcr.io/a/serve:1",
        "usage_url": "https://api.example.com/deployments/d/usage",
        "usage_token": "dpl_do_not_print",
    }
    path = _write(tmp_path, "usage.yaml", document)
    out = tmp_path / "manifests"
    for extra in ([], ["--json"]):
        result = runner.invoke(app, ["synth", str(path), "--output", str(out), *extra])
        assert result.exit_code == 0, result.output
        assert "dpl_do_not_print" not in result.output
        assert ("[secret]" in result.output) is bool(extra), "the JSON graph shows where it was"
    secret = yaml.safe_load((out / "sentiment-kubernetes-usage-token.yaml").read_text())
    assert (secret["kind"], secret["stringData"]) == ("Secret", "[secret]")
    assert not any("dpl_do_not_print" in file.read_text() for file in out.glob("*.yaml"))
