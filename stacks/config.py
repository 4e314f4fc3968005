"""The only code that reads Pulumi config: typed views of a stack's ``aideploy:*`` settings.

``Pulumi.<stack>.yaml`` of a deployments stack::

    config:
      aideploy:program: deployments
      aideploy:image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/aideploy-serving:1.0
      aideploy:deployments:
        - name: sentiment
          model_id: m-123
          model_uri: s3://models/sentiment.onnx
          deployment_type: serverless
          target: {cloud: aws, region: us-east-1}
        - name: ranker                       # on a platform stack's EKS cluster, with a pod
          model_id: m-456                    # identity that reads the model
          model_uri: s3://models/ranker.onnx
          target: {cloud: aws, region: us-east-1, cluster: acme/aideploy/platform}
        - name: anywhere                     # the cheapest cloud that can read its copy
          model_id: m-789
          model_uris: {aws: s3://models/a.onnx, gcp: gs://models/a.onnx}
          deployment_type: serverless
          cost_optimization_policy: {multi_cloud_enabled: true}

and of a platform stack::

    config:
      aideploy:program: platform
      aideploy:clouds:
        - {cloud: aws, region: us-east-1}
        - {cloud: gcp, region: europe-west4, project: my-project}
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aideploy.errors import InputError
from aideploy.schema import Cloud, field_errors
from aideploy_iac.document import DeploymentDocument, parse_documents

__all__ = [
    "CONFIG_NAMESPACE",
    "DeploymentsConfig",
    "PlatformCloud",
    "PlatformConfig",
    "Program",
    "load_deployments_config",
    "load_platform_config",
    "load_program",
]

CONFIG_NAMESPACE = "aideploy"


class Program(StrEnum):
    DEPLOYMENTS = "deployments"
    PLATFORM = "platform"


class DeploymentsConfig(BaseModel):
    """One or many deployments; the API runs one per stack, a user's stack may hold many."""

    model_config = ConfigDict(frozen=True)

    image: str | None = None
    """Serving runtime image for deployments that do not name their own."""
    deployments: Annotated[list[DeploymentDocument], Field(min_length=1)]


class PlatformCloud(BaseModel):
    """Shared infrastructure of one cloud region."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cloud: Cloud
    region: str
    project: str | None = None
    on_demand_node_type: str | None = None
    on_demand_nodes: Annotated[int, Field(ge=1, le=100)] | None = None
    spot_node_types: list[str] | None = None
    max_spot_nodes: Annotated[int, Field(ge=0, le=1000)] | None = None
    kubernetes_version: str | None = None
    keda_chart_version: str | None = None
    http_add_on_chart_version: str | None = None

    @model_validator(mode="after")
    def _cloud_with_infrastructure(self) -> PlatformCloud:
        if self.cloud is Cloud.LOCAL:
            raise ValueError("cloud 'local' has no platform infrastructure; use aws, gcp or azure")
        if self.cloud is Cloud.GCP and not self.project:
            raise ValueError("project is required for gcp")
        return self


class PlatformConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = "aideploy"
    clouds: Annotated[list[PlatformCloud], Field(min_length=1)]


def _config() -> pulumi.Config:
    return pulumi.Config(CONFIG_NAMESPACE)


def load_program() -> Program:
    value = _config().get("program") or Program.DEPLOYMENTS.value
    try:
        return Program(value)
    except ValueError:
        allowed = ", ".join(program.value for program in Program)
        raise InputError(f"{CONFIG_NAMESPACE}:program: {value!r} is not one of {allowed}") from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{CONFIG_NAMESPACE}:{e.field}: {e.message}" for e in field_errors(exc))


def load_deployments_config() -> DeploymentsConfig:
    config = _config()
    entries: Any = config.get_object("deployments")
    if entries is None:
        raise InputError(f"{CONFIG_NAMESPACE}:deployments: required (a list of deployments)")
    documents = parse_documents(entries, f"{CONFIG_NAMESPACE}:deployments")
    return DeploymentsConfig(image=config.get("image"), deployments=documents)


def load_platform_config() -> PlatformConfig:
    config = _config()
    clouds: Any = config.get_object("clouds")
    if clouds is None:
        raise InputError(f"{CONFIG_NAMESPACE}:clouds: required (a list of cloud and region)")
    try:
        return PlatformConfig(name=config.get("name") or "aideploy", clouds=clouds)
    except ValidationError as exc:
        raise InputError(_problems(exc)) from None
