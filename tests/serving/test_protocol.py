"""The Open Inference Protocol endpoints over real HTTP: metadata, health, JSON and binary infer."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from tests.serving.support import Server, infer_body, scale_input


def test_server_metadata_names_the_binary_extension(server: Server) -> None:
    status, document = server.json("GET", "/v2")
    assert status == 200
    assert document["name"] == "aideploy-serving"
    assert "binary_tensor_data" in document["extensions"]


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/v2/models/scale/ready"])
def test_health_endpoints_are_200_when_loaded(server: Server, path: str) -> None:
    assert server.request("GET", path)[0] == 200


def test_model_metadata_marks_dynamic_dimensions(server: Server) -> None:
    status, document = server.json("GET", "/v2/models/scale")
    assert status == 200
    assert document["name"] == "scale"
    assert document["versions"] == ["1"]
    assert document["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert document["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]


def test_model_metadata_lists_every_datatype(server: Server) -> None:
    _, document = server.json("GET", "/v2/models/multi/versions/1")
    datatypes = {item["name"]: item["datatype"] for item in document["inputs"]}
    assert datatypes == {
        "f16": "FP16",
        "f64": "FP64",
        "i64": "INT64",
        "i32": "INT32",
        "i8": "INT8",
        "u8": "UINT8",
        "flag": "BOOL",
        "text": "BYTES",
    }


def test_named_model_is_served_under_its_name(server: Server) -> None:
    assert server.json("GET", "/v2/models/adder")[0] == 200


@pytest.mark.parametrize("path", ["/v2/models/scale/infer", "/v2/models/scale/versions/1/infer"])
def test_json_infer_with_nested_data(server: Server, path: str) -> None:
    status, document = server.json(
        "POST", path, infer_body(scale_input([[1, 1, 1, 1], [0.5, 1, 1.5, 2]]))
    )
    assert status == 200
    assert document["model_name"] == "scale"
    assert document["model_version"] == "1"
    assert document["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4, 0.5, 2, 4.5, 8]}
    ]


def test_json_infer_with_flat_data_echoes_the_id(server: Server) -> None:
    body = infer_body(
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}, id="req-7"
    )
    status, document = server.json("POST", "/v2/models/scale/infer", body)
    assert status == 200
    assert document["id"] == "req-7"
    assert document["outputs"][0]["data"] == [1, 4, 9, 16]


def test_no_content_type_header_is_needed(server: Server) -> None:
    body = json.dumps(infer_body(scale_input([[1, 1, 1, 1]]))).encode()
    status, headers, data = server.request(
        "POST", "/v2/models/scale/infer", body, {"Content-Type": ""}
    )
    assert status == 200, data
    assert headers["content-type"] == "application/json"


def _multi_inputs() -> dict[str, tuple[str, list[Any]]]:
    return {
        "f16": ("FP16", [0.5, -2.0]),
        "f64": ("FP64", [1e-300, 3.25]),
        "i64": ("INT64", [2**40, -3]),
        "i32": ("INT32", [7, -8, 9]),
        "i8": ("INT8", [-128, 0, 127]),
        "u8": ("UINT8", [0, 128, 255]),
        "flag": ("BOOL", [True, False]),
        "text": ("BYTES", ["héllo", ""]),
    }


def test_every_datatype_round_trips_as_json(server: Server) -> None:
    inputs = [
        {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}
        for name, (datatype, data) in _multi_inputs().items()
    ]
    status, document = server.json("POST", "/v2/models/multi/infer", {"inputs": inputs})
    assert status == 200, document
    outputs = {item["name"]: item for item in document["outputs"]}
    for name, (datatype, data) in _multi_inputs().items():
        assert outputs[f"{name}_out"]["datatype"] == datatype
        assert outputs[f"{name}_out"]["data"] == data
    assert outputs["total"] == {
        "name": "total",
        "datatype": "INT64",
        "shape": [],
        "data": [2**40 - 3],
    }


def _binary_request(
    inputs: dict[str, tuple[str, np.ndarray[Any, Any] | list[str]]], **parameters: Any
) -> tuple[bytes, dict[str, str]]:
    """An inference request with every input in the binary extension's layout."""
    header: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, (datatype, values) in inputs.items():
        if datatype == "BYTES":
            blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in values)
            shape = [len(values)]
        else:
            array = np.asarray(values)
            blob, shape = array.tobytes(), list(array.shape)
        header.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    document = json.dumps({"inputs": header, **parameters}).encode()
    return document + b"".join(blobs), {"Inference-Header-Content-Length": str(len(document))}


