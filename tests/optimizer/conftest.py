"""Tiny models built in fixtures: an MLP and a CNN exported from torch, the MLP again with its
weights in an external data file, a transformer MLP block and a token model written with the
ONNX helper, a TorchScript embedding model, and matching ``.npz`` data."""

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


@pytest.fixture(scope="session")
def mlp_external(models_dir: Path) -> Path:
    """The MLP with every weight in ``mlp_ext.bin`` beside the model, in a folder of its own."""
    folder = models_dir / "external"
    folder.mkdir()
    source = models_dir / "mlp-for-external.onnx"
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    _export(model, torch.zeros(1, 16), source)
    path = folder / "mlp_ext.onnx"
    onnx.save(
        onnx.load(str(source)),
        str(path),
        save_as_external_data=True,
        location="mlp_ext.bin",
        size_threshold=0,
    )
    return path


def token_model(vocab: int, path: Path) -> Path:
    """``input_ids [B, S] -> Gather(table[vocab, 16]) -> MatMul -> [B, S, 16]``."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["embedded"], name="embed"),
            helper.make_node("MatMul", ["embedded", "w"], ["hidden_states"], name="project"),
        ],
        "tokens",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [
            helper.make_tensor_value_info(
                "hidden_states", TensorProto.FLOAT, ["batch", "sequence", 16]
            )
        ],
        [
            numpy_helper.from_array(rng.standard_normal((vocab, 16)).astype(np.float32), "table"),
            numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def small_vocab_onnx(models_dir: Path) -> Path:
    """A token model whose embedding table has 50 rows, far fewer than 1000."""
    return token_model(50, models_dir / "tokens50.onnx")


class _TokenClassifier(nn.Module):
    """Token ids (and a mask) -> pooled embedding -> class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(100, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32).unsqueeze(-1)
        pooled = (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits: torch.Tensor = self.head(pooled)
        return logits


@pytest.fixture(scope="session")
def torchscript_tokens(models_dir: Path) -> tuple[Path, Path]:
    """A scripted nn.Embedding classifier (.pt) and int64 ids with masks of sequence 12."""
    torch.manual_seed(0)
    path = models_dir / "tokens.pt"
    torch.jit.save(torch.jit.script(_TokenClassifier().eval()), str(path))
    rng = np.random.default_rng(0)
    data = models_dir / "tokens.npz"
    np.savez(
        data,
        input_ids=rng.integers(0, 100, (24, 12)).astype(np.int64),
        attention_mask=np.ones((24, 12), np.int64),
    )
    return path, data
