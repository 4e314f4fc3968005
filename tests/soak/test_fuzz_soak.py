"""The long schemathesis run: at least 1,000 generated cases over every operation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import build_onnx_model
from tests.hardening.fuzzing import fuzz_the_live_api
from tests.hardening.live import LiveApi

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]

EXAMPLES_PER_OPERATION = 60


def test_a_thousand_cases_answer_as_documented(
    live_api_on_each_database: LiveApi, tmp_path: Path
) -> None:
    """On SQLite, then on PostgreSQL."""
    model = build_onnx_model(tmp_path / "tiny.onnx")
    report = fuzz_the_live_api(
        live_api_on_each_database, model, EXAMPLES_PER_OPERATION, derandomize=False
    )
    assert report.total >= 1000
