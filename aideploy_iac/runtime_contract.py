"""The contract between deployments and the serving runtime container they run.

Every target starts the same image (``serving/``) and configures it only through these
environment variables, so the runtime behaves the same on Kubernetes, Lambda, Cloud Run and
Container Apps. The runtime downloads the model from ``AIDEPLOY_SERVE_MODEL_URI`` itself (with
the pod's or function's cloud identity), which is why no target needs an init container.
"""

from __future__ import annotations

from typing import Any

import pulumi

from aideploy_iac.args import DeploymentSpec
from aideploy_iac.policies import requests_per_instance

__all__ = [
    "HEALTH_LIVE_PATH",
    "HEALTH_READY_PATH",
    "MODEL_DIR",
    "SERVING_PORT",
    "runtime_environment",
]

SERVING_PORT = 8080
HEALTH_LIVE_PATH = "/v2/health/live"
HEALTH_READY_PATH = "/v2/health/ready"
MODEL_DIR = "/models"
"""Writable directory the runtime downloads the model into."""


def runtime_environment(spec: DeploymentSpec) -> dict[str, Any]:
    """The runtime's settings; values may be ``pulumi.Input`` (the model URI, the usage token)."""
    usage: dict[str, Any] = {}
    if spec.usage_url is not None and spec.usage_token is not None:
        usage = {
            "AIDEPLOY_SERVE_USAGE_URL": spec.usage_url,
            "AIDEPLOY_SERVE_USAGE_TOKEN": pulumi.Output.secret(spec.usage_token),
        }
    return usage | {
        "PORT": str(SERVING_PORT),
        "AIDEPLOY_SERVE_MODEL_NAME": spec.name,
        "AIDEPLOY_SERVE_MODEL_URI": spec.model_uri,
        "AIDEPLOY_SERVE_MODEL_FORMAT": spec.model_format.value,
        "AIDEPLOY_SERVE_MODEL_DIR": MODEL_DIR,
        "AIDEPLOY_SERVE_REQUEST_TIMEOUT": str(spec.resources.timeout),
        "AIDEPLOY_SERVE_MAX_CONCURRENCY": str(requests_per_instance(spec.resources.cpu_cores)),
    }
