"""The Automation API runner: one Pulumi stack per deployment running the same program
function as ``stacks/`` inline. The only module that imports ``pulumi.automation``.

- The workspace is built in :meth:`AutomationRunner._stack` only: project settings with the
  state backend (a file backend under the data dir unless ``pulumi_backend_url``), the
  passphrase secrets provider from ``pulumi_passphrase``.
- up/destroy block, so they run in a worker thread; one lock per stack serializes operations.
- Structured engine events become :class:`RunnerEvent` s; the CLI's own output is logged
  (never echoed to clients, it can hold secrets).
- Without the Pulumi CLI, :meth:`check_available` refuses at once, before anything exists.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
from pulumi import automation as auto

from aideploy.errors import AideployError
from aideploy.settings import Settings
from api.runners.base import (
    ApplyOutcome,
    CrashCallback,
    DeploymentPlan,
    EventSink,
    IdleCallback,
    RunnerEvent,
    RunnerUnavailableError,
)
from api.runners.program import program_for

log = logging.getLogger("aideploy.api.pulumi")

INSTALL_HINT = (
    "cloud deployments need the Pulumi CLI, which is not installed on the API host: install it "
    "(curl -fsSL https://get.pulumi.com | sh, or see https://www.pulumi.com/docs/install/) "
    "and restart the API; target.cloud 'local' works without it"
)


class PulumiOperationError(AideployError):
    """A Pulumi operation failed; the message is the engine's diagnostic, not the CLI log."""


def engine_event(event: auto.EngineEvent) -> RunnerEvent | None:
    """The parts of an engine event worth recording, as plain data."""
    if event.resource_pre_event is not None:
        meta = event.resource_pre_event.metadata
        return RunnerEvent(
            "resource-pre",
            f"{meta.op.value} {meta.type} {meta.urn.rsplit('::', 1)[-1]}",
            {"op": meta.op.value, "type": meta.type, "urn": meta.urn},
        )
    if event.res_outputs_event is not None:
        meta = event.res_outputs_event.metadata
        return RunnerEvent(
            "resource-done",
            f"{meta.op.value} {meta.type} {meta.urn.rsplit('::', 1)[-1]} done",
            {"op": meta.op.value, "type": meta.type, "urn": meta.urn},
        )
    if event.res_op_failed_event is not None:
        meta = event.res_op_failed_event.metadata
        return RunnerEvent(
            "resource-failed",
            f"{meta.op.value} {meta.type} {meta.urn.rsplit('::', 1)[-1]} failed",
            {"op": meta.op.value, "type": meta.type, "urn": meta.urn},
        )
    if event.diagnostic_event is not None and not event.diagnostic_event.ephemeral:
        diagnostic = event.diagnostic_event
        return RunnerEvent(
            f"diagnostic-{diagnostic.severity}",
            diagnostic.message.strip(),
            {"urn": diagnostic.urn},
        )
    if event.summary_event is not None:
        summary = event.summary_event
        changes = {str(op): count for op, count in (summary.resource_changes or {}).items()}
        return RunnerEvent(
            "summary",
            f"finished in {summary.duration_seconds} s: {changes}",
            {"resource_changes": changes, "duration_seconds": summary.duration_seconds},
        )
    return None


def _pulumi_on_path() -> bool:
    return (
        shutil.which("pulumi") is not None or (Path.home() / ".pulumi" / "bin" / "pulumi").is_file()
    )


