"""Request volume, latency and errors of recorded usage; fixed-threshold and statistical anomalies.

Two kinds of anomaly are reported, each at the time it began:

- **Thresholds** (the API contract's: error rate above 5 %, mean latency above 1000 ms;
  configurable), checked on every recorded interval with enough requests to judge: each minute
  while minutes are kept, and each hour, so a deployment too quiet for any single minute to be
  judged is still judged by the hour (an hour whose minutes were flagged is not reported twice).
- **Statistical**: each hour against the deployment's own baseline: the same hour of the week
  in up to four previous weeks when two or more exist (a weekly rhythm is learnt after two
  weeks), else the same hour on up to seven previous days when three or more exist (a daily
  rhythm is not an anomaly), else the trailing day. The baseline's median and median absolute
  deviation give a robust z-score, with a noise floor (Poisson for counts, binomial for error
  rates) so quiet deployments are not flagged for a handful of requests. The hour still being
  reported is not judged. The baseline does not depend on the window asked for: up to
  :data:`BASELINE_LOOKBACK` before it is read, and only anomalies inside the window are reported.

Consecutive anomalous intervals of one kind form one anomaly, reported once with its worst value.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from aideploy.schema import (
    Anomaly,
    DeploymentType,
    ModelType,
    PerformanceAnalysis,
    PerformanceStats,
    Recommendation,
)
from api.analytics.records import (
    HOUR,
    DeploymentFacts,
    UsageSample,
    Window,
    by_deployment,
    latency_percentile,
    merge,
    to_hourly,
)

__all__ = [
    "BASELINE_LOOKBACK",
    "PerformanceThresholds",
    "analyze_performance",
    "find_anomalies",
    "stats_of",
]

BASELINE_LOOKBACK = timedelta(weeks=4)
"""How far before the analysed window the baselines reach (the oldest weekly lag)."""
REPORT_DELAY = timedelta(minutes=2)
"""How late the last minutes of usage may arrive (one report interval and some slack)."""
_MAD_TO_SIGMA = 1.4826
"""Scales the median absolute deviation to a standard deviation for normal data."""


@dataclass(frozen=True)
class PerformanceThresholds:
    error_rate_percent: float = 5.0
    latency_ms: float = 1000.0
    min_requests: int = 20
    """Intervals with fewer requests are too small to judge rates and means by."""
    z_score: float = 4.0
    """How many robust standard deviations from the baseline make an hour anomalous."""
    min_baseline_hours: int = 12
    optimize_latency_ms: float = 100.0
    """Deployments of an original (unoptimized) model slower than this at p95 are told to
    optimize it."""
    caching_requests_per_hour: float = 3600.0
    caching_latency_ms: float = 100.0
    """Deployments serving at least ``caching_requests_per_hour`` (over their life in the window)
    at a mean latency of at least ``caching_latency_ms`` are told to consider a response cache."""


def stats_of(samples: Sequence[UsageSample]) -> PerformanceStats:
    if not samples:
        return PerformanceStats(requests=0, avg_latency=0.0, error_rate=0.0)
    total = merge(samples[0].deployment_id, samples[0].start, 0, samples)
    return PerformanceStats(
        requests=total.requests,
        avg_latency=round(total.avg_latency_ms, 3),
        error_rate=round(total.error_rate, 4),
        p95_latency=_rounded(latency_percentile(total.latency_buckets, 0.95)),
        p99_latency=_rounded(latency_percentile(total.latency_buckets, 0.99)),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class _Flag:
    kind: str
    start: datetime
    end: datetime
    severity: float
    """Orders the flags of one episode: the worst one's message is reported."""
    message: str


