"""Bad input: a 4xx with ``{"error": ...}`` naming the problem, never a 500, never a crash."""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

import pytest

from tests.serving.support import Server, infer_body, scale_input


def _x(**overrides: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4], **overrides}


@pytest.mark.parametrize(
    ("method", "path", "status", "needle"),
    [
        ("POST", "/v2/models/nope/infer", 404, "unknown model 'nope'"),
        ("GET", "/v2/models/nope", 404, "unknown model 'nope'"),
        ("GET", "/v2/models/nope/ready", 404, "unknown model 'nope'"),
        ("GET", "/v2/models/scale/versions/7", 404, "no version '7'"),
        ("POST", "/v2/models/scale/versions/7/infer", 404, "no version '7'"),
        ("GET", "/v2/models/scale/versions", 404, "no such endpoint"),
        ("GET", "/v2/models/scale/explain", 404, "no such endpoint"),
        ("GET", "/v1/models/scale", 404, "under /v2"),
        ("GET", "/v2/models/scale/infer", 405, "use POST"),
        ("POST", "/v2/health/live", 405, "use GET or HEAD"),
        ("DELETE", "/metrics", 405, "use GET or HEAD"),
    ],
)
def test_routing_errors(server: Server, method: str, path: str, status: int, needle: str) -> None:
    got, headers, body = server.request(method, path, b"{}" if method == "POST" else None)
    assert got == status
    assert needle in json.loads(body)["error"]
    if status == 405:
        assert headers["allow"] == needle.removeprefix("use ").replace(" or ", ", ")


BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("scale", "{not json", "not valid JSON"),
    ("scale", "[1, 2]", "JSON object with 'inputs'"),
    ("scale", {"inputs": []}, "non-empty array"),
    ("scale", {"inputs": [_x()], "id": 5}, "'id' must be a string"),
    ("scale", {"inputs": [_x()], "parameters": []}, "parameters' must be a JSON object"),
    ("scale", infer_body({"shape": [1, 4]}), "inputs[0] must be an object with a string 'name'"),
    ("scale", infer_body(_x(name="z")), "has no input 'z'; its inputs are 'x'"),
    ("scale", infer_body(_x(), _x()), "input 'x' is given twice"),
    (
        "scale",
        infer_body(_x(datatype="FP64")),
        "input 'x': datatype 'FP64' does not match the model's FP32",
    ),
    ("scale", infer_body(_x(shape=[4])), "input 'x': shape [4] does not fit the model's [-1, 4]"),
    ("scale", infer_body(_x(shape=[1, 5], data=[1] * 5)), "input 'x': shape [1, 5] does not fit"),
    (
        "scale",
        infer_body(_x(shape=[1, -4])),
        "input 'x': 'shape' must be an array of non-negative integers",
    ),
    ("scale", infer_body(_x(shape="1,4")), "input 'x': 'shape' must be an array"),
    (
        "scale",
        infer_body(_x(data=[1, 2, 3])),
        "input 'x': shape [1, 4] needs 4 values, 'data' has 3",
    ),
    ("scale", infer_body(_x(data=[[1, 2], [3]])), "input 'x': 'data' is a ragged nested array"),
    ("scale", infer_body(_x(data="1234")), "input 'x': 'data' must be a JSON array"),
    (
        "scale",
        infer_body(_x(data=["a", "b", "c", "d"])),
        'input \'x\': FP32 \'data\' must be numbers (or "NaN", "Infinity", "-Infinity"), '
        "not the string 'a'",
    ),
    (
        "scale",
        infer_body(_x(data=[1, 2, "3", 4])),
        'input \'x\': FP32 \'data\' must be numbers (or "NaN", "Infinity", "-Infinity"), '
        "not the string '3'",
    ),
    (
        "scale",
        infer_body(_x(data=[1, 2, 3, 10**400])),
        "input 'x': FP32 values must lie within the type's range",
    ),
    (
        "scale",
        infer_body(_x(data=[1, 2, 3, 4], parameters={"binary_data_size": 16})),
        "input 'x': give either 'data' or parameters.binary_data_size, not both",
    ),
    (
        "grid",
        infer_body({"name": "x", "shape": [0, 10**20], "datatype": "FP32", "data": []}),
        "input 'x': shape [0, 100000000000000000000] is too large: its non-zero dimensions "
        "multiply to more than the 1048576 values a request body of at most 1048576 bytes",
    ),
    (
        "grid",
        infer_body({"name": "x", "shape": [0, 2**63 - 1], "datatype": "FP32", "data": []}),
        "input 'x': shape [0, 9223372036854775807] is too large",
    ),
    (
        "grid",
        infer_body({"name": "x", "shape": [2**20 + 1, 1], "datatype": "FP32", "data": [1]}),
        "input 'x': shape [1048577, 1] is too large",
    ),
    (
        "wide",
        infer_body({"name": "u", "shape": [2], "datatype": "UINT64", "data": [-1, 2**64 - 1]}),
        "input 'u': UINT64 values must lie in 0..18446744073709551615",
    ),
    (
        "wide",
        infer_body({"name": "u", "shape": [1], "datatype": "UINT64", "data": [2**64]}),
        "input 'u': UINT64 values must lie in 0..18446744073709551615",
    ),
    (
        "wide",
        infer_body({"name": "u", "shape": [2], "datatype": "UINT64", "data": [1, 2.5]}),
        "input 'u': UINT64 'data' must be integers, not the number 2.5",
    ),
    (
        "scale",
        infer_body({"name": "x", "shape": [1, 4], "datatype": "FP32"}),
        "needs 'data' or parameters.binary_data_size",
    ),
    (
        "scale",
        infer_body(_x(), outputs=[{"name": "nope"}]),
        "has no output 'nope'; its outputs are 'y'",
    ),
    (
        "scale",
        infer_body(_x(), outputs=[{"name": "y"}, {"name": "y"}]),
        "output 'y' is requested twice",
    ),
    (
        "scale",
        infer_body(_x(), outputs=[{"name": "y", "parameters": {"class_count": 3}}]),
        "class_count",
    ),
    (
        "scale",
        infer_body(_x(), outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}]),
        "binary_data must be true or false",
    ),
    (
        "scale",
        infer_body(_x(), parameters={"binary_data_output": 1}),
        "binary_data_output must be true or false",
    ),
    (
        "scale",
        infer_body(_x(parameters={"shared_memory_region": "r"})),
        "shared-memory extension is not supported",
    ),
    (
        "multi",
        infer_body({"name": "i64", "shape": [2], "datatype": "INT64", "data": [1.5, 2]}),
        "input 'i64': INT64 'data' must be integers, not the number 1.5",
    ),
    (
        "multi",
        infer_body({"name": "u8", "shape": [3], "datatype": "UINT8", "data": [1, 2, 300]}),
        "input 'u8': UINT8 values must lie in 0..255",
    ),
    (
        "multi",
        infer_body({"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, 0]}),
        "input 'flag': BOOL 'data' must be true/false, not the number 0",
    ),
    (
        "multi",
        infer_body({"name": "text", "shape": [1], "datatype": "BYTES", "data": [5]}),
        "input 'text': BYTES 'data' must be strings, not the number 5",
    ),
    (
        "multi",
        infer_body({"name": "i8", "shape": [3], "datatype": "INT8", "data": [1, 2, 3]}),
        "missing input(s) 'f16'",
    ),
    (
        "adder",
        infer_body(
            {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "b", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]},
        ),
        "model 'adder' rejected the inputs",
    ),
]


@pytest.mark.parametrize(
    ("model", "body", "needle"), BAD_REQUESTS, ids=[needle[:40] for _, _, needle in BAD_REQUESTS]
)
def test_bad_inference_requests_are_400_naming_the_problem(
    server: Server, model: str, body: Any, needle: str
) -> None:
    payload = body if isinstance(body, str) else json.dumps(body)
    status, _, data = server.request("POST", f"/v2/models/{model}/infer", payload)
    assert status == 400, data
    assert needle in json.loads(data)["error"]


def _binary(
    header: dict[str, Any], blob: bytes, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    document = json.dumps(header).encode()
    length = len(document) if header_length is None else header_length
    return document + blob, {"Inference-Header-Content-Length": str(length)}


def _binary_x(size: int) -> dict[str, Any]:
    return infer_body(
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}
    )


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        (
            *_binary(_binary_x(12), b"\0" * 12),
            "binary_data_size is 12 bytes but shape [1, 4] of FP32 needs 16",
        ),
        (
            *_binary(_binary_x(16), b"\0" * 8),
            "binary_data_size 16 runs past the binary data (8 bytes left",
        ),
        (
            *_binary(_binary_x(16), b"\0" * 20),
            "4 bytes of binary data after the JSON header belong to no input",
        ),
        (*_binary(_binary_x(-1), b""), "binary_data_size must be a whole number"),
        (*_binary(_binary_x(16), b"\0" * 16, header_length=10), "not valid JSON"),
        (
            *_binary(_binary_x(16), b"\0" * 16, header_length=10**6),
            "Inference-Header-Content-Length must be a whole number between 1",
        ),
        (
            b"{}",
            {"Inference-Header-Content-Length": "abc"},
            "Inference-Header-Content-Length must be a whole number",
        ),
        (  # str.isdigit() says yes, int() says no
            b"{}",
            {"Inference-Header-Content-Length": "\u00b2"},
            "Inference-Header-Content-Length must be a whole number",
        ),
    ],
)
def test_bad_binary_framing_is_400(
    server: Server, body: bytes, headers: dict[str, str], needle: str
) -> None:
    status, _, data = server.request("POST", "/v2/models/scale/infer", body, headers)
    assert status == 400, data
    assert needle in json.loads(data)["error"]


