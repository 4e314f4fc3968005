"""A deployment document: the API's create-deployment body plus what the infrastructure needs.

The same document is one entry of a ``deployments`` stack's config, the file ``aideploy synth``
reads, and what the API hands its runners, so there is one way to describe a deployment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from aideploy.errors import InputError
from aideploy.schema import Cloud, DeploymentCreate, Framework, field_errors
from aideploy_iac.deployment import ModelDeploymentArgs

__all__ = [
    "DeploymentDocument",
    "TargetOptions",
    "load_documents",
    "model_deployment_args",
    "parse_documents",
]


class TargetOptions(BaseModel):
    """Target-specific settings; each applies only to its target (others warn)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str | None = None
    keda_namespace: str | None = None
    service_account_name: str | None = None
    clusters: dict[str, str] | None = None
    log_retention_days: int | None = None
    invokers: list[str] | None = None
    project: str | None = None
    resource_group_name: str | None = None
    environment_id: str | None = None
    model_storage_account_id: str | None = None
    registry_id: str | None = None


class DeploymentDocument(DeploymentCreate):
    """``POST /deployments`` body + ``model_uri`` (+ optional image and target options)."""

    model_uri: Annotated[str, Field(min_length=1)] | None = None
    """URI of the model artifact (s3://, gs://, az://, https://<account>.blob..., https://)."""
    model_uris: dict[Cloud, Annotated[str, Field(min_length=1)]] | None = None
    """Copies of the model per cloud, for multi-cloud placement (``model_uri`` elsewhere)."""
    image: str | None = None
    """Serving runtime image; defaults to the stack's ``aideploy:image``."""
    images: dict[Cloud, Annotated[str, Field(min_length=1)]] | None = None
    """The serving image per cloud where it differs (e.g. an ECR copy for AWS Lambda)."""
    model_format: Framework = Framework.ONNX
    hibernated: bool = False
    public_endpoint: bool = False
    options: TargetOptions = Field(default_factory=TargetOptions)
    usage_url: str | None = None
    """Where the runtime reports its usage; set by the platform API for its deployments."""
    usage_token: SecretStr | None = None
    """The deployment-scoped token for ``usage_url`` (set by the platform API)."""


def model_deployment_args(
    document: DeploymentDocument, *, default_image: str | None = None
) -> ModelDeploymentArgs:
    """The component args for a document.

    Metadata is passed as-is: the component turns it into labels and reports, as warnings, any
    entry that cannot be one.
    """
    image = document.image or default_image
    if image is None:
        raise InputError(
            f"{document.name}.image: no serving image; set it on the deployment or as the "
            "stack's aideploy:image"
        )
    if document.model_uri is None and not document.model_uris:
        raise InputError(
            f"{document.name}.model_uri: required (or model_uris with a copy per cloud)"
        )
    args: dict[str, Any] = {
        "deployment_name": document.name,
        "image": image,
        "model_format": document.model_format,
        "deployment_type": document.deployment_type,
        "resource_requirements": document.resource_requirements.model_dump(exclude_none=True),
        "scaling_policy": document.scaling_policy.model_dump(),
        "cost_optimization_policy": document.cost_optimization_policy.model_dump(),
        "hibernated": document.hibernated,
        "metadata": document.metadata,
        "public_endpoint": document.public_endpoint,
        **document.options.model_dump(exclude_none=True),
    }
    if document.model_uri is not None:
        args["model_uri"] = document.model_uri
    if document.model_uris:
        args["model_uris"] = {cloud.value: uri for cloud, uri in document.model_uris.items()}
    if document.images:
        args["images"] = {cloud.value: item for cloud, item in document.images.items()}
    if document.usage_url is not None and document.usage_token is not None:
        args["usage_url"] = document.usage_url
        args["usage_token"] = document.usage_token.get_secret_value()
    if document.target is not None:
        args["target"] = document.target.model_dump(exclude_none=True)
    return args  # type: ignore[return-value]


def _problems(exc: ValidationError, prefix: str) -> str:
    return "; ".join(f"{prefix}{error.field}: {error.message}" for error in field_errors(exc))


def parse_documents(data: Any, source: str) -> list[DeploymentDocument]:
    """One document, or a list of them, from parsed JSON/YAML; errors name the entry and field."""
    entries = data if isinstance(data, list) else [data]
    documents = []
    for index, entry in enumerate(entries):
        prefix = f"[{index}]." if isinstance(data, list) else ""
        try:
            documents.append(DeploymentDocument.model_validate(entry))
        except ValidationError as exc:
            raise InputError(f"{source}: {_problems(exc, prefix)}") from None
    names = [document.name for document in documents]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(
            f"{source}: deployment names must be unique; repeated: {', '.join(duplicates)}"
        )
    return documents


def load_documents(path: Path) -> list[DeploymentDocument]:
    """Read a JSON or YAML deployment file (one document or a list)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({exc})"
        ) from None
    if not isinstance(data, dict | list):
        raise InputError(f"{path}: expected a deployment object or a list of them")
    return parse_documents(data, str(path))
