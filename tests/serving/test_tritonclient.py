"""A standard Open Inference Protocol client against the server: tritonclient's HTTP client,
which sends and asks for binary tensors by default (what MLServer refuses)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.serving.support import Server

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]  # noqa: E402


@pytest.fixture
def client(server: Server) -> Any:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("scale")
    metadata = client.get_model_metadata("scale")
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_and_json(client: Any, binary: bool) -> None:
    x = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.float32)
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    output = httpclient.InferRequestedOutput("y", binary_data=binary)
    result = client.infer("scale", [tensor], outputs=[output], request_id="r1")
    np.testing.assert_array_equal(
        result.as_numpy("y"), x * np.array([1, 2, 3, 4], dtype=np.float32)
    )
    assert result.get_response()["id"] == "r1"


def test_infer_every_datatype_with_default_outputs(client: Any) -> None:
    values = {
        "f16": np.array([0.5, -2], dtype=np.float16),
        "f64": np.array([1.5, 2.5]),
        "i64": np.array([3, 4], dtype=np.int64),
        "i32": np.array([1, 2, 3], dtype=np.int32),
        "i8": np.array([-1, 0, 1], dtype=np.int8),
        "u8": np.array([0, 1, 255], dtype=np.uint8),
        "flag": np.array([True, False]),
        "text": np.array([b"alpha", b"\xc3\xa9t\xc3\xa9"], dtype=np.object_),
    }
    datatypes = {
        "f16": "FP16",
        "f64": "FP64",
        "i64": "INT64",
        "i32": "INT32",
        "i8": "INT8",
        "u8": "UINT8",
        "flag": "BOOL",
        "text": "BYTES",
    }
    inputs = []
    for name, array in values.items():
        tensor = httpclient.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer("multi", inputs)
    for name, array in values.items():
        np.testing.assert_array_equal(result.as_numpy(f"{name}_out"), array)
    assert result.as_numpy("total").tolist() == 7


def test_errors_surface_as_client_exceptions(client: Any) -> None:
    tensor = httpclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"input 'x': shape \[1, 3\] does not fit"):
        client.infer("scale", [tensor])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
