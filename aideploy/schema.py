"""The shared domain model: every object of the API contract, used by the API, the components
and the optimizer alike, so a field is validated the same way wherever it enters.

Field names are exactly the API's snake_case JSON. Objects that only the platform writes
(``Model``, ``Deployment``, analytics) validate too, so a bad row never leaves the server.
Additions to the seed contract are marked *extension* in their docstrings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from aideploy.quantity import parse_cpu, parse_memory, parse_size

__all__ = [
    "AccessToken",
    "Anomaly",
    "Cloud",
    "CostAnalysis",
    "CostBreakdown",
    "CostComparison",
    "CostOptimizationPolicy",
    "Deployment",
    "DeploymentCreate",
    "DeploymentForecast",
    "DeploymentStatus",
    "DeploymentSuggestions",
    "DeploymentType",
    "DeploymentUpdate",
    "FieldError",
    "Framework",
    "Impact",
    "Message",
    "Model",
    "ModelType",
    "ModelUploadForm",
    "ModelUploadResponse",
    "OptimizationJob",
    "OptimizationMethod",
    "OptimizationOptions",
    "OptimizationRequest",
    "OptimizationStatus",
    "OptimizationSuggestions",
    "OptimizedModel",
    "PerformanceAnalysis",
    "PerformanceStats",
    "Precision",
    "Recommendation",
    "ResourceRequirements",
    "ScalingPolicy",
    "Suggestion",
    "Target",
    "TokenRequest",
    "UsageForecast",
    "field_errors",
    "rule_error",
    "utc_now",
]


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC, as every timestamp of the API is."""
    return datetime.now(UTC)


def rule_error(
    owner: type[BaseModel], loc: tuple[str | int, ...], value: object, message: str
) -> ValidationError:
    """An error for a rule a model checks across fields, located at the field it blames.

    ``loc`` is relative to ``owner``. Raised from a validator, pydantic re-roots it under the
    validator's own location, so an API error's ``field`` reads ``scaling_policy.min_instances``
    rather than ``scaling_policy`` or ``body``.
    """
    detail = InitErrorDetails(
        type=PydanticCustomError("rule", "{reason}", {"reason": message}), loc=loc, input=value
    )
    return ValidationError.from_exception_data(owner.__name__, [detail])


class _Strict(BaseModel):
    """Request objects: unknown fields are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Framework(StrEnum):
    """What a model was built with.

    Artifacts are ONNX, TorchScript or ``torch.export`` files; a TensorFlow model is uploaded
    as ONNX exported with tf2onnx (SavedModel directories are not loaded).
    """

    ONNX = "onnx"
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"


class ModelType(StrEnum):
    """Whether a deployment serves the uploaded model or one of its optimized versions."""

    ORIGINAL = "original"
    OPTIMIZED = "optimized"


class DeploymentType(StrEnum):
    KUBERNETES = "kubernetes"
    SERVERLESS = "serverless"


class DeploymentStatus(StrEnum):
    CREATING = "creating"
    ACTIVE = "active"
    FAILED = "failed"
    UPDATING = "updating"
    HIBERNATING = "hibernating"
    HIBERNATED = "hibernated"
    ACTIVATING = "activating"
    DELETING = "deleting"


class OptimizationMethod(StrEnum):
    QUANTIZATION = "quantization"
    PRUNING = "pruning"
    GRAPH = "graph"
    AUTO = "auto"
    DISTILLATION = "distillation"


class OptimizationStatus(StrEnum):
    OPTIMIZING = "optimizing"
    COMPLETED = "completed"
    FAILED = "failed"


class Precision(StrEnum):
    INT8 = "int8"
    INT8_STATIC = "int8-static"
    FP16 = "fp16"
    INT4 = "int4"


class Cloud(StrEnum):
    AWS = "aws"
    GCP = "gcp"
    AZURE = "azure"
    LOCAL = "local"


Impact = Literal["low", "medium", "high"]


def _parsed_by(parse: Callable[[str], object]) -> AfterValidator:
    """Keep the string as written once ``parse`` accepts it; its QuantityError (a ValueError)
    becomes the field's error message."""

    def check(value: str) -> str:
        parse(value)
        return value

    return AfterValidator(check)


