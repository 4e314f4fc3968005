"""The two program functions: ``pulumi up`` runs them from ``__main__.py``, the API runs
``deployments`` inline through the Automation API, and ``aideploy synth`` and the tests run them
under the mock engine. Each takes a typed config object and reads nothing else."""

from __future__ import annotations

from typing import cast

import pulumi

from aideploy.schema import Cloud
from aideploy_iac.deployment import ModelDeployment
from aideploy_iac.document import model_deployment_args
from aideploy_iac.platform import AwsPlatform, AzurePlatform, GcpPlatform, PlatformArgs
from stacks.config import DeploymentsConfig, PlatformCloud, PlatformConfig

__all__ = ["deployments", "platform"]


def deployments(cfg: DeploymentsConfig) -> dict[str, ModelDeployment]:
    """Build every configured deployment and export its endpoint, policies and warnings."""
    built: dict[str, ModelDeployment] = {}
    for document in cfg.deployments:
        deployment = ModelDeployment(
            document.name, model_deployment_args(document, default_image=cfg.image)
        )
        built[document.name] = deployment
        pulumi.export(
            document.name,
            {
                "endpoint_url": deployment.endpoint_url,
                "target_kind": deployment.target_kind,
                "cloud": deployment.cloud,
                "region": deployment.region,
                "effective_min_instances": deployment.effective_min_instances,
                "effective_max_instances": deployment.effective_max_instances,
                "effective_hibernation_enabled": deployment.effective_hibernation_enabled,
                "effective_use_spot_instances": deployment.effective_use_spot_instances,
                "placement_choice": deployment.placement_choice,
                "placement_estimated_monthly_cost": deployment.placement_estimated_monthly_cost,
                "warnings": deployment.warnings,
            },
        )
    return built


def _platform_args(cloud: PlatformCloud) -> PlatformArgs:
    values = cloud.model_dump(exclude={"cloud"}, exclude_none=True)
    return cast(PlatformArgs, values)


def platform(cfg: PlatformConfig) -> dict[str, pulumi.ComponentResource]:
    """Build each configured cloud's shared infrastructure and export what deployments need."""
    built: dict[str, pulumi.ComponentResource] = {}
    for cloud in cfg.clouds:
        name = f"{cfg.name}-{cloud.cloud.value}-{cloud.region}"
        args = _platform_args(cloud)
        component: AwsPlatform | GcpPlatform | AzurePlatform
        if cloud.cloud is Cloud.AWS:
            component = AwsPlatform(name, args)
        elif cloud.cloud is Cloud.GCP:
            component = GcpPlatform(name, args)
        else:
            component = AzurePlatform(name, args)
        built[name] = component
        prefix = f"{cloud.cloud.value}-{cloud.region}"
        artifacts = (
            component.artifact_container_url
            if isinstance(component, AzurePlatform)
            else component.artifact_bucket
        )
        pulumi.export(f"{prefix}-artifacts", artifacts)
        pulumi.export(f"{prefix}-registry_url", component.registry_url)
        pulumi.export(f"{prefix}-cluster_name", component.cluster_name)
        pulumi.export(f"{prefix}-kubeconfig", component.kubeconfig)
        if len(cfg.clouds) == 1:
            # Deployments name a platform stack as target.cluster and read this output.
            pulumi.export("kubeconfig", component.kubeconfig)
    return built
