"""Multi-cloud placement: the catalogued cloud and region where a deployment costs least.

Every (cloud, region) of the price catalog is a candidate; candidates the target cannot run (a GPU
on a serverless product, a size outside Cloud Run's limits) are set aside with the reason, using
the same rules the components enforce, so a choice is always deployable.
"""

from __future__ import annotations

from dataclasses import dataclass

from aideploy.errors import InputError
from aideploy.schema import Cloud, DeploymentType
from aideploy_iac.args import MODEL_URI_SCHEMES, DeploymentSpec, model_uri_parts
from aideploy_iac.policies import TargetKind, plan_for
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


def choose_placement(
    catalog: PriceCatalog,
    spec: DeploymentSpec,
    deployment_type: DeploymentType,
    usage: UsageProfile | None = None,
) -> PlacementDecision:
    """Price the deployment in every catalogued region and return the cheapest two."""
    estimates: list[CostEstimate] = []
    rejected: list[str] = []
    for cloud, region in catalog.places():
        try:
            kind = target_kind(deployment_type, cloud)
            if kind is not TargetKind.KUBERNETES and isinstance(spec.model_uri, str):
                # Serverless targets grant read access only to their own cloud's object store.
                model_uri_parts(spec.model_uri, MODEL_URI_SCHEMES[cloud])
            plan_for(kind, spec)
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
