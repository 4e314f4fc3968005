"""``KubernetesModelDeployment``: the serving runtime as Deployment, Service, autoscaler and PDB."""

from typing import Any, NotRequired

import pulumi
import pulumi_kubernetes as k8s

from aideploy.schema import Cloud
from aideploy_iac.args import DeploymentArgs, model_location, resolve_spec
from aideploy_iac.kubernetes.identity import PodIdentityArgs, build_pod_identity
from aideploy_iac.kubernetes.manifests import (
    KubernetesOptions,
    Manifest,
    render_manifests,
    service_url,
)
from aideploy_iac.policies import TargetPlan, plan_kubernetes

__all__ = ["KubernetesDeploymentArgs", "KubernetesModelDeployment"]


class KubernetesDeploymentArgs(DeploymentArgs):
    """Arguments of a deployment on any Kubernetes cluster."""

    namespace: NotRequired[pulumi.Input[str]]
    """Namespace of every object (default "default"); it must exist."""
    spot_clouds: NotRequired[list[Cloud]]
    """Whose spot node labels to prefer (aws: EKS, gcp: GKE, azure: AKS); default all three."""
    keda_namespace: NotRequired[str]
    """Namespace where KEDA's HTTP add-on runs (default "keda")."""
    service_account_name: NotRequired[pulumi.Input[str]]
    """An existing service account whose cloud identity may read the model (default: the namespace's default)."""
    pod_identity: NotRequired[PodIdentityArgs]
    """The cluster's workload identity (an aideploy platform stack's): a service account and a cloud identity reading the model are created."""
    model_storage_account_id: NotRequired[pulumi.Input[str]]
    """Resource id of the storage account of an az:// model (default with pod_identity: the platform's)."""


def _resource_for(
    manifest: Manifest, name: str, opts: pulumi.ResourceOptions
) -> pulumi.CustomResource:
    """Create the pulumi_kubernetes resource for one rendered object, passing it unchanged."""
    kind = manifest["kind"]
    metadata = manifest["metadata"]
    if kind == "ServiceAccount":
        return k8s.core.v1.ServiceAccount(name, metadata=metadata, opts=opts)
    if kind == "Secret":
        return k8s.core.v1.Secret(
            name,
            metadata=metadata,
            type=manifest["type"],
            string_data=manifest["stringData"],
            opts=opts,
        )
    spec = manifest["spec"]
    if kind == "Deployment":
        return k8s.apps.v1.Deployment(name, metadata=metadata, spec=spec, opts=opts)
    if kind == "Service":
        return k8s.core.v1.Service(name, metadata=metadata, spec=spec, opts=opts)
    if kind == "HorizontalPodAutoscaler":
        return k8s.autoscaling.v2.HorizontalPodAutoscaler(
            name, metadata=metadata, spec=spec, opts=opts
        )
    if kind == "PodDisruptionBudget":
        return k8s.policy.v1.PodDisruptionBudget(name, metadata=metadata, spec=spec, opts=opts)
    return k8s.apiextensions.CustomResource(
        name,
        api_version=manifest["apiVersion"],
        kind=kind,
        metadata=metadata,
        spec=spec,
        opts=opts,
    )


def _identity_warnings(args: KubernetesDeploymentArgs, model_uri: pulumi.Input[str]) -> list[str]:
    """Say so when nothing gives the pods an identity that can read a cloud-stored model."""
    if "pod_identity" in args:
        if "service_account_name" in args:
            return [
                "service_account_name: ignored; the pods use the service account created for "
                "the platform cluster's workload identity"
            ]
        return []
    if "service_account_name" in args or not isinstance(model_uri, str):
        return []
    location = model_location(model_uri)
    if location.cloud is None:
        return []
    return [
        f"service_account_name: not given, so the pods read {model_uri} as the namespace's "
        "default service account, which usually has no access to it; give a service account "
        "bound to a cloud identity that can read it, or deploy to an aideploy platform "
        "cluster (target.cluster: org/project/stack), which binds one"
    ]


class KubernetesModelDeployment(pulumi.ComponentResource):
    """A model served on Kubernetes, with spot preference and KEDA scale-to-zero."""

    endpoint_url: pulumi.Output[str]
    """In-cluster URL of the deployment's Open Inference Protocol endpoint."""
    warnings: pulumi.Output[list[str]]
    """Each requested policy the target cannot honour, and what it does instead."""

    _plan: TargetPlan
    _manifests: dict[str, Manifest]

    @property
    def plan(self) -> TargetPlan:
        """What the target makes of each policy field (effective values and warnings)."""
        return self._plan

    @property
    def manifests(self) -> dict[str, Manifest]:
        """The rendered Kubernetes objects by role, exactly as deployed."""
        return self._manifests

    def __init__(
        self,
        name: str,
        args: KubernetesDeploymentArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("aideploy:index:KubernetesModelDeployment", name, None, opts)
        spec, unlabelled = resolve_spec(name, args)
        self._plan = plan_kubernetes(spec)
        warnings = [*unlabelled, *self._plan.warnings, *_identity_warnings(args, spec.model_uri)]
        namespace = args.get("namespace", "default")
        identity = None
        if "pod_identity" in args:
            identity_args = PodIdentityArgs(**args["pod_identity"])
            if "model_storage_account_id" in args:
                identity_args["storage_account_id"] = args["model_storage_account_id"]
            identity = build_pod_identity(
                name, spec, identity_args, namespace, pulumi.ResourceOptions(parent=self)
            )
        options = KubernetesOptions(
            namespace=namespace,
            spot_clouds=tuple(Cloud(cloud) for cloud in args.get("spot_clouds", []))
            or KubernetesOptions.spot_clouds,
            keda_namespace=args.get("keda_namespace", "keda"),
            service_account_name=args.get("service_account_name"),
            service_account=identity.service_account if identity else None,
            pod_labels=identity.pod_labels if identity else {},
            storage_account_id=(
                identity.storage_account_id if identity else args.get("model_storage_account_id")
            ),
        )
        self._manifests = render_manifests(spec, options)
        # Object names are fixed (they are the deployment's address), so a replacement must
        # delete the old object first.
        child_opts = pulumi.ResourceOptions(parent=self, delete_before_replace=True)
        self.resources: dict[str, pulumi.CustomResource] = {
            role: _resource_for(manifest, f"{name}-{role}", child_opts)
            for role, manifest in self._manifests.items()
        }
        url = service_url(spec, options)
        self.endpoint_url = pulumi.Output.all(self.resources["service"].id, url).apply(
            lambda values: str(values[1])
        )
        self.warnings = pulumi.Output.from_input(warnings)
        outputs: dict[str, Any] = {"endpoint_url": self.endpoint_url, "warnings": self.warnings}
        self.register_outputs(outputs)
