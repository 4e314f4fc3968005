"""A short schemathesis run in ``make test``, on SQLite and on PostgreSQL (the long one is
``tests/soak``)."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import Client, build_onnx_model
from tests.hardening.fuzzing import BY_DEPLOYMENT_ID, USAGE, FuzzReport, fuzz, real_resources
from tests.hardening.live import LiveApi

EXAMPLES_PER_OPERATION = 4


def test_every_operation_answers_as_documented(
    live_api_on_each_database: LiveApi, tmp_path: Path
) -> None:
    api = live_api_on_each_database
    headers = api.headers()
    real = real_resources(api, headers, build_onnx_model(tmp_path / "tiny.onnx"))

    report = fuzz(
        api,
        headers,
        EXAMPLES_PER_OPERATION,
        known_ids=real.known_ids,
        headers_for=real.headers_for,
        derandomize=True,
    )

    print(f"\nfuzzing: {report.total} cases over {len(report.cases)} operations; {report.statuses}")
    assert not report.failures, report.describe_failures()
    assert len(report.cases) >= 20, "every operation of the OpenAPI document ran"
    assert report.total >= 50
    assert_reached_the_real_deployment(report)


def assert_reached_the_real_deployment(report: FuzzReport) -> None:
    """Operations by deployment id answered about the real deployment (not only 404), and the
    usage route took its token (not only 401), so their bodies were parsed."""
    for label in BY_DEPLOYMENT_ID:
        assert report.answered(label) - {404, 422}, f"{label}: {report.answered(label)}"
    assert report.answered(USAGE) - {401}, f"{USAGE}: {report.answered(USAGE)}"


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
