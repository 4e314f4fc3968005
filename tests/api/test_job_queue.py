"""Durable jobs: leases and takeover on both databases, the SAQ/Redis queue (a deployment job,
recovery of an attempt a killed worker left active, two replicas sharing the work), and a job
whose end could not be recorded during a database outage settling once the database is back."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from aideploy.schema import utc_now
from aideploy.settings import Settings
from api.app import create_app
from api.context import ApiContext
from api.db.engine import Database
from api.db.tables import DeploymentRow, JobRow, UserRow
from api.jobs import queue as queue_module
from api.jobs.queue import (
    MAX_ATTEMPTS,
    InProcessQueue,
    JobKind,
    JobQueue,
    SaqQueue,
    recover_jobs,
    run_job,
)
from api.runners.base import ApplyOutcome, DeploymentPlan, EventSink, RunnerSet
from api.runners.mock import MockEngineRunner
from tests.api.test_deployments_mock_engine import cloud_body, settle
from tests.api.test_durability import login, upload_model, wait_for
from tests.hardening.proxy import TcpProxy

Client = AsyncTestClient[Litestar]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Cloud deployments under the mock engine: an object store (fsspec's in-memory one, shared
    by every app of this process, like replicas share S3) and a serving image."""
    return settings.model_copy(
        update={
            "serving_image": "registry.example.com/aideploy/serving:1",
            "artifact_store_url": f"memory://aideploy-tests/{uuid.uuid4().hex}",
        }
    )


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A queue prefix of this test's own on the test Redis (reachable: ``redis_url`` fails in CI
    otherwise); its keys are removed afterwards."""
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    prefix = f"aideploy-test-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        for pattern in (f"saq:{prefix}-*", f"saq:job:{prefix}-*"):
            async for key in client.scan_iter(match=pattern):
                await client.delete(key)
        await client.aclose()


def api_with(settings: Settings, runner: MockEngineRunner, jobs: JobQueue) -> Litestar:
    """The API with ``runner`` for every target and ``jobs`` as its queue (a replica)."""
    app = create_app(settings, runners=RunnerSet(local=runner, cloud=runner))
    app.state.context.jobs = jobs
    return app


class GatedRunner(MockEngineRunner):
    """The mock engine, held in ``apply`` until the gate opens; notes which replica applied.
    (A threading event: each test client runs its app on an event loop of its own.)"""

    def __init__(self, settings: Settings, replica: str, gate: threading.Event) -> None:
        super().__init__(settings)
        self.replica = replica
        self.gate = gate
        self.applies: list[str] = []

    async def apply(self, plan: DeploymentPlan, on_event: EventSink) -> ApplyOutcome:
        self.applies.append(plan.deployment.id)
        while not self.gate.is_set():
            await asyncio.sleep(0.02)
        return await super().apply(plan, on_event)


async def settled_jobs(settings: Settings, subject_id: str) -> list[JobRow]:
    """The subject's jobs once none is queued or running (a job records its own end a moment
    after its subject's status; call it while the API runs)."""
    database = Database(settings.effective_database_url)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            async with database.session() as session:
                rows = list(
                    await session.scalars(
                        select(JobRow)
                        .where(JobRow.subject_id == subject_id)
                        .order_by(JobRow.created_at)
                    )
                )
            done = all(row.status in ("succeeded", "failed") for row in rows)
            if done or asyncio.get_running_loop().time() > deadline:
                return rows
            await asyncio.sleep(0.05)
    finally:
        await database.dispose()


async def wait_until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(0.05)


# --- leases, on both databases ------------------------------------------------------------


