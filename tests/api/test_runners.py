"""Runner parts that need no API: the local runner's idle hibernation, the Automation API
runner's event translation and error diagnosis, and its real path when the CLI exists."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from pulumi import automation as auto

from aideploy.schema import (
    CostOptimizationPolicy,
    Deployment,
    DeploymentStatus,
    Target,
    utc_now,
)
from aideploy.settings import Settings
from api.runners import local as local_module
from api.runners.automation import AutomationRunner, PulumiOperationError, engine_event
from api.runners.base import DeploymentPlan, RunnerEvent
from api.runners.local import LocalRunner


@pytest.fixture
def database_url() -> None:
    """No API and no database here."""
    return


def plan_for(model: Path, cloud: str = "local", **policy: object) -> DeploymentPlan:
    now = utc_now()
    deployment = Deployment(
        id="0123456789abcdef",
        name="tiny",
        model_id="m",
        status=DeploymentStatus.CREATING,
        created_at=now,
        updated_at=now,
        target=Target(cloud=cloud),
        deployment_type="kubernetes" if cloud != "local" else "serverless",
        cost_optimization_policy=CostOptimizationPolicy(**policy),
    )
    return DeploymentPlan(
        deployment=deployment,
        stack_name="tiny-01234567",
        artifact_uri=str(model),
        artifact_path=model,
    )


async def test_idle_local_deployment_stops_and_reports(
    settings: Settings, onnx_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_module, "_METRICS_EVERY_SECONDS", 0.1)
    monkeypatch.setattr(local_module, "_SUPERVISE_EVERY_SECONDS", 0.1)
    idle: list[str] = []

    async def on_idle(deployment_id: str) -> None:
        idle.append(deployment_id)

    runner = LocalRunner(settings)
    await runner.start(on_idle)
    plan = plan_for(onnx_model, hibernation_enabled=True, hibernation_idle_timeout=60)
    events: list[RunnerEvent] = []
    try:
        outcome = await runner.apply(plan, events.append)
        assert outcome.endpoint is not None
        assert await runner.status(plan) == "running"
        runner._served[plan.deployment.id].idle_timeout = 0.5  # the schema's minimum is 60 s
        deadline = time.monotonic() + 20
        while not idle and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert idle == [plan.deployment.id]
        assert await runner.status(plan) == "stopped"
        assert [event.kind for event in events][-1] == "ready"
    finally:
        await runner.close()


def test_engine_events_become_runner_events() -> None:
    metadata = auto.events.StepEventMetadata(
        op=auto.events.OpType.CREATE,
        urn="urn:pulumi:dev::aideploy::aideploy:index:ModelDeployment::tiny",
        type="aideploy:index:ModelDeployment",
        provider="",
    )
    pre = engine_event(
        auto.EngineEvent(
            sequence=1,
            timestamp=0,
            resource_pre_event=auto.events.ResourcePreEvent(metadata=metadata),
        )
    )
    assert pre == RunnerEvent(
        "resource-pre",
        "create aideploy:index:ModelDeployment tiny",
        {"op": "create", "type": "aideploy:index:ModelDeployment", "urn": metadata.urn},
    )
    diagnostic = engine_event(
        auto.EngineEvent(
            sequence=2,
            timestamp=0,
            diagnostic_event=auto.events.DiagnosticEvent(
                message="image: not an ECR image\n", color="never", severity="error"
            ),
        )
    )
    assert diagnostic is not None
    assert diagnostic.kind == "diagnostic-error"
    assert diagnostic.message == "image: not an ECR image"
    assert engine_event(auto.EngineEvent(sequence=3, timestamp=0)) is None


def test_without_the_cli_the_runner_says_how_to_install_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    runner = AutomationRunner(settings.model_copy(update={"pulumi_passphrase": "x"}))
    with pytest.raises(Exception, match=r"get\.pulumi\.com"):
        runner.check_available()


@pytest.mark.pulumi_cli
async def test_real_engine_reports_program_errors(settings: Settings, onnx_model: Path) -> None:
    if shutil.which("pulumi") is None:
        pytest.skip("the Pulumi CLI is not on PATH")
    runner = AutomationRunner(settings.model_copy(update={"pulumi_passphrase": "test"}))
    runner.check_available()
    events: list[RunnerEvent] = []
    # No serving image is configured: the program fails before any provider is called.
    with pytest.raises(PulumiOperationError, match="image"):
        await runner.apply(plan_for(onnx_model, cloud="aws"), events.append)
    assert any(event.kind.startswith("diagnostic") for event in events)


async def test_a_crashed_server_is_restarted(
    settings: Settings, onnx_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_module, "_SUPERVISE_EVERY_SECONDS", 0.1)

    async def ignore(_deployment_id: str) -> None:
        return None

    runner = LocalRunner(settings)
    await runner.start(ignore)
    plan = plan_for(onnx_model)
    try:
        await runner.apply(plan, lambda _event: None)
        served = runner._served[plan.deployment.id]
        first = served.processes[0]  # the default policy asks for several instances
        first.kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            served.running and first.pid not in {process.pid for process in served.processes}
        ):
            await asyncio.sleep(0.1)
        assert served.running
        assert served.restarts == 1
    finally:
        await runner.close()
