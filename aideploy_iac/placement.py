"""Multi-cloud placement: the catalogued cloud and region where a deployment costs least.

Every (cloud, region) of the price catalog is a candidate. Candidates the deployment cannot run
on are set aside with the reason, using the same rules the components enforce, so a choice is
always deployable: the model must be readable there (that cloud's object store through
``model_uris``, or a public https URL), the target must take the size, name and image (Lambda
runs only ECR images of its own region), and a Kubernetes deployment needs a cluster there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi

from aideploy.errors import InputError
from aideploy.schema import Cloud, DeploymentType
from aideploy_iac.args import DeploymentSpec, model_location, require_readable
from aideploy_iac.policies import MODEL_READERS, TargetKind, check_image, plan_for
from aideploy_iac.pricing import CostEstimate, PriceCatalog, UsageProfile, estimate_monthly_cost

__all__ = ["PlacementDecision", "choose_placement", "target_kind"]

_SERVERLESS_BY_CLOUD = {
    Cloud.AWS: TargetKind.AWS_LAMBDA,
    Cloud.GCP: TargetKind.GCP_CLOUD_RUN,
    Cloud.AZURE: TargetKind.AZURE_CONTAINER_APPS,
}


def target_kind(deployment_type: DeploymentType, cloud: Cloud | None) -> TargetKind:
    """The product a deployment type runs on in a cloud."""
    if deployment_type is DeploymentType.KUBERNETES:
        return TargetKind.KUBERNETES
    if cloud is None or cloud not in _SERVERLESS_BY_CLOUD:
        allowed = ", ".join(item.value for item in _SERVERLESS_BY_CLOUD)
        shown = "none" if cloud is None else repr(cloud.value)
        raise InputError(
            f"target.cloud: {shown} cannot run deployment_type 'serverless'; allowed: {allowed} "
            "(or enable cost_optimization_policy.multi_cloud_enabled without a target)"
        )
    return _SERVERLESS_BY_CLOUD[cloud]


@dataclass(frozen=True)
class PlacementDecision:
    choice: CostEstimate
    runner_up: CostEstimate | None
    rejected: tuple[str, ...]
    """Candidates that cannot run the deployment, each with the reason."""


def _check_candidate(
    spec: DeploymentSpec,
    kind: TargetKind,
    cloud: Cloud,
    region: str,
    model_uris: Mapping[Cloud, pulumi.Input[str]],
    images: Mapping[Cloud, pulumi.Input[str]],
    clusters: Mapping[str, str] | None,
) -> None:
    if clusters is not None and f"{cloud.value}/{region}" not in clusters:
        raise InputError(f"clusters: no cluster for {cloud.value}/{region}")
    uri = model_uris.get(cloud, spec.model_uri)
    if isinstance(uri, str):
        require_readable(model_location(uri), cloud, MODEL_READERS[kind])
    plan_for(kind, spec)
    check_image(kind, images.get(cloud, spec.image), region)


def choose_placement(
    catalog: PriceCatalog,
    spec: DeploymentSpec,
    deployment_type: DeploymentType,
    usage: UsageProfile | None = None,
    *,
    model_uris: Mapping[Cloud, pulumi.Input[str]] | None = None,
    images: Mapping[Cloud, pulumi.Input[str]] | None = None,
    clusters: Mapping[str, str] | None = None,
) -> PlacementDecision:
    """Price the deployment in every place it can run and return the cheapest two.

    ``model_uris`` and ``images`` give the model's copy and the serving image per cloud
    (``spec.model_uri`` and ``spec.image`` elsewhere); ``clusters`` (``cloud/region`` keys)
    limits a Kubernetes deployment to the places that have a cluster.
    """
    estimates: list[CostEstimate] = []
    rejected: list[str] = []
    for cloud, region in catalog.places():
        try:
            kind = target_kind(deployment_type, cloud)
            _check_candidate(spec, kind, cloud, region, model_uris or {}, images or {}, clusters)
            estimates.append(
                estimate_monthly_cost(
                    catalog,
                    cloud=cloud,
                    region=region,
                    deployment_type=deployment_type,
                    resources=spec.resources,
                    scaling=spec.scaling,
                    cost=spec.cost,
                    usage=usage,
                )
            )
        except InputError as exc:
            rejected.append(f"{cloud.value}/{region}: {exc}")
    if not estimates:
        raise InputError(
            "cost_optimization_policy.multi_cloud_enabled: no catalogued cloud can run this "
            f"deployment ({'; '.join(rejected)})"
        )
    ranked = sorted(estimates, key=lambda estimate: (estimate.total, estimate.place))
    return PlacementDecision(
        choice=ranked[0],
        runner_up=ranked[1] if len(ranked) > 1 else None,
        rejected=tuple(rejected),
    )
