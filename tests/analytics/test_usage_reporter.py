"""The serving side of the usage pipeline: minutes closed on the wall clock, buffered while the
API is unreachable, bounded, delivered in the background and at shutdown."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from serving import usage
from serving.metrics import Metrics
from serving.usage import UsageReporter
from tests.analytics.support import EPOCH
from tests.serving.support import build_scale, infer_body, scale_input, start_server

T0 = EPOCH.timestamp() + 10  # 10 s into a minute


class FakeApi:
    """Records usage reports; answers ``status`` (503 to play an API that is down)."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.tokens: list[str] = []
        self.status = 202
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if api.status < 300:
                    api.reports.append(json.loads(body))
                    api.tokens.append(self.headers["Authorization"])
                self.send_response(api.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/deployments/d-1/usage"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def minutes(self) -> list[dict[str, Any]]:
        return [minute for report in self.reports for minute in report["minutes"]]


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    yield api
    api.server.shutdown()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("serving.usage.time.time", fake)
    return fake


async def test_minutes_are_closed_on_the_wall_clock(clock: Clock, fake_api: FakeApi) -> None:
    metrics = Metrics()
    reporter = UsageReporter(metrics, fake_api.url, "dpl_token", 60)
    for latency in (0.004, 0.02, 0.02, 0.3):
        metrics.model("m").record(200, latency)
    metrics.model("m").record(500, 0.001)
    metrics.bytes_out += 4096
    clock.now += 50  # exactly the minute boundary: the first minute closes
    reporter.sample()
    [first] = reporter.pending
    assert first["start"] == EPOCH.strftime("%Y-%m-%dT%H:%M:00Z")
    assert (first["requests"], first["errors"], first["bytes_out"]) == (5, 1, 4096)
    assert first["instance_seconds"] == pytest.approx(50)
    assert sum(first["latency_buckets"]) == 5
    assert first["latency_ms_sum"] == pytest.approx(345.0)
    assert first["memory_peak_bytes"] > 0

    clock.now += 30
    metrics.model("m").record(200, 0.01)
    await reporter.stop()  # closes the partial second minute and delivers both
    assert not reporter.pending
    assert [m["requests"] for m in fake_api.minutes] == [5, 1]
    assert fake_api.minutes[1]["instance_seconds"] == pytest.approx(30)
    assert fake_api.tokens == ["Bearer dpl_token"]
    assert fake_api.reports[0]["instance_id"] == usage.instance_id()


async def test_minutes_wait_while_the_api_is_down(clock: Clock, fake_api: FakeApi) -> None:
    reporter = UsageReporter(Metrics(), fake_api.url, "dpl_token", 60)
    fake_api.status = 503
    clock.now += 60 * 3
    reporter.sample()
    await reporter.push()
    assert len(reporter.pending) == 3
    fake_api.status = 202
    await reporter.push()
    assert not reporter.pending
    assert len(fake_api.minutes) == 3


async def test_the_open_minute_goes_out_provisionally(clock: Clock, fake_api: FakeApi) -> None:
    """Analytics need not wait for the minute to end; the closed minute later replaces it."""
    metrics = Metrics()
    reporter = UsageReporter(metrics, fake_api.url, "dpl_token", 1)
    await reporter.push(include_open_minute=True)
    assert fake_api.reports == []  # nothing happened yet: nothing to say
    metrics.model("m").record(200, 0.01)
    clock.now += 20
    reporter.sample()
    await reporter.push(include_open_minute=True)
    assert not reporter.pending  # the minute is still open, so it is not buffered
    [provisional] = fake_api.minutes
    assert (provisional["requests"], provisional["instance_seconds"]) == (1, pytest.approx(20))
    metrics.model("m").record(200, 0.01)
    clock.now += 30  # the minute's boundary (the clock started 10 s into it): it closes
    reporter.sample()
    await reporter.push()
    final = fake_api.minutes[-1]
    assert final["start"] == provisional["start"]
    assert (final["requests"], final["instance_seconds"]) == (2, pytest.approx(50))


async def test_unreachable_api_and_a_bounded_buffer(clock: Clock) -> None:
    reporter = UsageReporter(Metrics(), "http://127.0.0.1:9/usage", "t", 60, buffer_minutes=4)
    clock.now += 60 * 10
    reporter.sample()
    await reporter.push(timeout=0.5)
    assert len(reporter.pending) == 4
    assert reporter.dropped == 6
    newest = reporter.pending[-1]["start"]
    assert newest == (EPOCH.replace(minute=9)).strftime("%Y-%m-%dT%H:%M:00Z")


def test_the_server_reports_its_usage(tmp_path: Path, fake_api: FakeApi) -> None:
    """The real server, configured only through the environment, reports at shutdown."""
    model = build_scale(tmp_path / "scale.onnx")
    server = start_server(
        str(model),
        "--port",
        "0",
        env={
            "AIDEPLOY_SERVE_USAGE_URL": fake_api.url,
            "AIDEPLOY_SERVE_USAGE_TOKEN": "dpl_secret",
            "AIDEPLOY_SERVE_USAGE_INTERVAL": "1",
        },
    )
    for _ in range(7):
        status, _ = server.json(
            "POST", "/v2/models/scale/infer", infer_body(scale_input([[1.0, 2.0, 3.0, 4.0]]))
        )
        assert status == 200
    assert server.stop() == 0
    assert sum(minute["requests"] for minute in fake_api.minutes) == 7
    assert sum(minute["bytes_out"] for minute in fake_api.minutes) > 0
    assert set(fake_api.tokens) == {"Bearer dpl_secret"}
