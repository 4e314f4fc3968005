"""``ContainerAppModelDeployment``: the serving runtime as an Azure Container App.

``pulumi_azure_native`` is imported inside the constructor so that ``import aideploy_iac`` works
without the Azure extra installed.
"""

from typing import TYPE_CHECKING, NotRequired

import pulumi

from aideploy.errors import InputError
from aideploy.schema import Cloud
from aideploy_iac.access import ACR_PULL, azure_role, grant_blob_read
from aideploy_iac.args import (
    DeploymentArgs,
    ModelLocation,
    model_location,
    require_readable,
    resolve_spec,
)
from aideploy_iac.policies import (
    CONTAINER_APPS_CONSUMPTION_ONLY_LIMIT,
    MODEL_READERS,
    TargetKind,
    TargetPlan,
    plan_container_apps,
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

if TYPE_CHECKING:
    from pulumi_azure_native.app import ContainerAppProbeArgsDict

__all__ = ["ContainerAppDeploymentArgs", "ContainerAppModelDeployment"]

DEFAULT_REGION = "eastus"
WORKLOAD_PROFILE = "Consumption"
USAGE_TOKEN_SECRET = "usage-token"  # noqa: S105 - the secret's name


class ContainerAppDeploymentArgs(DeploymentArgs):
    """Arguments of a deployment on Azure Container Apps."""

    region: NotRequired[str]
    """Azure location (default eastus)."""
    resource_group_name: NotRequired[pulumi.Input[str]]
    """Resource group to create the app in (default: a new one)."""
    environment_id: NotRequired[pulumi.Input[str]]
    """Container Apps environment to run in (default: a new workload-profiles environment)."""
    model_storage_account_id: NotRequired[pulumi.Input[str]]
    """Resource id of the model's storage account; the app's identity gets read access to the container."""
    registry_id: NotRequired[pulumi.Input[str]]
    """Resource id of the Azure Container Registry holding the image; the app's identity gets AcrPull on it."""


def _probe(kind: str, path: str, *, period: int, failures: int) -> "ContainerAppProbeArgsDict":
    return {
        "type": kind,
        "http_get": {"path": path, "port": SERVING_PORT, "scheme": "HTTP"},
        "period_seconds": period,
        "failure_threshold": failures,
    }


def _checked_location(
    model_uri: pulumi.Input[str], account_id: pulumi.Input[str] | None
) -> ModelLocation | None:
    """The model's location when known; an ``az://`` URI needs the account it lives in."""
    if not isinstance(model_uri, str):
        return None
    location = model_location(model_uri)
    require_readable(location, Cloud.AZURE, MODEL_READERS[TargetKind.AZURE_CONTAINER_APPS])
    if location.cloud is Cloud.AZURE and location.account is None and account_id is None:
        raise InputError(
            f"model_uri: {model_uri!r} names no storage account; give model_storage_account_id "
            "or the https://<account>.blob.core.windows.net/<container>/<blob> form"
        )
    return location


def _registry_server(image: pulumi.Input[str]) -> pulumi.Input[str] | None:
    """The registry host of an Azure Container Registry image (``<name>.azurecr.io``)."""
    if not isinstance(image, str):
        return pulumi.Output.concat(image).apply(lambda value: value.split("/", 1)[0])
    host = image.split("/", 1)[0]
    return host if host.endswith(".azurecr.io") else None


class ContainerAppModelDeployment(pulumi.ComponentResource):
    """A model served by Azure Container Apps with an HTTP scale rule and scale-to-zero."""

    endpoint_url: pulumi.Output[str]
    """HTTPS URL of the deployment's Open Inference Protocol endpoint."""
    region: pulumi.Output[str]
    """Azure location of the app."""
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
        account_id = args.get("model_storage_account_id")
        location = _checked_location(spec.model_uri, account_id)
        warnings = [*unlabelled, *self._plan.warnings]
        region = args.get("region")
        if region is None:
            region = DEFAULT_REGION
            warnings.append(
                f"target.region: not given; the app and its resources go to {DEFAULT_REGION}"
            )
        environment_id = args.get("environment_id")
        cpu_limit, memory_limit = CONTAINER_APPS_CONSUMPTION_ONLY_LIMIT
        if environment_id is not None and (
            spec.resources.cpu_cores > cpu_limit or spec.resources.memory_bytes > memory_limit
        ):
            warnings.append(
                f"resource_requirements: cpu {spec.resources.cpu} / memory "
                f"{spec.resources.memory} needs a workload-profiles environment (its Consumption "
                "profile); a Consumption-only environment_id rejects sizes above 2 vCPU / 4Gi"
            )

        import pulumi_azure_native as azure

        effective = self._plan.effective
        tags = {**spec.labels, "managed-by": "aideploy", "aideploy-deployment": spec.name}
        child = pulumi.ResourceOptions(parent=self)
        group_name = args.get("resource_group_name")
        if group_name is None:
            group = azure.resources.ResourceGroup(
                f"{name}-group", location=region, tags=tags, opts=child
            )
            group_name = group.name
        if environment_id is None:
            environment = azure.app.ManagedEnvironment(
                f"{name}-environment",
                resource_group_name=group_name,
                location=region,
                # A workload-profiles environment: its Consumption profile runs up to 4 vCPU / 8Gi.
                workload_profiles=[
                    {"name": WORKLOAD_PROFILE, "workload_profile_type": WORKLOAD_PROFILE}
                ],
                tags=tags,
                opts=child,
            )
            environment_id = environment.id
        identity = azure.managedidentity.UserAssignedIdentity(
            f"{name}-identity",
            resource_group_name=group_name,
            location=region,
            tags=tags,
            opts=child,
        )
        grants: list[pulumi.Resource] = []
        needs_grant = location is None or not location.public  # a public URL needs none
        if needs_grant and account_id is not None:
            grants.append(
                grant_blob_read(
                    f"{name}-model-access", identity.principal_id, account_id, spec.model_uri, child
                )
            )
        elif needs_grant:
            warnings.append(
                "model_storage_account_id: not given, so the app's identity was granted no read "
                "access to the model; grant it 'Storage Blob Data Reader' on the model's container"
            )
        registries: list[azure.app.RegistryCredentialsArgsDict] = []
        server = _registry_server(spec.image)
        registry_id = args.get("registry_id")
        if server is not None:
            registries.append({"server": server, "identity": identity.id})
            if registry_id is not None:
                grants.append(
                    azure.authorization.RoleAssignment(
                        f"{name}-registry-access",
                        principal_id=identity.principal_id,
                        principal_type="ServicePrincipal",
                        role_definition_id=azure_role(ACR_PULL),
                        scope=registry_id,
                        opts=child,
                    )
                )
            else:
                warnings.append(
                    "registry_id: not given, so the app's identity was granted no AcrPull on "
                    f"{spec.image}'s registry; give the registry's resource id (the platform "
                    "exports it) or grant AcrPull yourself"
                )
        environment_variables: list[azure.app.EnvironmentVarArgsDict] = [
            {"name": key, "value": value}
            for key, value in runtime_environment(spec, storage_account_id=account_id).items()
        ]
        # DefaultAzureCredential in the runtime picks the user-assigned identity by client id.
        environment_variables.append({"name": "AZURE_CLIENT_ID", "value": identity.client_id})
        secrets: list[azure.app.SecretArgsDict] = []
        token = usage_token(spec)
        if token is not None:
            secrets.append({"name": USAGE_TOKEN_SECRET, "value": token})
            environment_variables.append(
                {"name": USAGE_TOKEN_VARIABLE, "secret_ref": USAGE_TOKEN_SECRET}
            )
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
            "registries": registries,
            "secrets": secrets,
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
            location=region,
            managed_environment_id=environment_id,
            identity=identity_config,
            configuration=configuration,
            template=template,
            tags=tags,
            # The first revision pulls the image and reads the model with these grants.
            opts=pulumi.ResourceOptions(parent=self, depends_on=grants),
        )
        self.endpoint_url = app.configuration.apply(
            lambda configuration: (
                f"https://{configuration.ingress.fqdn}"
                if configuration and configuration.ingress and configuration.ingress.fqdn
                else ""
            )
        )
        self.region = pulumi.Output.from_input(region)
        self.warnings = pulumi.Output.from_input(warnings)
        self.register_outputs(
            {"endpoint_url": self.endpoint_url, "region": self.region, "warnings": self.warnings}
        )
