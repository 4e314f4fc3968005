"""``ModelDeployment``: one model deployment on any target, chosen by type, target or price.

It validates the request with the shared schema, picks the target (the explicit ``target``, or
with ``multi_cloud_enabled`` the cheapest catalogued place that can run it), composes that
target's component, and reports the effective value of every policy field plus a warning for
each request the target cannot honour.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import pulumi

from aideploy.errors import InputError
from aideploy.schema import Cloud, DeploymentType
from aideploy_iac.args import (
    CostOptimizationPolicyArgs,
    DeploymentSpec,
    ModelFormat,
    ResourceRequirementsArgs,
    ScalingPolicyArgs,
    TargetArgs,
    TargetCloud,
    deployment_type_of,
    model_location,
    require_readable,
    resolve_spec,
    validated_target,
)
from aideploy_iac.kubernetes.identity import PodIdentityArgs
from aideploy_iac.placement import PlacementDecision, choose_placement, target_kind
from aideploy_iac.policies import MODEL_READERS, TargetKind, TargetPlan
from aideploy_iac.pricing import load_catalog

__all__ = ["ModelDeployment", "ModelDeploymentArgs"]


class ModelDeploymentArgs(TypedDict):
    """Arguments of a model deployment on any target.

    Declared in full here (not inherited) because Pulumi's schema inference documents only the
    fields a class declares itself; ``tests/iac/test_packaging.py`` keeps the shared fields in
    step with :class:`~aideploy_iac.args.DeploymentArgs`.
    """

    image: pulumi.Input[str]
    """Container image of the aideploy serving runtime (Open Inference Protocol v2 on PORT)."""
    images: NotRequired[dict[str, str]]
    """The serving image per cloud (keys aws, gcp, azure) where it differs from image, e.g. a copy in ECR for AWS Lambda, which runs only ECR images of its own region."""
    model_uri: NotRequired[pulumi.Input[str]]
    """URI of the model artifact: s3://, gs://, az://<container>/<blob>, https://<account>.blob.core.windows.net/<container>/<blob>, or a public https:// URL. Required unless model_uris covers the target's cloud."""
    model_uris: NotRequired[dict[str, str]]
    """Copies of the model per cloud (keys aws, gcp, azure), each in that cloud's object store; multi-cloud placement may choose any cloud that can read its copy."""
    deployment_name: NotRequired[str]
    """Name of the deployment (a DNS label); defaults to the resource name."""
    model_format: NotRequired[ModelFormat]
    """Format of the model artifact, onnx (default) or pytorch."""
    deployment_type: NotRequired[DeploymentType]
    """kubernetes (default) or serverless."""
    target: NotRequired[TargetArgs]
    """Where it runs; without it, Kubernetes uses the provider in effect and serverless needs multi_cloud_enabled."""
    clusters: NotRequired[dict[str, str]]
    """Kubernetes multi-cloud placement: the cluster of each place it may choose, keyed cloud/region (e.g. aws/us-east-1), as a kubeconfig context or an aideploy platform stack org/project/stack."""
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
    invokers: NotRequired[list[pulumi.Input[str]]]
    """Who may call a private endpoint: IAM members on Cloud Run (serviceAccount:<email>...), account ids or IAM ARNs on Lambda."""
    usage_url: NotRequired[pulumi.Input[str]]
    """Where the runtime reports its usage (the platform API's POST /deployments/{id}/usage)."""
    usage_token: NotRequired[pulumi.Input[str]]
    """The deployment-scoped token for usage_url (a Kubernetes Secret or Container Apps secret; a Pulumi secret throughout)."""
    namespace: NotRequired[pulumi.Input[str]]
    """Kubernetes: namespace of the objects (default "default")."""
    keda_namespace: NotRequired[str]
    """Kubernetes: namespace of KEDA's HTTP add-on (default "keda")."""
    service_account_name: NotRequired[pulumi.Input[str]]
    """Kubernetes: an existing service account whose cloud identity may read the model (on an aideploy platform cluster one is created)."""
    log_retention_days: NotRequired[int]
    """AWS Lambda: days the logs are kept (default 14)."""
    project: NotRequired[pulumi.Input[str]]
    """Cloud Run: Google Cloud project (default: the provider's project)."""
    resource_group_name: NotRequired[pulumi.Input[str]]
    """Container Apps: resource group (default: a new one)."""
    environment_id: NotRequired[pulumi.Input[str]]
    """Container Apps: environment id (default: a new workload-profiles environment)."""
    model_storage_account_id: NotRequired[pulumi.Input[str]]
    """Container Apps and AKS: resource id of the model's storage account, for read access and the account name of az:// models."""
    registry_id: NotRequired[pulumi.Input[str]]
    """Container Apps: resource id of the image's Azure Container Registry, for AcrPull."""


