"""The Automation API runner: one Pulumi stack per deployment running the same program
function as ``stacks/`` inline. The only module that imports ``pulumi.automation``.

- The workspace is built in :meth:`AutomationRunner._workspace_options` only: the Pulumi CLI
  that :meth:`~AutomationRunner.check_available` found (handed to the SDK, so both run the same
  binary), project settings with the state backend (a file backend under the data dir unless
  ``pulumi_backend_url``), the passphrase secrets provider from ``pulumi_passphrase``, and a
  work dir per stack under the data dir (removed with the stack).
- up/destroy block, so they run in a worker thread; one lock per stack serializes operations.
- A lock left on the stack by an operation that died mid-way (a killed API) is cleared with
  ``pulumi cancel`` when the plan says an earlier operation was interrupted, then the operation
  runs again; pending operations in the state are reconciled by the refresh every operation
  makes.
- Structured engine events become :class:`RunnerEvent` s. The CLI's own output goes to the
  server log only, with secret values masked; clients see the engine's error lines, masked too.
- Without the Pulumi CLI, :meth:`~AutomationRunner.check_available` refuses at once, before
  anything exists, and an operation (a delete) fails with the same install hint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from pulumi import automation as auto
from pydantic import SecretStr

from aideploy.errors import AideployError
from aideploy.settings import Settings, child_process_environment
from api.runners.base import (
    ApplyOutcome,
    CrashCallback,
    DeploymentPlan,
    EventSink,
    IdleCallback,
    RunnerEvent,
    RunnerUnavailableError,
)
from api.runners.program import program_for, usage_reporting
from api.security import Redactor

log = logging.getLogger("aideploy.api.pulumi")

INSTALL_HINT = (
    "cloud deployments need the Pulumi CLI, which is not installed on the API host: install it "
    "(curl -fsSL https://get.pulumi.com | sh, or see https://www.pulumi.com/docs/install/) "
    "and restart the API; target.cloud 'local' works without it"
)

T = TypeVar("T")


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


# Environment variables whose values are credentials the CLI or its providers may read (more
# than the API's own redactor knows by name: any provider's token or key).
_CREDENTIAL_NAME = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSPHRASE|CREDENTIAL|PRIVATE|ACCESS_KEY|API_KEY|CLIENT_KEY|"
    r"CONNECTION_STRING|SAS_KEY",
    re.IGNORECASE,
)


def _find_pulumi() -> auto.PulumiCommand:
    """The Pulumi CLI: on PATH, else where its installer puts it (``~/.pulumi``). The SDK gets
    this very command, so what the check finds is what the operations run."""
    roots: list[str | None] = [None] if shutil.which("pulumi") else []
    installed = Path.home() / ".pulumi"
    if (installed / "bin" / "pulumi").is_file():
        roots.append(str(installed))
    for root in roots:
        try:
            return auto.PulumiCommand(root=root)
        except auto.InvalidVersionError as exc:
            raise RunnerUnavailableError(
                f"cloud deployments cannot use the Pulumi CLI on the API host ({exc}): install "
                "a 3.x release (see https://www.pulumi.com/docs/install/) and restart the API"
            ) from None
        except (OSError, subprocess.CalledProcessError):
            continue  # not executable, or broken: try the next place
    raise RunnerUnavailableError(INSTALL_HINT)


@dataclasses.dataclass(frozen=True)
class _Hooks:
    """The callbacks every operation hands the CLI."""

    on_output: Callable[[str], None]
    on_event: Callable[[auto.EngineEvent], None]


class AutomationRunner:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        self._command: auto.PulumiCommand | None = None
        self._command_lock = threading.Lock()

    def check_available(self) -> None:
        self._pulumi()
        self._passphrase()

    async def start(
        self,
        on_idle: IdleCallback,  # noqa: ARG002 - the Runner protocol's signature
        on_crash: CrashCallback | None = None,  # noqa: ARG002
    ) -> None:
        """Clouds scale to zero by themselves; nothing to supervise. Finds the CLI now, in a
        thread, so the first request's availability check does not run ``pulumi version``."""
        try:
            await anyio.to_thread.run_sync(self._pulumi)
        except RunnerUnavailableError as exc:
            log.info("cloud deployments unavailable: %s", exc)

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
        async with self._lock(plan.stack_name):
            stacks = await anyio.to_thread.run_sync(self._list_stacks, plan)
        return "running" if plan.stack_name in stacks else "absent"

    async def close(self) -> None:
        """Operations in flight finish in their threads; nothing is held between them."""

    def _lock(self, stack_name: str) -> asyncio.Lock:
        return self._locks.setdefault(stack_name, asyncio.Lock())

    def _passphrase(self) -> str:
        passphrase = self._settings.pulumi_passphrase
        if passphrase is None:
            raise RunnerUnavailableError(
                "cloud deployments need pulumi_passphrase (AIDEPLOY_PULUMI_PASSPHRASE) to "
                "encrypt stack secrets; set it and restart the API"
            )
        return passphrase.get_secret_value()

    def _pulumi(self) -> auto.PulumiCommand:
        """The CLI, found once (a failed search is repeated: it may be installed meanwhile)."""
        with self._command_lock:
            if self._command is None:
                self._command = _find_pulumi()
            return self._command

    # --- blocking parts, run in worker threads ----------------------------------------------

    def _work_dir(self, stack_name: str) -> Path:
        return self._settings.data_dir / "pulumi-work" / stack_name

    def _workspace_options(self, plan: DeploymentPlan) -> auto.LocalWorkspaceOptions:
        settings = self._settings
        backend = settings.effective_pulumi_backend_url
        if backend.startswith("file://"):
            Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        work_dir = self._work_dir(plan.stack_name)
        work_dir.mkdir(parents=True, exist_ok=True)
        return auto.LocalWorkspaceOptions(
            work_dir=str(work_dir),
            pulumi_command=self._pulumi(),
            project_settings=auto.ProjectSettings(
                name=settings.pulumi_project,
                runtime="python",
                backend=auto.ProjectBackend(url=backend),
            ),
            secrets_provider="passphrase",
            env_vars={
                "PULUMI_CONFIG_PASSPHRASE": self._passphrase(),
                "PULUMI_SKIP_UPDATE_CHECK": "true",
            },
        )

    def _redactor(self, plan: DeploymentPlan, env_vars: Mapping[str, str]) -> Redactor:
        """The secrets the CLI could print: the API's own, the credentials in the CLI's
        environment, and the deployment's usage token."""
        settings = self._settings
        secrets = [
            value.get_secret_value() for _, value in settings if isinstance(value, SecretStr)
        ]
        secrets += [
            value
            for name, value in child_process_environment(env_vars).items()
            if _CREDENTIAL_NAME.search(name)
        ]
        secrets.append(usage_reporting(plan, settings).get("usage_token", ""))
        return Redactor(secrets)

    def _operate(
        self,
        operation: str,
        plan: DeploymentPlan,
        on_event: EventSink,
        program: Callable[[], None],
        run: Callable[[auto.Stack, _Hooks], T],
    ) -> T:
        """One CLI operation on the plan's stack: output logged and redacted, events forwarded,
        a stale lock cleared once, errors reduced to the engine's diagnosis."""
        options = self._workspace_options(plan)
        redact = self._redactor(plan, options.env_vars or {})

        def log_line(line: str) -> None:
            log.info("[%s] %s", plan.stack_name, redact(line.rstrip()))

        def forward(event: auto.EngineEvent) -> None:
            recorded = engine_event(event)
            if recorded is not None:
                on_event(dataclasses.replace(recorded, message=redact(recorded.message)))

        hooks = _Hooks(on_output=log_line, on_event=forward)
        try:
            stack = auto.create_or_select_stack(
                stack_name=plan.stack_name,
                project_name=self._settings.pulumi_project,
                program=program,
                opts=options,
            )
            try:
                return run(stack, hooks)
            except auto.ConcurrentUpdateError:
                if not plan.after_interruption:
                    raise
                log.warning("[%s] clearing the lock an interrupted operation left", plan.stack_name)
                stack.cancel()
                on_event(
                    RunnerEvent(
                        "stale-lock-cleared",
                        f"stack {plan.stack_name} was locked by an interrupted operation; "
                        "lock cleared",
                    )
                )
                return run(stack, hooks)
        except auto.ConcurrentUpdateError:
            raise PulumiOperationError(
                f"stack {plan.stack_name} is locked by another Pulumi operation; retry once it "
                "has ended"
            ) from None
        except auto.CommandError as exc:
            diagnosis = redact(_diagnosis(exc))
            log.warning("pulumi %s of %s failed: %s", operation, plan.stack_name, diagnosis)
            raise PulumiOperationError(diagnosis) from None
        except FileNotFoundError:
            raise RunnerUnavailableError(INSTALL_HINT) from None  # removed since it was found

    def _up(self, plan: DeploymentPlan, on_event: EventSink) -> dict[str, Any]:
        result = self._operate(
            "up",
            plan,
            on_event,
            program_for(plan, self._settings),
            lambda stack, hooks: stack.up(
                color="never",
                refresh=True,  # reconcile drift (a scaled-by-hand service) before changing it
                show_secrets=False,
                on_output=hooks.on_output,
                on_error=hooks.on_output,
                on_event=hooks.on_event,
            ),
        )
        return {key: output.value for key, output in result.outputs.items()}

    def _destroy(self, plan: DeploymentPlan, on_event: EventSink) -> None:
        self._operate(
            "destroy",
            plan,
            on_event,
            program_for(plan, self._settings, destroying=True),
            lambda stack, hooks: stack.destroy(
                color="never",
                refresh=True,
                remove=True,  # the stack goes with its resources
                show_secrets=False,
                on_output=hooks.on_output,
                on_error=hooks.on_output,
                on_event=hooks.on_event,
            ),
        )
        shutil.rmtree(self._work_dir(plan.stack_name), ignore_errors=True)
        on_event(RunnerEvent("stack-removed", f"stack {plan.stack_name} removed"))

    def _list_stacks(self, plan: DeploymentPlan) -> set[str]:
        workspace = auto.LocalWorkspace(**vars(self._workspace_options(plan)))
        stacks = {summary.name for summary in workspace.list_stacks()}
        if plan.stack_name not in stacks:
            shutil.rmtree(self._work_dir(plan.stack_name), ignore_errors=True)
        return stacks


def _diagnosis(exc: auto.CommandError) -> str:
    """The engine's error lines from stderr, without the CLI's banner and the full log."""
    lines = [line.strip() for line in str(exc).splitlines()]
    errors = [line for line in lines if line.startswith(("error:", "Error:")) or " error: " in line]
    return "; ".join(errors[-3:]) or "pulumi failed; the server log has the details"
