"""``GcpPlatform``: GCS artifact bucket, Artifact Registry and a GKE cluster with a spot pool."""

import pulumi

from aideploy.errors import InputError
from aideploy_iac.platform.args import PlatformArgs
from aideploy_iac.platform.keda import Keda, keda_args
from aideploy_iac.platform.kubeconfig import exec_kubeconfig, kubernetes_provider

__all__ = ["GcpPlatform"]


def _workload_pool(project: str) -> str:
    return f"{project}.svc.id.goog"


class GcpPlatform(pulumi.ComponentResource):
    """What aideploy deployments on Google Cloud share in one region."""

    artifact_bucket: pulumi.Output[str]
    """GCS bucket for model artifacts."""
    registry_url: pulumi.Output[str]
    """Artifact Registry Docker repository for the serving image."""
    cluster_name: pulumi.Output[str]
    """GKE cluster name."""
    project: pulumi.Output[str]
    """Project of the platform (deployments create their pods' Google service accounts in it)."""
    workload_identity_pool: pulumi.Output[str]
    """The cluster's Workload Identity pool, <project>.svc.id.goog."""
    kubeconfig: pulumi.Output[str]
    """Kubeconfig of the cluster (secret), authenticating with gke-gcloud-auth-plugin."""

    def __init__(
        self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aideploy:index:GcpPlatform", name, None, opts)
        import pulumi_gcp as gcp

        region = args["region"]
        project = args.get("project")
        if not project:
            raise InputError(
                "project: required for GcpPlatform (it names the workload identity pool)"
            )
        child = pulumi.ResourceOptions(parent=self)
        labels = {"managed-by": "aideploy", "aideploy-platform": name}
        bucket = gcp.storage.Bucket(
            f"{name}-artifacts",
            location=region,
            project=project,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            labels=labels,
            opts=child,
        )
        registry = gcp.artifactregistry.Repository(
            f"{name}-registry",
            repository_id=f"{name}-images",
            format="DOCKER",
            location=region,
            project=project,
            labels=labels,
            opts=child,
        )
        cluster = gcp.container.Cluster(
            f"{name}-cluster",
            location=region,
            project=project,
            remove_default_node_pool=True,
            initial_node_count=1,
            deletion_protection=False,
            min_master_version=args.get("kubernetes_version"),
            release_channel={"channel": "REGULAR"},
            workload_identity_config={"workload_pool": _workload_pool(project)},
            resource_labels=labels,
            opts=child,
        )
        on_demand_nodes = args.get("on_demand_nodes", 2)
        system_pool = gcp.container.NodePool(
            f"{name}-on-demand-nodes",
            cluster=cluster.name,
            location=region,
            project=project,
            node_count=on_demand_nodes,
            node_config={
                "machine_type": args.get("on_demand_node_type", "e2-standard-2"),
                "workload_metadata_config": {"mode": "GKE_METADATA"},
                "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                "resource_labels": labels,
            },
            opts=child,
        )
        # GKE labels spot nodes cloud.google.com/gke-spot=true; the taint keeps pods that do not
        # tolerate interruption (system components) off them.
        for index, machine_type in enumerate(args.get("spot_node_types", ["e2-standard-4"])):
            gcp.container.NodePool(
                f"{name}-spot-nodes-{index}",
                cluster=cluster.name,
                location=region,
                project=project,
                autoscaling={
                    "total_min_node_count": 0,
                    "total_max_node_count": args.get("max_spot_nodes", 10),
                },
                node_config={
                    "machine_type": machine_type,
                    "spot": True,
                    "taints": [
                        {
                            "key": "cloud.google.com/gke-spot",
                            "value": "true",
                            "effect": "NO_SCHEDULE",
                        }
                    ],
                    "workload_metadata_config": {"mode": "GKE_METADATA"},
                    "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    "resource_labels": labels,
                },
                opts=child,
            )
        # Read nested fields through the typed property: Output.all hands back plain dicts.
        certificate = cluster.master_auth.apply(lambda auth: auth.cluster_ca_certificate)
        kubeconfig = pulumi.Output.all(cluster.name, cluster.endpoint, certificate).apply(
            lambda values: exec_kubeconfig(
                cluster=values[0],
                server=f"https://{values[1]}",
                certificate_authority=values[2],
                command="gke-gcloud-auth-plugin",
                command_args=[],
            )
        )
        provider = kubernetes_provider(f"{name}-kubernetes", kubeconfig, self, [system_pool])
        Keda(
            f"{name}-keda",
            keda_args(args),
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.artifact_bucket = bucket.name
        self.registry_url = pulumi.Output.all(
            registry.location, registry.project, registry.repository_id
        ).apply(lambda values: f"{values[0]}-docker.pkg.dev/{values[1]}/{values[2]}")
        self.cluster_name = cluster.name
        self.project = pulumi.Output.from_input(project)
        self.workload_identity_pool = pulumi.Output.from_input(_workload_pool(project))
        self.kubeconfig = pulumi.Output.secret(kubeconfig)
        self.register_outputs(
            {
                "artifact_bucket": self.artifact_bucket,
                "registry_url": self.registry_url,
                "cluster_name": self.cluster_name,
                "project": self.project,
                "workload_identity_pool": self.workload_identity_pool,
                "kubeconfig": self.kubeconfig,
            }
        )