def _split_binary_response(
    headers: dict[str, str], body: bytes
) -> tuple[dict[str, Any], dict[str, bytes]]:
    length = int(headers["inference-header-content-length"])
    document = json.loads(body[:length])
    blobs: dict[str, bytes] = {}
    offset = length
    for output in document["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs[output["name"]] = body[offset : offset + size]
            offset += size
    assert offset == len(body)
    return document, blobs


def test_every_datatype_round_trips_as_binary(server: Server) -> None:
    numpy_types = {
        "f16": np.float16,
        "f64": np.float64,
        "i64": np.int64,
        "i32": np.int32,
        "i8": np.int8,
        "u8": np.uint8,
        "flag": np.bool_,
    }
    inputs: dict[str, tuple[str, Any]] = {
        name: (datatype, data if datatype == "BYTES" else np.array(data, dtype=numpy_types[name]))
        for name, (datatype, data) in _multi_inputs().items()
    }
    body, headers = _binary_request(inputs, parameters={"binary_data_output": True})
    status, response_headers, data = server.request("POST", "/v2/models/multi/infer", body, headers)
    assert status == 200, data
    assert response_headers["content-type"] == "application/octet-stream"
    document, blobs = _split_binary_response(response_headers, data)
    assert all("data" not in output for output in document["outputs"])
    for name, (datatype, values) in inputs.items():
        if datatype == "BYTES":
            assert blobs[f"{name}_out"] == b"".join(
                struct.pack("<I", len(s.encode())) + s.encode() for s in values
            )
        else:
            assert blobs[f"{name}_out"] == values.tobytes()
    assert np.frombuffer(blobs["total"], dtype="<i8").tolist() == [2**40 - 3]


def test_binary_input_with_json_output(server: Server) -> None:
    body, headers = _binary_request({"x": ("FP32", np.array([[1, 2, 3, 4]], dtype=np.float32))})
    status, response_headers, data = server.request("POST", "/v2/models/scale/infer", body, headers)
    assert status == 200, data
    assert "inference-header-content-length" not in response_headers
    assert json.loads(data)["outputs"][0]["data"] == [1, 4, 9, 16]


def test_requested_outputs_select_and_choose_binary_per_output(server: Server) -> None:
    inputs = [
        {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}
        for name, (datatype, data) in _multi_inputs().items()
    ]
    outputs = [{"name": "total"}, {"name": "i32_out", "parameters": {"binary_data": True}}]
    body = json.dumps({"inputs": inputs, "outputs": outputs})
    status, headers, data = server.request("POST", "/v2/models/multi/infer", body)
    assert status == 200, data
    document, blobs = _split_binary_response(headers, data)
    assert [output["name"] for output in document["outputs"]] == ["total", "i32_out"]
    assert document["outputs"][0]["data"] == [2**40 - 3]
    assert np.frombuffer(blobs["i32_out"], dtype="<i4").tolist() == [7, -8, 9]


def test_empty_outputs_list_means_every_output(server: Server) -> None:
    """The spec: outputs "not specified" returns all; an empty list specifies nothing either
    (it was a 500: onnxruntime reads an empty list as "all" too)."""
    for parameters in ({}, {"parameters": {"binary_data_output": True}}):
        body = infer_body(scale_input([[1, 1, 1, 1]]), outputs=[], **parameters)
        status, headers, data = server.request("POST", "/v2/models/scale/infer", json.dumps(body))
        assert status == 200, data
        if parameters:
            document, blobs = _split_binary_response(headers, data)
            assert np.frombuffer(blobs["y"], dtype="<f4").tolist() == [1, 2, 3, 4]
        else:
            document = json.loads(data)
            assert document["outputs"][0]["data"] == [1, 2, 3, 4]
        assert [output["name"] for output in document["outputs"]] == ["y"]


def _strict_json(data: bytes) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    return json.loads(data, parse_constant=refuse)


def test_nan_and_infinities_travel_as_strings_in_json(server: Server) -> None:
    """JSON has no NaN/Infinity: outputs carry protobuf's JSON spellings, which strict parsers
    accept and float conversions read back; inputs accept the same strings."""
    values = np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32)
    body, headers = _binary_request({"x": ("FP32", values)})
    status, _, data = server.request("POST", "/v2/models/grid/infer", body, headers)
    assert status == 200, data
    output = _strict_json(data)["outputs"][0]
    assert output["data"] == ["NaN", "Infinity", "-Infinity", 1.5]
    round_trip = np.array(output["data"], dtype=np.float32)  # what tritonclient's as_numpy does
    np.testing.assert_array_equal(round_trip, values.ravel())
    echo = infer_body(
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": output["data"]},
        parameters={"binary_data_output": True},
    )
    status, headers, data = server.request("POST", "/v2/models/grid/infer", json.dumps(echo))
    assert status == 200, data
    _, blobs = _split_binary_response(headers, data)
    np.testing.assert_array_equal(np.frombuffer(blobs["y"], dtype="<f4"), values.ravel())


