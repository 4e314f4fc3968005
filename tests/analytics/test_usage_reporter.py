"""The serving side of the usage pipeline: minutes closed on the wall clock, buffered while the
API is unreachable, bounded, delivered in the background and at shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
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
STALL_SECONDS = 120.0
"""A held report is answered after this at the latest, so code that wrongly waits for it fails
its assertions instead of hanging the suite; correct code never waits for it at all."""


class FakeApi:
    """Records usage reports; answers ``status`` (503 to play an API that is down) with a
    receipt that skips the first ``skip`` minutes; after :meth:`hold`, reports wait unanswered
    until :meth:`release` (an API that stalls)."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.tokens: list[str] = []
        self.status = 202
        self.skip = 0
        self.answer = b""
        """The body of error answers."""
        self.entered = threading.Event()
        self.held = 0
        """Reports waiting unanswered right now."""
        self.held_connection: socket.socket | None = None
        self._gate: threading.Event | None = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                gate = api._gate
                if gate is not None:
                    api.held_connection = self.connection
                    api.held += 1
                    api.entered.set()
                    gate.wait(STALL_SECONDS)
                    api.held -= 1
                answer = api.answer
                if api.status < 300:
                    report = json.loads(body)
                    api.reports.append(report)
                    api.tokens.append(self.headers["Authorization"])
                    count = len(report["minutes"])
                    skipped = min(api.skip, count)
                    receipt = {
                        "accepted": count - skipped,
                        "skipped": skipped,
                        "accepted_from": "2026-02-23T00:00:00Z",
                    }
                    answer = json.dumps(receipt).encode()
                self.send_response(api.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/deployments/d-1/usage"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def minutes(self) -> list[dict[str, Any]]:
        return [minute for report in self.reports for minute in report["minutes"]]

    def hold(self) -> None:
        self._gate = threading.Event()

    def sender_waiting(self) -> bool:
        """Whether the sender of the last held report still waits for its answer (has not given
        up and closed the connection)."""
        if self.held_connection is None:
            return False
        try:
            return self.held_connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:  # open, nothing to read: still waiting
            return True
        except OSError:
            return False

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    yield api
    api.release()
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


async def test_minutes_the_api_does_not_keep_are_logged_as_lost(
    clock: Clock, fake_api: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    """Minutes past the API's retention come back as skipped, a refused report as a 4xx: both
    are counted and logged, never lost silently."""
    reporter = UsageReporter(Metrics(), fake_api.url, "dpl_token", 60)
    fake_api.skip = 2
    clock.now += 60 * 3
    reporter.sample()
    with caplog.at_level(logging.WARNING, logger="serving.usage"):
        await reporter.push()
    assert not reporter.pending
    assert reporter.skipped == 2
    [warning] = [record.getMessage() for record in caplog.records]
    assert "kept only 1 of 3 usage minute(s)" in warning
    assert "from 2026-02-23T00:00:00Z on" in warning
    assert "that usage is lost" in warning

    caplog.clear()
    fake_api.status, fake_api.answer = 422, b'{"detail": "minutes.0.start: bad"}'
    clock.now += 60
    reporter.sample()
    with caplog.at_level(logging.WARNING, logger="serving.usage"):
        await reporter.push()
    assert not reporter.pending
    assert reporter.refused == 1
    [error] = [record.getMessage() for record in caplog.records]
    assert "refused 1 usage minute(s) (HTTP 422" in error
    assert "minutes.0.start: bad" in error


async def test_a_held_push_leaves_the_event_loop_free(clock: Clock, fake_api: FakeApi) -> None:
    """The POST runs in a worker thread: while the API holds a report unanswered, the loop goes
    on sampling and counting, and another push returns at once instead of queueing behind it."""
    metrics = Metrics()
    reporter = UsageReporter(metrics, fake_api.url, "dpl_token", 60)
    clock.now += 60
    reporter.sample()
    fake_api.hold()
    first = asyncio.create_task(reporter.push())
    assert await asyncio.to_thread(fake_api.entered.wait, 60), "the push never reached the API"
    metrics.model("m").record(200, 0.01)
    clock.now += 60
    reporter.sample()
    await reporter.push()
    assert not first.done()
    assert fake_api.held == 1
    assert len(reporter.pending) == 2
    current = reporter.open_minute()
    assert current is not None
    assert current["requests"] == 1  # counted while the report was held
    fake_api.release()
    await first
    await reporter.push()
    assert not reporter.pending
    assert len(fake_api.minutes) == 2


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


def test_a_stalled_api_never_delays_inference(tmp_path: Path, fake_api: FakeApi) -> None:
    """The real server: while its usage report hangs unanswered, inference goes on answering
    (had the push been on the request path, these requests would wait for the release)."""
    model = build_scale(tmp_path / "scale.onnx")
    fake_api.hold()
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
    try:
        assert fake_api.entered.wait(timeout=60), "the server never reported"
        for _ in range(5):
            status, _ = server.json(
                "POST", "/v2/models/scale/infer", infer_body(scale_input([[1.0, 2.0, 3.0, 4.0]]))
            )
            assert status == 200
        # All answered while the report was held and the server still waited for its answer
        # (a push on the request path would hold them until it gave up on the API).
        assert fake_api.held == 1
        assert fake_api.sender_waiting()
    finally:
        fake_api.release()
    assert server.stop() == 0
    latest = {minute["start"]: minute for minute in fake_api.minutes}  # as the API replaces
    assert sum(minute["requests"] for minute in latest.values()) == 5
