"""Cloud deployments get the usage-reporting environment through the IaC components."""

from __future__ import annotations

from typing import Any

from aideploy_iac.document import DeploymentDocument
from aideploy_iac.synth import synthesize
from stacks.config import DeploymentsConfig
from stacks.programs import deployments

USAGE_URL = "https://aideploy.example.com/deployments/d-1/usage"
SECRET_SIGNATURE = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")
"""How the engine marks a secret value: the token makes the whole environment a secret."""


def _lambda_environment(**usage: Any) -> tuple[dict[str, Any], bool]:
    """The Lambda function's environment variables, and whether the engine holds them secret."""
    document = DeploymentDocument.model_validate(
        {
            "name": "sentiment",
            "model_id": "m-1",
            "deployment_type": "serverless",
            "target": {"cloud": "aws", "region": "us-east-1"},
            "model_uri": "s3://models/sentiment/model.onnx",
            **usage,
        }
    )
    config = DeploymentsConfig(
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/aideploy/serving:1",
        deployments=[document],
    )
    result = synthesize(lambda: deployments(config))
    [function] = [r for r in result.resources if r.type == "aws:lambda/function:Function"]
    environment = function.inputs["environment"]
    secret = environment.get(SECRET_SIGNATURE[0]) == SECRET_SIGNATURE[1]
    variables: dict[str, Any] = (environment["value"] if secret else environment)["variables"]
    return variables, secret


def test_the_runtime_gets_the_usage_url_and_token() -> None:
    variables, secret = _lambda_environment(usage_url=USAGE_URL, usage_token="dpl_secret")
    assert variables["AIDEPLOY_SERVE_USAGE_URL"] == USAGE_URL
    assert variables["AIDEPLOY_SERVE_USAGE_TOKEN"] == "dpl_secret"
    assert secret, "the token must stay a Pulumi secret in the state"


def test_without_a_reachable_api_nothing_is_reported() -> None:
    variables, _ = _lambda_environment()
    assert not any(name.startswith("AIDEPLOY_SERVE_USAGE") for name in variables)
