"""Pod identities on aideploy's platform clusters, so the runtime can read the model.

Each platform cluster federates Kubernetes service accounts with its cloud's IAM: EKS Pod
Identity (the platform installs the agent add-on), GKE Workload Identity (the cluster's workload
pool) and AKS workload identity (the cluster's OIDC issuer). For a deployment on such a cluster
the Kubernetes component creates a service account named after the deployment and grants its
cloud identity read access to exactly the model object (S3, GCS) or its container (Blob). The
builders are plain functions; the cloud SDK is imported only by the one that runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

import pulumi

from aideploy.errors import InputError
from aideploy.schema import Cloud
from aideploy_iac.access import (
    gcp_service_account_id,
    grant_blob_read,
    grant_gcs_object_read,
    partition_of,
    s3_read_statement,
)
from aideploy_iac.args import DeploymentSpec, model_location, require_readable
from aideploy_iac.kubernetes.manifests import ServiceAccountSpec

__all__ = ["PodIdentity", "PodIdentityArgs", "build_pod_identity"]

AZURE_TOKEN_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience, not a secret


class PodIdentityArgs(TypedDict):
    """What an aideploy platform stack exports about its cluster's workload identity."""

    cloud: Cloud
    """The cluster's cloud."""
    region: NotRequired[str]
    """The cluster's region."""
    cluster_name: NotRequired[pulumi.Input[str]]
    """EKS: the cluster the pod identity association is made in."""
    project: NotRequired[pulumi.Input[str]]
    """GKE: project of the Google service account."""
    workload_identity_pool: NotRequired[pulumi.Input[str]]
    """GKE: the cluster's workload pool, ``<project>.svc.id.goog``."""
    oidc_issuer_url: NotRequired[pulumi.Input[str]]
    """AKS: the cluster's OIDC issuer the federated credential trusts."""
    resource_group_name: NotRequired[pulumi.Input[str]]
    """AKS: resource group of the managed identity."""
    storage_account_id: NotRequired[pulumi.Input[str]]
    """AKS: storage account of the model (default: the platform's artifact account)."""


@dataclass(frozen=True)
class PodIdentity:
    """How the pods take on the cloud identity."""

    service_account: ServiceAccountSpec
    pod_labels: dict[str, str] = field(default_factory=dict)
    storage_account_id: pulumi.Input[str] | None = None


_PRODUCT = {
    Cloud.AWS: "EKS Pod Identity",
    Cloud.GCP: "GKE Workload Identity",
    Cloud.AZURE: "AKS workload identity",
}


def _tags(spec: DeploymentSpec) -> dict[str, str]:
    return {**spec.labels, "managed-by": "aideploy", "aideploy-deployment": spec.name}


def _eks(
    name: str,
    spec: DeploymentSpec,
    args: PodIdentityArgs,
    namespace: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> PodIdentity:
    import pulumi_aws as aws

    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ],
    }
    role = aws.iam.Role(
        f"{name}-pod-role", assume_role_policy=json.dumps(trust), tags=_tags(spec), opts=opts
    )
    aws.iam.RolePolicy(
        f"{name}-pod-model-access",
        role=role.id,
        policy=pulumi.Output.all(role.arn, spec.model_uri).apply(
            lambda values: json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [s3_read_statement(values[1], partition_of(values[0]))],
                }
            )
        ),
        opts=opts,
    )
    aws.eks.PodIdentityAssociation(
        f"{name}-pod-identity",
        cluster_name=args["cluster_name"],
        namespace=namespace,
        service_account=spec.name,
        role_arn=role.arn,
        region=args.get("region"),
        tags=_tags(spec),
        opts=opts,
    )
    return PodIdentity(ServiceAccountSpec(spec.name))


def _gke(
    name: str,
    spec: DeploymentSpec,
    args: PodIdentityArgs,
    namespace: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> PodIdentity:
    import pulumi_gcp as gcp

    account = gcp.serviceaccount.Account(
        f"{name}-pod-identity",
        account_id=gcp_service_account_id(spec.name),
        display_name=f"aideploy deployment {spec.name} (pods)",
        project=args.get("project"),
        opts=opts,
    )
    grant_gcs_object_read(
        f"{name}-pod-model-access",
        spec.model_uri,
        pulumi.Output.concat("serviceAccount:", account.email),
        opts,
    )
    gcp.serviceaccount.IAMMember(
        f"{name}-pod-workload-identity",
        service_account_id=account.name,
        role="roles/iam.workloadIdentityUser",
        member=pulumi.Output.concat(
            "serviceAccount:", args["workload_identity_pool"], "[", namespace, "/", spec.name, "]"
        ),
        opts=opts,
    )
    return PodIdentity(
        ServiceAccountSpec(spec.name, {"iam.gke.io/gcp-service-account": account.email})
    )


def _aks(
    name: str,
    spec: DeploymentSpec,
    args: PodIdentityArgs,
    namespace: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> PodIdentity:
    import pulumi_azure_native as azure

    identity = azure.managedidentity.UserAssignedIdentity(
        f"{name}-pod-identity",
        resource_group_name=args["resource_group_name"],
        location=args.get("region"),
        tags=_tags(spec),
        opts=opts,
    )
    azure.managedidentity.FederatedIdentityCredential(
        f"{name}-pod-federation",
        resource_group_name=args["resource_group_name"],
        resource_name_=identity.name,
        federated_identity_credential_resource_name="kubernetes",
        issuer=args["oidc_issuer_url"],
        subject=pulumi.Output.concat("system:serviceaccount:", namespace, ":", spec.name),
        audiences=[AZURE_TOKEN_AUDIENCE],
        opts=opts,
    )
    account_id = args["storage_account_id"]
    grant_blob_read(
        f"{name}-pod-model-access", identity.principal_id, account_id, spec.model_uri, opts
    )
    return PodIdentity(
        ServiceAccountSpec(spec.name, {"azure.workload.identity/client-id": identity.client_id}),
        # The AKS webhook injects AZURE_CLIENT_ID and the federated token into labelled pods.
        pod_labels={"azure.workload.identity/use": "true"},
        storage_account_id=account_id,
    )


_BUILDERS: dict[
    Cloud,
    Callable[
        [str, DeploymentSpec, PodIdentityArgs, pulumi.Input[str], pulumi.ResourceOptions],
        PodIdentity,
    ],
] = {Cloud.AWS: _eks, Cloud.GCP: _gke, Cloud.AZURE: _aks}
_REQUIRED: dict[Cloud, tuple[str, ...]] = {
    Cloud.AWS: ("cluster_name",),
    Cloud.GCP: ("workload_identity_pool",),
    Cloud.AZURE: ("oidc_issuer_url", "resource_group_name", "storage_account_id"),
}


def build_pod_identity(
    name: str,
    spec: DeploymentSpec,
    args: PodIdentityArgs,
    namespace: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> PodIdentity | None:
    """Create the cloud identity that reads the model; ``None`` for a public https model,
    which needs none. A model the cluster's cloud cannot grant fails naming the field."""
    cloud = Cloud(args["cloud"])
    missing = [key for key in _REQUIRED[cloud] if args.get(key) is None]
    if missing:
        raise InputError(f"pod_identity: {', '.join(missing)} required for {_PRODUCT[cloud]}")
    if isinstance(spec.model_uri, str):
        location = model_location(spec.model_uri)
        require_readable(location, cloud, _PRODUCT[cloud])
        if location.public:
            return None
    return _BUILDERS[cloud](name, spec, args, namespace, opts)
