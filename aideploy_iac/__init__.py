"""Model deployments as Pulumi component resources.

Import this package in your own Pulumi program. Only ``pulumi`` and ``pulumi-kubernetes`` are
needed to import it; the AWS, GCP and Azure provider SDKs are imported only when a deployment
targets that cloud, so install just the extras you use (``aideploy[kubernetes,aws]``).

Names are resolved on first use, so ``aideploy`` commands that only need a submodule (the CLI)
do not pay for importing the Pulumi SDK.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aideploy.schema import Cloud, DeploymentType, Framework
    from aideploy_iac.args import (
        CostOptimizationPolicyArgs,
        DeploymentArgs,
        ModelFormat,
        ResourceRequirementsArgs,
        ScalingPolicyArgs,
        TargetArgs,
        TargetCloud,
    )
    from aideploy_iac.deployment import ModelDeployment, ModelDeploymentArgs
    from aideploy_iac.kubernetes import KubernetesDeploymentArgs, KubernetesModelDeployment
    from aideploy_iac.platform import AwsPlatform, AzurePlatform, GcpPlatform, Keda, PlatformArgs
    from aideploy_iac.serverless import (
        CloudRunDeploymentArgs,
        CloudRunModelDeployment,
        ContainerAppDeploymentArgs,
        ContainerAppModelDeployment,
        LambdaDeploymentArgs,
        LambdaModelDeployment,
    )

_EXPORTS = {
    "Cloud": "aideploy.schema",
    "DeploymentType": "aideploy.schema",
    "Framework": "aideploy.schema",
    "CostOptimizationPolicyArgs": "aideploy_iac.args",
    "DeploymentArgs": "aideploy_iac.args",
    "ModelFormat": "aideploy_iac.args",
    "ResourceRequirementsArgs": "aideploy_iac.args",
    "ScalingPolicyArgs": "aideploy_iac.args",
    "TargetArgs": "aideploy_iac.args",
    "TargetCloud": "aideploy_iac.args",
    "ModelDeployment": "aideploy_iac.deployment",
    "ModelDeploymentArgs": "aideploy_iac.deployment",
    "KubernetesDeploymentArgs": "aideploy_iac.kubernetes",
    "KubernetesModelDeployment": "aideploy_iac.kubernetes",
    "AwsPlatform": "aideploy_iac.platform",
    "AzurePlatform": "aideploy_iac.platform",
    "GcpPlatform": "aideploy_iac.platform",
    "Keda": "aideploy_iac.platform",
    "PlatformArgs": "aideploy_iac.platform",
    "CloudRunDeploymentArgs": "aideploy_iac.serverless",
    "CloudRunModelDeployment": "aideploy_iac.serverless",
    "ContainerAppDeploymentArgs": "aideploy_iac.serverless",
    "ContainerAppModelDeployment": "aideploy_iac.serverless",
    "LambdaDeploymentArgs": "aideploy_iac.serverless",
    "LambdaModelDeployment": "aideploy_iac.serverless",
}

__all__ = [
    "AwsPlatform",
    "AzurePlatform",
    "Cloud",
    "CloudRunDeploymentArgs",
    "CloudRunModelDeployment",
    "ContainerAppDeploymentArgs",
    "ContainerAppModelDeployment",
    "CostOptimizationPolicyArgs",
    "DeploymentArgs",
    "DeploymentType",
    "Framework",
    "GcpPlatform",
    "Keda",
    "KubernetesDeploymentArgs",
    "KubernetesModelDeployment",
    "LambdaDeploymentArgs",
    "LambdaModelDeployment",
    "ModelDeployment",
    "ModelDeploymentArgs",
    "ModelFormat",
    "PlatformArgs",
    "ResourceRequirementsArgs",
    "ScalingPolicyArgs",
    "TargetArgs",
    "TargetCloud",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aideploy_iac' has no attribute {name!r}")
    return getattr(import_module(module), name)