@pytest.mark.parametrize("dimension", [10**20, 2**63 - 1, 2**31 * 2**20])
def test_empty_binary_tensor_with_a_huge_dimension_is_400(server: Server, dimension: int) -> None:
    """Zero values, but numpy cannot describe the shape: refused before it tries (was a 500)."""
    header = infer_body(
        {
            "name": "x",
            "shape": [0, dimension],
            "datatype": "FP32",
            "parameters": {"binary_data_size": 0},
        }
    )
    status, _, data = server.request("POST", "/v2/models/grid/infer", *_binary(header, b""))
    assert status == 400, data
    assert f"input 'x': shape [0, {dimension}] is too large" in json.loads(data)["error"]


def test_bad_binary_bytes_elements_are_400(server: Server) -> None:
    header = infer_body(
        {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}
    )
    body, headers = _binary(header, b"\x09\0\0\0ab")  # claims 9 bytes, has 2
    status, _, data = server.request("POST", "/v2/models/multi/infer", body, headers)
    assert status == 400
    assert "input 'text': BYTES element of 9 bytes runs past the data" in json.loads(data)["error"]


def test_body_over_the_limit_is_413(server: Server) -> None:
    big = json.dumps(infer_body(scale_input([[1.0, 2.0, 3.0, 4.0]] * 60_000)))  # ~2 MB > 1 MiB
    status, _, data = server.request("POST", "/v2/models/scale/infer", big)
    assert status == 413
    assert "exceeds the limit of 1048576 bytes" in json.loads(data)["error"]


def test_chunked_body_over_the_limit_is_413(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        chunk = b"x" * 600_000
        sock.sendall(b"POST /v2/models/scale/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        head = f"{len(chunk):x}\r\n".encode()
        # The server may stop reading once the limit is passed; its answer is already sent.
        with contextlib.suppress(ConnectionResetError):
            sock.sendall(head + chunk + b"\r\n" + head + chunk + b"\r\n0\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v2 HTTP/2.0\r\n\r\n", 505),
        (b"GET /v2 HTTP/1.1\r\nno-colon-here\r\n\r\n", 400),
        (b"POST /v2 HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST /v2 HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /v2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /v2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n", 400),
        (b"POST /v2 HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400),
        (b"GET /v2 HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_http_is_refused_and_the_connection_closed(
    server: Server, raw: bytes, status: int
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:100]
    assert b"Connection: close" in answer
    assert b'{"error": ' in answer


def test_server_survives_all_of_the_above(server: Server) -> None:
    assert server.process.poll() is None
    status, _, body = server.request("GET", "/metrics")
    assert status == 200
    assert b'aideploy_http_responses_total{code="500"}' not in body


def _samples(server: Server) -> dict[str, float]:
    text = server.request("GET", "/metrics")[2].decode()
    return {
        key: float(value)
        for key, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    }


def test_refusals_of_the_http_layer_count_against_the_model(server: Server) -> None:
    """A body over the limit (413) and broken chunked framing (400) never reach the model's
    handler, yet they are that model's failed inference requests."""
    before = _samples(server)
    for raw in (
        b"POST /v2/models/grid/infer HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        b"POST /v2/models/grid/versions/1/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v2/models/nope/infer HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(raw)
            assert sock.recv(65536).startswith((b"HTTP/1.1 413 ", b"HTTP/1.1 400 "))
    after = _samples(server)

    def grew(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert grew('aideploy_inference_requests_total{model="grid"}') == 2
    assert grew('aideploy_inference_errors_total{model="grid",code="413"}') == 1
    assert grew('aideploy_inference_errors_total{model="grid",code="400"}') == 1
    assert not any('model="nope"' in key for key in after)
