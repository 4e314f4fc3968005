"""Usage reporting: what this instance did, per minute, pushed to the platform's API.

Nothing here runs on the request path. The request path already counts into
:class:`~serving.metrics.Metrics`; a background task reads those counters (and the process's CPU
time and resident memory) a few times a minute, closes each wall-clock minute into a record of
deltas, and every ``interval`` seconds posts the finished minutes to
``AIDEPLOY_SERVE_USAGE_URL`` with the deployment-scoped ``AIDEPLOY_SERVE_USAGE_TOKEN``. The HTTP
call runs in a worker thread, so a slow or unreachable API never holds up the event loop.

Minutes wait in a bounded buffer while the API is unreachable (a week of minutes by default;
the oldest are dropped beyond that, with a warning). The API keys each minute by instance and
minute and replaces a copy it already has, so retrying after a lost response never counts twice.
Minutes the API no longer accepts (older than its minute retention) come back as ``skipped`` in
its receipt and are logged as lost, as is every minute the API refuses outright: usage is never
lost without a log line. At shutdown the current, partial minute is closed and one last push is
attempted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from serving.metrics import LATENCY_BUCKETS, Metrics, resident_memory_bytes

__all__ = ["MinuteTally", "UsageReporter", "instance_id"]

log = logging.getLogger("serving.usage")

SAMPLE_SECONDS = 5.0
"""How often CPU time and resident memory are sampled (memory peaks are seen at this grain)."""
MAX_MINUTES_PER_PUSH = 1440
DEFAULT_BUFFER_MINUTES = 7 * 24 * 60
PUSH_TIMEOUT_SECONDS = 10.0
FINAL_PUSH_TIMEOUT_SECONDS = 3.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def instance_id() -> str:
    """This process among the deployment's instances: host (the pod or container) and pid."""
    return _UNSAFE.sub("-", f"{socket.gethostname()}-{os.getpid()}")[-64:]


@dataclass(slots=True)
class _Totals:
    """Cumulative counters at one moment, over all served models."""

    requests: int
    errors: int
    latency_seconds: float
    buckets: list[int]
    bytes_out: int

    @classmethod
    def read(cls, metrics: Metrics) -> _Totals:
        buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        requests = errors = 0
        latency = 0.0
        for stats in metrics.models.values():
            requests += stats.requests
            errors += sum(stats.errors.values())
            latency += stats.latency.total
            for index, count in enumerate(stats.latency.counts):
                buckets[index] += count
        return cls(requests, errors, latency, buckets, metrics.bytes_out)


@dataclass(slots=True)
class MinuteTally:
    """One wall-clock minute being filled in by the samples that fall into it."""

    start: float
    """Unix time of the minute's first second."""
    instance_seconds: float = 0.0
    cpu_seconds: float = 0.0
    memory_byte_seconds: float = 0.0
    memory_peak_bytes: int = 0

    def record(self, start: _Totals, end: _Totals) -> dict[str, Any]:
        """The minute as the API's usage report wants it (deltas between ``start`` and ``end``)."""
        requests = end.requests - start.requests
        buckets = [after - before for after, before in zip(end.buckets, start.buckets, strict=True)]
        return {
            "start": time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(self.start)),
            "requests": requests,
            "errors": end.errors - start.errors,
            "latency_ms_sum": round((end.latency_seconds - start.latency_seconds) * 1000, 3),
            "latency_buckets": buckets if requests else [],
            "instance_seconds": round(min(60.0, self.instance_seconds), 3),
            "cpu_seconds": round(self.cpu_seconds, 4),
            "memory_byte_seconds": round(self.memory_byte_seconds, 1),
            "memory_peak_bytes": self.memory_peak_bytes,
            "bytes_out": end.bytes_out - start.bytes_out,
        }


