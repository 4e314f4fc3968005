"""The pure rules behind the components: sizes as each target spells them, model locations,
IAM statements and names."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from aideploy.errors import InputError
from aideploy.schema import Cloud
from aideploy_iac.access import gcp_service_account_id
from aideploy_iac.args import gcp_labels, model_location, resolve_spec
from aideploy_iac.policies import (
    CONTAINER_APPS_SIZES,
    GIB,
    TargetKind,
    check_image,
    container_apps_memory,
    ecr_image_region,
    plan_container_apps,
)
from aideploy_iac.runtime_contract import runtime_environment
from aideploy_iac.serverless.aws import _function_policy


@pytest.mark.parametrize(("cpu", "memory"), CONTAINER_APPS_SIZES)
def test_every_container_apps_size_is_rendered_as_decimal_gib(cpu: Decimal, memory: int) -> None:
    """Azure takes "a decimal value followed by Gi" (1.5Gi); 1536Mi is rejected at apply."""
    rendered = container_apps_memory(memory)
    assert re.fullmatch(r"\d+(\.\d+)?Gi", rendered), rendered
    assert Decimal(rendered.removesuffix("Gi")) == Decimal(memory) / GIB == cpu * 2
    spec, _ = resolve_spec(
        "sentiment",
        {
            "model_uri": "az://models/m.onnx",
            "image": "acme.azurecr.io/serve:1",
            "resource_requirements": {"cpu": str(cpu), "memory": f"{memory // 2**20}Mi"},
        },
    )
    assert plan_container_apps(spec).effective.memory == rendered


def test_lambda_policy_uses_the_functions_partition() -> None:
    policy = json.loads(
        _function_policy(
            "s3://models/m.onnx", "arn:aws-cn:logs:cn-north-1:123456789012:log-group:/aws/lambda/m"
        )
    )
    read, logs = policy["Statement"]
    assert read["Resource"] == ["arn:aws-cn:s3:::models/m.onnx"]
    assert logs["Resource"] == ["arn:aws-cn:logs:cn-north-1:123456789012:log-group:/aws/lambda/m:*"]
    public = json.loads(
        _function_policy(
            "https://models.example.com/m.onnx", "arn:aws:logs:us-east-1:1:log-group:x"
        )
    )
    assert [statement["Sid"] for statement in public["Statement"]] == ["WriteLogs"]


def test_ecr_images_and_their_regions() -> None:
    assert ecr_image_region("123456789012.dkr.ecr.eu-west-1.amazonaws.com/serve:1") == "eu-west-1"
    assert ecr_image_region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/s:1") == "cn-north-1"
    assert ecr_image_region("ghcr.io/acme/serve:1") is None
    check_image(TargetKind.GCP_CLOUD_RUN, "ghcr.io/acme/serve:1", "us-east-1")
    with pytest.raises(InputError, match="only from its own region"):
        check_image(
            TargetKind.AWS_LAMBDA, "123456789012.dkr.ecr.eu-west-1.amazonaws.com/s:1", "us-east-1"
        )


@pytest.mark.parametrize(
    ("uri", "cloud", "bucket", "key", "account", "public"),
    [
        ("s3://b/models/m.onnx", Cloud.AWS, "b", "models/m.onnx", None, False),
        ("gs://b/m.onnx", Cloud.GCP, "b", "m.onnx", None, False),
        ("az://models/m.onnx", Cloud.AZURE, "models", "m.onnx", None, False),
        (
            "https://acme.blob.core.windows.net/models/m.onnx",
            Cloud.AZURE,
            "models",
            "m.onnx",
            "acme",
            False,
        ),
        ("https://models.example.com/m.onnx", None, "", "", None, True),
        ("memory://bucket/m.onnx", None, "", "", None, False),
    ],
)
def test_model_locations(
    uri: str, cloud: Cloud | None, bucket: str, key: str, account: str | None, public: bool
) -> None:
    location = model_location(uri)
    assert (location.cloud, location.bucket, location.key, location.account, location.public) == (
        cloud,
        bucket,
        key,
        account,
        public,
    )
    for reader in (Cloud.AWS, Cloud.GCP, Cloud.AZURE):
        assert location.readable_from(reader) is (public or reader is cloud)


def test_blob_models_reach_the_runtime_as_az_uris_with_their_account() -> None:
    spec, _ = resolve_spec(
        "m",
        {"model_uri": "https://acme.blob.core.windows.net/models/m.onnx", "image": "i"},
    )
    environment = runtime_environment(spec)
    assert environment["AIDEPLOY_SERVE_MODEL_URI"] == "az://models/m.onnx"
    assert environment["AZURE_STORAGE_ACCOUNT_NAME"] == "acme"
    s3, _ = resolve_spec("m", {"model_uri": "s3://b/m.onnx", "image": "i"})
    assert "AZURE_STORAGE_ACCOUNT_NAME" not in runtime_environment(
        s3, storage_account_id="/subscriptions/s/x/storageAccounts/acme"
    )
    assert "AIDEPLOY_SERVE_USAGE_TOKEN" not in runtime_environment(s3), "passed as a secret"


def test_gcp_service_account_ids() -> None:
    names = ["m", "sentiment", "a" * 63, "a" * 62 + "b"]
    ids = [gcp_service_account_id(name) for name in names]
    assert len(set(ids)) == len(ids)
    for account_id in ids:
        assert re.fullmatch(r"[a-z][-a-z0-9]{4,28}[a-z0-9]", account_id), account_id


def test_gcp_labels_convert_and_report() -> None:
    labels, notes = gcp_labels({"Team": "NLP", "ok": "fine", "x.y": "1.2", "_x": "y", "team": "a"})
    assert labels == {"team": "nlp", "ok": "fine", "x_y": "1_2"}
    assert [note.split(":")[0] for note in notes] == [
        "metadata.Team",
        "metadata.x.y",
        "metadata._x",
        "metadata.team",
    ]
