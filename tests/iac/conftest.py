"""Fixtures for the aideploy_iac tests: deployment args and a synthesizing helper."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
STORAGE_ACCOUNT_ID = (
    "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acmemodels"
)
PLATFORM_STACK = "acme/platform/prod"
PLATFORM_OUTPUTS: dict[str, str] = {
    "aws-us-east-1-kubeconfig": "apiVersion: v1\nkind: Config\n",
    "aws-us-east-1-cluster_name": "aideploy-eks",
    "gcp-europe-west4-kubeconfig": "apiVersion: v1\nkind: Config\n",
    "gcp-europe-west4-project": "acme-ml",
    "gcp-europe-west4-workload_identity_pool": "acme-ml.svc.id.goog",
    "azure-westeurope-kubeconfig": "apiVersion: v1\nkind: Config\n",
    "azure-westeurope-oidc_issuer_url": "https://westeurope.oic.prod-aks.azure.com/t/i/",
    "azure-westeurope-resource_group_name": "aideploy-platform",
    "azure-westeurope-storage_account_id": STORAGE_ACCOUNT_ID,
}
"""What ``stacks/programs.py`` exports for a three-cloud platform stack (the keys pods need)."""

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

    def run(
        args: dict[str, Any],
        name: str = "sentiment",
        stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> SynthResult:
        def program() -> None:
            ModelDeployment(name, args)  # type: ignore[arg-type]

        return synthesize(program, stack="test", stack_outputs=stack_outputs)

    return run
