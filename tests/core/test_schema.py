"""The shared domain schema: the seed's examples validate; invalid input names its field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from aideploy.schema import (
    CostAnalysis,
    Deployment,
    DeploymentCreate,
    DeploymentUpdate,
    Model,
    ModelUploadForm,
    ModelUploadResponse,
    OptimizationJob,
    OptimizationRequest,
    OptimizationSuggestions,
    OptimizedModel,
    PerformanceAnalysis,
    Precision,
    TokenRequest,
    UsageForecast,
    field_errors,
)

SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "000_c1e204e70bf9908a.txt"

CREATE_BODY: dict[str, Any] = {
    "name": "deployment-name",
    "model_id": "model-id",
    "model_type": "original",
    "deployment_type": "serverless",
    "resource_requirements": {"cpu": "1", "memory": "2Gi", "gpu": None, "timeout": 30},
    "scaling_policy": {"min_instances": 1, "max_instances": 5, "target_cpu_utilization": 70},
    "cost_optimization_policy": {
        "use_spot_instances": True,
        "hibernation_enabled": True,
        "hibernation_idle_timeout": 1800,
        "multi_cloud_enabled": True,
    },
    "metadata": {},
}


def seed_json_blocks() -> list[Any]:
    """Every complete JSON example of the seed (the forecast's elided lists are skipped)."""
    text = SEED.read_text()
    blocks: list[Any] = []
    for chunk in text.split("```json")[1:]:
        body = chunk.split("```", 1)[0]
        if "..." not in body:
            blocks.append(json.loads(body))
    return blocks


def errors_of(model: type[BaseModel], data: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return {error.field: error.message for error in field_errors(caught.value)}


def with_changes(**sections: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(CREATE_BODY))
    for section, values in sections.items():
        body[section].update(values)
    return body


@pytest.mark.skipif(
    not SEED.is_file() and not os.environ.get("CI"),
    reason="the API seed lives in ../shared beside the repo",
)
def test_every_seed_example_validates_against_some_schema_object() -> None:
    candidates: list[type[BaseModel]] = [
        TokenRequest,
        Model,
        ModelUploadResponse,
        OptimizationRequest,
        OptimizationJob,
        OptimizedModel,
        Deployment,
        DeploymentCreate,
        DeploymentUpdate,
        CostAnalysis,
        PerformanceAnalysis,
        OptimizationSuggestions,
    ]
    blocks = seed_json_blocks()
    assert len(blocks) >= 15
    for block in blocks:
        items = block if isinstance(block, list) else [block]
        for item in items:
            if set(item) <= {"message"} or set(item) == {"token", "expires_at"}:
                continue
            matches = []
            for model in candidates:
                try:
                    model.model_validate(item)
                except ValidationError:
                    continue
                matches.append(model)
            assert matches, f"no schema object accepts the seed example {sorted(item)}"


def test_seed_create_body_round_trips_with_the_same_field_names() -> None:
    parsed = DeploymentCreate.model_validate(CREATE_BODY)
    dumped = parsed.model_dump(mode="json")
    for key, value in CREATE_BODY.items():
        if isinstance(value, dict):
            assert value.items() <= dumped[key].items()
        else:
            assert dumped[key] == value


def test_forecast_fields_follow_the_seed() -> None:
    forecast = UsageForecast.model_validate(
        {
            "timestamp": "2025-03-20T18:00:00Z",
            "days": 2,
            "total_requests_forecast": [1.0, 2.0],
            "total_cost_forecast": [0.1, 0.2],
            "forecast_by_deployment": {
                "d1": {
                    "deployment_name": "n",
                    "current_requests": 4,
                    "current_cost": 1.5,
                    "requests_forecast": [1.0, 2.0],
                    "cost_forecast": [0.1, 0.2],
                }
            },
        }
    )
    assert forecast.model_dump(mode="json")["timestamp"] == "2025-03-20T18:00:00Z"


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        (
            {"resource_requirements": {"cpu": "fast"}},
            "resource_requirements.cpu",
            "Kubernetes quantity",
        ),
        ({"resource_requirements": {"cpu": "0"}}, "resource_requirements.cpu", "more than 0"),
        (
            {"resource_requirements": {"memory": "2GB"}},
            "resource_requirements.memory",
            "Kubernetes quantity",
        ),
        (
            {"resource_requirements": {"gpu": 0}},
            "resource_requirements.gpu",
            "greater than or equal to 1",
        ),
        (
            {"resource_requirements": {"timeout": 0}},
            "resource_requirements.timeout",
            "greater than or equal to 1",
        ),
        (
            {"resource_requirements": {"timeout": 3601}},
            "resource_requirements.timeout",
            "less than or equal to 3600",
        ),
        (
            {"scaling_policy": {"min_instances": -1}},
            "scaling_policy.min_instances",
            "greater than or equal to 0",
        ),
        (
            {"scaling_policy": {"max_instances": 0, "min_instances": 0}},
            "scaling_policy.max_instances",
            "greater than or equal to 1",
        ),
        (
            {"scaling_policy": {"min_instances": 6}},
            "scaling_policy",
            "min_instances (6) must be <= max_instances (5)",
        ),
        (
            {"scaling_policy": {"target_cpu_utilization": 0}},
            "scaling_policy.target_cpu_utilization",
            "greater than or equal to 1",
        ),
        (
            {"scaling_policy": {"target_cpu_utilization": 101}},
            "scaling_policy.target_cpu_utilization",
            "less than or equal to 100",
        ),
        (
            {"cost_optimization_policy": {"hibernation_idle_timeout": 59}},
            "cost_optimization_policy.hibernation_idle_timeout",
            "greater than or equal to 60",
        ),
    ],
)
def test_invalid_deployment_fields_are_named(
    changes: dict[str, dict[str, Any]], field: str, fragment: str
) -> None:
    errors = errors_of(DeploymentCreate, with_changes(**changes))
    assert field in errors, errors
    assert fragment in errors[field]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**CREATE_BODY, "name": "My_Model"}, "name"),
        ({**CREATE_BODY, "deployment_type": "vm"}, "deployment_type"),
        ({**CREATE_BODY, "model_type": "distilled"}, "model_type"),
        ({**CREATE_BODY, "replicas": 3}, "replicas"),
        ({**CREATE_BODY, "target": {"cloud": "oracle"}}, "target.cloud"),
        ({**CREATE_BODY, "target": {"cloud": "aws", "region": "US East"}}, "target.region"),
        ({**CREATE_BODY, "target": {"cloud": "local", "region": "us-east-1"}}, "target"),
        ({**CREATE_BODY, "target": {"cloud": "aws", "cluster": "prod"}}, "body"),
    ],
)
def test_invalid_deployment_shapes_are_named(body: dict[str, Any], field: str) -> None:
    assert field in errors_of(DeploymentCreate, body)


