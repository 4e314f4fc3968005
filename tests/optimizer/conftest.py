"""Tiny models built in fixtures: an MLP and a CNN exported from torch, a transformer MLP block
written with the ONNX helper, and matching ``.npz`` data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    torch.onnx.export(
        model.eval(),
        (example,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optimizer-models")


@pytest.fixture(scope="session")
def mlp_onnx(models_dir: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    return _export(model, torch.zeros(1, 16), models_dir / "mlp.onnx")


@pytest.fixture(scope="session")
def cnn_onnx(models_dir: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 3 * 3, 4),
    )
    return _export(model, torch.zeros(1, 1, 6, 6), models_dir / "cnn.onnx")


@pytest.fixture(scope="session")
def mlp_data(models_dir: Path) -> Path:
    rng = np.random.default_rng(0)
    path = models_dir / "mlp.npz"
    np.savez(
        path, x=rng.standard_normal((40, 16)).astype(np.float32), labels=rng.integers(0, 4, 40)
    )
    return path


@pytest.fixture(scope="session")
def cnn_data(models_dir: Path) -> Path:
    rng = np.random.default_rng(0)
    path = models_dir / "cnn.npz"
    np.savez(path, x=rng.random((40, 1, 6, 6)).astype(np.float32))
    return path


@pytest.fixture(scope="session")
def transformer_block_onnx(models_dir: Path) -> Path:
    """A transformer MLP block with residual and LayerNorm: [B, S, 32] -> [B, S, 32]."""
    rng = np.random.default_rng(0)
    hidden, inner = 32, 128

    def constant(name: str, *shape: int, scale: float = 0.2) -> TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="ffn_in"),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Div", ["h2", "sqrt2"], ["g1"]),
        helper.make_node("Erf", ["g1"], ["g2"]),
        helper.make_node("Add", ["g2", "one"], ["g3"]),
        helper.make_node("Mul", ["h2", "g3"], ["g4"]),
        helper.make_node("Mul", ["g4", "half"], ["g5"]),
        helper.make_node("MatMul", ["g5", "w2"], ["o1"], name="ffn_out"),
        helper.make_node("Add", ["o1", "b2"], ["o2"]),
        helper.make_node("Add", ["o2", "x"], ["o3"]),
        helper.make_node("LayerNormalization", ["o3", "gamma", "beta"], ["y"], axis=-1),
    ]
    initializers = [
        constant("w1", hidden, inner),
        constant("b1", inner),
        constant("w2", inner, hidden),
        constant("b2", hidden),
        numpy_helper.from_array(np.array(1.4142135, dtype=np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(np.ones(hidden, dtype=np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(hidden, dtype=np.float32), "beta"),
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = models_dir / "ffn.onnx"
    onnx.save(model, str(path))
    return path


def _run(path: Path, **inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, inputs)[0])


@pytest.fixture
def run_onnx() -> Callable[..., np.ndarray]:
    """Run an ONNX file on CPU and return its first output."""
    return _run
