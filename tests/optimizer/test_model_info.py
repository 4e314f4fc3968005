"""Recognising, validating and rejecting model files without executing them."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from aideploy.errors import InputError
from aideploy.schema import Framework
from optimizer import InvalidModelError, ModelFormat, UnsafeModelError, inspect_model, to_onnx


def test_onnx_signature_has_dynamic_batch(mlp_onnx: Path) -> None:
    info = inspect_model(mlp_onnx)
    assert info.framework is Framework.ONNX
    assert info.format is ModelFormat.ONNX
    assert [(s.name, s.datatype, s.shape) for s in info.inputs] == [("x", "FP32", [-1, 16])]
    assert [(s.name, s.shape) for s in info.outputs] == [("logits", [-1, 4])]
    assert info.size_bytes == mlp_onnx.stat().st_size


def test_inspecting_onnx_does_not_import_torch(mlp_onnx: Path) -> None:
    code = (
        "import sys; from optimizer import inspect_model; "
        f"inspect_model(__import__('pathlib').Path({str(mlp_onnx)!r})); "
        "print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"hello, this is not a model at all", "not"),
        (b"\x80\x04\x95 pickle", "pickle"),
    ],
)
def test_not_a_model(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        inspect_model(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="no file"):
        inspect_model(tmp_path / "absent.onnx")


def test_truncated_onnx(tmp_path: Path, mlp_onnx: Path) -> None:
    data = mlp_onnx.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match=r"truncated|not a readable|not an ONNX"):
        inspect_model(path)


def _model_with_external(location: str, dims: list[int]) -> onnx.ModelProto:
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims)
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dims[1]])],
        [weight],
    )
    return helper.make_model(graph)


def test_external_data_outside_folder_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(_model_with_external("../secret.bin", [4, 4]), str(path))
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        inspect_model(path)


def test_external_data_beside_model_is_accepted_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
            [numpy_helper.from_array(np.ones((64, 64), np.float32), "w")],
        )
    )
    onnx.save(
        model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    info = inspect_model(path)
    assert info.size_bytes == path.stat().st_size + (tmp_path / "weights.bin").stat().st_size


def test_truncated_external_data(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\0" * 8)
    path = tmp_path / "model.onnx"
    onnx.save(_model_with_external("w.bin", [4, 4]), str(path))
    with pytest.raises(InvalidModelError, match="truncated"):
        inspect_model(path)


def test_absurd_declared_size(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\0" * 8)
    path = tmp_path / "model.onnx"
    onnx.save(_model_with_external("w.bin", [1 << 20, 1 << 20]), str(path))
    with pytest.raises(InvalidModelError, match="larger than any real model"):
        inspect_model(path)


def test_pickled_module_is_rejected_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeModelError, match=r"torch\.jit\.save .* torch\.export\.save"):
        inspect_model(path)


def test_plain_pickle_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UnsafeModelError, match="pickle"):
        inspect_model(path)


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.linear(features).relu()
        return output


def test_torchscript_converts_with_dynamic_batch(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    traced = torch.jit.trace(_Tiny().eval(), torch.randn(2, 4))  # type: ignore[no-untyped-call]
    torch.jit.save(traced, str(path))
    info = inspect_model(path)
    assert info.format is ModelFormat.TORCHSCRIPT
    assert [spec.name for spec in info.inputs] == ["features"]
    with pytest.raises(InvalidModelError, match="--data"):
        to_onnx(path, tmp_path / "out")
    data = tmp_path / "data.npz"
    np.savez(data, features=np.ones((3, 4), np.float32))
    converted = inspect_model(to_onnx(path, tmp_path / "out", data=data))
    assert converted.inputs[0].shape == [-1, 4]


def test_torch_export_keeps_dynamic_batch(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    program = torch.export.export(
        _Tiny().eval(), (torch.randn(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))
    info = inspect_model(path)
    assert info.format is ModelFormat.TORCH_EXPORT
    assert info.inputs[0].shape == [-1, 4]
    converted = inspect_model(to_onnx(path, tmp_path / "out"))
    assert converted.inputs[0].shape == [-1, 4]
