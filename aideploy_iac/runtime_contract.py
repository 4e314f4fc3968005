"""The contract between deployments and the serving runtime container they run.

Every target starts the same image (``serving/``) and configures it only through these
environment variables, so the runtime behaves the same on Kubernetes, Lambda, Cloud Run and
Container Apps. The runtime downloads the model from ``AIDEPLOY_SERVE_MODEL_URI`` itself (with
the pod's or function's cloud identity), which is why no target needs an init container. Azure
Blob models are handed over as ``az://<container>/<blob>`` with ``AZURE_STORAGE_ACCOUNT_NAME``,
so the runtime's adlfs filesystem authenticates with the workload's managed identity (picked by
``AZURE_CLIENT_ID``) instead of fetching the https URL anonymously.
"""

from __future__ import annotations

from typing import Any

import pulumi

from aideploy.schema import Cloud
from aideploy_iac.args import DeploymentSpec, model_location, storage_account_name
from aideploy_iac.policies import requests_per_instance

__all__ = [
    "AZURE_STORAGE_ACCOUNT_VARIABLE",
    "HEALTH_LIVE_PATH",
    "HEALTH_READY_PATH",
    "MODEL_DIR",
    "SERVING_PORT",
    "USAGE_TOKEN_VARIABLE",
    "runtime_environment",
    "usage_token",
]

SERVING_PORT = 8080
HEALTH_LIVE_PATH = "/v2/health/live"
HEALTH_READY_PATH = "/v2/health/ready"
MODEL_DIR = "/models"
"""Writable directory the runtime downloads the model into."""
USAGE_TOKEN_VARIABLE = "AIDEPLOY_SERVE_USAGE_TOKEN"  # noqa: S105 - a variable name
"""Each target passes the usage token its own secret way (Kubernetes Secret, ACA secret)."""
AZURE_STORAGE_ACCOUNT_VARIABLE = "AZURE_STORAGE_ACCOUNT_NAME"


def _runtime_model_uri(model_uri: pulumi.Input[str]) -> pulumi.Input[str]:
    if isinstance(model_uri, str):
        return model_location(model_uri).runtime_uri
    return pulumi.Output.concat(model_uri).apply(lambda uri: model_location(uri).runtime_uri)


def _storage_account(
    model_uri: pulumi.Input[str], account_id: pulumi.Input[str] | None
) -> pulumi.Input[str] | None:
    """The Blob account the runtime reads from: named by the URI, else by the account id."""
    if isinstance(model_uri, str):
        location = model_location(model_uri)
        if location.cloud is not Cloud.AZURE:
            return None
        if location.account is not None:
            return location.account
    if account_id is None or isinstance(account_id, str):
        return storage_account_name(account_id) if account_id else None
    return pulumi.Output.concat(account_id).apply(storage_account_name)


def runtime_environment(
    spec: DeploymentSpec, *, storage_account_id: pulumi.Input[str] | None = None
) -> dict[str, Any]:
    """The runtime's settings but the usage token (see :func:`usage_token`); values may be
    ``pulumi.Input``. ``storage_account_id`` names the Blob account of an ``az://`` model."""
    environment: dict[str, Any] = {
        "PORT": str(SERVING_PORT),
        "AIDEPLOY_SERVE_MODEL_NAME": spec.name,
        "AIDEPLOY_SERVE_MODEL_URI": _runtime_model_uri(spec.model_uri),
        "AIDEPLOY_SERVE_MODEL_FORMAT": spec.model_format.value,
        "AIDEPLOY_SERVE_MODEL_DIR": MODEL_DIR,
        "AIDEPLOY_SERVE_REQUEST_TIMEOUT": str(spec.resources.timeout),
        "AIDEPLOY_SERVE_MAX_CONCURRENCY": str(requests_per_instance(spec.resources.cpu_cores)),
    }
    account = _storage_account(spec.model_uri, storage_account_id)
    if account is not None:
        environment[AZURE_STORAGE_ACCOUNT_VARIABLE] = account
    if usage_token(spec) is not None:
        environment["AIDEPLOY_SERVE_USAGE_URL"] = spec.usage_url
    return environment


def usage_token(spec: DeploymentSpec) -> pulumi.Output[str] | None:
    """The deployment-scoped usage token (a Pulumi secret), when usage reporting is on."""
    if spec.usage_url is None or spec.usage_token is None:
        return None
    return pulumi.Output.secret(spec.usage_token)
