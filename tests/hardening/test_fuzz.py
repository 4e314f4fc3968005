"""A short schemathesis run in ``make test`` (the long one is ``tests/soak``)."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import build_onnx_model
from tests.hardening.fuzzing import fuzz
from tests.hardening.live import LiveApi, upload_model

EXAMPLES_PER_OPERATION = 4


def test_every_operation_answers_as_documented(live_api: LiveApi, tmp_path: Path) -> None:
    headers = live_api.headers()
    model_id = upload_model(live_api, headers, build_onnx_model(tmp_path / "tiny.onnx"))

    report = fuzz(live_api, headers, EXAMPLES_PER_OPERATION, known_ids={"model_id": model_id})

    assert not report.failures, report.describe_failures()
    assert len(report.cases) >= 20, "every operation of the OpenAPI document ran"
    assert report.total >= 50
