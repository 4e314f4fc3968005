"""``ModelDeployment``: one model deployment on any target, chosen by type, target or price.

It validates the request with the shared schema, picks the target (the explicit ``target``, or
with ``multi_cloud_enabled`` the cheapest catalogued cloud and region), composes that target's
component, and reports the effective value of every policy field plus a warning for each request
the target cannot honour.
"""

from typing import Any, NotRequired

import pulumi

from aideploy.errors import InputError, NotSupportedError
from aideploy.schema import Cloud, DeploymentType
from aideploy_iac.args import (
    DeploymentArgs,
    TargetArgs,
    deployment_type_of,
    resolve_spec,
    validated_target,
)
from aideploy_iac.placement import PlacementDecision, choose_placement, target_kind
from aideploy_iac.policies import TargetKind, TargetPlan
from aideploy_iac.pricing import load_catalog

__all__ = ["ModelDeployment", "ModelDeploymentArgs"]


class ModelDeploymentArgs(DeploymentArgs):
    """Arguments of a model deployment on any target."""

    deployment_type: NotRequired[DeploymentType]
    """kubernetes (default) or serverless."""
    target: NotRequired[TargetArgs]
    """Where it runs; without it, Kubernetes uses the provider in effect and serverless needs multi_cloud_enabled."""
    namespace: NotRequired[str]
    """Kubernetes: namespace of the objects (default "default")."""
    keda_namespace: NotRequired[str]
    """Kubernetes: namespace of KEDA's HTTP add-on (default "keda")."""
    service_account_name: NotRequired[str]
    """Kubernetes: service account whose cloud identity may read the model."""
    log_retention_days: NotRequired[int]
    """AWS Lambda: days the logs are kept (default 14)."""
    project: NotRequired[str]
    """Cloud Run: Google Cloud project (default: the provider's project)."""
    resource_group_name: NotRequired[str]
    """Container Apps: resource group (default: a new one)."""
    environment_id: NotRequired[str]
    """Container Apps: environment id (default: a new consumption environment)."""
    model_storage_account_id: NotRequired[str]
    """Container Apps: resource id of the model's storage account, for read access."""


# Which target each target-specific argument belongs to.
_TARGET_ARGS: dict[str, TargetKind] = {
    "namespace": TargetKind.KUBERNETES,
    "keda_namespace": TargetKind.KUBERNETES,
    "service_account_name": TargetKind.KUBERNETES,
    "log_retention_days": TargetKind.AWS_LAMBDA,
    "project": TargetKind.GCP_CLOUD_RUN,
    "resource_group_name": TargetKind.AZURE_CONTAINER_APPS,
    "environment_id": TargetKind.AZURE_CONTAINER_APPS,
    "model_storage_account_id": TargetKind.AZURE_CONTAINER_APPS,
}
_COMMON_ARGS = (
    "usage_url",
    "usage_token",
    "model_uri",
    "image",
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


def _kubernetes_provider(
    name: str, cluster: str, parent: pulumi.Resource
) -> pulumi.ProviderResource:
    """A provider for ``target.cluster``: a platform stack's kubeconfig, or a kubeconfig context."""
    import pulumi_kubernetes as k8s

    opts = pulumi.ResourceOptions(parent=parent)
    if len(cluster.split("/")) == _STACK_REFERENCE_PARTS:
        platform = pulumi.StackReference(f"{name}-platform", stack_name=cluster, opts=opts)
        return k8s.Provider(
            f"{name}-cluster", kubeconfig=platform.require_output("kubeconfig"), opts=opts
        )
    return k8s.Provider(f"{name}-cluster", context=cluster, opts=opts)


class ModelDeployment(pulumi.ComponentResource):
    """A model deployment on Kubernetes, AWS Lambda, Cloud Run or Azure Container Apps."""

    endpoint_url: pulumi.Output[str]
    """URL of the deployment's Open Inference Protocol v2 endpoint."""
    cloud: pulumi.Output[str | None]
    """Cloud the deployment runs on; unset for Kubernetes on an unspecified cluster."""
    region: pulumi.Output[str | None]
    """Region the deployment runs in, where known."""
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
        spec, _ = resolve_spec(name, args)
        deployment_type = deployment_type_of(args.get("deployment_type", DeploymentType.KUBERNETES))
        target = validated_target(args.get("target"))
        warnings: list[str] = []
        if target is not None and target.cloud is Cloud.LOCAL:
            raise NotSupportedError(
                "target.cloud: 'local' deployments run through aideploy's local runner, not "
                "Pulumi; allowed here: aws, gcp, azure"
            )
        if (
            target is not None
            and target.cluster
            and deployment_type is not DeploymentType.KUBERNETES
        ):
            raise InputError("target.cluster: applies only to deployment_type 'kubernetes'")
        cloud, region = (target.cloud, target.region) if target else (None, None)
        self._placement = None
        if target is None and spec.cost.multi_cloud_enabled:
            self._placement = choose_placement(load_catalog(), spec, deployment_type)
            cloud, region = self._placement.choice.cloud, self._placement.choice.region
        elif spec.cost.multi_cloud_enabled:
            warnings.append(
                "cost_optimization_policy.multi_cloud_enabled: ignored because target is given "
                "(placement picks a cloud only when there is no target)"
            )
        kind = target_kind(deployment_type, cloud)
        for key, owner in _TARGET_ARGS.items():
            if key in args and owner is not kind:
                warnings.append(
                    f"{key}: applies only to {owner.value} targets; ignored on {kind.value}"
                )

        given: dict[str, Any] = dict(args)
        child_args = {key: given[key] for key in _COMMON_ARGS if key in given}
        child_args.update(
            (key, given[key])
            for key, owner in _TARGET_ARGS.items()
            if owner is kind and key in given
        )
        child_args["deployment_name"] = spec.name
        child_opts = pulumi.ResourceOptions(parent=self)
        child_name = f"{name}-{_CHILD_ROLE[kind]}"
        child: Any
        if kind is TargetKind.KUBERNETES:
            from aideploy_iac.kubernetes import KubernetesModelDeployment

            if cloud is not None:
                child_args["spot_clouds"] = [cloud]
            if self._placement is not None:
                warnings.append(
                    f"target: placement chose {self._placement.choice.place}; the Kubernetes "
                    "objects go to the cluster of the Kubernetes provider in effect (pass that "
                    "cloud's platform stack as target.cluster)"
                )
            if target is not None and target.cluster:
                provider = _kubernetes_provider(name, target.cluster, self)
                child_opts = pulumi.ResourceOptions(parent=self, provider=provider)
            child = KubernetesModelDeployment(child_name, child_args, child_opts)  # type: ignore[arg-type]
        else:
            if region is not None:
                child_args["region"] = region
            child = self._serverless_child(kind, child_name, child_args, child_opts)
        self._plan = child.plan
        effective = self._plan.effective
        self.endpoint_url = child.endpoint_url
        self.warnings = child.warnings.apply(lambda inner: [*warnings, *inner])
        outputs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "cloud": cloud.value if cloud else None,
            "region": region,
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
