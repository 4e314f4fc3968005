"""``ContainerAppModelDeployment``: the serving runtime as an Azure Container App.

``pulumi_azure_native`` is imported inside the constructor so that ``import aideploy_iac`` works
without the Azure extra installed.
"""

import re
from typing import TYPE_CHECKING, NotRequired

import pulumi

from aideploy.errors import InputError
from aideploy.schema import Cloud
from aideploy_iac.args import MODEL_URI_SCHEMES, DeploymentArgs, model_uri_parts, resolve_spec
from aideploy_iac.policies import TargetPlan, plan_container_apps, requests_per_instance
from aideploy_iac.runtime_contract import (
    HEALTH_LIVE_PATH,
    HEALTH_READY_PATH,
    SERVING_PORT,
    runtime_environment,
)

if TYPE_CHECKING:
    from pulumi_azure_native.app import ContainerAppProbeArgsDict

__all__ = ["ContainerAppDeploymentArgs", "ContainerAppModelDeployment"]

DEFAULT_REGION = "eastus"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
_APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")


class ContainerAppDeploymentArgs(DeploymentArgs):
    """Arguments of a deployment on Azure Container Apps."""

    region: NotRequired[str]
    """Azure location (default eastus)."""
    resource_group_name: NotRequired[pulumi.Input[str]]
    """Resource group to create the app in (default: a new one)."""
    environment_id: NotRequired[pulumi.Input[str]]
    """Container Apps environment to run in (default: a new consumption environment)."""
    model_storage_account_id: NotRequired[pulumi.Input[str]]
    """Resource id of the model's storage account; the app's identity gets read access to the container."""


def _blob_container_scope(account_id: str, model_uri: str) -> str:
    account_container, _ = model_uri_parts(model_uri, MODEL_URI_SCHEMES[Cloud.AZURE])
    container = account_container.split("/", 1)[1]
    return f"{account_id}/blobServices/default/containers/{container}"


def _probe(kind: str, path: str, *, period: int, failures: int) -> "ContainerAppProbeArgsDict":
    return {
        "type": kind,
        "http_get": {"path": path, "port": SERVING_PORT, "scheme": "HTTP"},
        "period_seconds": period,
        "failure_threshold": failures,
    }


