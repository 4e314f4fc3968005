"""Kubeconfig documents for the platform clusters, authenticating through each cloud's CLI."""

from collections.abc import Sequence

import pulumi
import yaml

__all__ = ["exec_kubeconfig", "kubernetes_provider"]


def exec_kubeconfig(
    *,
    cluster: str,
    server: str,
    certificate_authority: str,
    command: str,
    command_args: Sequence[str],
) -> str:
    """A kubeconfig whose credentials come from ``command`` (an exec credential plugin)."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": certificate_authority},
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster,
        "users": [
            {
                "name": cluster,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": command,
                        "args": list(command_args),
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
    }
    return yaml.safe_dump(document, sort_keys=False)


def kubernetes_provider(
    name: str,
    kubeconfig: pulumi.Input[str],
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
) -> pulumi.ProviderResource:
    """A Kubernetes provider for a platform cluster, created once its nodes exist."""
    import pulumi_kubernetes as k8s

    return k8s.Provider(
        name,
        kubeconfig=kubeconfig,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
    )