# Stripped first, so the stored string is the one that was checked: it is copied verbatim into
# Kubernetes manifests and cloud resources, which reject surrounding whitespace.
_Stripped = StringConstraints(strip_whitespace=True)
CpuQuantity = Annotated[str, _Stripped, _parsed_by(parse_cpu)]
MemoryQuantity = Annotated[str, _Stripped, _parsed_by(parse_memory)]
ByteSize = Annotated[str, _Stripped, _parsed_by(parse_size)]
Metadata = dict[str, Any]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$")


def _check_dns_label(value: str) -> str:
    """Deployment names become Kubernetes objects, stack names and cloud resource names."""
    if not _NAME.match(value):
        raise ValueError(
            "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter "
            "or digit (it names Kubernetes objects and cloud resources)"
        )
    return value


DnsLabel = Annotated[str, AfterValidator(_check_dns_label)]


# --- models -------------------------------------------------------------------------------


class ModelUploadForm(_Strict):
    """The form fields of ``POST /models`` (the file travels beside them)."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    framework: Framework
    version: Annotated[str, Field(min_length=1, max_length=64)] = "1.0"
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_from_form(cls, value: object) -> object:
        """Multipart forms carry metadata as a JSON string."""
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON object ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return value


class Model(BaseModel):
    """A stored model as ``GET /models`` returns it."""

    id: str
    name: str
    framework: Framework
    version: str
    storage_path: str
    created_at: datetime
    updated_at: datetime
    metadata: Metadata = Field(default_factory=dict)


class ModelUploadResponse(BaseModel):
    """The answer to ``POST /models``."""

    model_id: str
    name: str
    framework: Framework
    version: str
    storage_path: str
    created_at: datetime


# --- optimization -------------------------------------------------------------------------


class OptimizationOptions(_Strict):
    """The optimizer's knobs, read from an optimization request's ``metadata``.

    Keys not listed here stay in ``metadata`` untouched (``extra="ignore"``), so users may keep
    their own notes there.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    precision: Precision | None = None
    """Quantization precision; ``None`` lets the method choose (int8 for quantization)."""
    sparsity: Annotated[float, Field(ge=0.0, le=0.95)] | None = None
    """Fraction of weights pruning removes, 0-0.95."""
    max_accuracy_drop: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    """The most accuracy ``auto`` may lose, in percentage points of the report's metric."""
    batch_sizes: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1)] = [
        1,
        8,
    ]
    """Batch sizes the latency is measured at."""
    threads: Annotated[int, Field(ge=1, le=256)] | None = None
    """Intra-op threads for latency measurement; defaults to the deployment's cpu."""
    then_quantize: bool = False
    """For pruning: quantize the pruned model to int8 afterwards."""
    task: Literal["classification", "embedding", "regression"] | None = None
    """*Extension*: how accuracy is judged without labels (top-1 agreement for classification,
    cosine similarity otherwise); guessed from the output's name and the labels when null."""


class OptimizationRequest(_Strict):
    """The body of ``POST /models/{model_id}/optimize``."""

    method: OptimizationMethod
    """Any method but ``distillation``, which is refused until the optimizer implements it."""
    target_size: ByteSize | None = None
    """Largest acceptable artifact, e.g. ``"10MB"`` (at most 1000TB); in bytes as
    :attr:`target_size_bytes`."""
    target_latency: Annotated[float, Field(gt=0, le=3_600_000, allow_inf_nan=False)] | None = None
    """Largest acceptable p50 latency in milliseconds at the first requested batch size (at most
    an hour, the longest request timeout)."""
    metadata: Metadata = Field(default_factory=dict)

    @property
    def target_size_bytes(self) -> int | None:
        return None if self.target_size is None else parse_size(self.target_size)

    @property
    def options(self) -> OptimizationOptions:
        return OptimizationOptions.model_validate(self.metadata)

    @field_validator("method")
    @classmethod
    def _method_is_implemented(cls, value: OptimizationMethod) -> OptimizationMethod:
        """Refused on arrival rather than accepted and failed later by the optimizer job."""
        if value is OptimizationMethod.DISTILLATION:
            raise PydanticCustomError(
                "not_supported",
                "'distillation' is not supported yet; use quantization, pruning, graph or auto",
            )
        return value

    @field_validator("metadata")
    @classmethod
    def _options_are_valid(cls, value: Metadata) -> Metadata:
        """The optimizer's knobs are checked on arrival; their errors read ``metadata.<knob>``."""
        OptimizationOptions.model_validate(value)
        return value


