"""Validated request headers are reused: same header bytes, new tensors, right answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.app import PLANS_PER_MODEL, InferenceApp, settled
from serving.config import load_config
from serving.http import Request, Response
from serving.metrics import Metrics
from serving.model import load_model
from tests.serving.support import build_scale


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[InferenceApp]:
    config = load_config({"model": [str(build_scale(tmp_path / "scale.onnx"))]})
    with ThreadPoolExecutor(1) as executor:
        served = InferenceApp(config, Metrics(), executor)
        served.add_model(load_model(config.models[0], config))
        yield served


def _binary(rows: np.ndarray[Any, Any], **extra: Any) -> Request:
    """``rows`` sent in binary, the output asked for in binary too."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
            **extra,
        }
    ).encode()
    headers = {"inference-header-content-length": str(len(header))}
    return Request("POST", "/v2/models/scale/infer", "", headers, header + rows.tobytes())


async def _infer(app: InferenceApp, request: Request) -> tuple[Response, dict[str, Any]]:
    response = await settled(app.handle(request))
    length = int(dict(response.headers).get("Inference-Header-Content-Length", "0"))
    return response, json.loads(response.body[:length] if length else response.body)


def _rows(response: Response, document: dict[str, Any]) -> list[list[float]]:
    length = len(response.body) - document["outputs"][0]["parameters"]["binary_data_size"]
    values = np.frombuffer(response.body[length:], dtype=np.float32)
    rows: list[list[float]] = values.reshape(document["outputs"][0]["shape"]).tolist()
    return rows


async def test_a_repeated_header_carries_new_tensors(app: InferenceApp) -> None:
    for value in (1.0, 2.0, 3.0):
        response, document = await _infer(app, _binary(np.full((1, 4), value, np.float32)))
        assert response.status == 200
        assert _rows(response, document) == [[value, 2 * value, 3 * value, 4 * value]]
    assert len(app.slots["scale"].plans) == 1


async def test_each_shape_has_its_own_header_both_ways(app: InferenceApp) -> None:
    for rows in (1, 3, 1, 3):
        x = np.arange(4 * rows, dtype=np.float32).reshape(rows, 4)
        response, document = await _infer(app, _binary(x))
        assert document["outputs"][0]["shape"] == [rows, 4]
        assert _rows(response, document) == (x * [1, 2, 3, 4]).tolist()
    assert len(app.slots["scale"].plans) == 2


async def test_a_known_header_with_a_short_binary_part_is_still_refused(
    app: InferenceApp,
) -> None:
    good = _binary(np.ones((1, 4), np.float32))
    assert (await _infer(app, good))[0].status == 200
    cut = Request(good.method, good.path, "", good.headers, good.body[:-4])
    response, document = await _infer(app, cut)
    assert response.status == 400
    assert "binary_data_size 16 runs past the binary data (12 bytes left" in document["error"]


async def test_headers_kept_are_bounded_and_json_data_is_never_kept(app: InferenceApp) -> None:
    for number in range(PLANS_PER_MODEL + 10):  # a new id each time: a new header each time
        request = _binary(np.ones((1, 4), np.float32), id=f"request-{number}")
        _, document = await _infer(app, request)
        assert document["id"] == f"request-{number}"
    assert len(app.slots["scale"].plans) == PLANS_PER_MODEL
    app.slots["scale"].plans.clear()
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}
    ).encode()
    _, document = await _infer(app, Request("POST", "/v2/models/scale/infer", "", {}, body))
    assert document["outputs"][0]["data"] == [1, 2, 3, 4]
    assert app.slots["scale"].plans == {}
