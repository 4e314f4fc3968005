"""Serverless targets. Each imports its cloud's Pulumi SDK only when a deployment is built."""

from aideploy_iac.serverless.aws import LambdaDeploymentArgs, LambdaModelDeployment
from aideploy_iac.serverless.azure import ContainerAppDeploymentArgs, ContainerAppModelDeployment
from aideploy_iac.serverless.gcp import CloudRunDeploymentArgs, CloudRunModelDeployment

__all__ = [
    "CloudRunDeploymentArgs",
    "CloudRunModelDeployment",
    "ContainerAppDeploymentArgs",
    "ContainerAppModelDeployment",
    "LambdaDeploymentArgs",
    "LambdaModelDeployment",
]
