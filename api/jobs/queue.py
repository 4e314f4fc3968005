"""Running jobs: the job row is the truth; a queue only carries job ids to a worker.

Leases. A worker claims a job with one conditional UPDATE (the job is queued, or running with a
heartbeat older than the lease) that also counts the attempt; while the job runs, a heartbeat
keeps its ``updated_at`` fresh, and every write the worker makes afterwards names that attempt,
so a worker that lost its lease changes nothing. Whoever finds a job without a live lease offers
it again: :func:`recover_jobs` at start-up and, every half lease, the queue's sweeper. So a job
survives a worker killed mid-job (kill -9, OOM, a lost node) and a database outage that kept it
from recording its end, without waiting for a restart. A job interrupted :data:`MAX_ATTEMPTS`
times fails with a reason instead of running again (a job that crashes its worker must not
crash every restart).

The in-process queue runs jobs as asyncio tasks in the API process (blocking work goes to
threads inside the handlers). With ``settings.redis_url`` a SAQ queue on Redis carries the ids
instead, and every API replica runs a SAQ worker, so several replicas share the work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError
from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from aideploy.errors import AideployError
from aideploy.schema import utc_now
from api.db.engine import database_unreachable
from api.db.tables import JobRow
from api.errors import ApiError

if TYPE_CHECKING:
    from saq import Queue

    from api.context import ApiContext

log = logging.getLogger("aideploy.api.jobs")

MAX_ATTEMPTS = 3
LEASE_SECONDS = 60.0
"""A running job whose heartbeat is older than this is taken to have lost its worker."""


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
        """Do the work; raise to fail the job (the message becomes the reason). It may run
        again after an interruption, so it must be idempotent."""

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
    """What a failed job tells its owner: a user error's own line, else only the error type
    (an unexpected error's text can hold SQL parameters, paths or secrets)."""
    if isinstance(exc, AideployError):
        return str(exc)
    if isinstance(exc, ApiError):
        return exc.detail
    return f"internal error ({type(exc).__name__}); the server log has the details"


# --- one attempt of a job ------------------------------------------------------------------


def _without_live_lease(stale_before: datetime) -> ColumnElement[bool]:
    return or_(
        JobRow.status == JobStatus.QUEUED.value,
        and_(JobRow.status == JobStatus.RUNNING.value, JobRow.updated_at < stale_before),
    )


def _this_attempt(job: JobRow) -> ColumnElement[bool]:
    """The job row as long as this worker's attempt still holds it."""
    return and_(
        JobRow.id == job.id,
        JobRow.attempts == job.attempts,
        JobRow.status == JobStatus.RUNNING.value,
    )


async def _claim(context: ApiContext, job_id: str, stale_before: datetime) -> JobRow | None:
    """Take the job for one attempt, atomically: ``None`` when it is finished, held by a live
    worker, or out of attempts (recovery fails those)."""
    async with context.database.session() as session:
        result = await session.execute(
            update(JobRow)
            .where(
                JobRow.id == job_id,
                JobRow.attempts < MAX_ATTEMPTS,
                _without_live_lease(stale_before),
            )
            .values(
                status=JobStatus.RUNNING.value,
                attempts=JobRow.attempts + 1,
                updated_at=utc_now(),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return await session.get(JobRow, job_id)


async def _heartbeat(context: ApiContext, job: JobRow, lease_seconds: float) -> None:
    """Keep the lease while the job runs; an outage only delays it (the lease may run out,
    and another worker may then take the job over, which the fenced writes tolerate)."""
    while True:
        await asyncio.sleep(lease_seconds / 4)
        try:
            async with context.database.session() as session:
                result = await session.execute(
                    update(JobRow)
                    .where(_this_attempt(job))
                    .values(updated_at=utc_now())
                    .execution_options(synchronize_session=False)
                )
        except Exception as exc:
            log.warning("job %s: heartbeat not recorded (%s)", job.id, type(exc).__name__)
            continue
        if result.rowcount != 1:  # type: ignore[attr-defined]
            log.warning("job %s: attempt %d lost its lease to another worker", job.id, job.attempts)
            return


async def _retrying(write: Callable[[], Awaitable[None]], patience: float) -> None:
    """Run a database write, retrying with backoff while the database is unreachable, for up
    to ``patience`` seconds (then the error propagates and the lease takes over)."""
    deadline = asyncio.get_running_loop().time() + patience
    delay = 0.25
    while True:
        try:
            await write()
            return
        except Exception as exc:
            if not database_unreachable(exc) or asyncio.get_running_loop().time() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 8.0)


async def _database_reachable(context: ApiContext) -> bool:
    try:
        async with context.database.session() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


async def _finish(context: ApiContext, job: JobRow, status: JobStatus, error: str | None) -> None:
    async with context.database.session() as session:
        await session.execute(
            update(JobRow)
            .where(_this_attempt(job))
            .values(status=status.value, error=error, updated_at=utc_now())
            .execution_options(synchronize_session=False)
        )


async def _settle(
    context: ApiContext,
    handler: JobHandler,
    job: JobRow,
    reason: str | None,
    patience: float,
) -> None:
    """Record the end: the subject first, then the job row. Recovery reads the row, so a crash
    or an outage between the two runs the job again rather than losing the subject's status."""
    try:
        if reason is not None:
            await _retrying(lambda: handler.fail(context, job, reason), patience)
        status = JobStatus.SUCCEEDED if reason is None else JobStatus.FAILED
        await _retrying(lambda: _finish(context, job, status, reason), patience)
    except Exception as exc:
        if not database_unreachable(exc):
            raise
        log.warning(
            "job %s (%s): could not record its end, the database is unreachable; it runs "
            "again once its lease runs out",
            job.id,
            job.kind,
        )


async def _release(context: ApiContext, job: JobRow) -> None:
    """Hand an interrupted job back (shutdown): another worker may take it at once."""
    try:
        async with context.database.session() as session:
            await session.execute(
                update(JobRow)
                .where(_this_attempt(job))
                .values(status=JobStatus.QUEUED.value, updated_at=utc_now())
                .execution_options(synchronize_session=False)
            )
    except Exception as exc:
        log.warning("job %s: not handed back (%s); its lease runs out", job.id, type(exc).__name__)


async def run_job(
    context: ApiContext, job_id: str, *, stale_before: datetime, lease_seconds: float
) -> None:
    """Run one attempt of a job by id, if no live worker holds it; finished jobs are skipped."""
    try:
        job = await _claim(context, job_id, stale_before)
    except Exception as exc:
        if not database_unreachable(exc):
            raise
        log.warning("job %s not started: the database is unreachable; offered again later", job_id)
        return
    if job is None:
        return
    handler = HANDLERS[JobKind(job.kind)]
    heartbeat = asyncio.create_task(_heartbeat(context, job, lease_seconds))
    try:
        try:
            await handler.run(context, job)
            reason = None
        except asyncio.CancelledError:
            log.info("job %s (%s) interrupted; it is handed back to the queue", job.id, job.kind)
            await _release(context, job)
            raise
        except Exception as exc:
            if database_unreachable(exc) or not await _database_reachable(context):
                log.warning(
                    "job %s (%s): the database became unreachable (%s); it runs again once "
                    "its lease runs out",
                    job.id,
                    job.kind,
                    type(exc).__name__,
                )
                return
            if not isinstance(exc, AideployError | ApiError):
                log.exception("job %s (%s) failed", job.id, job.kind)
            reason = context.redactor(reason_for(exc))
        await _settle(context, handler, job, reason, lease_seconds)
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)  # its session is closed


async def recover_jobs(context: ApiContext) -> None:
    """Offer again every job without a live lease: running ones whose worker died or lost the
    database, queued ones nobody took within a lease (their queue entry was lost); fail those
    interrupted too often. Runs at start-up and, in every queue, every half lease."""
    stale_before = context.jobs.stale_before()
    async with context.database.session() as session:
        unfinished = list(
            await session.scalars(
                select(JobRow)
                .where(
                    JobRow.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
                    JobRow.updated_at < stale_before,
                )
                .order_by(JobRow.created_at)
            )
        )
    for job in unfinished:
        if job.attempts < MAX_ATTEMPTS:
            log.info("offering job %s (%s) again, attempt %d", job.id, job.kind, job.attempts + 1)
            await context.jobs.enqueue(job.id, JobKind(job.kind), attempt=job.attempts)
            continue
        try:
            await _give_up(context, job, stale_before)
        except Exception:  # one job's subject must not keep the others (or the API) down
            log.exception("job %s (%s): could not record that it failed", job.id, job.kind)


async def _give_up(context: ApiContext, job: JobRow, stale_before: datetime) -> None:
    reason = f"interrupted {job.attempts} times (server restarts or database outages); giving up"
    await HANDLERS[JobKind(job.kind)].fail(context, job, reason)
    async with context.database.session() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.id == job.id, _without_live_lease(stale_before))
            .values(status=JobStatus.FAILED.value, error=reason, updated_at=utc_now())
            .execution_options(synchronize_session=False)
        )
    log.warning("job %s (%s) failed: %s", job.id, job.kind, reason)


