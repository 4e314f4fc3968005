"""``aideploy optimize``: JSON output, table output, one-line errors with exit code 2 for every
bad model, data or argument."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
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


def _one_line_error(arguments: list[str]) -> str:
    """Run the command, expect exit code 2 and exactly one line on stderr; return it."""
    result = runner.invoke(app, ["optimize", *arguments, "--threads", "1"])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _features_model(path: Path) -> Path:
    """``x [batch, features] @ w [16, 4]``: the declared shape accepts any width; ORT does not."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])],
        "features",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.ones((16, 4), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_data_the_original_model_rejects(tmp_path: Path) -> None:
    model = _features_model(tmp_path / "features.onnx")
    data = tmp_path / "narrow.npz"
    np.savez(data, x=np.ones((4, 15), np.float32))
    line = _one_line_error(
        [str(model), "--method", "graph", "--data", str(data), "--output", str(tmp_path / "o")]
    )
    assert "data: the original model fails on narrow.npz" in line


def test_ids_outside_the_embedding_table(small_vocab_onnx: Path, tmp_path: Path) -> None:
    data = tmp_path / "ids.npz"
    np.savez(data, input_ids=np.full((2, 5), 50, np.int64))
    line = _one_line_error(
        [str(small_vocab_onnx), "--method", "auto", "--data", str(data), "--output", str(tmp_path)]
    )
    assert "table of 50 rows" in line


def test_a_model_onnx_runtime_cannot_load(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("FooBar", ["x"], ["y"], domain="my.domain")],
        "unknown",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)]
    )
    path = tmp_path / "unknown_op.onnx"
    onnx.save(model, str(path))
    line = _one_line_error([str(path), "--method", "graph", "--output", str(tmp_path / "o")])
    assert "ONNX Runtime cannot load unknown_op.onnx" in line
    assert "FooBar" in line


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((40, 3), np.float32), r"labels'] has shape [40, 3]"),
        (np.arange(40) * 100, "holds class ids 0..3900, but the model's output has 4 classes"),
    ],
)
def test_labels_that_do_not_fit_the_output(
    mlp_onnx: Path, tmp_path: Path, labels: np.ndarray, message: str
) -> None:
    data = tmp_path / "labelled.npz"
    np.savez(data, x=np.ones((40, 16), np.float32), labels=labels)
    line = _one_line_error(
        [str(mlp_onnx), "--method", "auto", "--data", str(data), "--output", str(tmp_path / "o")]
    )
    assert message in line
    assert not (tmp_path / "o").exists() or not any(
        not path.name.startswith(".") for path in (tmp_path / "o").iterdir()
    )


def test_output_that_is_a_file(mlp_onnx: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    line = _one_line_error([str(mlp_onnx), "--method", "graph", "--output", str(taken)])
    assert "output:" in line
    assert "is a file" in line


def test_torchscript_that_fails_on_the_data(tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), str(path))
    data = tmp_path / "wide.npz"
    np.savez(data, input=np.ones((3, 5), np.float32))
    line = _one_line_error(
        [str(path), "--method", "graph", "--data", str(data), "--output", str(tmp_path / "o")]
    )
    assert "model: could not convert linear.pt to ONNX" in line


class _FixedBatch(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.linear(x.view(2, 4))  # the graph depends on batch 2
        return output


def test_a_program_whose_batch_cannot_become_dynamic(tmp_path: Path) -> None:
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(_FixedBatch().eval(), (torch.ones(2, 4),)), str(path))
    line = _one_line_error([str(path), "--method", "graph", "--output", str(tmp_path / "o")])
    assert "batch_sizes: the model only accepts batch size 2, got [1, 8]" in line