def test_target_is_optional_and_accepts_every_cloud() -> None:
    assert DeploymentCreate.model_validate(CREATE_BODY).target is None
    for cloud in ("aws", "gcp", "azure"):
        body = {
            **CREATE_BODY,
            "deployment_type": "kubernetes",
            "target": {"cloud": cloud, "region": "eu-west-1", "cluster": "ctx"},
        }
        assert DeploymentCreate.model_validate(body).target is not None
    assert (
        DeploymentCreate.model_validate({**CREATE_BODY, "target": {"cloud": "local"}}).target
        is not None
    )


def test_optimization_request_parses_targets_to_numbers() -> None:
    request = OptimizationRequest.model_validate(
        {
            "method": "quantization",
            "target_size": "1.5GiB",
            "target_latency": 10.0,
            "metadata": {"precision": "int8"},
        }
    )
    assert request.target_size_bytes == 3 * 2**29
    assert request.target_latency == 10.0
    assert request.options.precision is Precision.INT8
    assert request.options.batch_sizes == [1, 8]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"method": "compress"}, "method", "'quantization'"),
        ({"method": "auto", "target_size": "10 parsecs"}, "target_size", "not a size"),
        ({"method": "auto", "target_latency": 0}, "target_latency", "greater than 0"),
        ({"method": "auto", "target_latency": -5}, "target_latency", "greater than 0"),
        (
            {"method": "quantization", "metadata": {"precision": "int3"}},
            "body",
            "metadata.precision",
        ),
        ({"method": "pruning", "metadata": {"sparsity": 0.99}}, "body", "metadata.sparsity"),
        ({"method": "pruning", "metadata": {"sparsity": -0.1}}, "body", "metadata.sparsity"),
    ],
)
def test_invalid_optimization_requests_are_named(
    body: dict[str, Any], field: str, fragment: str
) -> None:
    errors = errors_of(OptimizationRequest, body)
    assert field in errors, errors
    assert fragment in errors[field]


def test_optimization_metadata_keeps_user_keys() -> None:
    request = OptimizationRequest.model_validate(
        {"method": "pruning", "metadata": {"sparsity": 0.5, "note": "x"}}
    )
    assert request.metadata == {"sparsity": 0.5, "note": "x"}
    assert request.options.sparsity == 0.5


def test_upload_form_reads_metadata_json_and_names_bad_fields() -> None:
    form = ModelUploadForm.model_validate(
        {"name": "m", "framework": "pytorch", "version": "1.0", "metadata": '{"k": "v"}'}
    )
    assert form.metadata == {"k": "v"}
    errors = errors_of(
        ModelUploadForm, {"name": "m", "framework": "caffe", "metadata": "{not json"}
    )
    assert "framework" in errors
    assert "metadata" in errors
    assert "JSON object" in errors["metadata"]


def test_update_accepts_any_subset() -> None:
    update = DeploymentUpdate.model_validate(
        {"scaling_policy": {"min_instances": 0, "max_instances": 2}}
    )
    assert update.resource_requirements is None
    assert "scaling_policy.max_instances" in errors_of(
        DeploymentUpdate, {"scaling_policy": {"max_instances": 0}}
    )
