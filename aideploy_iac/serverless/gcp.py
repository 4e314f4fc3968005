"""``CloudRunModelDeployment``: the serving runtime as a Cloud Run (v2) service.

``pulumi_gcp`` is imported inside the constructor so that ``import aideploy_iac`` works without
the GCP extra installed.
"""

import re
from typing import NotRequired

import pulumi

from aideploy.errors import InputError
from aideploy.quantity import format_cpu
from aideploy.schema import Cloud
from aideploy_iac.access import gcp_service_account_id, grant_gcs_object_read
from aideploy_iac.args import (
    DeploymentArgs,
    gcp_labels,
    model_location,
    require_readable,
    resolve_spec,
)
from aideploy_iac.policies import (
    MODEL_READERS,
    TargetKind,
    TargetPlan,
    plan_cloud_run,
    requests_per_instance,
)
from aideploy_iac.runtime_contract import (
    HEALTH_LIVE_PATH,
    HEALTH_READY_PATH,
    SERVING_PORT,
    USAGE_TOKEN_VARIABLE,
    runtime_environment,
    usage_token,
)

__all__ = ["CloudRunDeploymentArgs", "CloudRunModelDeployment"]

DEFAULT_REGION = "us-central1"
_IAM_MEMBER = re.compile(
    r"^(allUsers|allAuthenticatedUsers|(user|serviceAccount|group|domain):\S+|principal(Set)?://\S+)$"
)


class CloudRunDeploymentArgs(DeploymentArgs):
    """Arguments of a deployment on Google Cloud Run."""

    region: NotRequired[str]
    """Cloud Run location (default us-central1)."""
    project: NotRequired[pulumi.Input[str]]
    """Google Cloud project (default: the GCP provider's project)."""
    invokers: NotRequired[list[pulumi.Input[str]]]
    """IAM members allowed to call the private service, e.g. serviceAccount:api@acme.iam.gserviceaccount.com."""


def _checked_invokers(invokers: list[pulumi.Input[str]]) -> list[pulumi.Input[str]]:
    for index, member in enumerate(invokers):
        if isinstance(member, str) and not _IAM_MEMBER.match(member):
            raise InputError(
                f"invokers[{index}]: {member!r} is not an IAM member; expected e.g. "
                "serviceAccount:<email>, user:<email>, group:<email> or domain:<domain>"
            )
    return invokers


class CloudRunModelDeployment(pulumi.ComponentResource):
    """A model served by Cloud Run, scaling to zero when idle."""

    endpoint_url: pulumi.Output[str]
    """HTTPS URL of the deployment's Open Inference Protocol endpoint."""
    region: pulumi.Output[str]
    """Cloud Run location of the service."""
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
        location = None
        if isinstance(spec.model_uri, str):
            location = model_location(spec.model_uri)
            require_readable(location, Cloud.GCP, MODEL_READERS[TargetKind.GCP_CLOUD_RUN])
        invokers = _checked_invokers(list(args.get("invokers", [])))
        labels, label_notes = gcp_labels(spec.labels)
        warnings = [*unlabelled, *label_notes, *self._plan.warnings]
        region = args.get("region")
        if region is None:
            region = DEFAULT_REGION
            warnings.append(f"target.region: not given; Cloud Run runs it in {DEFAULT_REGION}")
        if invokers and spec.public_endpoint:
            warnings.append("invokers: not needed, public_endpoint lets anyone call the service")

        import pulumi_gcp as gcp

        effective = self._plan.effective
        project = args.get("project")
        labels |= {"managed-by": "aideploy", "aideploy-deployment": spec.name}
        child = pulumi.ResourceOptions(parent=self)
        identity = gcp.serviceaccount.Account(
            f"{name}-identity",
            account_id=gcp_service_account_id(spec.name),
            display_name=f"aideploy deployment {spec.name}",
            project=project,
            opts=child,
        )
        if location is None or not location.public:
            grant_gcs_object_read(
                f"{name}-model-access",
                spec.model_uri,
                pulumi.Output.concat("serviceAccount:", identity.email),
                child,
            )
        # Cloud Run sets PORT itself and rejects it as a user variable.
        environment = {
            key: value for key, value in runtime_environment(spec).items() if key != "PORT"
        }
        # The token stays a Pulumi secret in the state; Cloud Run keeps variables server-side.
        token = usage_token(spec)
        if token is not None:
            environment[USAGE_TOKEN_VARIABLE] = token
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
        members: list[tuple[str, pulumi.Input[str]]] = (
            [("public-invoker", "allUsers")]
            if spec.public_endpoint
            else [(f"invoker-{index}", member) for index, member in enumerate(invokers)]
        )
        for role, member in members:
            gcp.cloudrunv2.ServiceIamMember(
                f"{name}-{role}",
                name=service.name,
                location=region,
                project=service.project,
                role="roles/run.invoker",
                member=member,
                opts=child,
            )
        self.endpoint_url = service.uri
        self.region = pulumi.Output.from_input(region)
        self.warnings = pulumi.Output.from_input(warnings)
        self.register_outputs(
            {"endpoint_url": self.endpoint_url, "region": self.region, "warnings": self.warnings}
        )
