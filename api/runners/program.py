"""The one place a :class:`DeploymentPlan` becomes the ``stacks`` program the engines run.

Both the Automation API runner and the mock-engine runner call :func:`program_for`, so what
the tests synthesize is exactly what a real ``pulumi up`` deploys: ``stacks.programs.
deployments`` with a one-deployment :class:`~stacks.config.DeploymentsConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aideploy.schema import DeploymentCreate, Framework
from aideploy.settings import Settings
from api.runners.base import DeploymentPlan

_PYTORCH_SUFFIXES = (".pt", ".pt2", ".pth")


def program_for(plan: DeploymentPlan, settings: Settings) -> Callable[[], None]:
    """An inline Pulumi program deploying the plan's one deployment."""
    from aideploy_iac.document import DeploymentDocument
    from stacks.config import DeploymentsConfig
    from stacks.programs import deployments

    spec = plan.deployment.model_dump(include=set(DeploymentCreate.model_fields))
    document = DeploymentDocument.model_validate(
        {
            **spec,
            "model_uri": plan.artifact_uri,
            "model_format": (
                Framework.PYTORCH
                if plan.artifact_uri.endswith(_PYTORCH_SUFFIXES)
                else Framework.ONNX
            ),
            "hibernated": plan.hibernated,
            **_usage_reporting(plan, settings),
        }
    )
    config = DeploymentsConfig(image=settings.serving_image, deployments=[document])

    def program() -> None:
        deployments(config)

    return program


def _usage_reporting(plan: DeploymentPlan, settings: Settings) -> dict[str, str]:
    """Cloud deployments report usage only when the API has an address they can reach
    (``api_public_url``): its own listening address is usually private to this host."""
    if not settings.api_public_url:
        return {}
    from api.analytics.tokens import usage_environment

    environment = usage_environment(settings, plan.deployment.id)
    return {
        "usage_url": environment["AIDEPLOY_SERVE_USAGE_URL"],
        "usage_token": environment["AIDEPLOY_SERVE_USAGE_TOKEN"],
    }


def endpoint_from_exports(exports: Mapping[str, Any], deployment_name: str) -> str | None:
    """The endpoint URL the program exported for the deployment, if it has one."""
    exported = exports.get(deployment_name)
    endpoint = exported.get("endpoint_url") if isinstance(exported, Mapping) else None
    return str(endpoint) if endpoint else None
