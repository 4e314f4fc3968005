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
from optimizer import (
    CalibrationDataError,
    InvalidModelError,
    ModelFormat,
    UnsafeModelError,
    inspect_model,
    to_onnx,
)


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


def test_torch_export_with_a_static_batch_is_reexported_dynamic(tmp_path: Path) -> None:
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(_Tiny().eval(), (torch.randn(2, 4),)), str(path))
    assert inspect_model(path).inputs[0].shape == [2, 4]
    converted = to_onnx(path, tmp_path / "out")
    assert inspect_model(converted).inputs[0].shape == [-1, 4]
    import onnxruntime as ort

    session = ort.InferenceSession(str(converted), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    expected = torch.export.load(str(path)).module()(torch.from_numpy(x[:2])).detach().numpy()
    np.testing.assert_allclose(session.run(None, {"features": x})[0][:2], expected, atol=1e-5)


class _Tokens(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(30, 8)

    def forward(
        self, input_ids: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.embedding(input_ids) * scale[:, None, None]
        return states, states.mean(1)


def test_torchscript_index_inputs_are_int64_and_token_axes_dynamic(tmp_path: Path) -> None:
    path = tmp_path / "tokens.pt"
    torch.jit.save(torch.jit.script(_Tokens().eval()), str(path))
    info = inspect_model(path)
    assert [(s.name, s.datatype) for s in info.inputs] == [
        ("input_ids", "INT64"),
        ("scale", "FP32"),
    ]
    assert [s.name for s in info.outputs] == ["output_0", "output_1"]  # one per tuple element
    floats = tmp_path / "float_ids.npz"
    np.savez(floats, input_ids=np.ones((3, 6), np.float32), scale=np.ones(3, np.float32))
    with pytest.raises(CalibrationDataError, match="uses it as indices"):
        to_onnx(path, tmp_path / "out", data=floats)
    data = tmp_path / "ids.npz"
    np.savez(data, input_ids=np.ones((3, 6), np.int32), scale=np.ones(3, np.float32))
    converted = inspect_model(to_onnx(path, tmp_path / "out", data=data))
    assert [(s.name, s.datatype, s.shape) for s in converted.inputs] == [
        ("input_ids", "INT32", [-1, -1]),  # the data's dtype, kept as given
        ("scale", "FP32", [-1]),
    ]
    assert [s.shape for s in converted.outputs] == [[-1, -1, 8], [-1, 8]]


class _RunsOnLoad(torch.nn.Module):
    """A module whose TorchScript ``__setstate__`` prints: torch.jit.load would run it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.ones(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("PAYLOAD-RAN")
        self.weight = state[0]
        self.training = state[1]


def test_torchscript_setstate_is_rejected_before_it_can_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hostile.pt"
    torch.jit.save(torch.jit.script(_RunsOnLoad()), str(path))
    torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    assert "PAYLOAD-RAN" in capfd.readouterr().out, "the payload is real: loading runs it"
    data = tmp_path / "x.npz"
    np.savez(data, x=np.ones((2, 2), np.float32))
    with pytest.raises(UnsafeModelError, match=r"__setstate__.*never loaded"):
        inspect_model(path)
    with pytest.raises(UnsafeModelError, match="__setstate__"):
        to_onnx(path, tmp_path / "out", data=data)
    assert "PAYLOAD-RAN" not in capfd.readouterr().out
    assert not (tmp_path / "out").exists()


class _ReadsFiles(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_file("/etc/hostname", False, 1, dtype=torch.uint8).float()


def test_torchscript_calling_file_io_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "reader.pt"
    torch.jit.save(torch.jit.script(_ReadsFiles()), str(path))
    with pytest.raises(UnsafeModelError, match="uses from_file"):
        inspect_model(path)
