"""Read access to a model artifact for a workload's cloud identity, shared by every target.

Lambda and EKS pods read one S3 object, Cloud Run and GKE pods one GCS object, Container Apps
and AKS pods one Blob container: the statements, conditions and scopes are built here once.
Cloud SDKs are imported inside the builders, so importing this module needs none of them.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

import pulumi

from aideploy.schema import Cloud
from aideploy_iac.args import model_location

if TYPE_CHECKING:
    from pulumi_gcp.storage import BucketIAMMemberConditionArgsDict

__all__ = [
    "ACR_PULL",
    "STORAGE_BLOB_DATA_READER",
    "azure_role",
    "blob_container_scope",
    "gcp_service_account_id",
    "grant_blob_read",
    "grant_gcs_object_read",
    "partition_of",
    "s3_read_statement",
]

STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
_SERVICE_ACCOUNT_ID = 30


def azure_role(role_id: str) -> str:
    """The role definition id of a built-in Azure role."""
    return f"/providers/Microsoft.Authorization/roleDefinitions/{role_id}"


def partition_of(arn: str) -> str:
    """The AWS partition (``aws``, ``aws-cn``, ``aws-us-gov``) an ARN belongs to."""
    return arn.split(":")[1]


def s3_read_statement(model_uri: str, partition: str) -> dict[str, Any]:
    """Read exactly the model object."""
    location = model_location(model_uri)
    return {
        "Sid": "ReadModel",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:{partition}:s3:::{location.bucket}/{location.key}"],
    }


def gcp_service_account_id(name: str) -> str:
    """A Google service-account id (6-30 characters, letter first) for a deployment.

    The hash suffix keeps two deployments whose names share a long prefix apart.
    """
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    prefix = re.sub(r"-+$", "", f"aid-{name}"[: _SERVICE_ACCOUNT_ID - len(digest) - 1])
    return f"{prefix}-{digest}"


def _gcs_object_condition(model_uri: str) -> BucketIAMMemberConditionArgsDict:
    location = model_location(model_uri)
    return {
        "title": "aideploy-model-object",
        "description": "Read only the deployment's model artifact.",
        "expression": (
            f'resource.name == "projects/_/buckets/{location.bucket}/objects/{location.key}"'
        ),
    }


def grant_gcs_object_read(
    name: str,
    model_uri: pulumi.Input[str],
    member: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.CustomResource:
    """``roles/storage.objectViewer`` on the model object only (an IAM condition; the bucket
    needs uniform bucket-level access, as the platform's has)."""
    import pulumi_gcp as gcp

    uri = pulumi.Output.from_input(model_uri)
    return gcp.storage.BucketIAMMember(
        name,
        bucket=uri.apply(lambda value: model_location(value).bucket),
        role="roles/storage.objectViewer",
        member=member,
        condition=uri.apply(_gcs_object_condition),
        opts=opts,
    )


def blob_container_scope(account_id: str, model_uri: str) -> str:
    """The role-assignment scope of the model's Blob container in ``account_id``."""
    location = model_location(model_uri)
    if location.cloud is not Cloud.AZURE:
        raise ValueError(f"{model_uri!r} is not a Blob URI")
    return f"{account_id}/blobServices/default/containers/{location.bucket}"


def grant_blob_read(
    name: str,
    principal_id: pulumi.Input[str],
    account_id: pulumi.Input[str],
    model_uri: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.CustomResource:
    """Storage Blob Data Reader on the model's container for a managed identity."""
    import pulumi_azure_native as azure

    return azure.authorization.RoleAssignment(
        name,
        principal_id=principal_id,
        principal_type="ServicePrincipal",
        role_definition_id=azure_role(STORAGE_BLOB_DATA_READER),
        scope=pulumi.Output.all(account_id, model_uri).apply(
            lambda values: blob_container_scope(values[0], values[1])
        ),
        opts=opts,
    )