# Which targets each target-specific argument belongs to.
_TARGET_ARGS: dict[str, frozenset[TargetKind]] = {
    "namespace": frozenset({TargetKind.KUBERNETES}),
    "keda_namespace": frozenset({TargetKind.KUBERNETES}),
    "service_account_name": frozenset({TargetKind.KUBERNETES}),
    "log_retention_days": frozenset({TargetKind.AWS_LAMBDA}),
    "invokers": frozenset({TargetKind.AWS_LAMBDA, TargetKind.GCP_CLOUD_RUN}),
    "project": frozenset({TargetKind.GCP_CLOUD_RUN}),
    "resource_group_name": frozenset({TargetKind.AZURE_CONTAINER_APPS}),
    "environment_id": frozenset({TargetKind.AZURE_CONTAINER_APPS}),
    "registry_id": frozenset({TargetKind.AZURE_CONTAINER_APPS}),
    "model_storage_account_id": frozenset({TargetKind.AZURE_CONTAINER_APPS, TargetKind.KUBERNETES}),
}
_COMMON_ARGS = (
    "usage_url",
    "usage_token",
    "model_format",
    "resource_requirements",
    "scaling_policy",
    "cost_optimization_policy",
    "hibernated",
    "metadata",
    "public_endpoint",
)
_CHILD_ROLE = {
    TargetKind.KUBERNETES: "kubernetes",
    TargetKind.AWS_LAMBDA: "lambda",
    TargetKind.GCP_CLOUD_RUN: "cloud-run",
    TargetKind.AZURE_CONTAINER_APPS: "container-app",
}
_STACK_REFERENCE_PARTS = 3
# What a platform stack exports per cloud for pod identities (stacks/programs.py).
_PLATFORM_IDENTITY_OUTPUTS: dict[Cloud, tuple[str, ...]] = {
    Cloud.AWS: ("cluster_name",),
    Cloud.GCP: ("project", "workload_identity_pool"),
    Cloud.AZURE: ("oidc_issuer_url", "resource_group_name", "storage_account_id"),
}


_CLOUD_IDENTITIES = {
    Cloud.AWS: "AWS identities",
    Cloud.GCP: "Google Cloud identities",
    Cloud.AZURE: "Azure identities",
}


def _cloud_keys(value: Mapping[str, str] | None, field: str) -> dict[Cloud, str]:
    allowed = [cloud.value for cloud in TargetCloud]
    for key in value or {}:
        if key not in allowed:
            raise InputError(f"{field}.{key}: not a cloud; allowed keys: {', '.join(allowed)}")
    return {Cloud(key): item for key, item in (value or {}).items()}


def _model_uris(value: Mapping[str, str] | None) -> dict[Cloud, str]:
    """Per-cloud model copies, each readable by its own cloud's workload identities."""
    uris = _cloud_keys(value, "model_uris")
    for cloud, uri in uris.items():
        field = f"model_uris.{cloud.value}"
        require_readable(model_location(uri, field), cloud, _CLOUD_IDENTITIES[cloud], field)
    return uris


def _clusters(value: Mapping[str, str] | None) -> dict[str, str]:
    clusters: dict[str, str] = {}
    allowed = [cloud.value for cloud in TargetCloud]
    for place, cluster in (value or {}).items():
        cloud, _, region = place.partition("/")
        if cloud not in allowed or not region:
            raise InputError(
                f"clusters.{place}: keys are cloud/region, e.g. aws/us-east-1 "
                f"(clouds: {', '.join(allowed)})"
            )
        if not cluster:
            raise InputError(
                f"clusters.{place}: empty; give a kubeconfig context or org/project/stack"
            )
        clusters[place] = cluster
    return clusters


