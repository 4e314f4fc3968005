"""aideploy_iac.synth: the mock-engine runner every seam (CLI, API, tests) uses."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pulumi
import pytest

from aideploy.errors import InputError
from aideploy_iac.deployment import ModelDeployment
from aideploy_iac.synth import SynthError, SynthResult, UnmockedCallError, synthesize
from stacks.config import DeploymentsConfig
from stacks.programs import deployments
from tests.iac.conftest import deployment_args


def _one_deployment() -> None:
    deployment = ModelDeployment("sentiment", deployment_args(None))  # type: ignore[arg-type]
    pulumi.export("endpoint", deployment.endpoint_url)


def test_records_types_names_parents_inputs_and_exports() -> None:
    result = synthesize(_one_deployment, project="p", stack="s")
    assert (result.project, result.stack) == ("p", "s")
    assert result.exports == {"endpoint": "http://sentiment.default.svc.cluster.local:8080"}
    service = result.named("sentiment-kubernetes-service")
    assert service.custom
    assert service.parent_name == "sentiment-kubernetes"
    assert service.inputs["spec"]["ports"][0]["port"] == 8080, "whole numbers stay integers"
    assert service.urn.startswith("urn:pulumi:s::p::")
    component = result.named("sentiment")
    assert not component.custom
    assert component.outputs["target_kind"] == "kubernetes", "registered outputs are recorded"
    assert result.to_json()["resources"][0]["name"] == "sentiment"
    with pytest.raises(KeyError, match="no resource named 'absent'"):
        result.named("absent")


def test_repeated_runs_are_isolated() -> None:
    first = synthesize(_one_deployment)
    second = synthesize(_one_deployment)
    assert sorted(r.name for r in first) == sorted(r.name for r in second)
    assert len(second.resources) == len(first.resources), "nothing leaks from the first run"


def test_runs_inside_a_running_event_loop() -> None:
    """The API calls synthesize from async code; it must not touch the caller's loop."""

    async def caller() -> int:
        return len(synthesize(_one_deployment).resources)

    assert asyncio.run(caller()) > 0


def test_unmocked_provider_functions_fail_instead_of_guessing() -> None:
    def program() -> None:
        pulumi.export("region", pulumi.runtime.invoke_output("aws:index/getRegion:getRegion", {}))

    with pytest.raises(SynthError, match=r"'aws:index/getRegion:getRegion' has no mock"):
        synthesize(program)
    assert issubclass(UnmockedCallError, RuntimeError)


def test_mocked_provider_functions_answer() -> None:
    def program() -> None:
        pulumi.export(
            "region", pulumi.runtime.invoke_output("aws:index/getRegion:getRegion", {"id": "x"})
        )

    result = synthesize(
        program,
        call_results={"aws:index/getRegion:getRegion": lambda args: {"name": "eu-west-1", **args}},
    )
    assert result.exports == {"region": {"name": "eu-west-1", "id": "x"}}


def test_program_errors_are_wrapped_and_user_errors_pass_through() -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    with pytest.raises(SynthError, match="boom"):
        synthesize(broken)
    with pytest.raises(SynthError, match="has no mock"):
        synthesize(lambda: pulumi.export("x", pulumi.runtime.invoke_output("a:b:c", {})))
    assert synthesize(_one_deployment).exports, "a failed run leaves nothing behind"
    with pytest.raises(InputError, match="deployment_type"):
        synthesize(lambda: ModelDeployment("m", deployment_args(None, deployment_type="edge")))  # type: ignore[arg-type]


def test_many_deployments_in_one_program() -> None:
    documents = [
        {"name": f"model-{index}", "model_id": "m", "model_uri": "s3://b/k.onnx"}
        for index in range(20)
    ]
    config = DeploymentsConfig.model_validate({"image": "ghcr.io/a/b:1", "deployments": documents})
    result = synthesize(lambda: deployments(config))
    assert len(result.of_type("aideploy:index:ModelDeployment")) == 20
    assert set(result.exports) == {f"model-{index}" for index in range(20)}


def test_config_reaches_the_program() -> None:
    seen: list[str | None] = []
    synthesize(
        lambda: seen.append(pulumi.Config("aideploy").get("program")),
        config={"aideploy:program": "platform"},
    )
    assert seen == ["platform"]


def test_a_program_that_never_finishes_times_out() -> None:
    never: asyncio.Future[str] | None = None

    def program() -> None:
        nonlocal never
        never = asyncio.get_event_loop().create_future()
        pulumi.export("never", pulumi.Output.from_input(never))

    with pytest.raises(SynthError, match=r"did not finish within 1 s"):
        synthesize(program, timeout=1)


def test_concurrent_runs_do_not_mix() -> None:
    """The API synthesizes several stacks at once from worker threads."""

    def build(name: str) -> SynthResult:
        return synthesize(
            lambda: ModelDeployment(name, deployment_args(None)),  # type: ignore[arg-type]
            stack=name,
        )

    names = [f"model-{index}" for index in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(build, names))
    for name, result in zip(names, results, strict=True):
        assert result.stack == name
        assert {resource.name.split("-kubernetes")[0] for resource in result} == {name}