# --- queues ---------------------------------------------------------------------------------

# How many jobs of each kind run at once in one API process. Optimizations are CPU-bound and
# measure latency, so one at a time keeps their measurements honest; deployment operations
# mostly wait on engines and servers.
CONCURRENCY = {JobKind.OPTIMIZE: 1, JobKind.DEPLOY: 8}


class JobQueue(Protocol):
    async def start(self, context: ApiContext) -> None: ...

    async def enqueue(self, job_id: str, kind: JobKind, attempt: int = 0) -> None:
        """Carry the job to a worker; ``attempt`` is how many attempts it has had."""

    def stale_before(self) -> datetime:
        """A running job whose heartbeat is older than this has no live worker."""

    async def stop(self) -> None: ...


class _LeasedQueue:
    """What both queues share: attempts under a lease, the jobs this process is running, and
    the sweeper that offers again the jobs whose lease ran out."""

    def __init__(self, lease_seconds: float) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds: expected a positive number, got {lease_seconds}")
        self.lease_seconds = lease_seconds
        self._sweeper: asyncio.Task[None] | None = None

    def stale_before(self) -> datetime:
        return utc_now() - timedelta(seconds=self.lease_seconds)

    def _start_sweeper(self, context: ApiContext) -> None:
        self._sweeper = asyncio.create_task(self._sweep(context), name="job-sweeper")

    async def _sweep(self, context: ApiContext) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 2)
            try:
                await recover_jobs(context)
            except Exception as exc:
                log.warning("job sweep skipped (%s); retried next round", type(exc).__name__)

    async def _stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    async def _run(self, context: ApiContext, job_id: str) -> None:
        await run_job(
            context, job_id, stale_before=self.stale_before(), lease_seconds=self.lease_seconds
        )


