"""Fixtures for the aideploy_iac tests: deployment args and a synthesizing helper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aideploy_iac.deployment import ModelDeployment
from aideploy_iac.synth import SynthResult, synthesize

MODEL_URIS = {
    "aws": "s3://acme-models/sentiment/model.onnx",
    "gcp": "gs://acme-models/sentiment/model.onnx",
    "azure": "https://acmemodels.blob.core.windows.net/models/sentiment/model.onnx",
}
ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/aideploy-serving:1.0"
IMAGE = "ghcr.io/acme/aideploy-serving:1.0"

Synth = Callable[..., SynthResult]


def deployment_args(cloud: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Args of a deployment on ``cloud``'s serverless target (or Kubernetes without a cloud)."""
    args: dict[str, Any] = {
        "model_uri": MODEL_URIS.get(cloud or "aws"),
        "image": ECR_IMAGE if cloud == "aws" else IMAGE,
        "deployment_type": "serverless" if cloud else "kubernetes",
    }
    if cloud:
        args["target"] = {"cloud": cloud}
    args.update(overrides)
    return args


@pytest.fixture
def synth_deployment() -> Synth:
    """Synthesize one ModelDeployment named ``name`` with ``args``; returns the graph."""

    def run(args: dict[str, Any], name: str = "sentiment") -> SynthResult:
        def program() -> None:
            ModelDeployment(name, args)  # type: ignore[arg-type]

        return synthesize(program, stack="test")

    return run