class ContainerAppModelDeployment(pulumi.ComponentResource):
    """A model served by Azure Container Apps with an HTTP scale rule and scale-to-zero."""

    endpoint_url: pulumi.Output[str]
    """HTTPS URL of the deployment's Open Inference Protocol endpoint."""
    warnings: pulumi.Output[list[str]]
    """Each requested policy Container Apps cannot honour, and what it does instead."""

    _plan: TargetPlan

    @property
    def plan(self) -> TargetPlan:
        """What the target makes of each policy field (effective values and warnings)."""
        return self._plan

    def __init__(
        self,
        name: str,
        args: ContainerAppDeploymentArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("aideploy:index:ContainerAppModelDeployment", name, None, opts)
        spec, unlabelled = resolve_spec(name, args)
        self._plan = plan_container_apps(spec)
        if not _APP_NAME.match(spec.name):
            raise InputError(
                f"deployment_name: {spec.name!r} is not a valid Azure Container Apps name; allowed: "
                "2-32 lowercase letters, digits or '-', starting with a letter"
            )
        if isinstance(spec.model_uri, str):
            model_uri_parts(spec.model_uri, MODEL_URI_SCHEMES[Cloud.AZURE])
        warnings = [*unlabelled, *self._plan.warnings]

        import pulumi_azure_native as azure

        effective = self._plan.effective
        location = args.get("region", DEFAULT_REGION)
        tags = {**spec.labels, "managed-by": "aideploy", "aideploy-deployment": spec.name}
        child = pulumi.ResourceOptions(parent=self)
        group_name = args.get("resource_group_name")
        if group_name is None:
            group = azure.resources.ResourceGroup(
                f"{name}-group", location=location, tags=tags, opts=child
            )
            group_name = group.name
        environment_id = args.get("environment_id")
        if environment_id is None:
            environment = azure.app.ManagedEnvironment(
                f"{name}-environment",
                resource_group_name=group_name,
                location=location,
                tags=tags,
                opts=child,
            )
            environment_id = environment.id
        identity = azure.managedidentity.UserAssignedIdentity(
            f"{name}-identity",
            resource_group_name=group_name,
            location=location,
            tags=tags,
            opts=child,
        )
        account_id = args.get("model_storage_account_id")
        if account_id is not None:
            azure.authorization.RoleAssignment(
                f"{name}-model-access",
                principal_id=identity.principal_id,
                principal_type="ServicePrincipal",
                role_definition_id=(
                    f"/providers/Microsoft.Authorization/roleDefinitions/{STORAGE_BLOB_DATA_READER}"
                ),
                scope=pulumi.Output.all(account_id, spec.model_uri).apply(
                    lambda values: _blob_container_scope(values[0], values[1])
                ),
                opts=child,
            )
        else:
            warnings.append(
                "model_storage_account_id: not given, so the app's identity was granted no read "
                "access to the model; grant it 'Storage Blob Data Reader' on the model's container"
            )
        environment_variables: list[azure.app.EnvironmentVarArgsDict] = [
            {"name": key, "value": value} for key, value in runtime_environment(spec).items()
        ]
        # DefaultAzureCredential in the runtime picks the user-assigned identity by client id.
        environment_variables.append({"name": "AZURE_CLIENT_ID", "value": identity.client_id})
        identity_config: azure.app.ManagedServiceIdentityArgsDict = {
            "type": "UserAssigned",
            "user_assigned_identities": [identity.id],
        }
        configuration: azure.app.ConfigurationArgsDict = {
            "active_revisions_mode": "Single",
            "ingress": {
                # Hibernated: reachable only inside the environment, so nothing wakes it.
                "external": spec.public_endpoint and not spec.hibernated,
                "target_port": SERVING_PORT,
                "transport": "auto",
                "allow_insecure": False,
            },
        }
        template: azure.app.TemplateArgsDict = {
            "containers": [
                {
                    "name": "server",
                    "image": spec.image,
                    "env": environment_variables,
                    "resources": {
                        "cpu": float(spec.resources.cpu_cores),
                        "memory": effective.memory,
                    },
                    "probes": [
                        _probe("Startup", HEALTH_READY_PATH, period=5, failures=60),
                        _probe("Readiness", HEALTH_READY_PATH, period=5, failures=3),
                        _probe("Liveness", HEALTH_LIVE_PATH, period=10, failures=3),
                    ],
                }
            ],
            "scale": {
                "min_replicas": 0 if spec.hibernated else effective.min_instances,
                "max_replicas": effective.max_instances,
                "cooldown_period": effective.hibernation_idle_timeout or 300,
                "rules": [
                    {
                        "name": "http-requests",
                        "http": {
                            "metadata": {
                                "concurrentRequests": str(
                                    requests_per_instance(spec.resources.cpu_cores)
                                )
                            }
                        },
                    },
                    {
                        "name": "cpu-utilization",
                        "custom": {
                            "type": "cpu",
                            "metadata": {
                                "type": "Utilization",
                                "value": str(spec.scaling.target_cpu_utilization),
                            },
                        },
                    },
                ],
            },
        }
        app = azure.app.ContainerApp(
            f"{name}-app",
            container_app_name=spec.name,
            resource_group_name=group_name,
            location=location,
            managed_environment_id=environment_id,
            identity=identity_config,
            configuration=configuration,
            template=template,
            tags=tags,
            opts=child,
        )
        self.endpoint_url = app.configuration.apply(
            lambda configuration: (
                f"https://{configuration.ingress.fqdn}"
                if configuration and configuration.ingress and configuration.ingress.fqdn
                else ""
            )
        )
        self.warnings = pulumi.Output.from_input(warnings)
        self.register_outputs({"endpoint_url": self.endpoint_url, "warnings": self.warnings})