class InProcessQueue(_LeasedQueue):
    """Jobs as tasks of the API's event loop, at most :data:`CONCURRENCY` per kind. Only this
    process runs them, so a job left running by an earlier process is stale at once."""

    def __init__(self, lease_seconds: float = LEASE_SECONDS) -> None:
        super().__init__(lease_seconds)
        self._limits = {kind: asyncio.Semaphore(limit) for kind, limit in CONCURRENCY.items()}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: set[str] = set()
        self._context: ApiContext | None = None
        self._started_at = utc_now()

    async def start(self, context: ApiContext) -> None:
        self._context = context
        self._started_at = utc_now()
        self._start_sweeper(context)

    def stale_before(self) -> datetime:
        return max(self._started_at, super().stale_before())

    async def enqueue(
        self,
        job_id: str,
        kind: JobKind,
        attempt: int = 0,  # noqa: ARG002 - one task per job id is the whole bookkeeping here
    ) -> None:
        assert self._context is not None, "start() the queue first"
        if job_id in self._pending:
            return  # already waiting or running here
        self._pending.add(job_id)
        task = asyncio.create_task(self._limited(self._context, job_id, kind), name=f"job-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _limited(self, context: ApiContext, job_id: str, kind: JobKind) -> None:
        try:
            async with self._limits[kind]:
                await self._run(context, job_id)
        finally:
            self._pending.discard(job_id)

    async def stop(self) -> None:
        await self._stop_sweeper()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


class SaqQueue(_LeasedQueue):
    """Job ids on SAQ queues in Redis, one per job kind; every API process runs a worker per
    queue, so replicas share the work and each kind keeps its own concurrency.

    Each attempt has its own SAQ key (``<job id>:<attempts so far>``): an attempt already
    queued is not queued twice, and a worker that died leaves an entry SAQ never frees (no
    timeout, no SAQ heartbeat: jobs run for minutes), which recovery aborts so it can queue the
    next attempt. ``prefix`` keeps installations sharing a Redis apart."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        from saq import Queue

        super().__init__(lease_seconds)
        self._queues: dict[JobKind, Queue] = {
            kind: Queue.from_url(redis_url, name=f"{prefix}-{kind.value}") for kind in JobKind
        }
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight: set[str] = set()

    async def start(self, context: ApiContext) -> None:
        from saq import Worker
        from saq.types import Context

        async def run(_ctx: Context, *, job_id: str) -> None:
            self._in_flight.add(job_id)
            try:
                await self._run(context, job_id)
            finally:
                self._in_flight.discard(job_id)

        for kind, queue in self._queues.items():
            await queue.connect()
            worker = Worker(queue, functions=[("run_job", run)], concurrency=CONCURRENCY[kind])
            worker.SIGNALS = []  # the web server owns SIGINT/SIGTERM (they need the main thread)
            task = asyncio.create_task(worker.start(), name=f"saq-worker-{kind.value}")
            task.add_done_callback(_log_worker_exit)
            self._workers.append(task)
        self._start_sweeper(context)

    async def enqueue(self, job_id: str, kind: JobKind, attempt: int = 0) -> None:
        """Queue the attempt; with Redis unreachable the job stays queued in the database,
        and the sweeper offers it again once its lease has passed."""
        if job_id in self._in_flight:
            return  # this process runs it now (its heartbeat is only late)
        queue = self._queues[kind]
        try:
            if attempt > 0:
                await _abort_dead_entry(queue, f"{job_id}:{attempt - 1}")
            await queue.enqueue("run_job", job_id=job_id, key=f"{job_id}:{attempt}", timeout=0)
        except (RedisError, OSError) as exc:
            log.warning("job %s not queued, Redis is unreachable (%s)", job_id, type(exc).__name__)

    async def stop(self) -> None:
        await self._stop_sweeper()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for queue in self._queues.values():
            try:
                await queue.disconnect()
            except (RedisError, OSError) as exc:  # Redis is gone: nothing left to close
                log.warning("SAQ queue %s not disconnected (%s)", queue.name, type(exc).__name__)


async def _abort_dead_entry(queue: Queue, key: str) -> None:
    """The SAQ entry of an attempt whose worker died stays active for good; the job's lease
    ran out, so nobody works on it: finish it as aborted."""
    from saq.job import Status

    entry = await queue.job(key)
    if entry is not None and entry.status is Status.ACTIVE:
        await queue.finish(entry, Status.ABORTED, error="its worker is gone; attempt re-queued")


def _log_worker_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the SAQ worker stopped", exc_info=task.exception())


def job_queue_for(redis_url: str | None, prefix: str) -> JobQueue:
    return SaqQueue(redis_url, prefix) if redis_url else InProcessQueue()
