"""Running jobs: the job row is the truth; a queue only carries job ids to a worker.

The in-process queue runs jobs as asyncio tasks in the API process (blocking work goes to
threads inside the handlers). With ``settings.redis_url`` a SAQ queue on Redis carries the ids
instead, and every API replica runs a SAQ worker, so several replicas share the work.
At start-up :func:`recover_jobs` resumes jobs an earlier process left unfinished, or fails them
with a reason once they have been interrupted too often.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.errors import AideployError
from api.db.tables import JobRow
from api.errors import ApiError

if TYPE_CHECKING:
    from api.context import ApiContext

log = logging.getLogger("aideploy.api.jobs")

MAX_ATTEMPTS = 3


class JobKind(StrEnum):
    OPTIMIZE = "optimize"
    DEPLOY = "deploy"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobHandler(Protocol):
    async def run(self, context: ApiContext, job: JobRow) -> None:
        """Do the work; raise to fail the job (the message becomes the reason)."""

    async def fail(self, context: ApiContext, job: JobRow, reason: str) -> None:
        """Record on the job's subject that it failed (status ``failed`` with ``reason``)."""


HANDLERS: dict[JobKind, JobHandler] = {}


def register_handler(kind: JobKind, handler: JobHandler) -> None:
    HANDLERS[kind] = handler


def add_job(
    session: AsyncSession, kind: JobKind, owner_id: str, subject_id: str, **payload: Any
) -> JobRow:
    """A new queued job in the caller's transaction; enqueue it after the commit."""
    job = JobRow(
        owner_id=owner_id,
        kind=kind.value,
        subject_id=subject_id,
        status=JobStatus.QUEUED.value,
        payload=payload,
    )
    session.add(job)
    return job


def reason_for(exc: BaseException) -> str:
    """What a failed job tells its owner: a user error's own line, else the error type."""
    if isinstance(exc, AideployError):
        return str(exc)
    if isinstance(exc, ApiError):
        return exc.detail
    return f"internal error ({type(exc).__name__}: {exc}); the server log has the details"


async def run_job(context: ApiContext, job_id: str) -> None:
    """Run one job by id, exactly once at a time; finished jobs are skipped."""
    async with context.database.session() as session:
        job = await session.get(JobRow, job_id, with_for_update=not context.database.is_sqlite)
        if job is None or job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return
        job.status = JobStatus.RUNNING.value
        job.attempts += 1
    handler = HANDLERS[JobKind(job.kind)]
    try:
        await handler.run(context, job)
    except asyncio.CancelledError:
        log.info("job %s (%s) interrupted; it resumes at the next start-up", job.id, job.kind)
        raise
    except Exception as exc:
        if not isinstance(exc, AideployError | ApiError):
            log.exception("job %s (%s) failed", job.id, job.kind)
        await _finish(context, job, JobStatus.FAILED, reason_for(exc))
        await handler.fail(context, job, reason_for(exc))
        return
    await _finish(context, job, JobStatus.SUCCEEDED, None)


async def _finish(context: ApiContext, job: JobRow, status: JobStatus, error: str | None) -> None:
    async with context.database.session() as session:
        row = await session.get(JobRow, job.id)
        if row is not None:
            row.status = status.value
            row.error = error


async def recover_jobs(context: ApiContext) -> None:
    """Resume the jobs an earlier process left queued or running, or fail them if they keep
    being interrupted (a job that crashes the process must not crash every restart)."""
    async with context.database.session() as session:
        unfinished = list(
            await session.scalars(
                select(JobRow)
                .where(JobRow.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
                .order_by(JobRow.created_at)
            )
        )
    for job in unfinished:
        if job.attempts >= MAX_ATTEMPTS:
            reason = f"interrupted {job.attempts} times by server restarts; giving up"
            await _finish(context, job, JobStatus.FAILED, reason)
            await HANDLERS[JobKind(job.kind)].fail(context, job, reason)
            log.warning("job %s (%s) failed: %s", job.id, job.kind, reason)
        else:
            log.info("resuming job %s (%s, attempt %d)", job.id, job.kind, job.attempts + 1)
            await context.jobs.enqueue(job.id, JobKind(job.kind))


# How many jobs of each kind run at once in one API process. Optimizations are CPU-bound and
# measure latency, so one at a time keeps their measurements honest; deployment operations
# mostly wait on engines and servers.
CONCURRENCY = {JobKind.OPTIMIZE: 1, JobKind.DEPLOY: 8}


class JobQueue(Protocol):
    async def start(self, context: ApiContext) -> None: ...

    async def enqueue(self, job_id: str, kind: JobKind) -> None: ...

    async def stop(self) -> None: ...


class InProcessQueue:
    """Jobs as tasks of the API's event loop, at most :data:`CONCURRENCY` per kind."""

    def __init__(self) -> None:
        self._limits = {kind: asyncio.Semaphore(limit) for kind, limit in CONCURRENCY.items()}
        self._tasks: set[asyncio.Task[None]] = set()
        self._context: ApiContext | None = None

    async def start(self, context: ApiContext) -> None:
        self._context = context

    async def enqueue(self, job_id: str, kind: JobKind) -> None:
        assert self._context is not None, "start() the queue first"
        task = asyncio.create_task(self._run(self._context, job_id, kind), name=f"job-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, context: ApiContext, job_id: str, kind: JobKind) -> None:
        async with self._limits[kind]:
            await run_job(context, job_id)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


class SaqQueue:
    """Job ids on SAQ queues in Redis, one per job kind; every API process runs a worker per
    queue, so replicas share the work and each kind keeps its own concurrency."""

    def __init__(self, redis_url: str, prefix: str = "aideploy") -> None:
        from saq import Queue

        self._queues = {
            kind: Queue.from_url(redis_url, name=f"{prefix}-{kind.value}") for kind in JobKind
        }
        self._workers: list[asyncio.Task[None]] = []

    async def start(self, context: ApiContext) -> None:
        from saq import Worker
        from saq.types import Context

        async def run(_ctx: Context, *, job_id: str) -> None:
            await run_job(context, job_id)

        for kind, queue in self._queues.items():
            await queue.connect()
            worker = Worker(queue, functions=[("run_job", run)], concurrency=CONCURRENCY[kind])
            worker.SIGNALS = []  # the web server owns SIGINT/SIGTERM (they need the main thread)
            task = asyncio.create_task(worker.start(), name=f"saq-worker-{kind.value}")
            task.add_done_callback(_log_worker_exit)
            self._workers.append(task)

    async def enqueue(self, job_id: str, kind: JobKind) -> None:
        # The job id is the SAQ key: an id already queued or running is not enqueued twice.
        await self._queues[kind].enqueue("run_job", job_id=job_id, key=job_id, timeout=0)

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for queue in self._queues.values():
            await queue.disconnect()


def _log_worker_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the SAQ worker stopped", exc_info=task.exception())


def job_queue_for(redis_url: str | None) -> JobQueue:
    return SaqQueue(redis_url) if redis_url else InProcessQueue()
