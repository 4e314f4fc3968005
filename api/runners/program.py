"""The one place a :class:`DeploymentPlan` becomes the ``stacks`` program the engines run.

Both the Automation API runner and the mock-engine runner call :func:`program_for`, so what
the tests synthesize is exactly what a real ``pulumi up`` would deploy.
"""

from __future__ import annotations

from collections.abc import Callable

from aideploy.settings import Settings
from api.runners.base import DeploymentPlan


def program_for(plan: DeploymentPlan, settings: Settings) -> Callable[[], None]:
    """An inline Pulumi program deploying the plan's one deployment."""

    def program() -> None:
        from stacks.programs import deployments

        deployments(plan, settings)  # adapted to the stacks config type once it lands

    return program
