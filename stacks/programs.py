"""The two program functions: ``pulumi up`` runs them from ``__main__.py``, the API runs
``deployments`` inline through the Automation API, and ``aideploy synth`` and the tests run them
under the mock engine. Each takes a typed config object and reads nothing else."""

from __future__ import annotations

from typing import Any, cast

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


def _platform_exports(component: AwsPlatform | GcpPlatform | AzurePlatform) -> dict[str, Any]:
    """What deployments read from a platform stack: where to put images and models, the
    cluster's kubeconfig, and the facts pod identities on it are built from."""
    exports: dict[str, Any] = {
        "registry_url": component.registry_url,
        "cluster_name": component.cluster_name,
        "kubeconfig": component.kubeconfig,
    }
    if isinstance(component, AzurePlatform):
        exports |= {
            "artifacts": component.artifact_container_url,
            "storage_account_id": component.storage_account_id,
            "resource_group_name": component.resource_group_name,
            "oidc_issuer_url": component.oidc_issuer_url,
            "registry_id": component.registry_id,
            "container_apps_environment_id": component.container_apps_environment_id,
        }
    else:
        exports["artifacts"] = component.artifact_bucket
    if isinstance(component, GcpPlatform):
        exports |= {
            "project": component.project,
            "workload_identity_pool": component.workload_identity_pool,
        }
    return exports


def platform(cfg: PlatformConfig) -> dict[str, pulumi.ComponentResource]:
    """Build each configured cloud's shared infrastructure and export what deployments need.

    Every output is exported as ``<cloud>-<region>-<key>``; a deployment's ``target.cluster``
    naming this stack reads the entry of its target's cloud and region. A single-cloud stack also
    exports the bare keys, for targets that name no region.
    """
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
        for key, value in _platform_exports(component).items():
            pulumi.export(f"{cloud.cloud.value}-{cloud.region}-{key}", value)
            if len(cfg.clouds) == 1:
                pulumi.export(key, value)
    return built
