"""The long schemathesis run: at least 1,000 generated cases over every operation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import build_onnx_model
from tests.hardening.fuzzing import fuzz, real_resources
from tests.hardening.live import LiveApi
from tests.hardening.test_fuzz import assert_reached_the_real_deployment

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]

EXAMPLES_PER_OPERATION = 60


def test_a_thousand_cases_answer_as_documented(
    live_api_on_each_database: LiveApi, tmp_path: Path
) -> None:
    """On SQLite, then on PostgreSQL."""
    api = live_api_on_each_database
    headers = api.headers()
    real = real_resources(api, headers, build_onnx_model(tmp_path / "tiny.onnx"))

    report = fuzz(
        api,
        headers,
        EXAMPLES_PER_OPERATION,
        known_ids=real.known_ids,
        headers_for=real.headers_for,
    )

    print(f"\nfuzzing: {report.total} cases over {len(report.cases)} operations; {report.statuses}")
    assert not report.failures, report.describe_failures()
    assert report.total >= 1000
    assert_reached_the_real_deployment(report)