class CountingHandler:
    """Stands for a job handler: counts its runs, optionally holds each one for a while."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.runs = 0
        self.failures: list[str] = []

    async def run(self, _context: ApiContext, _job: JobRow) -> None:
        self.runs += 1
        await asyncio.sleep(self.hold)

    async def fail(self, _context: ApiContext, _job: JobRow, reason: str) -> None:
        self.failures.append(reason)


class RecordingQueue:
    """A queue that only records what recovery offers it, with a lease of ``lease`` seconds."""

    def __init__(self, lease: float) -> None:
        self.lease = lease
        self.offered: list[tuple[str, int]] = []

    def stale_before(self) -> Any:
        return utc_now() - timedelta(seconds=self.lease)

    async def enqueue(self, job_id: str, kind: JobKind, attempt: int = 0) -> None:
        assert kind is JobKind.DEPLOY
        self.offered.append((job_id, attempt))


@pytest.fixture
async def job_context(settings: Settings) -> AsyncIterator[tuple[ApiContext, RecordingQueue]]:
    database = Database(settings.effective_database_url)
    await database.migrate()
    jobs = RecordingQueue(lease=60)
    try:
        yield cast(ApiContext, SimpleNamespace(database=database, jobs=jobs)), jobs
    finally:
        await database.dispose()


async def seed_job(context: ApiContext, *, attempts: int, age_seconds: float) -> str:
    """A running deploy job whose last heartbeat was ``age_seconds`` ago."""
    async with context.database.session() as session:
        user = UserRow(username=f"u-{uuid.uuid4().hex[:8]}", password_hash="x")
        session.add(user)
        await session.flush()
        beat = utc_now() - timedelta(seconds=age_seconds)
        job = JobRow(
            owner_id=user.id, kind="deploy", subject_id="s", status="running",
            attempts=attempts, payload={}, created_at=beat, updated_at=beat,
        )  # fmt: skip
        session.add(job)
        await session.flush()
        return job.id


async def stored(context: ApiContext, job_id: str) -> JobRow:
    async with context.database.session() as session:
        row = await session.get(JobRow, job_id)
        assert row is not None
        return row


async def test_a_live_lease_keeps_others_off_and_a_lapsed_one_is_taken_over_once(
    job_context: tuple[ApiContext, RecordingQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, jobs = job_context
    handler = CountingHandler()
    monkeypatch.setitem(queue_module.HANDLERS, JobKind.DEPLOY, handler)
    job_id = await seed_job(context, attempts=1, age_seconds=5)

    # Its worker is alive (a heartbeat 5 s ago, the lease is 60 s): nobody takes it.
    await recover_jobs(context)
    assert jobs.offered == []
    await run_job(context, job_id, stale_before=jobs.stale_before(), lease_seconds=60)
    assert handler.runs == 0

    # The heartbeat stopped more than a lease ago: offered as the next attempt, taken once.
    async with context.database.session() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(updated_at=utc_now() - timedelta(seconds=120))
        )
    await recover_jobs(context)
    assert jobs.offered == [(job_id, 1)]
    stale_before = jobs.stale_before()
    await asyncio.gather(
        *(run_job(context, job_id, stale_before=stale_before, lease_seconds=60) for _ in range(4))
    )
    assert handler.runs == 1
    row = await stored(context, job_id)
    assert (row.status, row.attempts, row.error) == ("succeeded", 2, None)


async def test_the_heartbeat_keeps_a_long_job_leased(
    job_context: tuple[ApiContext, RecordingQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, jobs = job_context
    jobs.lease = 1.0
    handler = CountingHandler(hold=2.5)  # several leases long
    monkeypatch.setitem(queue_module.HANDLERS, JobKind.DEPLOY, handler)
    job_id = await seed_job(context, attempts=0, age_seconds=0)
    async with context.database.session() as session:
        await session.execute(update(JobRow).where(JobRow.id == job_id).values(status="queued"))
    running = asyncio.create_task(
        run_job(context, job_id, stale_before=jobs.stale_before(), lease_seconds=jobs.lease)
    )
    while not running.done():
        await asyncio.sleep(0.1)
        if (await stored(context, job_id)).status == "running":
            await recover_jobs(context)
    await running
    assert jobs.offered == []  # never stale while it ran
    assert handler.runs == 1
    assert (await stored(context, job_id)).status == "succeeded"


async def test_a_worker_that_lost_its_lease_records_nothing(
    job_context: tuple[ApiContext, RecordingQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, jobs = job_context
    handler = CountingHandler(hold=0.5)
    monkeypatch.setitem(queue_module.HANDLERS, JobKind.DEPLOY, handler)
    job_id = await seed_job(context, attempts=1, age_seconds=120)
    running = asyncio.create_task(
        run_job(context, job_id, stale_before=jobs.stale_before(), lease_seconds=60)
    )
    await wait_until(lambda: handler.runs == 1, "the first attempt")
    async with context.database.session() as session:  # another worker took it over
        await session.execute(update(JobRow).where(JobRow.id == job_id).values(attempts=3))
    await running
    row = await stored(context, job_id)
    assert (row.status, row.attempts) == ("running", 3)  # the taker's attempt, untouched


async def test_jobs_interrupted_too_often_fail_with_a_reason(
    job_context: tuple[ApiContext, RecordingQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, jobs = job_context
    handler = CountingHandler()
    monkeypatch.setitem(queue_module.HANDLERS, JobKind.DEPLOY, handler)
    job_id = await seed_job(context, attempts=MAX_ATTEMPTS, age_seconds=120)
    await recover_jobs(context)
    assert jobs.offered == []
    reason = f"interrupted {MAX_ATTEMPTS} times (server restarts or database outages); giving up"
    assert handler.failures == [reason]
    row = await stored(context, job_id)
    assert (row.status, row.error) == ("failed", reason)


# --- the SAQ queue on Redis ----------------------------------------------------------------


async def test_with_redis_unreachable_a_job_waits_in_the_database(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request that queued it still succeeds; the sweeper offers it again later."""
    queue = SaqQueue("redis://127.0.0.1:1/0", "unreachable")
    try:
        await queue.enqueue("a-job", JobKind.DEPLOY)
    finally:
        await queue.stop()
    assert "job a-job not queued, Redis is unreachable" in caplog.text