class OptimizationJob(BaseModel):
    """The immediate answer to ``POST /models/{model_id}/optimize``."""

    id: str
    original_model_id: str
    optimization_method: OptimizationMethod
    status: OptimizationStatus
    created_at: datetime


class OptimizedModel(BaseModel):
    """An optimization result as ``GET /models/{model_id}/optimized`` returns it."""

    id: str
    original_model_id: str
    optimization_method: OptimizationMethod
    status: OptimizationStatus
    storage_path: str | None = None
    size_reduction_percentage: float | None = None
    latency_reduction_percentage: float | None = None
    accuracy_change_percentage: float | None = None
    created_at: datetime
    updated_at: datetime
    metadata: Metadata = Field(default_factory=dict)
    status_reason: str | None = None
    """*Extension*: why an optimization failed, or which targets it did not meet."""


# --- deployments --------------------------------------------------------------------------


class ResourceRequirements(_Strict):
    """What one instance of a deployment gets."""

    cpu: CpuQuantity = "1"
    """CPU as a Kubernetes quantity: ``"1"``, ``"0.5"``, ``"500m"``."""
    memory: MemoryQuantity = "2Gi"
    """Memory as a Kubernetes quantity: ``"512Mi"``, ``"2Gi"``, ``"1G"``."""
    gpu: Annotated[int, Field(ge=1, le=16)] | None = None
    """Number of GPUs, or null for none."""
    timeout: Annotated[int, Field(ge=1, le=3600)] = 30
    """Request timeout in seconds, 1-3600."""

    @property
    def cpu_cores(self) -> Decimal:
        return parse_cpu(self.cpu)

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)


class ScalingPolicy(_Strict):
    """How many instances run, and when more are added."""

    min_instances: Annotated[int, Field(ge=0, le=1000)] = 1
    max_instances: Annotated[int, Field(ge=1, le=1000)] = 5
    target_cpu_utilization: Annotated[int, Field(ge=1, le=100)] = 70
    """Average CPU utilization, in percent, that the autoscaler keeps instances at."""

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Self:
        if self.min_instances > self.max_instances:
            raise rule_error(
                ScalingPolicy,
                ("min_instances",),
                self.min_instances,
                f"must be <= max_instances ({self.max_instances}), got {self.min_instances}",
            )
        return self


class CostOptimizationPolicy(_Strict):
    """The levers that trade availability for cost."""

    use_spot_instances: bool = False
    hibernation_enabled: bool = False
    """Scale to zero after ``hibernation_idle_timeout`` seconds without requests."""
    hibernation_idle_timeout: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 1800
    multi_cloud_enabled: bool = False
    """Without an explicit ``target``, let the platform pick the cheapest cloud and region."""
    on_demand_base_instances: Annotated[int, Field(ge=0, le=1000)] = 0
    """*Extension*: with spot, this many instances stay on on-demand capacity."""


class Target(_Strict):
    """*Extension*: where a deployment runs. The seed leaves this open."""

    cloud: Cloud
    region: str | None = None
    """Cloud region (``us-east-1``, ``europe-west4``, ``westeurope``); the cloud's default if null."""
    cluster: str | None = None
    """Kubernetes only: a kubeconfig context, or ``org/project/stack`` of a platform stack."""

    @field_validator("region")
    @classmethod
    def _region_shape(cls, value: str | None) -> str | None:
        if value is not None and not _REGION.match(value):
            raise ValueError("must be a cloud region name such as 'us-east-1' or 'westeurope'")
        return value

    @model_validator(mode="after")
    def _local_has_no_region(self) -> Self:
        if self.cloud is Cloud.LOCAL:
            for name, value in (("region", self.region), ("cluster", self.cluster)):
                if value:
                    raise rule_error(
                        Target,
                        (name,),
                        value,
                        f"cloud 'local' runs on this host and takes no {name}",
                    )
        return self


