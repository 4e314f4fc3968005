"""What each target makes of every requested policy field: the effective value, or a warning.

One pure function per target turns a validated :class:`~aideploy_iac.args.DeploymentSpec` into a
:class:`TargetPlan`. Requests a target cannot express at all (a GPU on Lambda, a memory size
outside Cloud Run's limits) raise :class:`~aideploy.errors.InputError` naming the field and the
allowed values; requests it can run but not honour (spot on a serverless product) give a warning,
so nothing is ever dropped silently. The README's policy table summarizes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

import pulumi

from aideploy.errors import InputError
from aideploy.quantity import format_cpu, format_memory
from aideploy.schema import CostOptimizationPolicy, ScalingPolicy
from aideploy_iac.args import DeploymentSpec

__all__ = [
    "CONTAINER_APPS_CONSUMPTION_ONLY_LIMIT",
    "CONTAINER_APPS_SIZES",
    "MODEL_READERS",
    "EffectivePolicy",
    "ReplicaSplit",
    "TargetKind",
    "TargetPlan",
    "check_image",
    "container_apps_memory",
    "ecr_image_region",
    "plan_for",
    "replica_split",
    "requests_per_instance",
]

MIB = 2**20
GIB = 2**30


class TargetKind(StrEnum):
    """The products a deployment can run on."""

    KUBERNETES = "kubernetes"
    AWS_LAMBDA = "aws-lambda"
    GCP_CLOUD_RUN = "gcp-cloud-run"
    AZURE_CONTAINER_APPS = "azure-container-apps"


MODEL_READERS = {
    TargetKind.KUBERNETES: "the pods of that cloud's cluster",
    TargetKind.AWS_LAMBDA: "the Lambda function's role",
    TargetKind.GCP_CLOUD_RUN: "the Cloud Run service's account",
    TargetKind.AZURE_CONTAINER_APPS: "the Container App's managed identity",
}
"""The identity each target reads the model with, as messages name it."""


@dataclass(frozen=True)
class EffectivePolicy:
    """The value each policy field actually takes on the target."""

    cpu: str
    memory: str
    gpu: int | None
    timeout: int
    min_instances: int
    max_instances: int
    target_cpu_utilization: int | None
    use_spot_instances: bool
    on_demand_base_instances: int
    hibernation_enabled: bool
    hibernation_idle_timeout: int | None
    hibernated: bool


@dataclass(frozen=True)
class TargetPlan:
    kind: TargetKind
    effective: EffectivePolicy
    warnings: tuple[str, ...]


def requests_per_instance(cpu_cores: Decimal) -> int:
    """Concurrent requests one instance serves: one per whole core (inference is CPU-bound).

    The serverless targets' concurrency settings and the cost estimates both use this, so the
    estimate prices the configuration that is actually deployed.
    """
    return max(1, int(cpu_cores))


def _requested(spec: DeploymentSpec) -> EffectivePolicy:
    """The request as-is; each planner replaces what its target changes."""
    return EffectivePolicy(
        cpu=spec.resources.cpu,
        memory=spec.resources.memory,
        gpu=spec.resources.gpu,
        timeout=spec.resources.timeout,
        min_instances=spec.scaling.min_instances,
        max_instances=spec.scaling.max_instances,
        target_cpu_utilization=spec.scaling.target_cpu_utilization,
        use_spot_instances=spec.cost.use_spot_instances,
        on_demand_base_instances=spec.cost.on_demand_base_instances,
        hibernation_enabled=spec.cost.hibernation_enabled,
        hibernation_idle_timeout=(
            spec.cost.hibernation_idle_timeout if spec.cost.hibernation_enabled else None
        ),
        hibernated=spec.hibernated,
    )


def _min_instances_warning(spec: DeploymentSpec, effective_min: int, reason: str) -> list[str]:
    requested = spec.scaling.min_instances
    if effective_min == requested:
        return []
    return [f"scaling_policy.min_instances: {requested} becomes {effective_min}: {reason}"]


_HIBERNATION_REASON = "cost_optimization_policy.hibernation_enabled scales to zero when idle"


def _common_warnings(spec: DeploymentSpec, product: str, *, has_spot: bool) -> list[str]:
    warnings = []
    if spec.cost.on_demand_base_instances and not (spec.cost.use_spot_instances and has_spot):
        reason = (
            "it applies only with use_spot_instances"
            if has_spot
            else f"{product} has no spot capacity"
        )
        warnings.append(f"cost_optimization_policy.on_demand_base_instances: ignored, {reason}")
    if spec.cost.use_spot_instances and not has_spot:
        warnings.append(
            f"cost_optimization_policy.use_spot_instances: {product} has no spot capacity; "
            "it runs on regular capacity"
        )
    return warnings


@dataclass(frozen=True)
class ReplicaSplit:
    """How a Kubernetes deployment's instances divide between on-demand and spot capacity.

    Kubernetes has no "first N pods on on-demand" setting, so a spot deployment with an on-demand
    floor runs as two Deployments behind one Service: ``on_demand`` fixed replicas pinned to
    on-demand nodes, and an autoscaled part (``scaled_min``-``scaled_max``) that prefers spot.
    """

    on_demand: int
    scaled_min: int
    scaled_max: int
    scale_to_zero: bool

    @property
    def total_min(self) -> int:
        return self.on_demand + self.scaled_min

    @property
    def total_max(self) -> int:
        return self.on_demand + self.scaled_max


def replica_split(scaling: ScalingPolicy, cost: CostOptimizationPolicy) -> ReplicaSplit:
    """The split a Kubernetes deployment runs; the cost estimate prices the same one."""
    on_demand = cost.on_demand_base_instances if cost.use_spot_instances else 0
    scale_to_zero = cost.hibernation_enabled
    scaled_max = scaling.max_instances - on_demand
    wanted_min = 0 if scale_to_zero else scaling.min_instances
    scaled_min = max(0, wanted_min - on_demand)
    if not scale_to_zero and scaled_max > 0:
        # A HorizontalPodAutoscaler cannot go below one replica; only KEDA scales to zero.
        scaled_min = max(1, scaled_min)
    return ReplicaSplit(on_demand, scaled_min, scaled_max, scale_to_zero)


def plan_kubernetes(spec: DeploymentSpec) -> TargetPlan:
    """Kubernetes honours every field but public_endpoint; spot is a preference with an
    on-demand floor."""
    warnings = _common_warnings(spec, "Kubernetes", has_spot=True)
    if spec.public_endpoint:
        warnings.append(
            "public_endpoint: the Kubernetes target exposes a ClusterIP Service only (reachable "
            "inside the cluster); route to it with your own Ingress or Gateway"
        )
    split = replica_split(spec.scaling, spec.cost)
    if spec.cost.hibernation_enabled:
        reason = _HIBERNATION_REASON
        if split.on_demand:
            reason = (
                "hibernation scales the spot instances to zero and "
                f"on_demand_base_instances keeps {split.on_demand} on-demand instance(s) running"
            )
    elif split.on_demand >= spec.scaling.min_instances:
        reason = (
            f"{split.on_demand} on-demand instance(s) plus at least one autoscaled spot "
            "instance (a HorizontalPodAutoscaler cannot scale to zero)"
        )
    else:
        reason = (
            "a HorizontalPodAutoscaler keeps at least one replica (enable "
            "cost_optimization_policy.hibernation_enabled to scale to zero)"
        )
    warnings.extend(_min_instances_warning(spec, split.total_min, reason))
    if spec.cost.use_spot_instances and split.scaled_max == 0:
        warnings.append(
            "cost_optimization_policy.use_spot_instances: on_demand_base_instances equals "
            "max_instances, so every instance runs on on-demand capacity"
        )
    effective = replace(
        _requested(spec),
        min_instances=split.total_min,
        on_demand_base_instances=split.on_demand,
    )
    return TargetPlan(TargetKind.KUBERNETES, effective, tuple(warnings))


LAMBDA_MEMORY_MIB = (128, 10240)
LAMBDA_MAX_TIMEOUT = 900
LAMBDA_MIB_PER_VCPU = 1769
_ECR_IMAGE = re.compile(r"^\d{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/\S+$")


def ecr_image_region(image: str) -> str | None:
    """The region of an Amazon ECR image reference; ``None`` when it is not one."""
    match = _ECR_IMAGE.match(image)
    return match.group(1) if match else None


def check_image(kind: TargetKind, image: pulumi.Input[str], region: str | None) -> None:
    """Where the target pulls images from: Lambda runs only ECR images of its own region.

    Checked at construction and by placement, so a placed deployment is always deployable.
    Images given as outputs are checked by the cloud at deploy time.
    """
    if kind is not TargetKind.AWS_LAMBDA or not isinstance(image, str):
        return
    image_region = ecr_image_region(image)
    if image_region is None:
        raise InputError(
            f"image: {image!r} is not an Amazon ECR image; AWS Lambda runs images only from ECR "
            "(<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>, e.g. the platform "
            "stack's registry)"
        )
    if region is not None and region != image_region:
        raise InputError(
            f"image: {image!r} is in ECR region {image_region}; AWS Lambda runs images only "
            f"from its own region ({region}); copy the image there or deploy to {image_region}"
        )


def plan_lambda(spec: DeploymentSpec) -> TargetPlan:
    resources = spec.resources
    if resources.gpu:
        raise InputError("resource_requirements.gpu: AWS Lambda has no GPUs; allowed: null")
    memory_bytes = resources.memory_bytes
    low, high = LAMBDA_MEMORY_MIB
    if memory_bytes % MIB or not low <= memory_bytes // MIB <= high:
        raise InputError(
            f"resource_requirements.memory: {resources.memory!r} is not valid for AWS Lambda; "
            f"allowed: a whole number of MiB from {low}Mi to {high}Mi"
        )
    if resources.timeout > LAMBDA_MAX_TIMEOUT:
        raise InputError(
            f"resource_requirements.timeout: {resources.timeout} s exceeds AWS Lambda's limit; "
            f"allowed: 1-{LAMBDA_MAX_TIMEOUT}"
        )
    memory_mib = memory_bytes // MIB
    vcpu = min(Decimal(6), (Decimal(memory_mib) / LAMBDA_MIB_PER_VCPU).quantize(Decimal("0.001")))
    warnings = _common_warnings(spec, "AWS Lambda", has_spot=False)
    if resources.cpu_cores != vcpu:
        warnings.append(
            f"resource_requirements.cpu: AWS Lambda sets CPU from memory; {memory_mib} MiB gives "
            f"about {format_cpu(vcpu)} vCPU instead of {resources.cpu}"
        )
    warnings.append(
        "scaling_policy.target_cpu_utilization: AWS Lambda scales per concurrent request and has "
        "no CPU target; ignored"
    )
    hibernating = spec.cost.hibernation_enabled
    if not hibernating and spec.scaling.min_instances == 0:
        warnings.append(
            "cost_optimization_policy.hibernation_enabled: AWS Lambda always scales to zero "
            "when min_instances is 0"
        )
    if hibernating:
        warnings.append(
            "cost_optimization_policy.hibernation_idle_timeout: AWS Lambda reclaims idle "
            "instances on its own schedule; the timeout is not configurable"
        )
    min_instances = 0 if hibernating else spec.scaling.min_instances
    warnings.extend(_min_instances_warning(spec, min_instances, _HIBERNATION_REASON))
    effective = replace(
        _requested(spec),
        cpu=format_cpu(vcpu),
        min_instances=min_instances,
        target_cpu_utilization=None,
        use_spot_instances=False,
        on_demand_base_instances=0,
        hibernation_enabled=min_instances == 0,
        hibernation_idle_timeout=None,
    )
    return TargetPlan(TargetKind.AWS_LAMBDA, effective, tuple(warnings))


CLOUD_RUN_CPUS = (Decimal(1), Decimal(2), Decimal(4), Decimal(6), Decimal(8))
CLOUD_RUN_MEMORY = (128 * MIB, 32 * GIB)
CLOUD_RUN_MAX_TIMEOUT = 3600
# (cpu, least memory, most memory) from Cloud Run's documented cpu/memory limits.
_CLOUD_RUN_MEMORY_BY_CPU = {
    Decimal(1): (128 * MIB, 4 * GIB),
    Decimal(2): (128 * MIB, 8 * GIB),
    Decimal(4): (2 * GIB, 16 * GIB),
    Decimal(6): (4 * GIB, 24 * GIB),
    Decimal(8): (4 * GIB, 32 * GIB),
}


CLOUD_RUN_MAX_NAME = 49


def plan_cloud_run(spec: DeploymentSpec) -> TargetPlan:
    if len(spec.name) > CLOUD_RUN_MAX_NAME or not spec.name[0].isalpha():
        raise InputError(
            f"deployment_name: {spec.name!r} is not a valid Cloud Run service name; allowed: "
            f"1-{CLOUD_RUN_MAX_NAME} lowercase letters, digits or '-', starting with a letter"
        )
    resources = spec.resources
    if resources.gpu:
        raise InputError(
            "resource_requirements.gpu: aideploy's Cloud Run target runs CPU-only services; "
            "allowed: null (use a Kubernetes target on GKE for GPUs)"
        )
    cpu = resources.cpu_cores
    if cpu not in _CLOUD_RUN_MEMORY_BY_CPU:
        allowed = ", ".join(str(value) for value in CLOUD_RUN_CPUS)
        raise InputError(
            f"resource_requirements.cpu: {resources.cpu!r} is not valid for Cloud Run "
            f"(with CPU always allocated per request); allowed: {allowed}"
        )
    low, high = _CLOUD_RUN_MEMORY_BY_CPU[cpu]
    memory = resources.memory_bytes
    if memory % MIB or not low <= memory <= high:
        raise InputError(
            f"resource_requirements.memory: {resources.memory!r} is not valid for Cloud Run with "
            f"cpu {resources.cpu}; allowed: {format_memory(low)} to {format_memory(high)} "
            "in whole MiB"
        )
    warnings = _common_warnings(spec, "Cloud Run", has_spot=False)
    warnings.append(
        "scaling_policy.target_cpu_utilization: Cloud Run scales on request concurrency "
        f"({requests_per_instance(cpu)} per instance) and its own CPU target; ignored"
    )
    if spec.cost.hibernation_enabled:
        warnings.append(
            "cost_optimization_policy.hibernation_idle_timeout: Cloud Run shuts idle instances "
            "down on its own schedule; the timeout is not configurable"
        )
    min_instances = 0 if spec.cost.hibernation_enabled else spec.scaling.min_instances
    warnings.extend(_min_instances_warning(spec, min_instances, _HIBERNATION_REASON))
    effective = replace(
        _requested(spec),
        min_instances=min_instances,
        target_cpu_utilization=None,
        use_spot_instances=False,
        on_demand_base_instances=0,
        hibernation_enabled=min_instances == 0,
        hibernation_idle_timeout=None,
    )
    return TargetPlan(TargetKind.GCP_CLOUD_RUN, effective, tuple(warnings))


# Consumption cpu/memory pairs: 0.25 vCPU steps with 2 GiB per vCPU, up to 4 vCPU / 8 GiB in a
# workload-profiles environment (its Consumption profile); a Consumption-only environment stops
# at 2 vCPU / 4 GiB.
CONTAINER_APPS_SIZES = tuple((Decimal(quarter) / 4, quarter * GIB // 2) for quarter in range(1, 17))
CONTAINER_APPS_CONSUMPTION_ONLY_LIMIT = (Decimal(2), 4 * GIB)
CONTAINER_APPS_MAX_TIMEOUT = 240
CONTAINER_APPS_MAX_REPLICAS = 1000
_CONTAINER_APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")


def container_apps_memory(memory_bytes: int) -> str:
    """Memory as Container Apps takes it: a decimal number of GiB (``1.5Gi``, never ``1536Mi``)."""
    return f"{Decimal(memory_bytes) / GIB:f}".rstrip("0").rstrip(".") + "Gi"


def plan_container_apps(spec: DeploymentSpec) -> TargetPlan:
    if not _CONTAINER_APP_NAME.match(spec.name):
        raise InputError(
            f"deployment_name: {spec.name!r} is not a valid Azure Container Apps name; allowed: "
            "2-32 lowercase letters, digits or '-', starting with a letter"
        )
    resources = spec.resources
    if resources.gpu:
        raise InputError(
            "resource_requirements.gpu: the Container Apps consumption plan has no GPUs; "
            "allowed: null"
        )
    pair = (resources.cpu_cores, resources.memory_bytes)
    if pair not in CONTAINER_APPS_SIZES:
        allowed = ", ".join(
            f"{cpu}/{container_apps_memory(mem)}" for cpu, mem in CONTAINER_APPS_SIZES
        )
        raise InputError(
            f"resource_requirements: cpu {resources.cpu!r} with memory {resources.memory!r} is not "
            f"a Container Apps size; allowed cpu/memory pairs: {allowed}"
        )
    if resources.timeout > CONTAINER_APPS_MAX_TIMEOUT:
        raise InputError(
            f"resource_requirements.timeout: {resources.timeout} s exceeds the Container Apps "
            f"ingress limit; allowed: 1-{CONTAINER_APPS_MAX_TIMEOUT}"
        )
    warnings = _common_warnings(spec, "Azure Container Apps", has_spot=False)
    min_instances = 0 if spec.cost.hibernation_enabled else spec.scaling.min_instances
    warnings.extend(_min_instances_warning(spec, min_instances, _HIBERNATION_REASON))
    effective = replace(
        _requested(spec),
        cpu=format_cpu(resources.cpu_cores),
        memory=container_apps_memory(resources.memory_bytes),
        min_instances=min_instances,
        use_spot_instances=False,
        on_demand_base_instances=0,
    )
    return TargetPlan(TargetKind.AZURE_CONTAINER_APPS, effective, tuple(warnings))


_PLANNERS = {
    TargetKind.KUBERNETES: plan_kubernetes,
    TargetKind.AWS_LAMBDA: plan_lambda,
    TargetKind.GCP_CLOUD_RUN: plan_cloud_run,
    TargetKind.AZURE_CONTAINER_APPS: plan_container_apps,
}


def plan_for(kind: TargetKind, spec: DeploymentSpec) -> TargetPlan:
    """The plan of ``spec`` on ``kind``; raises InputError when the target cannot run it."""
    return _PLANNERS[kind](spec)