def _is_stack_reference(cluster: str) -> bool:
    return len(cluster.split("/")) == _STACK_REFERENCE_PARTS


def _cluster(
    name: str, cluster: str, cloud: Cloud | None, region: str | None, parent: pulumi.Resource
) -> tuple[pulumi.ProviderResource, PodIdentityArgs | None]:
    """A provider for the cluster, and for a platform stack's cluster its pod-identity facts.

    A platform stack exports ``<cloud>-<region>-<key>`` per cloud (and bare keys when it has
    one cloud), so a region picks the entry of a multi-cloud platform.
    """
    import pulumi_kubernetes as k8s

    opts = pulumi.ResourceOptions(parent=parent)
    if not _is_stack_reference(cluster):
        return k8s.Provider(f"{name}-cluster", context=cluster, opts=opts), None
    platform = pulumi.StackReference(f"{name}-platform", stack_name=cluster, opts=opts)
    prefix = f"{cloud.value}-{region}-" if cloud is not None and region else ""
    provider = k8s.Provider(
        f"{name}-cluster", kubeconfig=platform.require_output(f"{prefix}kubeconfig"), opts=opts
    )
    if cloud is None:
        return provider, None
    identity = PodIdentityArgs(cloud=cloud)
    if region:
        identity["region"] = region
    for key in _PLATFORM_IDENTITY_OUTPUTS[cloud]:
        identity[key] = platform.require_output(f"{prefix}{key}")  # type: ignore[literal-required]
    return provider, identity


@dataclass(frozen=True)
class _Where:
    """Where a deployment goes: its target, or the place multi-cloud placement chose."""

    cloud: Cloud | None
    region: str | None
    cluster: str | None
    placement: PlacementDecision | None
    warnings: tuple[str, ...]


def _where(
    args: ModelDeploymentArgs,
    spec: DeploymentSpec,
    deployment_type: DeploymentType,
    model_uris: Mapping[Cloud, str],
    images: Mapping[Cloud, str],
) -> _Where:
    target = validated_target(args.get("target"))
    kubernetes = deployment_type is DeploymentType.KUBERNETES
    if target is not None and target.cluster and not kubernetes:
        raise InputError("target.cluster: applies only to deployment_type 'kubernetes'")
    clusters = _clusters(args.get("clusters"))
    placing = target is None and spec.cost.multi_cloud_enabled
    warnings: list[str] = []
    if clusters and not (placing and kubernetes):
        warnings.append(
            "clusters: used only by Kubernetes multi-cloud placement (no target); ignored"
        )
    if target is not None:
        if spec.cost.multi_cloud_enabled:
            warnings.append(
                "cost_optimization_policy.multi_cloud_enabled: ignored because target is given "
                "(placement picks a cloud only when there is no target)"
            )
        return _Where(target.cloud, target.region, target.cluster, None, tuple(warnings))
    if not placing:
        return _Where(None, None, None, None, tuple(warnings))
    if kubernetes and not clusters:
        raise InputError(
            "clusters: Kubernetes multi-cloud placement needs the cluster of each place it may "
            "choose, e.g. {'aws/us-east-1': 'acme/platform/prod'}; without them the objects "
            "would go wherever the Kubernetes provider points, whatever the choice"
        )
    placement = choose_placement(
        load_catalog(),
        spec,
        deployment_type,
        model_uris=model_uris,
        images=images,
        clusters=clusters if kubernetes else None,
    )
    choice = placement.choice
    cluster = clusters[choice.place] if kubernetes else None
    return _Where(choice.cloud, choice.region, cluster, placement, tuple(warnings))