class AutomationRunner:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._locks: dict[str, asyncio.Lock] = {}

    def check_available(self) -> None:
        if not _pulumi_on_path():
            raise RunnerUnavailableError(INSTALL_HINT)
        if self._settings.pulumi_passphrase is None:
            raise RunnerUnavailableError(
                "cloud deployments need pulumi_passphrase (AIDEPLOY_PULUMI_PASSPHRASE) to "
                "encrypt stack secrets; set it and restart the API"
            )

    async def start(self, on_idle: IdleCallback, on_crash: CrashCallback | None = None) -> None:
        """Clouds scale to zero by themselves; there is nothing to supervise here."""

    async def apply(self, plan: DeploymentPlan, on_event: EventSink) -> ApplyOutcome:
        async with self._lock(plan.stack_name):
            outputs = await anyio.to_thread.run_sync(self._up, plan, on_event)
        endpoint = outputs.get("endpoint")
        return ApplyOutcome(
            endpoint=str(endpoint) if endpoint else None,
            runtime={
                "outputs": {key: value for key, value in outputs.items() if key != "endpoint"}
            },
        )

    async def destroy(self, plan: DeploymentPlan, on_event: EventSink) -> None:
        async with self._lock(plan.stack_name):
            await anyio.to_thread.run_sync(self._destroy, plan, on_event)

    async def status(self, plan: DeploymentPlan) -> str:
        stacks = await anyio.to_thread.run_sync(self._list_stacks)
        return "running" if plan.stack_name in stacks else "absent"

    async def close(self) -> None:
        """Operations in flight finish in their threads; nothing is held between them."""

    def _lock(self, stack_name: str) -> asyncio.Lock:
        return self._locks.setdefault(stack_name, asyncio.Lock())

    # --- blocking parts, run in worker threads ----------------------------------------------

    def _workspace_options(self) -> auto.LocalWorkspaceOptions:
        settings = self._settings
        backend = settings.effective_pulumi_backend_url
        if backend.startswith("file://"):
            Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        passphrase = settings.pulumi_passphrase
        return auto.LocalWorkspaceOptions(
            project_settings=auto.ProjectSettings(
                name=settings.pulumi_project,
                runtime="python",
                backend=auto.ProjectBackend(url=backend),
            ),
            secrets_provider="passphrase",
            env_vars={
                "PULUMI_CONFIG_PASSPHRASE": passphrase.get_secret_value() if passphrase else "",
                "PULUMI_SKIP_UPDATE_CHECK": "true",
            },
        )

    def _stack(self, plan: DeploymentPlan) -> auto.Stack:
        return auto.create_or_select_stack(
            stack_name=plan.stack_name,
            project_name=self._settings.pulumi_project,
            program=program_for(plan, self._settings),
            opts=self._workspace_options(),
        )

    def _up(self, plan: DeploymentPlan, on_event: EventSink) -> dict[str, Any]:
        stack = self._stack(plan)
        try:
            result = stack.up(
                color="never",
                refresh=True,  # reconcile drift (a scaled-by-hand service) before changing it
                show_secrets=False,
                on_output=_cli_logger(plan.stack_name),
                on_error=_cli_logger(plan.stack_name),
                on_event=lambda event: _forward(event, on_event),
            )
        except auto.CommandError as exc:
            log.warning("pulumi up of %s failed: %s", plan.stack_name, exc)
            raise PulumiOperationError(_diagnosis(exc)) from None
        return {key: output.value for key, output in result.outputs.items()}

    def _destroy(self, plan: DeploymentPlan, on_event: EventSink) -> None:
        stack = self._stack(plan)
        try:
            stack.destroy(
                color="never",
                refresh=True,
                remove=True,  # the stack goes with its resources
                on_output=_cli_logger(plan.stack_name),
                on_error=_cli_logger(plan.stack_name),
                on_event=lambda event: _forward(event, on_event),
            )
        except auto.CommandError as exc:
            log.warning("pulumi destroy of %s failed: %s", plan.stack_name, exc)
            raise PulumiOperationError(_diagnosis(exc)) from None
        on_event(RunnerEvent("stack-removed", f"stack {plan.stack_name} removed"))

    def _list_stacks(self) -> set[str]:
        options = self._workspace_options()
        workspace = auto.LocalWorkspace(
            project_settings=options.project_settings, env_vars=options.env_vars
        )
        return {summary.name for summary in workspace.list_stacks()}


def _cli_logger(stack_name: str) -> Callable[[str], None]:
    """The CLI's own output goes to the server log only: it may show secrets and paths."""

    def log_line(line: str) -> None:
        log.info("[%s] %s", stack_name, line.rstrip())

    return log_line


def _forward(event: auto.EngineEvent, on_event: EventSink) -> None:
    recorded = engine_event(event)
    if recorded is not None:
        on_event(recorded)


def _diagnosis(exc: auto.CommandError) -> str:
    """The engine's error lines from stderr, without the CLI's banner and the full log."""
    lines = [line.strip() for line in str(exc).splitlines()]
    errors = [line for line in lines if line.startswith(("error:", "Error:")) or " error: " in line]
    return "; ".join(errors[-3:]) or "pulumi failed; the server log has the details"