class _DeploymentSpec(_Strict):
    """The fields a deployment is created with; shared by the request and the stored object."""

    name: DnsLabel
    model_id: Annotated[str, Field(min_length=1)]
    model_type: ModelType = ModelType.ORIGINAL
    deployment_type: DeploymentType = DeploymentType.KUBERNETES
    resource_requirements: ResourceRequirements = Field(default_factory=ResourceRequirements)
    scaling_policy: ScalingPolicy = Field(default_factory=ScalingPolicy)
    cost_optimization_policy: CostOptimizationPolicy = Field(default_factory=CostOptimizationPolicy)
    metadata: Metadata = Field(default_factory=dict)
    target: Target | None = None
    """*Extension*: where it runs; see :class:`Target`."""

    @model_validator(mode="after")
    def _cluster_only_for_kubernetes(self) -> Self:
        if (
            self.target is not None
            and self.target.cluster
            and self.deployment_type is not DeploymentType.KUBERNETES
        ):
            raise rule_error(
                type(self),
                ("target", "cluster"),
                self.target.cluster,
                f"applies only to deployment_type 'kubernetes', not {self.deployment_type.value!r}",
            )
        return self


class DeploymentCreate(_DeploymentSpec):
    """The body of ``POST /deployments``."""


class DeploymentUpdate(_Strict):
    """The body of ``PUT /deployments/{deployment_id}``: any subset of the mutable fields."""

    resource_requirements: ResourceRequirements | None = None
    scaling_policy: ScalingPolicy | None = None
    cost_optimization_policy: CostOptimizationPolicy | None = None
    metadata: Metadata | None = None


