"""The arguments of aideploy's components, and their validation into the shared schema.

Component args are ``TypedDict``s (the shape Pulumi's schema inference reads for multi-language
use); everything that decides *which* resources exist (resources, scaling, cost policy, target)
is a plain value, validated at construction by the same pydantic models the API uses
(:mod:`aideploy.schema`), so a field is checked the same way wherever it enters. Values that only
flow into resource inputs (model URI, image, namespace) are ``pulumi.Input``.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, TypeVar

import pulumi
from pydantic import BaseModel, TypeAdapter, ValidationError

from aideploy.errors import InputError
from aideploy.schema import (
    Cloud,
    CostOptimizationPolicy,
    DeploymentType,
    DnsLabel,
    Framework,
    ResourceRequirements,
    ScalingPolicy,
    Target,
    field_errors,
)

__all__ = [
    "MODEL_URI_SCHEMES",
    "CostOptimizationPolicyArgs",
    "DeploymentArgs",
    "DeploymentSpec",
    "ResourceRequirementsArgs",
    "ScalingPolicyArgs",
    "TargetArgs",
    "labels_from_metadata",
    "resolve_spec",
    "validated",
]


class ResourceRequirementsArgs(TypedDict):
    """What one instance of the deployment gets."""

    cpu: NotRequired[str]
    """CPU as a Kubernetes quantity such as "1", "0.5" or "500m" (default "1")."""
    memory: NotRequired[str]
    """Memory as a Kubernetes quantity such as "512Mi" or "2Gi" (default "2Gi")."""
    gpu: NotRequired[int]
    """Number of GPUs per instance, 1-16; omit for none."""
    timeout: NotRequired[int]
    """Request timeout in seconds, 1-3600 (default 30)."""


class ScalingPolicyArgs(TypedDict):
    """How many instances run, and when more are added."""

    min_instances: NotRequired[int]
    """Fewest instances kept running, 0-1000 (default 1)."""
    max_instances: NotRequired[int]
    """Most instances, 1-1000 (default 5)."""
    target_cpu_utilization: NotRequired[int]
    """Average CPU utilization in percent the autoscaler keeps instances at (default 70)."""


class CostOptimizationPolicyArgs(TypedDict):
    """The levers that trade availability for cost."""

    use_spot_instances: NotRequired[bool]
    """Run on spot/preemptible capacity where the target has it (default false)."""
    hibernation_enabled: NotRequired[bool]
    """Scale to zero after hibernation_idle_timeout seconds without requests (default false)."""
    hibernation_idle_timeout: NotRequired[int]
    """Seconds without requests before scaling to zero, 60-604800 (default 1800)."""
    multi_cloud_enabled: NotRequired[bool]
    """Without a target, place the deployment on the cheapest cloud and region (default false)."""
    on_demand_base_instances: NotRequired[int]
    """With spot, this many instances stay on on-demand capacity (default 0)."""


class TargetArgs(TypedDict):
    """Where the deployment runs."""

    cloud: Cloud
    """aws, gcp or azure."""
    region: NotRequired[str]
    """Cloud region such as us-east-1, europe-west4 or westeurope."""
    cluster: NotRequired[str]
    """Kubernetes only: the cluster's kubeconfig context or platform stack (informational)."""


class DeploymentArgs(TypedDict):
    """Arguments every deployment component takes."""

    model_uri: pulumi.Input[str]
    """URI of the model artifact in object storage: s3://, gs:// or https://<account>.blob.core.windows.net/."""
    image: pulumi.Input[str]
    """Container image of the aideploy serving runtime (Open Inference Protocol v2 on PORT)."""
    deployment_name: NotRequired[str]
    """Name of the deployment (a DNS label); defaults to the resource name."""
    model_format: NotRequired[Framework]
    """Format of the model artifact, onnx (default) or pytorch."""
    resource_requirements: NotRequired[ResourceRequirementsArgs]
    """What one instance gets."""
    scaling_policy: NotRequired[ScalingPolicyArgs]
    """How many instances run."""
    cost_optimization_policy: NotRequired[CostOptimizationPolicyArgs]
    """Spot, hibernation and placement."""
    hibernated: NotRequired[bool]
    """Stop serving and run no instances, keeping the endpoint's address (default false)."""
    metadata: NotRequired[dict[str, str]]
    """Labels (Kubernetes) or tags (clouds) added to every resource."""
    public_endpoint: NotRequired[bool]
    """Let unauthenticated clients reach the endpoint (default false: cloud IAM or in-cluster only)."""
    usage_url: NotRequired[pulumi.Input[str]]
    """Where the runtime reports its usage (the platform API's POST /deployments/{id}/usage)."""
    usage_token: NotRequired[pulumi.Input[str]]
    """The deployment-scoped token for usage_url (kept a Pulumi secret)."""


@dataclass(frozen=True)
class DeploymentSpec:
    """A deployment's arguments after validation: what every target builds from."""

    name: str
    model_uri: pulumi.Input[str]
    image: pulumi.Input[str]
    model_format: Framework
    resources: ResourceRequirements
    scaling: ScalingPolicy
    cost: CostOptimizationPolicy
    hibernated: bool
    labels: dict[str, str]
    public_endpoint: bool
    usage_url: pulumi.Input[str] | None = None
    usage_token: pulumi.Input[str] | None = None