class UsageReporter:
    """Samples the server's counters and pushes closed minutes to the API in the background."""

    def __init__(
        self,
        metrics: Metrics,
        url: str,
        token: str,
        interval: float,
        *,
        buffer_minutes: int = DEFAULT_BUFFER_MINUTES,
    ) -> None:
        self._metrics = metrics
        self._url = url
        self._token = token
        self._interval = interval
        self._instance = instance_id()
        self.pending: deque[dict[str, Any]] = deque(maxlen=buffer_minutes)
        self.dropped = 0
        """Minutes lost because the buffer overflowed."""
        self.refused = 0
        """Minutes the API refused outright (a 4xx other than 401, 404 and 429)."""
        self.skipped = 0
        """Minutes the API received but did not keep (past its retention, or in the future)."""
        self._task: asyncio.Task[None] | None = None
        self._last_wall = time.time()
        self._last_cpu = time.process_time()
        self._last_totals = _Totals.read(metrics)
        self._minute = MinuteTally(start=_minute_of(self._last_wall))
        self._minute_totals = self._last_totals
        self._pushing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-reporter")

    async def stop(self) -> None:
        """Close the current minute and try one last push (briefly: the process is ending)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sample(close_current=True)
        await self.push(timeout=FINAL_PUSH_TIMEOUT_SECONDS)
        if self.pending:
            log.warning(
                "%d minute(s) of usage could not be delivered before exit", len(self.pending)
            )

    def sample(self, *, close_current: bool = False) -> None:
        """Account the time since the last sample, closing every minute boundary it crossed."""
        now = time.time()
        cpu = time.process_time()
        memory = resident_memory_bytes()
        totals = _Totals.read(self._metrics)
        elapsed = max(0.0, now - self._last_wall)
        cpu_used = max(0.0, cpu - self._last_cpu)
        # Time and CPU of the interval are shared out over the minutes it spans.
        cursor = self._last_wall
        while True:
            boundary = self._minute.start + 60.0
            piece_end = min(now, boundary)
            share = (piece_end - cursor) / elapsed if elapsed else 0.0
            self._minute.instance_seconds += piece_end - cursor
            self._minute.cpu_seconds += cpu_used * share
            self._minute.memory_byte_seconds += memory * (piece_end - cursor)
            self._minute.memory_peak_bytes = max(self._minute.memory_peak_bytes, memory)
            if now < boundary and not close_current:
                break
            # Requests are attributed to the minute in which a sample first saw them (the
            # sampler wakes just after each boundary, so little lands in the wrong minute).
            self._close(totals if piece_end == now else self._last_totals)
            if now < boundary:  # closing the partial minute at shutdown
                break
            cursor = boundary
            self._minute = MinuteTally(start=boundary)
        self._last_wall, self._last_cpu, self._last_totals = now, cpu, totals

    def _close(self, end: _Totals) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("usage buffer full: dropped %d oldest minute(s)", self.dropped)
        self.pending.append(self._minute.record(self._minute_totals, end))
        self._minute_totals = end

    def open_minute(self) -> dict[str, Any] | None:
        """The minute still being filled, as of the last sample; ``None`` when nothing happened.

        Sent as a provisional copy so analytics are current within one interval rather than one
        minute; the API keys minutes by instance and start, so the closed minute replaces it.
        """
        record = self._minute.record(self._minute_totals, self._last_totals)
        return record if record["requests"] or record["instance_seconds"] else None

    async def push(
        self, timeout: float = PUSH_TIMEOUT_SECONDS, *, include_open_minute: bool = False
    ) -> None:
        """Send the buffered minutes (in a worker thread); keep them if the API is unreachable."""
        if self._pushing:
            return
        self._pushing = True
        try:
            if not await self._send_pending(timeout):
                return
            current = self.open_minute() if include_open_minute else None
            if current is not None:
                body = json.dumps({"instance_id": self._instance, "minutes": [current]}).encode()
                await asyncio.get_running_loop().run_in_executor(None, self._post, body, timeout)
        finally:
            self._pushing = False

    async def _send_pending(self, timeout: float) -> bool:
        """Deliver the closed minutes in batches; False if the API could not take them now."""
        while self.pending:
            batch = [
                self.pending[index] for index in range(min(len(self.pending), MAX_MINUTES_PER_PUSH))
            ]
            body = json.dumps({"instance_id": self._instance, "minutes": batch}).encode()
            status, answer = await asyncio.get_running_loop().run_in_executor(
                None, self._post, body, timeout
            )
            if status is None or status >= 500 or status in (401, 404, 429):
                return False  # unreachable, failing, or not (yet) accepting: retry later
            if status >= 400:
                self.refused += len(batch)
                log.error(
                    "the API refused %d usage minute(s) (HTTP %d: %s); that usage is lost",
                    len(batch),
                    status,
                    answer[:500].decode("utf-8", "replace"),
                )
            else:
                self._check_receipt(answer, batch)
            sent = {id(item) for item in batch}  # the sampler may have dropped some meanwhile
            while self.pending and id(self.pending[0]) in sent:
                self.pending.popleft()
        return True

    def _check_receipt(self, answer: bytes, batch: list[dict[str, Any]]) -> None:
        """Log the minutes the API took delivery of but did not keep."""
        try:
            receipt = json.loads(answer)
            skipped = int(receipt["skipped"])
        except (ValueError, TypeError, KeyError):
            log.warning("the API's receipt for %d usage minute(s) was unreadable", len(batch))
            return
        if skipped:
            self.skipped += skipped
            log.warning(
                "the API kept only %d of %d usage minute(s): %d were older than its retention "
                "(it accepts minutes from %s on) or in the future; that usage is lost",
                len(batch) - skipped,
                len(batch),
                skipped,
                receipt.get("accepted_from", "an unstated time"),
            )

    def _post(self, body: bytes, timeout: float) -> tuple[int | None, bytes]:
        """POST the report: the HTTP status (``None`` when the API could not be reached) and the
        response body."""
        import urllib.error
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 - the platform's configured http(s) URL
            self._url,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            try:
                return int(exc.code), exc.read()
            except OSError:
                return int(exc.code), b""
        except (urllib.error.URLError, OSError) as exc:
            log.debug("usage push failed: %s", exc)
            return None, b""

    async def _run(self) -> None:
        next_push = time.monotonic() + self._interval
        while True:
            until_boundary = self._minute.start + 60.0 - time.time()
            await asyncio.sleep(max(0.05, min(SAMPLE_SECONDS, until_boundary + 0.01)))
            try:
                self.sample()
                if time.monotonic() >= next_push:
                    next_push = time.monotonic() + self._interval
                    await self.push(include_open_minute=True)
            except Exception:  # reporting must never stop, nor take the server down
                log.exception("usage reporting failed; it goes on at the next interval")


def _minute_of(moment: float) -> float:
    return moment - moment % 60.0
