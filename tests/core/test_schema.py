"""The shared domain schema: invalid input is refused with an error naming the field itself.

The seed's own examples are checked in ``test_seed_conformance.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from aideploy.schema import (
    DeploymentCreate,
    DeploymentUpdate,
    ModelUploadForm,
    OptimizationRequest,
    Precision,
    ResourceRequirements,
    field_errors,
)

# A valid body, the seed's create example; each invalid case below changes one thing.
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


def errors_of(model: type[BaseModel], data: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return {error.field: error.message for error in field_errors(caught.value)}


def with_changes(**sections: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(CREATE_BODY))
    for section, values in sections.items():
        body[section].update(values)
    return body


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        (
            {"resource_requirements": {"cpu": "fast"}},
            "resource_requirements.cpu",
            "Kubernetes quantity",
        ),
        ({"resource_requirements": {"cpu": "0"}}, "resource_requirements.cpu", "between 1m and"),
        (
            {"resource_requirements": {"cpu": "2Gi"}},
            "resource_requirements.cpu",
            "between 1m and 512 cores",
        ),
        (
            {"resource_requirements": {"cpu": "1e999999"}},
            "resource_requirements.cpu",
            "exponent outside -18..18",
        ),
        (
            {"resource_requirements": {"memory": "1e999999"}},
            "resource_requirements.memory",
            "exponent outside -18..18",
        ),
        (
            {"resource_requirements": {"memory": "1"}},
            "resource_requirements.memory",
            "between 1Mi and 16Ti",
        ),
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
            "scaling_policy.min_instances",
            "must be <= max_instances (5), got 6",
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
        ({**CREATE_BODY, "target": {"cloud": "local", "region": "us-east-1"}}, "target.region"),
        ({**CREATE_BODY, "target": {"cloud": "local", "cluster": "ctx"}}, "target.cluster"),
        ({**CREATE_BODY, "target": {"cloud": "aws", "cluster": "prod"}}, "target.cluster"),
    ],
)
def test_invalid_deployment_shapes_are_named(body: dict[str, Any], field: str) -> None:
    """Rules across fields blame the field itself, not its object or the whole body."""
    assert list(errors_of(DeploymentCreate, body)) == [field]


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
        ({"method": "auto", "target_latency": float("inf")}, "target_latency", "finite number"),
        ({"method": "auto", "target_latency": float("nan")}, "target_latency", "finite number"),
        ({"method": "auto", "target_latency": 3_600_001}, "target_latency", "3600000"),
        ({"method": "auto", "target_size": "1001TB"}, "target_size", "at most 1000TB"),
        ({"method": "auto", "target_size": "1" + "0" * 5000}, "target_size", "too long"),
        ({"method": "distillation"}, "method", "'distillation' is not supported yet"),
        (
            {"method": "quantization", "metadata": {"precision": "int3"}},
            "metadata.precision",
            "'int8'",
        ),
        ({"method": "pruning", "metadata": {"sparsity": 0.99}}, "metadata.sparsity", "0.95"),
        ({"method": "pruning", "metadata": {"sparsity": -0.1}}, "metadata.sparsity", "0"),
    ],
)
def test_invalid_optimization_requests_are_named(
    body: dict[str, Any], field: str, fragment: str
) -> None:
    errors = errors_of(OptimizationRequest, body)
    assert list(errors) == [field], errors
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
    assert list(
        errors_of(DeploymentUpdate, {"scaling_policy": {"min_instances": 3, "max_instances": 2}})
    ) == ["scaling_policy.min_instances"]


def test_quantities_are_stored_as_checked_without_surrounding_whitespace() -> None:
    """The stored string is copied into manifests, which reject whitespace."""
    resources = ResourceRequirements.model_validate({"cpu": " 500m ", "memory": "\t1Gi\n"})
    assert (resources.cpu, resources.memory) == ("500m", "1Gi")
    request = OptimizationRequest.model_validate({"method": "auto", "target_size": " 10MB "})
    assert request.target_size == "10MB"


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (ResourceRequirements, "cpu"),
        (ResourceRequirements, "memory"),
        (OptimizationRequest, "target_size"),
    ],
)
@given(text=st.text(max_size=80) | st.from_regex(r"\A[0-9]{1,40}(e[0-9]{1,9}|Ei|Mi|MB|m)?\Z"))
def test_any_quantity_string_is_valid_or_an_error_naming_its_field(
    model: type[BaseModel], field: str, text: str
) -> None:
    """Whatever the string, validation answers with the field's own error, never another
    exception (an escaping decimal.Overflow was a 500)."""
    data: dict[str, Any] = {field: text}
    if model is OptimizationRequest:
        data["method"] = "auto"
    fields: list[str] = []
    try:
        model.model_validate(data)
    except ValidationError as exc:
        fields = [error.field for error in field_errors(exc)]
    assert fields in ([], [field])
