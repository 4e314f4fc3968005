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

# Stands for the model of a deployment being destroyed after its model was deleted: `pulumi
# destroy` works from the stack's state and never runs the program, which only has to exist.
MODEL_GONE_URI = "model-deleted://not-needed-to-destroy"


def program_for(
    plan: DeploymentPlan, settings: Settings, *, destroying: bool = False
) -> Callable[[], None]:
    """An inline Pulumi program deploying the plan's one deployment (``destroying``: for a
    destroy, which needs no model, so a plan without ``artifact_uri`` is fine)."""
    from aideploy_iac.document import DeploymentDocument
    from stacks.config import DeploymentsConfig
    from stacks.programs import deployments

    model_uri = plan.artifact_uri or (MODEL_GONE_URI if destroying else "")
    spec = plan.deployment.model_dump(include=set(DeploymentCreate.model_fields))
    document = DeploymentDocument.model_validate(
        {
            **spec,
            "model_uri": model_uri,
            "model_format": Framework.ONNX,  # PyTorch uploads are served as their ONNX
            "hibernated": plan.hibernated,
            **usage_reporting(plan, settings),
        }
    )
    config = DeploymentsConfig(image=settings.serving_image, deployments=[document])

    def program() -> None:
        deployments(config)

    return program


def usage_reporting(plan: DeploymentPlan, settings: Settings) -> dict[str, str]:
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