def _episodes(flags: list[_Flag]) -> list[Anomaly]:
    """Merge back-to-back flags of one kind; report each run at its start, with its worst flag."""
    anomalies: list[Anomaly] = []
    flags.sort(key=lambda flag: (flag.kind, flag.start))
    run: list[_Flag] = []
    for flag in [*flags, None]:
        if run and (flag is None or flag.kind != run[-1].kind or flag.start > run[-1].end):
            worst = max(run, key=lambda item: item.severity)
            anomalies.append(
                Anomaly(type=run[0].kind, message=worst.message, timestamp=run[0].start)
            )
            run = []
        if flag is not None:
            run.append(flag)
    anomalies.sort(key=lambda anomaly: anomaly.timestamp)
    return anomalies


def _threshold_flags(samples: Sequence[UsageSample], limits: PerformanceThresholds) -> list[_Flag]:
    flags: list[_Flag] = []
    for sample in samples:
        if sample.requests < limits.min_requests:
            continue
        rate, latency = sample.error_rate, sample.avg_latency_ms
        if rate > limits.error_rate_percent:
            message = (
                f"High error rate detected: {rate:.1f}% (threshold: {limits.error_rate_percent:g}%)"
            )
            flags.append(_Flag("high_error_rate", sample.start, sample.end, rate, message))
        if latency > limits.latency_ms:
            message = f"High latency detected: {latency:.0f}ms (threshold: {limits.latency_ms:g}ms)"
            flags.append(_Flag("high_latency", sample.start, sample.end, latency, message))
    return flags


_WEEKLY_LAGS = tuple(168 * k for k in range(1, 5))
_DAILY_LAGS = tuple(24 * k for k in range(1, 8))
_TRAILING_LAGS = tuple(range(1, 25))