@pytest.mark.redis
async def test_a_deployment_job_runs_through_saq(
    settings: Settings, onnx_model: Path, redis_prefix: str, redis_url: str
) -> None:
    from saq import Queue
    from saq.job import Status

    app = api_with(settings, MockEngineRunner(settings), SaqQueue(redis_url, redis_prefix))
    async with AsyncTestClient(app=app) as client:
        headers = await login(client)
        model_id = await upload_model(client, headers, onnx_model)
        created = await client.post("/deployments", json=cloud_body(model_id), headers=headers)
        assert created.status_code == 202, created.text
        deployment_id = created.json()["id"]
        assert (await settle(client, headers, deployment_id))["status"] == "active"
        [job] = await settled_jobs(settings, deployment_id)
    assert (job.status, job.attempts) == ("succeeded", 1)
    queue = Queue.from_url(redis_url, name=f"{redis_prefix}-deploy")
    try:
        entry = await queue.job(f"{job.id}:0")
        assert entry is not None
        assert entry.status is Status.COMPLETE
    finally:
        await queue.disconnect()


@pytest.mark.redis
async def test_an_optimization_job_runs_through_saq(
    settings: Settings, onnx_model: Path, redis_prefix: str, redis_url: str
) -> None:
    app = api_with(settings, MockEngineRunner(settings), SaqQueue(redis_url, redis_prefix))
    async with AsyncTestClient(app=app) as client:
        headers = await login(client)
        model_id = await upload_model(client, headers, onnx_model)
        response = await client.post(
            f"/models/{model_id}/optimize", json={"method": "graph"}, headers=headers
        )
        assert response.status_code == 202, response.text
        rows = await wait_for(
            client,
            headers,
            f"/models/{model_id}/optimized",
            lambda rows: rows and rows[0]["status"] != "optimizing",
        )
        assert rows[0]["status"] == "completed", rows
        [job] = await settled_jobs(settings, rows[0]["id"])
    assert (job.kind, job.status, job.attempts) == ("optimize", "succeeded", 1)


