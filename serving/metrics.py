"""Prometheus metrics, written by hand in the text exposition format (no client library on the
start-up path).

Counters live in plain per-model :class:`ModelStats` objects so that anything else in the
process (a usage reporter pushing requests, errors, latency and instance-seconds to the
platform) can read the same numbers the ``/metrics`` endpoint shows, without a second tally.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from dataclasses import dataclass, field

__all__ = ["Histogram", "Metrics", "ModelStats"]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(slots=True)
class Histogram:
    """Cumulative-on-output histogram: ``counts[i]`` holds observations in bucket ``i`` only."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out: list[str] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            edge = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{{labels}{sep}le="{edge}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        out += (f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {self.count}")
        return out


@dataclass(slots=True)
class ModelStats:
    """What one model has done since the process started."""

    requests: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    """Failed inference requests by HTTP status."""
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    """Seconds from the request's last byte received to its response being ready."""
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    """Rows per ``session.run`` (1 for models without a batch axis): above a request's own
    rows when adaptive batching merged requests."""

    def record(self, status: int, seconds: float) -> None:
        self.requests += 1
        self.latency.observe(seconds)
        if status >= 400:
            self.errors[status] = self.errors.get(status, 0) + 1


@dataclass(slots=True)
class Metrics:
    """The server's tallies and their exposition."""

    models: dict[str, ModelStats] = field(default_factory=dict)
    in_flight: int = 0
    http_responses: dict[int, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    load_seconds: dict[str, float] = field(default_factory=dict)
    load_phases: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per model: seconds of each load phase (see ``ServedModel.phases``)."""
    start_phases: dict[str, float] = field(default_factory=dict)
    """Seconds from process start to ``imports`` (numpy and onnxruntime loaded), ``listening``
    and ``ready`` (every model warm): with the load phases, the cold start's timeline."""
    bytes_out: int = 0
    """Bytes of HTTP responses written (headers and bodies), for usage reporting."""

    def model(self, name: str) -> ModelStats:
        stats = self.models.get(name)
        if stats is None:
            stats = self.models[name] = ModelStats()
        return stats

    def render(self) -> str:
        """The whole ``/metrics`` page."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"))

        family("aideploy_inference_requests_total", "counter", "Inference requests per model.")
        for name, stats in self.models.items():
            lines.append(
                f'aideploy_inference_requests_total{{model="{_escape(name)}"}} {stats.requests}'
            )
        family(
            "aideploy_inference_errors_total",
            "counter",
            "Failed inference requests per model and HTTP status.",
        )
        for name, stats in self.models.items():
            for status, count in sorted(stats.errors.items()):
                lines.append(
                    f'aideploy_inference_errors_total{{model="{_escape(name)}",code="{status}"}} {count}'
                )
        family(
            "aideploy_inference_duration_seconds",
            "histogram",
            "Inference request latency inside the server.",
        )
        for name, stats in self.models.items():
            lines += stats.latency.lines(
                "aideploy_inference_duration_seconds", f'model="{_escape(name)}"'
            )
        family(
            "aideploy_inference_batch_rows",
            "histogram",
            "Rows per onnxruntime run (adaptive batching).",
        )
        for name, stats in self.models.items():
            lines += stats.batch_rows.lines(
                "aideploy_inference_batch_rows", f'model="{_escape(name)}"'
            )
        family(
            "aideploy_model_load_seconds",
            "gauge",
            "Fetch, session creation and warm-up time per model.",
        )
        for name, seconds in self.load_seconds.items():
            lines.append(f'aideploy_model_load_seconds{{model="{_escape(name)}"}} {seconds:.6f}')
        family(
            "aideploy_model_load_phase_seconds",
            "gauge",
            "Model load time per phase: fetch, session (creation), warm_up (first inference).",
        )
        for name, phases in self.load_phases.items():
            lines += (
                f'aideploy_model_load_phase_seconds{{model="{_escape(name)}",phase="{phase}"}} '
                f"{seconds:.6f}"
                for phase, seconds in phases.items()
            )
        family(
            "aideploy_start_seconds",
            "gauge",
            "Seconds from process start to imports done, port listening, all models ready.",
        )
        for phase, seconds in self.start_phases.items():
            lines.append(f'aideploy_start_seconds{{phase="{phase}"}} {seconds:.6f}')
        family("aideploy_http_requests_in_flight", "gauge", "HTTP requests being handled now.")
        lines.append(f"aideploy_http_requests_in_flight {self.in_flight}")
        family(
            "aideploy_http_responses_total", "counter", "HTTP responses by status, all endpoints."
        )
        for status, count in sorted(self.http_responses.items()):
            lines.append(f'aideploy_http_responses_total{{code="{status}"}} {count}')
        family("process_cpu_seconds_total", "counter", "User and system CPU time of the process.")
        lines.append(f"process_cpu_seconds_total {time.process_time():.6f}")
        family("process_resident_memory_bytes", "gauge", "Resident memory of the process.")
        lines.append(f"process_resident_memory_bytes {resident_memory_bytes()}")
        family("process_start_time_seconds", "gauge", "Start of the process since the Unix epoch.")
        lines.append(f"process_start_time_seconds {self.started_at:.3f}")
        return "\n".join(lines) + "\n"


def resident_memory_bytes() -> int:
    """Current RSS from ``/proc`` on Linux; elsewhere the peak RSS, the closest portable value."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