def _lagged(series: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """``result[i, j] = series[i - lags[j]]``, NaN before the series starts."""
    result = np.full((len(series), len(lags)), np.nan)
    for column, lag in enumerate(lags):
        result[lag:, column] = series[: len(series) - lag] if lag < len(series) else []
    return result


def _baseline_stats(
    series: np.ndarray, limits: PerformanceThresholds
) -> tuple[np.ndarray, np.ndarray]:
    """Per hour, the median and MAD of the earlier values it is judged by: the same hour of the
    week in previous weeks (2 or more), else the same hour of previous days (3 or more), else
    the last day (``min_baseline_hours`` or more); NaN where there is no baseline. Missing
    values (NaN in ``series``) do not count."""
    median = np.full(len(series), np.nan)
    mad = np.full(len(series), np.nan)
    undecided = np.ones(len(series), dtype=bool)
    for lags, needed in (
        (_WEEKLY_LAGS, 2),
        (_DAILY_LAGS, 3),
        (_TRAILING_LAGS, limits.min_baseline_hours),
    ):
        window = _lagged(series, lags)
        usable = undecided & (np.count_nonzero(~np.isnan(window), axis=1) >= needed)
        if usable.any():
            chosen = window[usable]
            centre = np.nanmedian(chosen, axis=1)
            median[usable] = centre
            mad[usable] = np.nanmedian(np.abs(chosen - centre[:, None]), axis=1)
        undecided &= ~usable
    return median, mad


def _z_scores(
    series: np.ndarray,
    limits: PerformanceThresholds,
    noise_floor: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Robust z-scores of ``series`` against each hour's baseline (NaN without one), and the
    baselines' medians; ``noise_floor(median)`` is the least spread assumed."""
    median, mad = _baseline_stats(series, limits)
    sigma = np.maximum(_MAD_TO_SIGMA * mad, noise_floor(median))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (series - median) / sigma, median


def _statistical_flags(
    hourly: Sequence[UsageSample], limits: PerformanceThresholds, until: datetime | None
) -> list[_Flag]:
    """Hours ending after ``until`` are not judged: an hour still being reported is not a drop."""
    if not hourly:
        return []
    first, last = hourly[0].start, hourly[-1].start
    count = int((last - first) / HOUR) + 1
    # Hours without a sample had no traffic: zeros of the request series, gaps of the others.
    requests = np.zeros(count)
    latency = np.full(count, np.nan)
    errors = np.full(count, np.nan)
    judged_requests = np.full(count, np.nan)
    for sample in hourly:
        index = int((sample.start - first) / HOUR)
        requests[index] = sample.requests
        if sample.requests >= limits.min_requests:
            latency[index] = sample.avg_latency_ms
            errors[index] = sample.error_rate
            judged_requests[index] = sample.requests
    settled = count if until is None else max(0, min(count, int((until - first) / HOUR)))
    flags: list[_Flag] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no baseline there
        request_z, request_median = _z_scores(
            requests, limits, lambda median: np.maximum(1.0, np.sqrt(median))
        )
        latency_z, latency_median = _z_scores(latency, limits, lambda median: 0.05 * median + 0.1)

        def binomial(median: np.ndarray) -> np.ndarray:
            share = np.maximum(median, 100.0 / judged_requests) / 100.0
            spread: np.ndarray = 100.0 * np.sqrt(share * (1 - share) / judged_requests)
            return spread

        error_z, error_median = _z_scores(errors, limits, binomial)
    for index in range(settled):
        hour = first + HOUR * index
        z = request_z[index]
        if abs(z) > limits.z_score:
            kind, verb = ("request_spike", "spiked") if z > 0 else ("request_drop", "dropped")
            message = (
                f"Requests {verb} to {requests[index]:.0f}/h "
                f"(usual: {request_median[index]:.0f}/h, z-score {z:+.1f})"
            )
            flags.append(_Flag(kind, hour, hour + HOUR, abs(float(z)), message))
        if latency_z[index] > limits.z_score:
            message = (
                f"Latency rose to {latency[index]:.1f}ms (usual: {latency_median[index]:.1f}ms)"
            )
            flags.append(
                _Flag("latency_spike", hour, hour + HOUR, float(latency_z[index]), message)
            )
        if error_z[index] > limits.z_score:
            message = f"Error rate rose to {errors[index]:.1f}% (usual: {error_median[index]:.1f}%)"
            flags.append(_Flag("error_spike", hour, hour + HOUR, float(error_z[index]), message))
    return flags


def _uncovered(coarse: Sequence[_Flag], fine: Sequence[_Flag]) -> list[_Flag]:
    """The ``coarse`` flags no ``fine`` flag of the same kind falls in (those report it already)."""
    starts: dict[str, list[datetime]] = {}
    for flag in fine:
        starts.setdefault(flag.kind, []).append(flag.start)
    for values in starts.values():
        values.sort()
    kept = []
    for flag in coarse:
        values = starts.get(flag.kind, [])
        index = bisect.bisect_left(values, flag.start)
        if index == len(values) or values[index] >= flag.end:
            kept.append(flag)
    return kept


def find_anomalies(
    samples: Sequence[UsageSample],
    limits: PerformanceThresholds,
    detail: Sequence[UsageSample] = (),
    until: datetime | None = None,
    since: datetime | None = None,
) -> list[Anomaly]:
    """One deployment's threshold and statistical anomalies from ``since`` on, oldest first.

    ``samples`` (hours, or any grain) are the baseline and are judged against the thresholds;
    ``detail`` holds the finer (minute) intervals that broke a threshold: they time an anomaly
    to the minute, and a sample they fall in is not reported again. Only hours complete by
    ``until`` are compared with their baseline; flags starting before ``since`` are the
    baseline's, not reported.
    """
    fine = _threshold_flags(detail, limits)
    coarse = _uncovered(_threshold_flags(samples, limits), fine)
    flags = fine + coarse + _statistical_flags(to_hourly(samples), limits, until)
    return _episodes([flag for flag in flags if since is None or flag.start >= since])


def _recommendations(
    facts: Mapping[str, DeploymentFacts],
    stats: Mapping[str, PerformanceStats],
    window: Window,
    limits: PerformanceThresholds,
) -> list[Recommendation]:
    def names(ids: list[str]) -> str:
        return ", ".join(facts[item].name for item in ids)

    recommendations: list[Recommendation] = []
    slow = [
        key for key, item in stats.items() if item.requests and item.avg_latency > limits.latency_ms
    ]
    if slow:
        recommendations.append(
            Recommendation(
                type="high_latency_deployments",
                message=f"Consider optimizing high-latency deployments: {names(slow)}",
                impact="high",
            )
        )
    failing = [
        key
        for key, item in stats.items()
        if item.requests and item.error_rate > limits.error_rate_percent
    ]
    if failing:
        recommendations.append(
            Recommendation(
                type="high_error_rate_deployments",
                message=(
                    f"Investigate deployments failing more than {limits.error_rate_percent:g}% of "
                    f"requests: {names(failing)} (see GET /deployments/{{id}}/events and the "
                    "server logs)"
                ),
                impact="high",
            )
        )
    unoptimized = [
        key
        for key, item in stats.items()
        if facts[key].deployment.model_type is ModelType.ORIGINAL
        and (item.p95_latency or 0.0) > limits.optimize_latency_ms
    ]
    if unoptimized:
        recommendations.append(
            Recommendation(
                type="model_optimization",
                message=(
                    "Consider optimizing models using quantization, pruning, or distillation to "
                    f"improve performance: {names(unoptimized)} serve unoptimized models with p95 "
                    f"latency above {limits.optimize_latency_ms:g}ms (POST /models/{{id}}/optimize)"
                ),
                impact="medium",
            )
        )
    frequent = [
        key
        for key, item in stats.items()
        if (lifetime := facts[key].lifetime_seconds(window))
        and item.requests * 3600.0 / lifetime >= limits.caching_requests_per_hour
        and item.avg_latency >= limits.caching_latency_ms
    ]
    if frequent:
        recommendations.append(
            Recommendation(
                type="caching",
                message=(
                    "Implement caching for frequent requests to reduce latency and costs: "
                    f"{names(frequent)} serve {limits.caching_requests_per_hour:g} requests/h or "
                    f"more at a mean latency of {limits.caching_latency_ms:g}ms or more. "
                    "aideploy does not see request contents, so this rests on request rate and "
                    "latency alone: check how often inputs repeat before adding a cache (each "
                    "hit skips a model call)"
                ),
                impact="medium",
            )
        )
    return recommendations


def analyze_performance(
    facts: Mapping[str, DeploymentFacts],
    samples: Sequence[UsageSample],
    window: Window,
    limits: PerformanceThresholds,
    detail: Sequence[UsageSample] = (),
) -> PerformanceAnalysis:
    """``GET /analytics/performance``: one owner's deployments and their samples in ``window``
    (and up to :data:`BASELINE_LOOKBACK` before it, read only as the anomalies' baseline), with
    the minute ``detail`` of :func:`find_anomalies`."""
    history = by_deployment(
        sample for sample in samples if sample.deployment_id in facts and sample.start < window.end
    )
    grouped = {
        key: [sample for sample in parts if sample.start >= window.start]
        for key, parts in history.items()
    }
    per_deployment = {key: stats_of(grouped.get(key, [])) for key in facts}
    by_type: dict[str, list[UsageSample]] = {kind.value: [] for kind in DeploymentType}
    for key, item in facts.items():
        by_type[item.type.value].extend(grouped.get(key, []))
    everything = [sample for parts in grouped.values() for sample in parts]
    overall = stats_of(everything)
    fine = by_deployment(sample for sample in detail if sample.deployment_id in facts)
    settled = window.end - REPORT_DELAY
    anomalies = {
        key: found
        for key in facts
        if (
            found := find_anomalies(
                history.get(key, []), limits, fine.get(key, []), settled, window.start
            )
        )
    }
    return PerformanceAnalysis(
        timestamp=window.end,
        total_requests=overall.requests,
        avg_latency=overall.avg_latency,
        error_rate=overall.error_rate,
        performance_by_type={kind: stats_of(parts) for kind, parts in by_type.items()},
        performance_by_deployment=per_deployment,
        recommendations=_recommendations(facts, per_deployment, window, limits),
        anomalies=anomalies,
        start_time=window.start,
        end_time=window.end,
    )
