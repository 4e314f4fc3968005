"""The runner interface: what the deployment jobs ask of an engine, whichever it is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aideploy.errors import AideployError
from aideploy.schema import Cloud, Deployment, Target


class RunnerUnavailableError(AideployError):
    """The engine a deployment needs is missing here (the API answers 503 with this line)."""


@dataclass(frozen=True)
class RunnerEvent:
    """One step of an operation as the engine reported it (resource progress, logs, outputs)."""

    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[RunnerEvent], None]
"""Receives events; runners may call it from worker threads (it must be thread-safe)."""

IdleCallback = Callable[[str], Awaitable[None]]
"""Told the id of a deployment the runner hibernated by itself after its idle timeout."""

CrashCallback = Callable[[str, str, bool], Awaitable[None]]
"""Told (deployment id, what happened, whether it runs again) when a deployment's server died
and the runner restarted it, or gave up after too many restarts."""


@dataclass(frozen=True)
class DeploymentPlan:
    """Everything a runner needs to make one deployment exist as described."""

    deployment: Deployment
    """The desired state; ``deployment.target`` is ``None`` only when the program places it
    (``multi_cloud_enabled`` without a target)."""
    stack_name: str
    artifact_uri: str
    """Where the model artifact lives in the artifact store (a path or an object-store URL);
    empty for a deletion whose model is gone (destroying needs no artifact)."""
    artifact_path: Path | None
    """A local copy of the artifact, for the local target (``None`` for the clouds, which read
    ``artifact_uri`` themselves, and for deletions)."""
    hibernated: bool = False
    """Desired: scaled to zero (hibernated) rather than serving."""
    runtime: dict[str, Any] = field(default_factory=dict)
    """What the runner recorded at its last apply (stack name, local port...)."""
    after_interruption: bool = False
    """An earlier operation on this deployment may have died mid-way (this is a resumed
    attempt, or the deployment had failed). A deployment runs one operation at a time, so an
    engine lock such an operation left on the stack is stale and may be cleared."""


@dataclass(frozen=True)
class ApplyOutcome:
    endpoint: str | None
    runtime: dict[str, Any] = field(default_factory=dict)
    """Stored with the deployment and handed back in the next plan."""


class Runner(Protocol):
    async def start(self, on_idle: IdleCallback, on_crash: CrashCallback | None = None) -> None:
        """Begin any background supervision (the local runner watches its processes)."""

    def check_available(self) -> None:
        """Raise :class:`RunnerUnavailableError` naming what to install if this runner cannot work
        on this host; called before anything is created."""

    async def apply(self, plan: DeploymentPlan, on_event: EventSink) -> ApplyOutcome:
        """Create or update the deployment so it matches the plan (idempotent)."""

    async def destroy(self, plan: DeploymentPlan, on_event: EventSink) -> None:
        """Remove everything the deployment created, then its stack (idempotent)."""

    async def status(self, plan: DeploymentPlan) -> str:
        """A short word for what the engine sees now: ``running``, ``stopped``, ``absent``."""

    async def close(self) -> None:
        """Release what the runner holds (child processes stay managed by the next start)."""


class RunnerSet:
    """Which runner serves which cloud: ``local`` has its own, the clouds share one."""

    def __init__(self, local: Runner, cloud: Runner) -> None:
        self.local = local
        self.cloud = cloud

    def for_target(self, target: Target | None) -> Runner:
        """``None``: the program picks the cloud (multi-cloud placement), so a cloud runner."""
        return self.local if target is not None and target.cloud is Cloud.LOCAL else self.cloud

    async def start(self, on_idle: IdleCallback, on_crash: CrashCallback | None = None) -> None:
        await self.local.start(on_idle, on_crash)
        if self.cloud is not self.local:
            await self.cloud.start(on_idle)

    async def close(self) -> None:
        await self.local.close()
        if self.cloud is not self.local:
            await self.cloud.close()
