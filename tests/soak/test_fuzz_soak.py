"""The long schemathesis run: at least 1,000 generated cases over every operation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import build_onnx_model
from tests.hardening.fuzzing import fuzz
from tests.hardening.live import LiveApi, upload_model

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]

EXAMPLES_PER_OPERATION = 60


def test_a_thousand_cases_answer_as_documented(live_api: LiveApi, tmp_path: Path) -> None:
    headers = live_api.headers()
    model_id = upload_model(live_api, headers, build_onnx_model(tmp_path / "tiny.onnx"))

    report = fuzz(live_api, headers, EXAMPLES_PER_OPERATION, known_ids={"model_id": model_id})

    print(f"\nfuzzing: {report.total} cases over {len(report.cases)} operations; {report.statuses}")
    assert not report.failures, report.describe_failures()
    assert report.total >= 1000