def _child_args(
    args: ModelDeploymentArgs,
    spec: DeploymentSpec,
    kind: TargetKind,
    where: _Where,
    model_uris: Mapping[Cloud, str],
    images: Mapping[Cloud, str],
) -> tuple[dict[str, Any], list[str]]:
    """The target component's args, and a warning for each argument of another target."""
    cloud = where.cloud
    default_uri = args.get("model_uri")
    model_uri = model_uris.get(cloud, default_uri) if cloud is not None else default_uri
    if model_uri is None:
        shown = cloud.value if cloud is not None else "an unspecified cluster"
        raise InputError(
            f"model_uri: required; model_uris has no copy for {shown} "
            f"({MODEL_READERS[kind]} reads the model)"
        )
    warnings: list[str] = []
    for key, owners in _TARGET_ARGS.items():
        if key in args and kind not in owners:
            names = " and ".join(sorted(owner.value for owner in owners))
            warnings.append(f"{key}: applies only to {names} targets; ignored on {kind.value}")
    given: dict[str, Any] = dict(args)
    child_args = {key: given[key] for key in _COMMON_ARGS if key in given}
    child_args.update(
        (key, given[key]) for key, owners in _TARGET_ARGS.items() if kind in owners and key in given
    )
    child_args["deployment_name"] = spec.name
    child_args["model_uri"] = model_uri
    child_args["image"] = images.get(cloud, spec.image) if cloud is not None else spec.image
    if kind is TargetKind.KUBERNETES and cloud is not None:
        child_args["spot_clouds"] = [cloud]
    elif kind is not TargetKind.KUBERNETES and where.region is not None:
        child_args["region"] = where.region
    return child_args, warnings


