"""The Kubernetes target: any cluster, with the provider from the caller's options or kubeconfig."""

from aideploy_iac.kubernetes.component import KubernetesDeploymentArgs, KubernetesModelDeployment
from aideploy_iac.kubernetes.manifests import KubernetesOptions, render_manifests

__all__ = [
    "KubernetesDeploymentArgs",
    "KubernetesModelDeployment",
    "KubernetesOptions",
    "render_manifests",
]
