"""The mock-engine runner: the same program function as the Automation API runner, run under
Pulumi's mock engine (``aideploy_iac.synth``). Nothing is created anywhere; every resource the
program registers becomes an event, and the stack's exports are the outcome. Tests inject it
to drive status transitions, conflicts, events and failures; it is also a dry run.
"""

from __future__ import annotations

import asyncio

import anyio.to_thread

from aideploy.settings import Settings
from aideploy_iac.synth import SynthResult, synthesize
from api.runners.base import (
    ApplyOutcome,
    CrashCallback,
    DeploymentPlan,
    EventSink,
    IdleCallback,
    RunnerEvent,
)
from api.runners.program import endpoint_from_exports, program_for


class MockEngineRunner:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stacks: dict[str, SynthResult] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def check_available(self) -> None:
        """The mock engine needs no CLI and no cloud account."""

    async def start(self, on_idle: IdleCallback, on_crash: CrashCallback | None = None) -> None:
        """Nothing runs between operations under the mock engine."""

    async def apply(self, plan: DeploymentPlan, on_event: EventSink) -> ApplyOutcome:
        async with self._locks.setdefault(plan.stack_name, asyncio.Lock()):
            result = await anyio.to_thread.run_sync(self._synthesize, plan)
            for resource in result.resources:
                on_event(
                    RunnerEvent(
                        "resource-done",
                        f"create {resource.type} {resource.name}",
                        {
                            "type": resource.type,
                            "name": resource.name,
                            "parent": resource.parent_name,
                        },
                    )
                )
            self._stacks[plan.stack_name] = result
        return ApplyOutcome(endpoint=endpoint_from_exports(result.exports, plan.deployment.name))

    async def destroy(self, plan: DeploymentPlan, on_event: EventSink) -> None:
        async with self._locks.setdefault(plan.stack_name, asyncio.Lock()):
            # Built as the Automation API runner builds it for `pulumi destroy` (which never
            # runs it), so a plan that real destroy could not take fails here too.
            program_for(plan, self._settings, destroying=True)
            result = self._stacks.pop(plan.stack_name, None)
            for resource in reversed(result.resources if result else ()):
                on_event(RunnerEvent("resource-done", f"delete {resource.type} {resource.name}"))
            on_event(RunnerEvent("stack-removed", f"stack {plan.stack_name} removed"))

    async def status(self, plan: DeploymentPlan) -> str:
        return "running" if plan.stack_name in self._stacks else "absent"

    async def close(self) -> None:
        self._stacks.clear()

    def _synthesize(self, plan: DeploymentPlan) -> SynthResult:
        return synthesize(
            program_for(plan, self._settings),
            project=self._settings.pulumi_project,
            stack=plan.stack_name,
        )