class ModelDeployment(pulumi.ComponentResource):
    """A model deployment on Kubernetes, AWS Lambda, Cloud Run or Azure Container Apps."""

    endpoint_url: pulumi.Output[str]
    """URL of the deployment's Open Inference Protocol v2 endpoint."""
    cloud: pulumi.Output[str | None]
    """Cloud the deployment runs on; unset for Kubernetes on an unspecified cluster."""
    region: pulumi.Output[str | None]
    """Region the deployment runs in, including a target's default region; unset for Kubernetes on an unspecified cluster."""
    target_kind: pulumi.Output[str]
    """kubernetes, aws-lambda, gcp-cloud-run or azure-container-apps."""
    effective_cpu: pulumi.Output[str]
    """CPU per instance as the target runs it."""
    effective_memory: pulumi.Output[str]
    """Memory per instance as the target runs it."""
    effective_gpu: pulumi.Output[int | None]
    """GPUs per instance."""
    effective_timeout: pulumi.Output[int]
    """Request timeout in seconds."""
    effective_min_instances: pulumi.Output[int]
    """Fewest instances that run."""
    effective_max_instances: pulumi.Output[int]
    """Most instances that run."""
    effective_target_cpu_utilization: pulumi.Output[int | None]
    """CPU target of the autoscaler; unset where the target does not scale on CPU."""
    effective_use_spot_instances: pulumi.Output[bool]
    """Whether instances prefer spot capacity."""
    effective_on_demand_base_instances: pulumi.Output[int]
    """Instances kept on on-demand capacity."""
    effective_hibernation_enabled: pulumi.Output[bool]
    """Whether the deployment scales to zero when idle."""
    effective_hibernation_idle_timeout: pulumi.Output[int | None]
    """Seconds without requests before scaling to zero; unset where the target decides."""
    effective_multi_cloud_enabled: pulumi.Output[bool]
    """Whether multi-cloud placement chose the target (only without an explicit target)."""
    hibernated: pulumi.Output[bool]
    """Whether the deployment is hibernated (no instances)."""
    warnings: pulumi.Output[list[str]]
    """Each requested policy the target cannot honour, and what it does instead."""
    placement_choice: pulumi.Output[str | None]
    """cloud/region multi-cloud placement chose; unset without placement."""
    placement_estimated_monthly_cost: pulumi.Output[float | None]
    """Estimated monthly cost at the chosen place (catalog currency)."""
    placement_runner_up: pulumi.Output[str | None]
    """The second-cheapest cloud/region."""
    placement_runner_up_estimated_monthly_cost: pulumi.Output[float | None]
    """Estimated monthly cost at the runner-up."""

    _plan: TargetPlan
    _placement: PlacementDecision | None

    @property
    def plan(self) -> TargetPlan:
        """What the target makes of each policy field (effective values and warnings)."""
        return self._plan

    @property
    def placement(self) -> PlacementDecision | None:
        """The multi-cloud placement decision, when placement chose the target."""
        return self._placement

    def __init__(
        self,
        name: str,
        args: ModelDeploymentArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("aideploy:index:ModelDeployment", name, None, opts)
        deployment_type = deployment_type_of(args.get("deployment_type", DeploymentType.KUBERNETES))
        model_uris = _model_uris(args.get("model_uris"))
        images = _cloud_keys(args.get("images"), "images")
        default_uri = args.get("model_uri")
        if default_uri is None and not model_uris:
            raise InputError("model_uri: required (or model_uris with a copy per cloud)")
        spec, _ = resolve_spec(
            name,
            args,
            model_uri=default_uri if default_uri is not None else next(iter(model_uris.values())),
        )
        where = _where(args, spec, deployment_type, model_uris, images)
        self._placement = where.placement
        cloud, region = where.cloud, where.region
        kind = target_kind(deployment_type, cloud)
        child_args, warnings = _child_args(args, spec, kind, where, model_uris, images)
        child_opts = pulumi.ResourceOptions(parent=self)
        child_name = f"{name}-{_CHILD_ROLE[kind]}"
        child: Any
        if kind is TargetKind.KUBERNETES:
            from aideploy_iac.kubernetes import KubernetesModelDeployment

            if where.cluster:
                provider, identity = _cluster(name, where.cluster, cloud, region, self)
                child_opts = pulumi.ResourceOptions(parent=self, provider=provider)
                if identity is not None:
                    child_args["pod_identity"] = identity
            child = KubernetesModelDeployment(child_name, child_args, child_opts)  # type: ignore[arg-type]
            effective_region: pulumi.Input[str | None] = region
        else:
            child = self._serverless_child(kind, child_name, child_args, child_opts)
            effective_region = child.region
        self._plan = child.plan
        effective = self._plan.effective
        self.endpoint_url = child.endpoint_url
        notes = [*where.warnings, *warnings]
        self.warnings = child.warnings.apply(lambda inner: [*notes, *inner])
        outputs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "cloud": cloud.value if cloud else None,
            "region": effective_region,
            "target_kind": kind.value,
            "effective_cpu": effective.cpu,
            "effective_memory": effective.memory,
            "effective_gpu": effective.gpu,
            "effective_timeout": effective.timeout,
            "effective_min_instances": effective.min_instances,
            "effective_max_instances": effective.max_instances,
            "effective_target_cpu_utilization": effective.target_cpu_utilization,
            "effective_use_spot_instances": effective.use_spot_instances,
            "effective_on_demand_base_instances": effective.on_demand_base_instances,
            "effective_hibernation_enabled": effective.hibernation_enabled,
            "effective_hibernation_idle_timeout": effective.hibernation_idle_timeout,
            "effective_multi_cloud_enabled": self._placement is not None,
            "hibernated": effective.hibernated,
            "warnings": self.warnings,
            "placement_choice": None,
            "placement_estimated_monthly_cost": None,
            "placement_runner_up": None,
            "placement_runner_up_estimated_monthly_cost": None,
        }
        if self._placement is not None:
            runner_up = self._placement.runner_up
            outputs.update(
                placement_choice=self._placement.choice.place,
                placement_estimated_monthly_cost=self._placement.choice.total,
                placement_runner_up=runner_up.place if runner_up else None,
                placement_runner_up_estimated_monthly_cost=runner_up.total if runner_up else None,
            )
        for key, value in outputs.items():
            if key not in ("endpoint_url", "warnings"):
                setattr(self, key, pulumi.Output.from_input(value))
        self.register_outputs(outputs)

    @staticmethod
    def _serverless_child(
        kind: TargetKind, name: str, args: dict[str, Any], opts: pulumi.ResourceOptions
    ) -> Any:
        if kind is TargetKind.AWS_LAMBDA:
            from aideploy_iac.serverless.aws import LambdaModelDeployment

            return LambdaModelDeployment(name, args, opts)  # type: ignore[arg-type]
        if kind is TargetKind.GCP_CLOUD_RUN:
            from aideploy_iac.serverless.gcp import CloudRunModelDeployment

            return CloudRunModelDeployment(name, args, opts)  # type: ignore[arg-type]
        from aideploy_iac.serverless.azure import ContainerAppModelDeployment

        return ContainerAppModelDeployment(name, args, opts)  # type: ignore[arg-type]
