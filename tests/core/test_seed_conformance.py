"""Every example of the API contract (the seed), read straight from the seed file: each request
body validates as its request object and each response as its response object, with every key
and value kept. A key the schema does not know, or names differently, fails here: response
objects ignore unknown keys, so the test compares the seed against the dump, recursively."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aideploy.schema import (
    AccessToken,
    CostAnalysis,
    Deployment,
    DeploymentCreate,
    DeploymentUpdate,
    Message,
    Model,
    ModelUploadForm,
    ModelUploadResponse,
    OptimizationJob,
    OptimizationRequest,
    OptimizationSuggestions,
    OptimizedModel,
    PerformanceAnalysis,
    TokenRequest,
    UsageForecast,
)

# The contract lives beside the repository, as the KEDA CRDs do (../shared).
SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "000_c1e204e70bf9908a.txt"

# Endpoint -> (request object or None, response object, whether the response is a list).
CONTRACT: dict[str, tuple[type[BaseModel] | None, type[BaseModel], bool]] = {
    "POST /auth/token": (TokenRequest, AccessToken, False),
    "GET /models": (None, Model, True),
    "GET /models/{model_id}": (None, Model, False),
    "POST /models": (ModelUploadForm, ModelUploadResponse, False),
    "DELETE /models/{model_id}": (None, Message, False),
    "POST /models/{model_id}/optimize": (OptimizationRequest, OptimizationJob, False),
    "GET /models/{model_id}/optimized": (None, OptimizedModel, True),
    "GET /deployments": (None, Deployment, True),
    "GET /deployments/{deployment_id}": (None, Deployment, False),
    "POST /deployments": (DeploymentCreate, Deployment, False),
    "PUT /deployments/{deployment_id}": (DeploymentUpdate, Deployment, False),
    "DELETE /deployments/{deployment_id}": (None, Message, False),
    "POST /deployments/{deployment_id}/hibernate": (None, Message, False),
    "POST /deployments/{deployment_id}/activate": (None, Message, False),
    "GET /analytics/cost": (None, CostAnalysis, False),
    "GET /analytics/performance": (None, PerformanceAnalysis, False),
    "GET /analytics/forecast": (None, UsageForecast, False),
    "GET /analytics/suggestions": (None, OptimizationSuggestions, False),
}

_FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
_REQUEST_LINE = re.compile(r"^(GET|POST|PUT|DELETE|PATCH) (/\S*)$")
_ELIDED = re.compile(r",\s*\.\.\.")  # the forecast's "[1, 2, 3, ...]" lists


@dataclass
class Example:
    """One endpoint of the seed: its request body (JSON or form fields) and its response."""

    request: Any = None
    form: dict[str, str] | None = None
    responses: list[Any] = field(default_factory=list)


def seed_examples() -> dict[str, Example]:
    """The seed's fenced blocks grouped by the request line that precedes them."""
    if not SEED.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the API seed is missing: {SEED}")
        pytest.skip(f"the API seed lives in ../shared beside the repository ({SEED} is absent)")
    examples: dict[str, Example] = {}
    endpoint: str | None = None
    for block in _FENCE.finditer(SEED.read_text(encoding="utf-8")):
        body = block["body"]
        first_line = body.splitlines()[0] if body.strip() else ""
        request_line = _REQUEST_LINE.match(first_line)
        if block["lang"] == "json":
            assert endpoint is not None, f"a response before any request line: {body[:80]}"
            examples[endpoint].responses.append(json.loads(_ELIDED.sub("", body)))
        elif request_line:
            endpoint = f"{request_line[1]} {request_line[2]}"
            example = examples.setdefault(endpoint, Example())
            headers, _, payload = body.partition("\n\n")
            if "Content-Type: application/json" in headers:
                example.request = json.loads(payload)
            elif "Content-Type: multipart/form-data" in headers:
                example.form = dict(
                    line.split(": ", 1) for line in payload.splitlines() if line.strip()
                )
    return examples


def assert_kept(seed: Any, dumped: Any, path: str) -> None:
    """Every key and value of the seed is in the dump: nothing unknown, renamed or altered."""
    if isinstance(seed, dict):
        assert isinstance(dumped, dict), f"{path}: expected an object, got {dumped!r}"
        unknown = sorted(set(seed) - set(dumped))
        assert not unknown, f"{path}: keys the schema does not know: {unknown}"
        for key, value in seed.items():
            assert_kept(value, dumped[key], f"{path}.{key}")
    elif isinstance(seed, list):
        assert isinstance(dumped, list), f"{path}: expected a list, got {dumped!r}"
        assert len(seed) == len(dumped), f"{path}: {len(seed)} items became {len(dumped)}"
        for index, (item, kept) in enumerate(zip(seed, dumped, strict=True)):
            assert_kept(item, kept, f"{path}[{index}]")
    else:
        assert seed == dumped, f"{path}: {seed!r} became {dumped!r}"


def test_the_seed_has_exactly_the_endpoints_the_schema_covers() -> None:
    examples = seed_examples()
    assert set(examples) == set(CONTRACT)
    for endpoint, example in examples.items():
        request_object, _, _ = CONTRACT[endpoint]
        has_request = example.request is not None or example.form is not None
        assert has_request == (request_object is not None), endpoint
        assert len(example.responses) == 1, endpoint


@pytest.mark.parametrize("endpoint", list(CONTRACT))
def test_seed_response_validates_with_every_key_kept(endpoint: str) -> None:
    _, response_object, is_list = CONTRACT[endpoint]
    [response] = seed_examples()[endpoint].responses
    assert isinstance(response, list) == is_list
    for index, item in enumerate(response if is_list else [response]):
        dumped = response_object.model_validate(item).model_dump(mode="json")
        assert_kept(item, dumped, f"{endpoint}[{index}]")


@pytest.mark.parametrize(
    "endpoint", [endpoint for endpoint, (request, _, _) in CONTRACT.items() if request]
)
def test_seed_request_validates_with_every_key_kept(endpoint: str) -> None:
    """Request objects forbid unknown keys themselves; the dump check also catches a value the
    schema would silently change."""
    request_object, _, _ = CONTRACT[endpoint]
    assert request_object is not None
    example = seed_examples()[endpoint]
    if example.form is not None:
        fields = {key: value for key, value in example.form.items() if key != "file"}
        dumped = request_object.model_validate(fields).model_dump(mode="json")
        assert_kept({**fields, "metadata": json.loads(fields["metadata"])}, dumped, endpoint)
    else:
        dumped = request_object.model_validate(example.request).model_dump(mode="json")
        assert_kept(example.request, dumped, endpoint)


def test_the_forecast_example_is_read_in_full() -> None:
    """The forecast's lists are elided in the seed (``...``); what it shows still validates."""
    [forecast] = seed_examples()["GET /analytics/forecast"].responses
    assert forecast["total_requests_forecast"] == [131250, 137812, 144702]
    assert len(forecast["forecast_by_deployment"]) == 5


def test_the_check_catches_an_unknown_or_renamed_key() -> None:
    """The comparison is what makes these tests strict: a renamed optional field fails it."""
    seed = {"id": "o", "size_reduction_pct": 50.0}
    with pytest.raises(AssertionError, match="size_reduction_pct"):
        assert_kept(seed, {"id": "o", "size_reduction_percentage": None}, "item")
    with pytest.raises(AssertionError, match="became"):
        assert_kept({"cpu": "1"}, {"cpu": "1000m"}, "item")
