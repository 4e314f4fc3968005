"""Runners carry deployments out: the Automation API (clouds), Pulumi's mock engine (tests,
dry runs) and the embedded local runner. The API talks to all of them through :class:`Runner`."""

from api.runners.base import (
    ApplyOutcome,
    DeploymentPlan,
    EventSink,
    Runner,
    RunnerEvent,
    RunnerSet,
    RunnerUnavailableError,
)

__all__ = [
    "ApplyOutcome",
    "DeploymentPlan",
    "EventSink",
    "Runner",
    "RunnerEvent",
    "RunnerSet",
    "RunnerUnavailableError",
]
