"""The deployment job: carry one operation out through the deployment's runner, record the
engine's events, and land the deployment in its resulting status (or ``failed`` with why)."""

from __future__ import annotations

import asyncio
import logging

import anyio.to_thread
from sqlalchemy import delete

from aideploy.schema import Cloud, DeploymentStatus, ModelType
from api.context import ApiContext
from api.db.tables import DeploymentEventRow, DeploymentRow, JobRow
from api.deployments.service import (
    Operation,
    artifact_location,
    stack_name_for,
    to_deployment,
)
from api.errors import ApiError
from api.jobs.queue import reason_for
from api.runners.base import DeploymentPlan, RunnerEvent

log = logging.getLogger("aideploy.api.deployments")

S = DeploymentStatus


class EventRecorder:
    """Collects runner events (from any thread) and writes them to the events table in order."""

    def __init__(self, context: ApiContext, deployment_id: str, operation_id: str) -> None:
        self._context = context
        self._deployment_id = deployment_id
        self._operation_id = operation_id
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[RunnerEvent | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_all())

    def __call__(self, event: RunnerEvent) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def _write_all(self) -> None:
        finished = False
        while not finished:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            finished = None in batch
            events = [event for event in batch if event is not None]
            if events:
                try:
                    await self._write(events)
                except Exception:
                    log.exception("could not record %d deployment events", len(events))

    async def _write(self, events: list[RunnerEvent]) -> None:
        async with self._context.database.session() as session:
            session.add_all(
                DeploymentEventRow(
                    deployment_id=self._deployment_id,
                    operation_id=self._operation_id,
                    kind=event.kind,
                    message=event.message,
                    data=event.data,
                )
                for event in events
            )

    async def close(self) -> None:
        """Write what is still queued; the recorder is done afterwards."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        await self._writer


# The status a deployment has while each operation runs; the job lands its result only if the
# deployment is still there (a restore runs while it is active).
_WHILE_RUNNING = {
    Operation.CREATE: S.CREATING,
    Operation.UPDATE: S.UPDATING,
    Operation.HIBERNATE: S.HIBERNATING,
    Operation.ACTIVATE: S.ACTIVATING,
    Operation.DELETE: S.DELETING,
    Operation.RESTORE: S.ACTIVE,
}

# After a successful operation: the status it lands in (None: the deployment is gone).
_RESULT = {
    Operation.CREATE: S.ACTIVE,
    Operation.HIBERNATE: S.HIBERNATED,
    Operation.ACTIVATE: S.ACTIVE,
    Operation.RESTORE: S.ACTIVE,
    Operation.DELETE: None,
}


class DeploymentJobHandler:
    async def run(self, context: ApiContext, job: JobRow) -> None:
        operation = Operation(job.payload["operation"])
        async with context.database.session() as session:
            row = await session.get(DeploymentRow, job.subject_id)
            if row is None:
                return  # deleted meanwhile
            deployment = to_deployment(row)
            runtime = dict(row.runtime)
            stack_name = str(runtime.get("stack_name") or stack_name_for(row))
            try:
                location = await artifact_location(
                    session, row.owner_id, row.model_id, ModelType(row.model_type)
                )
            except ApiError:
                if operation is not Operation.DELETE:
                    raise
                location = ""  # the model may be gone; destroying needs no artifact
        previous = job.payload.get("previous_status")
        hibernated = operation is Operation.HIBERNATE or (
            operation is Operation.UPDATE and previous == S.HIBERNATED.value
        )
        runner = context.runners.for_target(deployment.target)
        serves_here = deployment.target is not None and deployment.target.cloud is Cloud.LOCAL
        local_path = (
            await anyio.to_thread.run_sync(context.store.local_path, location)
            if serves_here and location and operation is not Operation.DELETE
            else None
        )
        plan = DeploymentPlan(
            deployment=deployment,
            stack_name=stack_name,
            artifact_uri=location,
            artifact_path=local_path,
            hibernated=hibernated,
            runtime=runtime,
            after_interruption=job.attempts > 1 or previous == S.FAILED.value,
        )
        recorder = EventRecorder(context, row.id, job.id)
        recorder(
            RunnerEvent(
                "operation-started", f"{operation.value} started", {"attempt": job.attempts}
            )
        )
        try:
            if operation is Operation.DELETE:
                await runner.destroy(plan, recorder)
            else:
                outcome = await runner.apply(plan, recorder)
            recorder(RunnerEvent("operation-succeeded", f"{operation.value} succeeded"))
        except asyncio.CancelledError:
            recorder(RunnerEvent("operation-interrupted", f"{operation.value} interrupted"))
            raise
        except Exception as exc:
            reason = context.redactor(reason_for(exc))
            recorder(RunnerEvent("operation-failed", f"{operation.value} failed: {reason}"))
            raise
        finally:
            await recorder.close()
        async with context.database.session() as session:
            if operation is Operation.DELETE:
                await session.execute(
                    delete(DeploymentRow).where(DeploymentRow.id == job.subject_id)
                )
                return
            stored = await session.get(DeploymentRow, job.subject_id)
            if stored is None or stored.status != _WHILE_RUNNING[operation].value:
                return  # gone, or another operation took over (a hibernate during a restore)
            result = _RESULT.get(operation) or (S.HIBERNATED if hibernated else S.ACTIVE)
            stored.status = result.value
            stored.status_reason = None
            stored.endpoint = outcome.endpoint
            stored.runtime = {**runtime, **outcome.runtime, "stack_name": plan.stack_name}

    async def fail(self, context: ApiContext, job: JobRow, reason: str) -> None:
        operation = Operation(job.payload["operation"])
        async with context.database.session() as session:
            row = await session.get(DeploymentRow, job.subject_id)
            if row is not None and row.status == _WHILE_RUNNING[operation].value:
                row.status = S.FAILED.value
                row.status_reason = f"{operation.value} failed: {reason}"


async def record_crash(
    context: ApiContext, deployment_id: str, message: str, running: bool
) -> None:
    """The local runner restarted a crashed server (an event), or gave up (the deployment is
    failed with the reason, which quotes the server's last log line: masked)."""
    message = context.redactor(message)
    async with context.database.session() as session:
        row = await session.get(DeploymentRow, deployment_id)
        if row is None or row.status != S.ACTIVE.value:
            return
        if not running:
            row.status = S.FAILED.value
            row.status_reason = message
        session.add(
            DeploymentEventRow(
                deployment_id=deployment_id,
                operation_id="supervisor",
                kind="server-restarted" if running else "server-failed",
                message=message,
                data={},
            )
        )


async def hibernate_idle(context: ApiContext, deployment_id: str) -> None:
    """The local runner stopped an idle deployment by itself: record it as hibernated."""
    async with context.database.session() as session:
        row = await session.get(DeploymentRow, deployment_id)
        if row is None or row.status != S.ACTIVE.value:
            return
        row.status = S.HIBERNATED.value
        session.add(
            DeploymentEventRow(
                deployment_id=deployment_id,
                operation_id="idle",
                kind="hibernated-idle",
                message="no traffic within hibernation_idle_timeout; stopped until activated",
                data={},
            )
        )
