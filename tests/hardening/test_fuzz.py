"""A short schemathesis run in ``make test``, on SQLite and on PostgreSQL (the long one is
``tests/soak``)."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import Client, build_onnx_model
from tests.hardening.fuzzing import fuzz_the_live_api
from tests.hardening.live import LiveApi

EXAMPLES_PER_OPERATION = 4


def test_every_operation_answers_as_documented(
    live_api_on_each_database: LiveApi, tmp_path: Path
) -> None:
    model = build_onnx_model(tmp_path / "tiny.onnx")
    report = fuzz_the_live_api(
        live_api_on_each_database, model, EXAMPLES_PER_OPERATION, derandomize=True
    )
    assert len(report.cases) >= 20, "every operation of the OpenAPI document ran"
    assert report.total >= 50


async def test_analytics_windows_at_the_calendars_edges_are_422(
    client: Client, alice: dict[str, str]
) -> None:
    """Found by the soak run: a window reaching past the calendar's ends overflowed into a 500."""
    wrong = []
    for path in ("cost", "performance", "forecast", "suggestions"):
        for field, moment in (
            ("end_time", "0001-01-01T00:01:01Z"),
            ("end_time", "9999-12-31T23:59:59Z"),
            ("start_time", "0001-01-01T00:00:00-01:00"),
        ):
            response = await client.get(f"/analytics/{path}?{field}={moment}", headers=alice)
            errors = response.json().get("errors") or [{}]
            if response.status_code != 422 or errors[0].get("field") != field:
                wrong.append(f"{path} {field}={moment}: {response.status_code} {response.text}")
    assert not wrong, "\n".join(wrong)
