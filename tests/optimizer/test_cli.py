"""``aideploy optimize``: JSON output, table output, one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aideploy.cli import app

runner = CliRunner()


def test_json_output(mlp_onnx: Path, mlp_data: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "optimize",
            str(mlp_onnx),
            "--method",
            "quantization",
            "--precision",
            "int8",
            "--data",
            str(mlp_data),
            "--batch-sizes",
            "1,2",
            "--threads",
            "1",
            "--output",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    for key in (
        "artifact",
        "method",
        "precision",
        "size_reduction_percentage",
        "latency_reduction_percentage",
        "accuracy_change_percentage",
        "accuracy_metric",
        "targets_met",
    ):
        assert key in payload
    assert Path(payload["artifact"]).is_file()
    assert payload["batch_sizes"] == [1, 2]


def test_table_output(mlp_onnx: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["optimize", str(mlp_onnx), "--method", "graph", "--output", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "original" in result.stdout
    assert "graph" in result.stdout
    assert "artifact:" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--method", "magic"], "--method"),
        (["--method", "quantization", "--precision", "int3"], "--precision"),
        (["--method", "pruning", "--sparsity", "0.99"], "--sparsity"),
        (["--method", "auto", "--batch-sizes", "1,x"], "--batch-sizes"),
        (["--method", "auto", "--target-size", "huge"], "--target-size"),
        (["--method", "distillation"], "not supported yet"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    mlp_onnx: Path, tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = runner.invoke(app, ["optimize", str(mlp_onnx), *arguments, "--output", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert message in lines[0]


def test_not_a_model_exits_2(tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_text("definitely not protobuf")
    result = runner.invoke(
        app, ["optimize", str(bogus), "--method", "auto", "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr
