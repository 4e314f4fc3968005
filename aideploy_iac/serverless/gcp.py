"""``CloudRunModelDeployment``: the serving runtime as a Cloud Run (v2) service.

``pulumi_gcp`` is imported inside the constructor so that ``import aideploy_iac`` works without
the GCP extra installed.
"""

import re
from typing import TYPE_CHECKING, NotRequired

import pulumi

from aideploy.quantity import format_cpu
from aideploy.schema import Cloud
from aideploy_iac.args import MODEL_URI_SCHEMES, DeploymentArgs, model_uri_parts, resolve_spec
from aideploy_iac.policies import TargetPlan, plan_cloud_run, requests_per_instance
from aideploy_iac.runtime_contract import (
    HEALTH_LIVE_PATH,
    HEALTH_READY_PATH,
    SERVING_PORT,
    runtime_environment,
)

if TYPE_CHECKING:
    from pulumi_gcp.storage import BucketIAMMemberConditionArgsDict

__all__ = ["CloudRunDeploymentArgs", "CloudRunModelDeployment"]

DEFAULT_REGION = "us-central1"


class CloudRunDeploymentArgs(DeploymentArgs):
    """Arguments of a deployment on Google Cloud Run."""

    region: NotRequired[str]
    """Cloud Run location (default us-central1)."""
    project: NotRequired[str]
    """Google Cloud project (default: the GCP provider's project)."""


def _service_account_id(name: str) -> str:
    """A service-account id (6-30 characters, letter first) derived from the deployment name."""
    account = re.sub(r"-+$", "", f"aideploy-{name}"[:30])
    return account if len(account) >= 6 else f"{account}-model"


def _object_condition(model_uri: str) -> "BucketIAMMemberConditionArgsDict":
    bucket, key = model_uri_parts(model_uri, MODEL_URI_SCHEMES[Cloud.GCP])
    return {
        "title": "aideploy-model-object",
        "description": "Read only the deployment's model artifact.",
        "expression": f'resource.name == "projects/_/buckets/{bucket}/objects/{key}"',
    }


class CloudRunModelDeployment(pulumi.ComponentResource):
    """A model served by Cloud Run, scaling to zero when idle."""

    endpoint_url: pulumi.Output[str]
    """HTTPS URL of the deployment's Open Inference Protocol endpoint."""
    warnings: pulumi.Output[list[str]]
    """Each requested policy Cloud Run cannot honour, and what it does instead."""

    _plan: TargetPlan

    @property
    def plan(self) -> TargetPlan:
        """What the target makes of each policy field (effective values and warnings)."""
        return self._plan

    def __init__(
        self,
        name: str,
        args: CloudRunDeploymentArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("aideploy:index:CloudRunModelDeployment", name, None, opts)
        spec, unlabelled = resolve_spec(name, args)
        self._plan = plan_cloud_run(spec)
        if isinstance(spec.model_uri, str):
            model_uri_parts(spec.model_uri, MODEL_URI_SCHEMES[Cloud.GCP])

        import pulumi_gcp as gcp

        effective = self._plan.effective
        region = args.get("region", DEFAULT_REGION)
        project = args.get("project")
        labels = {**spec.labels, "managed-by": "aideploy", "aideploy-deployment": spec.name}
        child = pulumi.ResourceOptions(parent=self)
        identity = gcp.serviceaccount.Account(
            f"{name}-identity",
            account_id=_service_account_id(spec.name),
            display_name=f"aideploy deployment {spec.name}",
            project=project,
            opts=child,
        )
        model_uri = pulumi.Output.from_input(spec.model_uri)
        gcp.storage.BucketIAMMember(
            f"{name}-model-access",
            bucket=model_uri.apply(
                lambda uri: model_uri_parts(uri, MODEL_URI_SCHEMES[Cloud.GCP])[0]
            ),
            role="roles/storage.objectViewer",
            member=identity.email.apply(lambda email: f"serviceAccount:{email}"),
            condition=model_uri.apply(_object_condition),
            opts=child,
        )
        # Cloud Run sets PORT itself and rejects it as a user variable.
        environment = {
            key: value for key, value in runtime_environment(spec).items() if key != "PORT"
        }
        scaling: gcp.cloudrunv2.ServiceScalingArgsDict = (
            {"scaling_mode": "MANUAL", "manual_instance_count": 0}
            if spec.hibernated
            else {"scaling_mode": "AUTOMATIC"}
        )
        service = gcp.cloudrunv2.Service(
            f"{name}-service",
            name=spec.name,
            location=region,
            project=project,
            ingress="INGRESS_TRAFFIC_ALL",
            deletion_protection=False,
            labels=labels,
            scaling=scaling,
            template={
                "service_account": identity.email,
                "timeout": f"{effective.timeout}s",
                "max_instance_request_concurrency": requests_per_instance(spec.resources.cpu_cores),
                "scaling": {
                    "min_instance_count": effective.min_instances,
                    "max_instance_count": effective.max_instances,
                },
                "labels": labels,
                "containers": [
                    {
                        "name": "server",
                        "image": spec.image,
                        "ports": {"name": "http1", "container_port": SERVING_PORT},
                        "envs": [
                            {"name": key, "value": value} for key, value in environment.items()
                        ],
                        "resources": {
                            "limits": {
                                "cpu": format_cpu(spec.resources.cpu_cores),
                                "memory": spec.resources.memory,
                            },
                            "cpu_idle": True,
                            "startup_cpu_boost": True,
                        },
                        "startup_probe": {
                            "http_get": {"path": HEALTH_READY_PATH, "port": SERVING_PORT},
                            "period_seconds": 5,
                            "failure_threshold": 120,
                        },
                        "liveness_probe": {
                            "http_get": {"path": HEALTH_LIVE_PATH, "port": SERVING_PORT},
                            "period_seconds": 10,
                        },
                    }
                ],
            },
            opts=child,
        )
        if spec.public_endpoint:
            gcp.cloudrunv2.ServiceIamMember(
                f"{name}-public-invoker",
                name=service.name,
                location=region,
                project=service.project,
                role="roles/run.invoker",
                member="allUsers",
                opts=child,
            )
        self.endpoint_url = service.uri
        self.warnings = pulumi.Output.from_input([*unlabelled, *self._plan.warnings])
        self.register_outputs({"endpoint_url": self.endpoint_url, "warnings": self.warnings})
