"""``AzurePlatform``: Blob artifact container, ACR, an AKS cluster with a spot pool, and a
Container Apps environment for serverless deployments."""

import base64
import re

import pulumi

from aideploy_iac.access import ACR_PULL, azure_role
from aideploy_iac.platform.args import PlatformArgs
from aideploy_iac.platform.keda import Keda, keda_args
from aideploy_iac.platform.kubeconfig import kubernetes_provider

__all__ = ["AzurePlatform"]


def _compact(name: str, limit: int) -> str:
    """Storage accounts and registries allow only lowercase letters and digits."""
    return re.sub(r"[^a-z0-9]", "", name.lower())[:limit]


class AzurePlatform(pulumi.ComponentResource):
    """What aideploy deployments on Azure share in one region."""

    artifact_container_url: pulumi.Output[str]
    """Blob container URL for model artifacts."""
    storage_account_id: pulumi.Output[str]
    """Resource id of the artifact storage account (give it to Container Apps deployments)."""
    registry_url: pulumi.Output[str]
    """Azure Container Registry login server for the serving image."""
    registry_id: pulumi.Output[str]
    """Resource id of the registry (give it to Container Apps deployments for AcrPull)."""
    oidc_issuer_url: pulumi.Output[str]
    """OIDC issuer of the AKS cluster, trusted by deployments' workload identities."""
    cluster_name: pulumi.Output[str]
    """AKS cluster name."""
    container_apps_environment_id: pulumi.Output[str]
    """Container Apps environment for serverless deployments."""
    resource_group_name: pulumi.Output[str]
    """Resource group holding the platform."""
    kubeconfig: pulumi.Output[str]
    """Kubeconfig of the cluster (secret)."""

    def __init__(
        self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aideploy:index:AzurePlatform", name, None, opts)
        import pulumi_azure_native as azure

        location = args["region"]
        child = pulumi.ResourceOptions(parent=self)
        tags = {"managed-by": "aideploy", "aideploy-platform": name}
        group = azure.resources.ResourceGroup(
            f"{name}-group", location=location, tags=tags, opts=child
        )
        account = azure.storage.StorageAccount(
            f"{name}-artifacts",
            account_name=_compact(f"{name}artifacts", 24),
            resource_group_name=group.name,
            location=location,
            kind="StorageV2",
            sku={"name": "Standard_LRS"},
            allow_blob_public_access=False,
            minimum_tls_version="TLS1_2",
            tags=tags,
            opts=child,
        )
        container = azure.storage.BlobContainer(
            f"{name}-models",
            account_name=account.name,
            resource_group_name=group.name,
            container_name="models",
            public_access=azure.storage.PublicAccess.NONE,
            opts=child,
        )
        registry = azure.containerregistry.Registry(
            f"{name}-registry",
            registry_name=_compact(f"{name}registry", 50),
            resource_group_name=group.name,
            location=location,
            sku={"name": "Basic"},
            admin_user_enabled=False,
            tags=tags,
            opts=child,
        )
        on_demand_nodes = args.get("on_demand_nodes", 2)
        system_pool: azure.containerservice.ManagedClusterAgentPoolProfileArgsDict = {
            "name": "system",
            "mode": "System",
            "vm_size": args.get("on_demand_node_type", "Standard_D2s_v5"),
            "count": on_demand_nodes,
            "os_type": "Linux",
            "type": "VirtualMachineScaleSets",
        }
        cluster = azure.containerservice.ManagedCluster(
            f"{name}-cluster",
            resource_group_name=group.name,
            location=location,
            dns_prefix=_compact(name, 40) or "aideploy",
            kubernetes_version=args.get("kubernetes_version"),
            identity={"type": azure.containerservice.ResourceIdentityType.SYSTEM_ASSIGNED},
            oidc_issuer_profile={"enabled": True},
            security_profile={"workload_identity": {"enabled": True}},
            agent_pool_profiles=[system_pool],
            tags=tags,
            opts=child,
        )
        # AKS labels and taints spot nodes kubernetes.azure.com/scalesetpriority=spot.
        for index, vm_size in enumerate(args.get("spot_node_types", ["Standard_D4s_v5"])):
            azure.containerservice.AgentPool(
                f"{name}-spot-nodes-{index}",
                agent_pool_name=f"spot{index}",
                resource_group_name=group.name,
                resource_name_=cluster.name,
                mode="User",
                vm_size=vm_size,
                os_type="Linux",
                type="VirtualMachineScaleSets",
                scale_set_priority="Spot",
                scale_set_eviction_policy="Delete",
                spot_max_price=-1,
                enable_auto_scaling=True,
                min_count=0,
                max_count=args.get("max_spot_nodes", 10),
                count=0,
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["count"]),
            )
        # The cluster pulls the serving image from the platform registry with its kubelet
        # identity (what `az aks update --attach-acr` does).
        azure.authorization.RoleAssignment(
            f"{name}-cluster-registry-access",
            principal_id=cluster.identity_profile.apply(
                lambda profile: (profile or {})["kubeletidentity"].object_id
            ),
            principal_type="ServicePrincipal",
            role_definition_id=azure_role(ACR_PULL),
            scope=registry.id,
            opts=child,
        )
        environment = azure.app.ManagedEnvironment(
            f"{name}-apps",
            resource_group_name=group.name,
            location=location,
            # Workload profiles: its Consumption profile runs apps up to 4 vCPU / 8Gi.
            workload_profiles=[{"name": "Consumption", "workload_profile_type": "Consumption"}],
            tags=tags,
            opts=child,
        )
        credentials = azure.containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=group.name, resource_name=cluster.name
        )
        kubeconfig = credentials.kubeconfigs.apply(
            lambda configs: base64.b64decode(configs[0].value).decode("utf-8")
        )
        provider = kubernetes_provider(f"{name}-kubernetes", kubeconfig, self, [cluster])
        Keda(
            f"{name}-keda",
            keda_args(args),
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.artifact_container_url = pulumi.Output.all(account.name, container.name).apply(
            lambda values: f"https://{values[0]}.blob.core.windows.net/{values[1]}"
        )
        self.storage_account_id = account.id
        self.registry_url = registry.login_server
        self.registry_id = registry.id
        self.oidc_issuer_url = cluster.oidc_issuer_profile.apply(
            lambda profile: profile.issuer_url if profile else ""
        )
        self.cluster_name = cluster.name
        self.container_apps_environment_id = environment.id
        self.resource_group_name = group.name
        self.kubeconfig = pulumi.Output.secret(kubeconfig)
        self.register_outputs(
            {
                "artifact_container_url": self.artifact_container_url,
                "storage_account_id": self.storage_account_id,
                "registry_url": self.registry_url,
                "registry_id": self.registry_id,
                "oidc_issuer_url": self.oidc_issuer_url,
                "cluster_name": self.cluster_name,
                "container_apps_environment_id": self.container_apps_environment_id,
                "resource_group_name": self.resource_group_name,
                "kubeconfig": self.kubeconfig,
            }
        )
