"""Runner parts that need no API: the local runner's idle hibernation; the Automation API
runner's CLI detection, the exact calls it makes into the SDK (against a fake stack), its
per-stack lock, stale-lock recovery, error diagnosis and redaction; and its real path when the
CLI exists."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pulumi import automation as auto
from pydantic import SecretStr

from aideploy.schema import (
    CostOptimizationPolicy,
    Deployment,
    DeploymentStatus,
    Target,
    utc_now,
)
from aideploy.settings import Settings
from api.runners import local as local_module
from api.runners.automation import (
    INSTALL_HINT,
    AutomationRunner,
    PulumiOperationError,
    engine_event,
)
from api.runners.base import DeploymentPlan, RunnerEvent, RunnerUnavailableError
from api.runners.local import LocalRunner
from api.runners.program import usage_reporting


@pytest.fixture
def database_url() -> None:
    """No API and no database here."""
    return


def plan_for(
    model: Path | None,
    cloud: str = "local",
    *,
    after_interruption: bool = False,
    **policy: object,
) -> DeploymentPlan:
    """The plan of a ``tiny`` deployment (``model`` ``None``: a deletion whose model is gone)."""
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
        artifact_uri=str(model) if model else "",
        artifact_path=model,
        after_interruption=after_interruption,
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


PASSPHRASE = "passphrase-of-the-stacks"


def fake_cli(folder: Path, version: str = "v3.150.0") -> Path:
    """A ``pulumi`` executable that only answers ``pulumi version`` (what detection runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    cli = folder / "pulumi"
    cli.write_text(f"#!/bin/sh\necho {version}\n")
    cli.chmod(0o755)
    return cli


@pytest.fixture
def bare_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A host without the Pulumi CLI: nothing on PATH, an empty home (returned)."""
    (tmp_path / "empty-path").mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def cloud_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"pulumi_passphrase": SecretStr(PASSPHRASE)})


def test_without_the_cli_the_runner_says_how_to_install_it(
    cloud_settings: Settings, bare_host: Path
) -> None:
    with pytest.raises(RunnerUnavailableError, match=r"get\.pulumi\.com"):
        AutomationRunner(cloud_settings).check_available()


def test_the_installers_cli_outside_path_is_the_one_the_sdk_runs(
    cloud_settings: Settings, bare_host: Path
) -> None:
    """``~/.pulumi/bin/pulumi`` without a PATH entry passes the check, and the workspace is
    given that very binary (the SDK would otherwise run ``pulumi`` from PATH and fail)."""
    cli = fake_cli(bare_host / ".pulumi" / "bin")
    runner = AutomationRunner(cloud_settings)
    runner.check_available()
    options = runner._workspace_options(plan_for(None, cloud="aws"))
    assert options.pulumi_command is not None
    assert options.pulumi_command.command == str(cli)


def test_a_too_old_cli_is_refused_with_the_reason(
    cloud_settings: Settings, bare_host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(fake_cli(bare_host / "bin", version="v3.0.1").parent))
    with pytest.raises(
        RunnerUnavailableError, match=r"cannot use the Pulumi CLI on the API host \(Minimum version"
    ):
        AutomationRunner(cloud_settings).check_available()


async def test_a_delete_without_the_cli_fails_with_the_install_hint(
    cloud_settings: Settings, bare_host: Path
) -> None:
    with pytest.raises(RunnerUnavailableError) as raised:
        await AutomationRunner(cloud_settings).destroy(plan_for(None, cloud="aws"), print)
    assert str(raised.value) == INSTALL_HINT


class FakeStack:
    """Stands for ``auto.Stack``: records each call's arguments, plays the CLI's callbacks,
    raises the queued errors first."""

    def __init__(self, *errors: Exception, during: Callable[[], object] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.errors = list(errors)
        self.during = during
        self.cancels = 0

    def _operate(self, name: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((name, kwargs))
        if self.during is not None:
            self.during()
        kwargs["on_output"](f"Updating (tiny-01234567) with passphrase {PASSPHRASE}")
        kwargs["on_event"](
            auto.EngineEvent(
                sequence=1,
                timestamp=0,
                diagnostic_event=auto.events.DiagnosticEvent(
                    message=f"provider says {PASSPHRASE}\n", color="never", severity="warning"
                ),
            )
        )
        if self.errors:
            raise self.errors.pop(0)

    def up(self, **kwargs: Any) -> Any:
        self._operate("up", kwargs)
        return SimpleNamespace(
            outputs={
                "endpoint": auto.OutputValue("https://tiny.example.com", secret=False),
                "region": auto.OutputValue("us-east-1", secret=False),
            }
        )

    def destroy(self, **kwargs: Any) -> None:
        self._operate("destroy", kwargs)

    def cancel(self) -> None:
        self.cancels += 1


@pytest.fixture
def sdk_calls(
    monkeypatch: pytest.MonkeyPatch, bare_host: Path
) -> tuple[list[dict[str, Any]], list[FakeStack]]:
    """``auto.create_or_select_stack`` replaced: it records its arguments and hands out the
    queued fake stacks (a fake CLI is on PATH for detection)."""
    monkeypatch.setenv("PATH", str(fake_cli(bare_host / "bin").parent))
    created: list[dict[str, Any]] = []
    stacks: list[FakeStack] = []

    def create_or_select_stack(**kwargs: Any) -> FakeStack:
        created.append(kwargs)
        return stacks.pop(0)

    monkeypatch.setattr(auto, "create_or_select_stack", create_or_select_stack)
    return created, stacks


def credential_in_environment(monkeypatch: pytest.MonkeyPatch) -> str:
    secret = "aws-secret-access-key-value"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    return secret


async def test_up_hands_the_sdk_the_workspace_and_arguments_it_needs(
    cloud_settings: Settings,
    onnx_model: Path,
    sdk_calls: tuple[list[dict[str, Any]], list[FakeStack]],
) -> None:
    created, stacks = sdk_calls
    stack = FakeStack()
    stacks.append(stack)
    runner = AutomationRunner(cloud_settings)
    events: list[RunnerEvent] = []
    outcome = await runner.apply(plan_for(onnx_model, cloud="aws"), events.append)

    assert outcome.endpoint == "https://tiny.example.com"
    assert outcome.runtime == {"outputs": {"region": "us-east-1"}}
    [call] = created
    assert set(call) == {"stack_name", "project_name", "program", "opts"}
    assert call["stack_name"] == "tiny-01234567"
    assert call["project_name"] == cloud_settings.pulumi_project
    assert callable(call["program"])
    opts: auto.LocalWorkspaceOptions = call["opts"]
    data_dir = cloud_settings.data_dir
    assert opts.work_dir == str(data_dir / "pulumi-work" / "tiny-01234567")
    assert Path(opts.work_dir).is_dir()  # not a /tmp/automation-* folder nobody removes
    assert opts.pulumi_command is runner._pulumi()
    assert opts.secrets_provider == "passphrase"
    assert opts.env_vars == {
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    assert opts.project_settings is not None
    assert opts.project_settings.name == cloud_settings.pulumi_project
    assert opts.project_settings.backend is not None
    assert opts.project_settings.backend.url == f"file://{data_dir / 'pulumi'}"

    [(operation, kwargs)] = stack.calls
    assert operation == "up"
    assert set(kwargs) == {"color", "refresh", "show_secrets", "on_output", "on_error", "on_event"}
    assert (kwargs["color"], kwargs["refresh"], kwargs["show_secrets"]) == ("never", True, False)
    assert kwargs["on_output"] is kwargs["on_error"]
    assert [event.kind for event in events] == ["diagnostic-warning"]


async def test_destroy_removes_the_stack_and_needs_no_model(
    cloud_settings: Settings, sdk_calls: tuple[list[dict[str, Any]], list[FakeStack]]
) -> None:
    """A deployment whose model was deleted still destroys: the program is built without it."""
    created, stacks = sdk_calls
    stack = FakeStack()
    stacks.append(stack)
    events: list[RunnerEvent] = []
    await AutomationRunner(cloud_settings).destroy(plan_for(None, cloud="aws"), events.append)

    [(operation, kwargs)] = stack.calls
    assert operation == "destroy"
    assert set(kwargs) == {
        "color", "refresh", "remove", "show_secrets", "on_output", "on_error", "on_event"
    }  # fmt: skip
    assert (kwargs["remove"], kwargs["show_secrets"], kwargs["refresh"]) == (True, False, True)
    assert callable(created[0]["program"])
    assert events[-1] == RunnerEvent("stack-removed", "stack tiny-01234567 removed")
    assert not (cloud_settings.data_dir / "pulumi-work" / "tiny-01234567").exists()


async def test_cli_output_and_errors_are_redacted_and_reduced_to_the_diagnosis(
    cloud_settings: Settings,
    onnx_model: Path,
    sdk_calls: tuple[list[dict[str, Any]], list[FakeStack]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    credential = credential_in_environment(monkeypatch)
    _, stacks = sdk_calls
    failure = auto.CommandError(
        auto.CommandResult(
            stdout=f"Updating...\n  AWS key {credential}",
            stderr=(
                "warning: A new version of Pulumi is available\n"
                f"error: update failed: cannot assume role with {credential}\n"
                "error: aws:ecs:Service (tiny) creating failed"
            ),
            code=255,
        )
    )
    stacks.append(FakeStack(failure))
    events: list[RunnerEvent] = []
    with (
        caplog.at_level(logging.INFO, logger="aideploy"),
        pytest.raises(PulumiOperationError) as raised,
    ):
        await AutomationRunner(cloud_settings).apply(
            plan_for(onnx_model, cloud="aws"), events.append
        )

    assert str(raised.value) == (
        "error: update failed: cannot assume role with [redacted]; "
        "error: aws:ecs:Service (tiny) creating failed"
    )
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__  # the CommandError's full text is not chained
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "with passphrase [redacted]" in logged  # the CLI's output is logged, masked
    assert "pulumi up of tiny-01234567 failed: error: update failed" in logged
    assert "Updating..." not in logged  # the full CommandError text is not logged
    for secret in (PASSPHRASE, credential):
        assert secret not in logged
        assert all(secret not in event.message for event in events)
    assert events[0].message == "provider says [redacted]"


async def test_a_stale_lock_is_cleared_only_after_an_interruption(
    cloud_settings: Settings,
    onnx_model: Path,
    sdk_calls: tuple[list[dict[str, Any]], list[FakeStack]],
) -> None:
    _, stacks = sdk_calls
    locked = auto.CommandResult(
        stdout="",
        stderr="error: the stack is currently locked by 1 lock(s). Either wait for the other "
        "process(es) to end or delete the lock file with `pulumi cancel`.",
        code=255,
    )
    runner = AutomationRunner(cloud_settings)

    fresh = FakeStack(auto.ConcurrentUpdateError(locked))
    stacks.append(fresh)
    with pytest.raises(PulumiOperationError, match="locked by another Pulumi operation"):
        await runner.apply(plan_for(onnx_model, cloud="aws"), lambda _event: None)
    assert fresh.cancels == 0  # a lock on a stack nobody says was interrupted is respected

    resumed = FakeStack(auto.ConcurrentUpdateError(locked))
    stacks.append(resumed)
    events: list[RunnerEvent] = []
    outcome = await runner.apply(
        plan_for(onnx_model, cloud="aws", after_interruption=True), events.append
    )
    assert resumed.cancels == 1
    assert [name for name, _ in resumed.calls] == ["up", "up"]
    assert "stale-lock-cleared" in [event.kind for event in events]
    assert outcome.endpoint == "https://tiny.example.com"


async def test_operations_on_one_stack_never_overlap_but_stacks_run_side_by_side(
    cloud_settings: Settings,
    onnx_model: Path,
    sdk_calls: tuple[list[dict[str, Any]], list[FakeStack]],
) -> None:
    _, stacks = sdk_calls
    runner = AutomationRunner(cloud_settings)
    running = [0, 0]  # now, most at once
    guard = threading.Lock()

    def busy() -> None:
        with guard:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.2)
        with guard:
            running[0] -= 1

    stacks += [FakeStack(during=busy), FakeStack(during=busy)]
    plan = plan_for(onnx_model, cloud="aws")
    await asyncio.gather(*(runner.apply(plan, lambda _event: None) for _ in range(2)))
    assert running[1] == 1

    # Two stacks: both operations must be inside the CLI at once to pass the barrier.
    barrier = threading.Barrier(2, timeout=30)
    stacks += [FakeStack(during=barrier.wait), FakeStack(during=barrier.wait)]
    other = DeploymentPlan(**{**vars(plan), "stack_name": "other-01234567"})
    await asyncio.gather(
        runner.apply(plan, lambda _event: None), runner.apply(other, lambda _event: None)
    )


@pytest.mark.pulumi_cli
async def test_real_engine_reports_program_errors(settings: Settings, onnx_model: Path) -> None:
    if shutil.which("pulumi") is None:
        pytest.skip("the Pulumi CLI is not on PATH")
    runner = AutomationRunner(settings.model_copy(update={"pulumi_passphrase": SecretStr("test")}))
    runner.check_available()
    events: list[RunnerEvent] = []
    # No serving image is configured: the program fails before any provider is called.
    with pytest.raises(PulumiOperationError, match="image"):
        await runner.apply(plan_for(onnx_model, cloud="aws"), events.append)
    assert any(event.kind.startswith("diagnostic") for event in events)


@pytest.mark.pulumi_cli
async def test_real_engine_round_trip_on_a_file_backend(
    settings: Settings, onnx_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """up (it fails in the program: no serving image), destroy, status: the stack is gone,
    the state lives under the data dir, no temporary work dir is left, the passphrase and the
    usage token never reach the log or the events."""
    if shutil.which("pulumi") is None:
        pytest.skip("the Pulumi CLI is not on PATH")
    cloud = settings.model_copy(
        update={
            "pulumi_passphrase": SecretStr(PASSPHRASE),
            "api_public_url": "https://api.example.com",
        }
    )
    runner = AutomationRunner(cloud)
    await runner.start(lambda _id: asyncio.sleep(0))
    plan = plan_for(onnx_model, cloud="aws")
    temporary = set(Path(tempfile.gettempdir()).glob("automation-*"))
    events: list[RunnerEvent] = []
    with caplog.at_level(logging.DEBUG, logger="aideploy"):
        with pytest.raises(PulumiOperationError):
            await runner.apply(plan, events.append)
        assert await runner.status(plan) == "running"  # the stack exists, with no resources
        await runner.destroy(plan, events.append)
        assert await runner.status(plan) == "absent"
    assert (cloud.data_dir / "pulumi" / ".pulumi").is_dir()
    assert not (cloud.data_dir / "pulumi-work" / plan.stack_name).exists()
    assert set(Path(tempfile.gettempdir()).glob("automation-*")) <= temporary
    token = usage_reporting(plan, cloud)["usage_token"]
    texts = [record.getMessage() for record in caplog.records] + [e.message for e in events]
    for secret in (PASSPHRASE, token):
        assert all(secret not in text for text in texts)
    assert events[-1].kind == "stack-removed"


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