MODEL_URI_SCHEMES: dict[Cloud, tuple[str, ...]] = {
    Cloud.AWS: ("s3://",),
    Cloud.GCP: ("gs://",),
    Cloud.AZURE: ("https://",),
}
"""The object stores each cloud's serverless target grants its identity read access to."""

_Model = TypeVar("_Model", bound=BaseModel)
_DNS_LABEL: TypeAdapter[str] = TypeAdapter(DnsLabel)


def validated(model: type[_Model], value: Mapping[str, Any] | None, field: str) -> _Model:
    """Validate one args section with the shared schema, naming the field path on failure."""
    try:
        return model.model_validate(dict(value or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{field}.{error.field}: {error.message}"
            if error.field != "body"
            else f"{field}: {error.message}"
            for error in field_errors(exc)
        )
        raise InputError(problems) from None


def validated_name(value: str, field: str = "deployment_name") -> str:
    try:
        return _DNS_LABEL.validate_python(value)
    except ValidationError as exc:
        raise InputError(f"{field}: {field_errors(exc)[0].message} (got {value!r})") from None


def validated_target(value: Mapping[str, Any] | None) -> Target | None:
    return None if value is None else validated(Target, value, "target")


def deployment_type_of(value: object) -> DeploymentType:
    try:
        return DeploymentType(str(value))
    except ValueError:
        allowed = ", ".join(kind.value for kind in DeploymentType)
        raise InputError(f"deployment_type: {value!r} is not one of {allowed}") from None


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def labels_from_metadata(metadata: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Turn deployment metadata into labels/tags every target accepts, and say what was left out.

    Label syntax is the strictest of the targets (Kubernetes: 63 characters of letters, digits,
    ``-_.``), so one conversion serves all; entries that do not fit are reported, not dropped
    silently.
    """
    labels: dict[str, str] = {}
    skipped: list[str] = []
    for key, raw in metadata.items():
        value = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if not isinstance(raw, str | int | float | bool):
            skipped.append(f"metadata.{key}: only text, number or boolean values become labels")
        elif len(key) > 63 or not _LABEL_NAME.match(key):
            skipped.append(
                f"metadata.{key}: label keys are 1-63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit"
            )
        elif len(value) > 63 or not _LABEL_VALUE.match(value):
            skipped.append(
                f"metadata.{key}: label values are at most 63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit"
            )
        else:
            labels[key] = value
    return labels, skipped


def resolve_spec(resource_name: str, args: DeploymentArgs) -> tuple[DeploymentSpec, list[str]]:
    """Validate ``args`` into a :class:`DeploymentSpec`; the list holds metadata left unlabelled."""
    missing = [key for key in ("model_uri", "image") if key not in args]
    if missing:
        raise InputError(f"{', '.join(missing)}: required")
    name = validated_name(args.get("deployment_name", resource_name))
    labels, skipped = labels_from_metadata(args.get("metadata", {}))
    format_value = args.get("model_format", Framework.ONNX)
    try:
        model_format = Framework(format_value)
    except ValueError:
        allowed = ", ".join(item.value for item in Framework)
        raise InputError(f"model_format: {format_value!r} is not one of {allowed}") from None
    spec = DeploymentSpec(
        name=name,
        model_uri=args["model_uri"],
        image=args["image"],
        model_format=model_format,
        resources=validated(
            ResourceRequirements, args.get("resource_requirements"), "resource_requirements"
        ),
        scaling=validated(ScalingPolicy, args.get("scaling_policy"), "scaling_policy"),
        cost=validated(
            CostOptimizationPolicy, args.get("cost_optimization_policy"), "cost_optimization_policy"
        ),
        hibernated=bool(args.get("hibernated", False)),
        labels=labels,
        public_endpoint=bool(args.get("public_endpoint", False)),
        usage_url=args.get("usage_url"),
        usage_token=args.get("usage_token"),
    )
    if spec.cost.on_demand_base_instances > spec.scaling.max_instances:
        raise InputError(
            "cost_optimization_policy.on_demand_base_instances: "
            f"{spec.cost.on_demand_base_instances} must be <= scaling_policy.max_instances "
            f"({spec.scaling.max_instances})"
        )
    return spec, skipped


def model_uri_parts(
    uri: str, schemes: tuple[str, ...], field: str = "model_uri"
) -> tuple[str, str]:
    """Split an object-storage URI into (bucket or container, object key), checking the scheme.

    ``s3://bucket/key`` and ``gs://bucket/key`` give ``(bucket, key)``;
    ``https://account.blob.core.windows.net/container/blob`` gives ``(account/container, blob)``.
    """
    for scheme in schemes:
        if uri.startswith(scheme):
            rest = uri[len(scheme) :]
            if scheme == "https://":
                host, _, path = rest.partition("/")
                if not host.endswith(".blob.core.windows.net"):
                    break
                container, _, blob = path.partition("/")
                if container and blob:
                    return f"{host.split('.')[0]}/{container}", blob
                break
            bucket, _, key = rest.partition("/")
            if bucket and key:
                return bucket, key
            break
    expected = " or ".join(
        "https://<account>.blob.core.windows.net/<container>/<blob>"
        if scheme == "https://"
        else f"{scheme}<bucket>/<object>"
        for scheme in schemes
    )
    raise InputError(f"{field}: {uri!r} is not an object URI of the form {expected}")