def test_uint64_values_use_the_whole_range(server: Server) -> None:
    body = infer_body({"name": "u", "shape": [2], "datatype": "UINT64", "data": [0, 2**64 - 1]})
    status, document = server.json("POST", "/v2/models/wide/infer", body)
    assert status == 200, document
    assert document["outputs"][0]["data"] == [0, 2**64 - 1]


def test_empty_tensor_along_a_dynamic_axis(server: Server) -> None:
    status, document = server.json(
        "POST",
        "/v2/models/scale/infer",
        infer_body({"name": "x", "shape": [0, 4], "datatype": "FP32", "data": []}),
    )
    assert status == 200, document
    assert document["outputs"][0]["shape"] == [0, 4]


def test_metrics_count_requests_errors_and_process_state(server: Server) -> None:
    server.json(
        "POST",
        "/v2/models/adder/infer",
        infer_body({"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}),
    )
    server.json(
        "POST",
        "/v2/models/adder/infer",
        infer_body(
            {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
            {"name": "b", "shape": [1], "datatype": "FP32", "data": [2]},
        ),
    )
    status, headers, body = server.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'aideploy_inference_requests_total{model="adder"} 2' in text
    assert 'aideploy_inference_errors_total{model="adder",code="400"} 1' in text
    assert 'aideploy_inference_duration_seconds_count{model="adder"} 2' in text
    assert 'aideploy_inference_batch_rows_count{model="adder"} 1' in text
    assert "aideploy_http_requests_in_flight 1" in text  # this very request
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples["process_resident_memory_bytes"]) > 10 * 2**20
    assert float(samples["process_cpu_seconds_total"]) > 0
    assert float(samples['aideploy_model_load_seconds{model="scale"}']) > 0


def test_metrics_break_the_cold_start_into_its_parts(server: Server) -> None:
    """What the benchmark puts beside onnxruntime's own floor: imports, session creation and
    first run, and when the port opened and the models were ready."""
    text = server.request("GET", "/metrics")[2].decode()
    samples = {
        key: float(value)
        for key, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    }
    start = {
        phase: samples[f'aideploy_start_seconds{{phase="{phase}"}}']
        for phase in ("imports", "listening", "ready")
    }
    assert 0 < start["imports"] < start["listening"]
    assert start["imports"] < start["ready"]
    load = {
        phase: samples[f'aideploy_model_load_phase_seconds{{model="scale",phase="{phase}"}}']
        for phase in ("fetch", "session", "warm_up")
    }
    assert all(seconds > 0 for seconds in load.values())
    assert sum(load.values()) <= samples['aideploy_model_load_seconds{model="scale"}']