class Deployment(_DeploymentSpec):
    """A deployment as the API returns it."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    id: str
    status: DeploymentStatus
    endpoint: str | None = None
    created_at: datetime
    updated_at: datetime
    status_reason: str | None = None
    """*Extension*: why the last operation failed."""


# --- auth and messages --------------------------------------------------------------------


class TokenRequest(_Strict):
    username: Annotated[str, Field(min_length=1, max_length=128)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class AccessToken(BaseModel):
    token: str
    expires_at: datetime


class Message(BaseModel):
    message: str


# --- analytics ----------------------------------------------------------------------------


class Recommendation(BaseModel):
    type: str
    message: str
    impact: Impact


class CostBreakdown(BaseModel):
    compute: float
    storage: float
    network: float


class CostComparison(BaseModel):
    """What the same usage would cost on each cloud's managed, always-on ML endpoint;
    deployments that reported no usage in the window are left out of both sides."""

    our_platform: float
    aws: float
    azure: float
    gcp: float
    savings_percentage: dict[str, float]


class CostAnalysis(BaseModel):
    timestamp: datetime
    total_cost: float
    cost_breakdown: CostBreakdown
    cost_by_type: dict[str, float]
    cost_by_deployment: dict[str, float]
    comparison: CostComparison
    recommendations: list[Recommendation]
    currency: str = "USD"
    """*Extension*: the currency of every amount (the price catalog's)."""
    catalog_version: str | None = None
    """*Extension*: the price catalog version the costs were computed with."""
    start_time: datetime | None = None
    """*Extension*: the start of the analysed window."""
    end_time: datetime | None = None
    """*Extension*: the end of the analysed window."""
    priced_as: dict[str, str] = Field(default_factory=dict)
    """*Extension*: per deployment, the ``cloud/region`` whose prices apply (a local deployment
    is priced as the same usage in the reference cloud)."""
    notes: list[str] = Field(default_factory=list)
    """*Extension*: caveats and assumptions: deployments that reported no usage, node packing,
    the control-plane split, estimated spot prices, the catalog's basis, managed instances
    that fit no deployment."""
    cost_by_day: dict[date, float] = Field(default_factory=dict)
    """*Extension*: the total cost of each UTC day of the window (edge days only in part)."""


class PerformanceStats(BaseModel):
    requests: int
    avg_latency: float
    """Milliseconds."""
    error_rate: float
    """Percent of requests that failed."""
    p95_latency: float | None = None
    """*Extension*: 95th percentile latency in milliseconds, from the latency histogram."""
    p99_latency: float | None = None
    """*Extension*: 99th percentile latency in milliseconds, from the latency histogram."""


class Anomaly(BaseModel):
    type: str
    message: str
    timestamp: datetime


class PerformanceAnalysis(BaseModel):
    timestamp: datetime
    total_requests: int
    avg_latency: float
    error_rate: float
    performance_by_type: dict[str, PerformanceStats]
    performance_by_deployment: dict[str, PerformanceStats]
    recommendations: list[Recommendation]
    anomalies: dict[str, list[Anomaly]]
    start_time: datetime | None = None
    """*Extension*: the start of the analysed window."""
    end_time: datetime | None = None
    """*Extension*: the end of the analysed window."""


class DeploymentForecast(BaseModel):
    deployment_name: str
    current_requests: int
    current_cost: float
    requests_forecast: list[int]
    cost_forecast: list[float]
    requests_lower: list[int] = Field(default_factory=list)
    """*Extension*: lower edge of the 95 % prediction band of ``requests_forecast``."""
    requests_upper: list[int] = Field(default_factory=list)
    """*Extension*: upper edge of the 95 % prediction band of ``requests_forecast``."""
    cost_lower: list[float] = Field(default_factory=list)
    """*Extension*: lower edge of the 95 % prediction band of ``cost_forecast``."""
    cost_upper: list[float] = Field(default_factory=list)
    """*Extension*: upper edge of the 95 % prediction band of ``cost_forecast``."""
    method: str = "none"
    """*Extension*: ``none`` (no history), ``level`` (under 7 days: the mean, no trend),
    ``linear_trend`` (7-13 days) or ``trend_weekly`` (trend and day-of-week profile)."""
    history_days: int = 0
    """*Extension*: whole days of history the forecast was fitted to."""
    backtest_error: float | None = None
    """*Extension*: weighted absolute percentage error of the request forecast on held-out
    days (null when the history is too short to hold days out)."""
    cost_backtest_error: float | None = None
    """*Extension*: the same error measure for the cost forecast."""
    note: str | None = None
    """*Extension*: why the forecast is limited, when it is (too little history)."""


class UsageForecast(BaseModel):
    timestamp: datetime
    days: int
    total_requests_forecast: list[int]
    total_cost_forecast: list[float]
    forecast_by_deployment: dict[str, DeploymentForecast]
    first_day: date | None = None
    """*Extension*: the UTC day the first forecast value is for (one value per day)."""
    total_requests_lower: list[int] = Field(default_factory=list)
    """*Extension*: lower edge of the 95 % band of ``total_requests_forecast``."""
    total_requests_upper: list[int] = Field(default_factory=list)
    """*Extension*: upper edge of the 95 % band of ``total_requests_forecast``."""
    total_cost_lower: list[float] = Field(default_factory=list)
    """*Extension*: lower edge of the 95 % band of ``total_cost_forecast``."""
    total_cost_upper: list[float] = Field(default_factory=list)
    """*Extension*: upper edge of the 95 % band of ``total_cost_forecast``."""
    history_days: int = 0
    """*Extension*: the longest history (whole days) among the deployments."""
    total_requests_history: dict[date, float] = Field(default_factory=dict)
    """*Extension*: the daily requests the forecast was fitted to (all deployments)."""
    total_cost_history: dict[date, float] = Field(default_factory=dict)
    """*Extension*: the daily cost the forecast was fitted to (all deployments)."""
    note: str | None = None
    """*Extension*: why there is no forecast, when there is none."""


class Suggestion(BaseModel):
    type: str
    message: str
    current_value: str | None = None
    recommended_value: str | None = None
    impact: Impact
    estimated_savings: float | None = None
    """*Extension*: what following the suggestion would have saved over the analysed window,
    in the price catalog's currency."""


class DeploymentSuggestions(BaseModel):
    deployment_name: str
    suggestions: list[Suggestion]


class OptimizationSuggestions(BaseModel):
    timestamp: datetime
    suggestions_by_deployment: dict[str, DeploymentSuggestions]
    start_time: datetime | None = None
    """*Extension*: the start of the analysed window."""
    end_time: datetime | None = None
    """*Extension*: the end of the analysed window."""


# --- errors -------------------------------------------------------------------------------


class FieldError(BaseModel):
    """One invalid field: its dotted path and what was expected."""

    field: str
    message: str


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn a pydantic error into ``field: message`` pairs a person can act on."""
    errors = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        errors.append(FieldError(field=field, message=message))
    return errors
