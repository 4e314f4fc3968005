"""The arguments of aideploy's components, and their validation into the shared schema.

Component args are ``TypedDict``s (the shape Pulumi's schema inference reads for multi-language
use); everything that decides *which* resources exist (resources, scaling, cost policy, target)
is a plain value, validated at construction by the same pydantic models the API uses
(:mod:`aideploy.schema`), so a field is checked the same way wherever it enters. Values that only
flow into resource inputs (model URI, image, namespace, ids of existing resources) are
``pulumi.Input``, so a program can wire another resource's output into them.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
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
    "CostOptimizationPolicyArgs",
    "DeploymentArgs",
    "DeploymentSpec",
    "ModelFormat",
    "ModelLocation",
    "ResourceRequirementsArgs",
    "ScalingPolicyArgs",
    "TargetArgs",
    "TargetCloud",
    "gcp_labels",
    "labels_from_metadata",
    "model_location",
    "require_readable",
    "resolve_spec",
    "storage_account_name",
    "validated",
]


class TargetCloud(StrEnum):
    """The clouds a Pulumi deployment runs on (``local`` runs through aideploy's own runner)."""

    AWS = "aws"
    """Amazon Web Services: EKS or AWS Lambda."""
    GCP = "gcp"
    """Google Cloud: GKE or Cloud Run."""
    AZURE = "azure"
    """Microsoft Azure: AKS or Azure Container Apps."""


class ModelFormat(StrEnum):
    """Formats the serving runtime loads (a TensorFlow model is deployed as its ONNX export)."""

    ONNX = "onnx"
    """An ONNX file."""
    PYTORCH = "pytorch"
    """A TorchScript or torch.export file."""


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

    cloud: TargetCloud
    """aws, gcp or azure."""
    region: NotRequired[str]
    """Cloud region such as us-east-1, europe-west4 or westeurope (default: the target's own)."""
    cluster: NotRequired[str]
    """Kubernetes only: the cluster to deploy to, as a kubeconfig context or as org/project/stack of an aideploy platform stack (then its kubeconfig is used and pods get a cloud identity that can read the model)."""


class DeploymentArgs(TypedDict):
    """Arguments every deployment component takes."""

    model_uri: pulumi.Input[str]
    """URI of the model artifact: s3://, gs://, az://<container>/<blob>, https://<account>.blob.core.windows.net/<container>/<blob>, or a public https:// URL."""
    image: pulumi.Input[str]
    """Container image of the aideploy serving runtime (Open Inference Protocol v2 on PORT)."""
    deployment_name: NotRequired[str]
    """Name of the deployment (a DNS label); defaults to the resource name."""
    model_format: NotRequired[ModelFormat]
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
    """Labels (Kubernetes, GCP) or tags (AWS, Azure) added to every resource; entries a target's label rules change or refuse are reported in warnings."""
    public_endpoint: NotRequired[bool]
    """Let unauthenticated clients reach the endpoint (default false: cloud IAM or in-cluster only)."""
    usage_url: NotRequired[pulumi.Input[str]]
    """Where the runtime reports its usage (the platform API's POST /deployments/{id}/usage)."""
    usage_token: NotRequired[pulumi.Input[str]]
    """The deployment-scoped token for usage_url (a Kubernetes Secret or Container Apps secret; a Pulumi secret throughout)."""


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


_Model = TypeVar("_Model", bound=BaseModel)
_DNS_LABEL: TypeAdapter[str] = TypeAdapter(DnsLabel)


@dataclass(frozen=True)
class ModelLocation:
    """Where a model artifact is, and so which cloud identity can be granted read access."""

    uri: str
    cloud: Cloud | None
    """The cloud whose object store holds it; ``None`` for any other URI."""
    public: bool = False
    """A plain ``https://`` URL: every target fetches it without a cloud identity."""
    bucket: str = ""
    """S3 or GCS bucket, or Blob container."""
    key: str = ""
    """Object key or blob name."""
    account: str | None = None
    """Azure storage account, when the URI names it (``https://<account>.blob...``)."""

    def readable_from(self, cloud: Cloud) -> bool:
        """Whether a workload identity of ``cloud`` can read it (its own store, or public)."""
        return self.public or self.cloud is cloud

    @property
    def runtime_uri(self) -> str:
        """The URI the serving runtime opens: Blob objects as ``az://`` (adlfs, authenticating
        with the workload's managed identity), everything else unchanged."""
        if self.cloud is Cloud.AZURE:
            return f"az://{self.bucket}/{self.key}"
        return self.uri


MODEL_URI_FORMS: dict[Cloud, str] = {
    Cloud.AWS: "s3://<bucket>/<object>",
    Cloud.GCP: "gs://<bucket>/<object>",
    Cloud.AZURE: "az://<container>/<blob> or https://<account>.blob.core.windows.net/<container>/<blob>",
}
"""The object-store URIs whose objects each cloud's workload identity is granted."""
_OBJECT_SCHEMES = {"s3": Cloud.AWS, "gs": Cloud.GCP, "az": Cloud.AZURE}
_BLOB_HOST = re.compile(r"^([a-z0-9]{3,24})\.blob\.core\.windows\.net$")


def model_location(uri: str, field: str = "model_uri") -> ModelLocation:
    """Parse a model URI; an object-store URI without an object name is an error."""
    scheme, separator, rest = uri.partition("://")
    scheme = scheme.lower()
    if scheme in _OBJECT_SCHEMES:
        bucket, _, key = rest.partition("/")
        if not bucket or not key:
            raise InputError(
                f"{field}: {uri!r} names no object; expected {scheme}://<bucket>/<object>"
            )
        return ModelLocation(uri, _OBJECT_SCHEMES[scheme], bucket=bucket, key=key)
    if separator and scheme == "https":
        host, _, path = rest.partition("/")
        blob_host = _BLOB_HOST.match(host.lower())
        if blob_host is None:
            return ModelLocation(uri, None, public=True)
        container, _, blob = path.partition("/")
        if not container or not blob:
            raise InputError(
                f"{field}: {uri!r} names no blob; expected {MODEL_URI_FORMS[Cloud.AZURE]}"
            )
        return ModelLocation(
            uri, Cloud.AZURE, bucket=container, key=blob, account=blob_host.group(1)
        )
    return ModelLocation(uri, None)


def require_readable(
    location: ModelLocation, cloud: Cloud, reader: str, field: str = "model_uri"
) -> None:
    """Fail naming the accepted forms when ``reader`` (a cloud identity) cannot read the model."""
    if not location.readable_from(cloud):
        raise InputError(
            f"{field}: {location.uri!r} cannot be read by {reader}; expected "
            f"{MODEL_URI_FORMS[cloud]}, or a public https:// URL"
        )


def storage_account_name(account_id: str) -> str:
    """The account name of a storage account resource id (its last path segment)."""
    return account_id.rstrip("/").rsplit("/", 1)[-1]


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
    """The target through the shared schema; ``local`` is rejected, it is no Pulumi target."""
    if value is None:
        return None
    cloud = value.get("cloud")
    allowed = [item.value for item in TargetCloud]
    if cloud is not None and str(cloud) not in allowed:
        raise InputError(
            f"target.cloud: {str(cloud)!r} is not one of {', '.join(allowed)}"
            + (
                " ('local' deployments run through aideploy's local runner, not Pulumi)"
                if str(cloud) == Cloud.LOCAL.value
                else ""
            )
        )
    return validated(Target, value, "target")


def deployment_type_of(value: object) -> DeploymentType:
    try:
        return DeploymentType(str(value))
    except ValueError:
        allowed = ", ".join(kind.value for kind in DeploymentType)
        raise InputError(f"deployment_type: {value!r} is not one of {allowed}") from None


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def labels_from_metadata(metadata: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Turn deployment metadata into Kubernetes labels, and say what was left out.

    Kubernetes label syntax (63 letters, digits, ``-_.``) is also valid AWS and Azure tag syntax,
    so these labels serve those targets unchanged; GCP is stricter and converts them further
    (:func:`gcp_labels`). Entries that do not fit are reported, never dropped silently.
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


_GCP_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_NOT_GCP_LABEL_CHARACTER = re.compile(r"[^a-z0-9_-]")


def gcp_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Labels as GCP accepts them: lowercase letters, digits, ``_`` and ``-``, keys starting
    with a letter. Each entry that had to change, or could not be used, is reported."""
    converted: dict[str, str] = {}
    notes: list[str] = []
    for key, value in labels.items():
        new_key = _NOT_GCP_LABEL_CHARACTER.sub("_", key.lower())
        new_value = _NOT_GCP_LABEL_CHARACTER.sub("_", value.lower())
        if not _GCP_LABEL_KEY.match(new_key):
            notes.append(
                f"metadata.{key}: GCP label keys start with a lowercase letter; not set as a label"
            )
        elif new_key in converted:
            notes.append(
                f"metadata.{key}: becomes the GCP label key {new_key!r}, which another entry "
                "already has; not set as a label"
            )
        else:
            converted[new_key] = new_value
            if (new_key, new_value) != (key, value):
                notes.append(
                    f"metadata.{key}: GCP labels allow only lowercase letters, digits, '_' and "
                    f"'-'; set as {new_key}={new_value}"
                )
    return converted, notes


def _model_format(value: object) -> Framework:
    allowed = [item.value for item in ModelFormat]
    if str(value) not in allowed:
        raise InputError(f"model_format: {value!r} is not one of {', '.join(allowed)}")
    return Framework(str(value))


def resolve_spec(
    resource_name: str, args: Mapping[str, Any], model_uri: pulumi.Input[str] | None = None
) -> tuple[DeploymentSpec, list[str]]:
    """Validate ``args`` into a :class:`DeploymentSpec`; the list holds metadata left unlabelled.

    ``model_uri`` overrides ``args["model_uri"]`` (a ModelDeployment picks it per cloud).
    """
    uri = model_uri if model_uri is not None else args.get("model_uri")
    image = args.get("image")
    if uri is None or image is None:
        missing = [key for key, value in (("model_uri", uri), ("image", image)) if value is None]
        raise InputError(f"{', '.join(missing)}: required")
    name = validated_name(args.get("deployment_name", resource_name))
    labels, skipped = labels_from_metadata(args.get("metadata", {}))
    spec = DeploymentSpec(
        name=name,
        model_uri=uri,
        image=image,
        model_format=_model_format(args.get("model_format", ModelFormat.ONNX)),
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