@pytest.mark.redis
async def test_an_attempt_a_killed_worker_left_active_in_saq_is_recovered(
    settings: Settings, onnx_model: Path, redis_prefix: str, redis_url: str
) -> None:
    from saq import Queue
    from saq.job import Status
    from saq.utils import now

    # An active deployment...
    runner = MockEngineRunner(settings)
    async with AsyncTestClient(app=api_with(settings, runner, InProcessQueue())) as client:
        headers = await login(client)
        model_id = await upload_model(client, headers, onnx_model)
        created = await client.post("/deployments", json=cloud_body(model_id), headers=headers)
        deployment_id = created.json()["id"]
        assert (await settle(client, headers, deployment_id))["status"] == "active"

    # ...whose update a worker took, then was killed -9: the rows and the SAQ entry stay.
    database = Database(settings.effective_database_url)
    try:
        async with database.session() as session:
            row = await session.get(DeploymentRow, deployment_id)
            assert row is not None
            row.status = "updating"
            beat = utc_now() - timedelta(hours=1)
            job = JobRow(
                owner_id=row.owner_id, kind="deploy", subject_id=row.id, status="running",
                attempts=1, payload={"operation": "update", "previous_status": "active"},
                created_at=beat, updated_at=beat,
            )  # fmt: skip
            session.add(job)
            await session.flush()
            job_id = job.id
    finally:
        await database.dispose()
    crashed = SaqQueue(redis_url, redis_prefix)
    await crashed.enqueue(job_id, JobKind.DEPLOY)  # as the API queued it
    await crashed.stop()
    queue = Queue.from_url(redis_url, name=f"{redis_prefix}-deploy")
    try:
        taken = await queue.dequeue()
        assert taken is not None
        taken.started, taken.attempts = now(), 1
        await taken.update(status=Status.ACTIVE)  # as saq.Worker.process does, then dies
        # SAQ refuses that key again for good: the next attempt needs a key of its own.
        assert await queue.enqueue("run_job", job_id=job_id, key=taken.key) is None

        # A replica starts: the lease ran out, so it takes the job over.
        app = api_with(settings, runner, SaqQueue(redis_url, redis_prefix))
        async with AsyncTestClient(app=app) as client:
            headers = await login(client)
            active = await settle(client, headers, deployment_id)
            assert active["status"] == "active", active
            jobs = await settled_jobs(settings, deployment_id)
        [job] = [row for row in jobs if row.id == job_id]
        assert (job.status, job.attempts) == ("succeeded", 2)
        dead = await queue.job(taken.key)
        assert dead is not None
        assert dead.status is Status.ABORTED
        assert await queue.count("active") == 0
        assert await queue.count("incomplete") == 0
    finally:
        await queue.disconnect()


@pytest.mark.redis
async def test_two_replicas_share_the_work(
    settings: Settings, onnx_model: Path, redis_prefix: str, redis_url: str
) -> None:
    """Ten deployments created on replica A: A's eight deployment slots fill up, held by the
    gate, so the rest can only run on replica B; each job runs exactly once."""
    gate = threading.Event()
    runners = [GatedRunner(settings, name, gate) for name in ("a", "b")]
    apps = [api_with(settings, runner, SaqQueue(redis_url, redis_prefix)) for runner in runners]
    async with AsyncTestClient(app=apps[0]) as first, AsyncTestClient(app=apps[1]):
        headers = await login(first)
        model_id = await upload_model(first, headers, onnx_model)
        ids = []
        for index in range(10):
            body = cloud_body(model_id, name=f"shared-{index}")
            created = await first.post("/deployments", json=body, headers=headers)
            assert created.status_code == 202, created.text
            ids.append(created.json()["id"])
        await wait_until(lambda: all(runner.applies for runner in runners), "work on both replicas")
        gate.set()
        for deployment_id in ids:
            assert (await settle(first, headers, deployment_id))["status"] == "active"
    assert sorted(runners[0].applies + runners[1].applies) == sorted(ids)


# --- a database outage while a job runs ----------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_job_that_could_not_record_its_end_settles_once_the_database_is_back(
    settings: Settings, onnx_model: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The deployment is created while PostgreSQL (behind a proxy) is up; it goes away while
    the engine works, so the job cannot record the result. Once it is back, the job runs again
    (its lease ran out) and the deployment lands active: no restart needed."""
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    url = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    through_proxy = settings.model_copy(update={"database_url": url})
    gate = threading.Event()
    runner = GatedRunner(through_proxy, "only", gate)
    app = api_with(through_proxy, runner, InProcessQueue(lease_seconds=2))
    try:
        async with AsyncTestClient(app=app) as client:
            headers = await login(client)
            model_id = await upload_model(client, headers, onnx_model)
            created = await client.post("/deployments", json=cloud_body(model_id), headers=headers)
            deployment_id = created.json()["id"]
            await wait_until(lambda: runner.applies, "the engine's start")

            proxy.stop()
            gate.set()  # the engine finishes while the database is unreachable
            await wait_until(
                lambda: "the database became unreachable" in caplog.text,
                "the job's end, unrecorded",
            )
            await asyncio.sleep(3)  # past the lease; the sweeps fail meanwhile
            assert len(runner.applies) == 1
            proxy.start()

            active = await settle(client, headers, deployment_id)
            assert active["status"] == "active", active
            [job] = await settled_jobs(settings, deployment_id)
    finally:
        proxy.stop()
    assert (job.status, job.attempts) == ("succeeded", 2)
    assert len(runner.applies) == 2  # the create ran again: apply is idempotent
