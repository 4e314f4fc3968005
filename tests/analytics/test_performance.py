"""Performance totals, and anomalies found where they were planted and nowhere else."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from api.analytics.performance import PerformanceThresholds, analyze_performance
from api.analytics.records import UsageSample, Window
from tests.analytics.support import EPOCH, hours, make_facts, make_sample

WEEK = Window(EPOCH, EPOCH + timedelta(days=7))


def _diurnal_week(
    deployment_id: str = "dep-1", seed: int = 3, days: int = 7
) -> tuple[list[UsageSample], list[int]]:
    """``days`` (a week) of hourly traffic with a daily rhythm (busy days, quiet nights) and
    noise."""
    rng = np.random.default_rng(seed)
    samples, counts = [], []
    for hour in hours(days * 24):
        expected = 1_000 + 800 * np.sin((hour.hour - 6) / 24 * 2 * np.pi)
        count = int(rng.poisson(expected))
        counts.append(count)
        latency = float(rng.normal(50, 2))
        errors = int(rng.binomial(count, 0.005))
        samples.append(
            make_sample(
                hour, deployment_id=deployment_id, requests=count, errors=errors, latency_ms=latency
            )
        )
    return samples, counts


def test_totals_by_type_and_by_deployment() -> None:
    api = make_facts("api")
    batch = make_facts("batch", deployment_type="serverless")
    samples = [
        make_sample(EPOCH, deployment_id="api", requests=300, errors=3, latency_ms=40.0),
        make_sample(EPOCH, deployment_id="batch", requests=100, errors=4, latency_ms=120.0),
    ]
    result = analyze_performance(
        {"api": api, "batch": batch}, samples, WEEK, PerformanceThresholds()
    )
    assert result.total_requests == 400
    assert result.avg_latency == pytest.approx((300 * 40 + 100 * 120) / 400)
    assert result.error_rate == pytest.approx(100 * 7 / 400)
    assert result.performance_by_type["serverless"].requests == 100
    only_kubernetes = analyze_performance({"api": api}, samples, WEEK, PerformanceThresholds())
    assert only_kubernetes.performance_by_type["serverless"].requests == 0  # every type is shown
    assert only_kubernetes.performance_by_type["kubernetes"].requests == 300
    assert result.performance_by_deployment["api"].error_rate == pytest.approx(1.0)
    assert result.performance_by_deployment["batch"].p95_latency is not None
    assert result.anomalies == {}


def test_planted_anomalies_are_found_and_nothing_else() -> None:
    samples, counts = _diurnal_week()
    spike_at, slow_at, failing_at = 100, 120, 140
    samples[spike_at] = make_sample(samples[spike_at].start, requests=counts[spike_at] * 4)
    samples[slow_at] = make_sample(
        samples[slow_at].start, requests=counts[slow_at], latency_ms=160.0
    )
    failing = samples[failing_at]
    samples[failing_at] = make_sample(
        failing.start, requests=failing.requests, errors=failing.requests // 4
    )
    facts = make_facts()
    result = analyze_performance({facts.id: facts}, samples, WEEK, PerformanceThresholds())
    found = {(item.type, item.timestamp) for item in result.anomalies["dep-1"]}
    assert found == {
        ("request_spike", EPOCH + timedelta(hours=spike_at)),
        ("latency_spike", EPOCH + timedelta(hours=slow_at)),
        ("error_spike", EPOCH + timedelta(hours=failing_at)),
        ("high_error_rate", EPOCH + timedelta(hours=failing_at)),
    }
    threshold = next(item for item in result.anomalies["dep-1"] if item.type == "high_error_rate")
    assert "(threshold: 5%)" in threshold.message


def test_a_daily_rhythm_alone_is_not_anomalous() -> None:
    for seed in range(5):
        samples, _ = _diurnal_week(seed=seed)
        facts = make_facts()
        result = analyze_performance({facts.id: facts}, samples, WEEK, PerformanceThresholds())
        assert result.anomalies == {}, seed


def test_threshold_anomalies_on_minutes_form_one_episode_each() -> None:
    """Three slow minutes in a row are one anomaly at the first; thresholds are configurable."""
    minute = timedelta(minutes=1)
    samples = [
        make_sample(EPOCH + minute * k, seconds=60, requests=30, latency_ms=40.0) for k in range(60)
    ]
    for k in (10, 11, 12):
        samples[k] = make_sample(EPOCH + minute * k, seconds=60, requests=30, latency_ms=1_500.0)
    facts = make_facts()
    result = analyze_performance({facts.id: facts}, samples, WEEK, PerformanceThresholds())
    [anomaly] = result.anomalies["dep-1"]
    assert anomaly.type == "high_latency"
    assert anomaly.timestamp == EPOCH + minute * 10
    assert anomaly.message == "High latency detected: 1500ms (threshold: 1000ms)"
    strict = analyze_performance(
        {facts.id: facts}, samples, WEEK, PerformanceThresholds(latency_ms=2_000.0)
    )
    assert strict.anomalies == {}


def test_recommendations_follow_the_numbers() -> None:
    slow = make_facts("slow")
    fine = make_facts("fine", model_type="optimized")
    samples = [
        make_sample(EPOCH, deployment_id="slow", requests=100, latency_ms=1_200.0),
        make_sample(EPOCH, deployment_id="fine", requests=100, latency_ms=20.0),
    ]
    result = analyze_performance(
        {"slow": slow, "fine": fine}, samples, WEEK, PerformanceThresholds()
    )
    kinds = {item.type: item.message for item in result.recommendations}
    assert "slow" in kinds["high_latency_deployments"]
    assert "fine" not in kinds["high_latency_deployments"]
    assert "slow" in kinds["model_optimization"]
    assert "high_error_rate_deployments" not in kinds


def test_the_hour_still_being_reported_is_not_a_drop() -> None:
    """Ten minutes into an hour, its sample holds a sixth of the usual traffic: not an anomaly."""
    samples = [make_sample(hour, requests=6_000) for hour in hours(7 * 24)]
    now = EPOCH + timedelta(days=7, minutes=10)
    samples.append(make_sample(EPOCH + timedelta(days=7), requests=1_000))
    facts = make_facts()
    window = Window(EPOCH, now)
    result = analyze_performance({facts.id: facts}, samples, window, PerformanceThresholds())
    assert result.anomalies == {}
    later = Window(EPOCH, now + timedelta(hours=1))  # the hour is over and it stayed quiet
    result = analyze_performance({facts.id: facts}, samples, later, PerformanceThresholds())
    assert [anomaly.type for anomaly in result.anomalies["dep-1"]] == ["request_drop"]


def test_low_traffic_thresholds_are_judged_by_the_hour() -> None:
    """10 requests a minute never make a minute worth judging; the hour of 600 requests at 30 %
    errors is. A slow hour whose minutes were judged is reported once, at its first bad minute."""
    samples = [make_sample(hour, requests=600, latency_ms=40.0) for hour in hours(7 * 24)]
    failing, slow = EPOCH + timedelta(hours=100), EPOCH + timedelta(hours=120)
    samples[100] = make_sample(failing, requests=600, errors=180, latency_ms=40.0)
    samples[120] = make_sample(slow, requests=600, latency_ms=1_500.0)
    # What the database hands over: only minutes with enough requests that broke a threshold.
    detail = [
        make_sample(slow + timedelta(minutes=10), seconds=60, requests=30, latency_ms=1_500.0)
    ]
    facts = make_facts()
    result = analyze_performance(
        {facts.id: facts}, samples, WEEK, PerformanceThresholds(), detail=detail
    )
    thresholds = {
        (item.type, item.timestamp, item.message)
        for item in result.anomalies["dep-1"]
        if item.type.startswith("high_")
    }
    assert thresholds == {
        ("high_error_rate", failing, "High error rate detected: 30.0% (threshold: 5%)"),
        (
            "high_latency",
            slow + timedelta(minutes=10),
            "High latency detected: 1500ms (threshold: 1000ms)",
        ),
    }


def _weekly_hours(weeks: int) -> tuple[list[UsageSample], list[datetime]]:
    """Busy weekdays, weekends at a tenth, a daily rhythm and ±2 % noise; Monday first."""
    rng = np.random.default_rng(11)
    samples = []
    for hour in hours(weeks * 7 * 24):
        level = 1_000 + 800 * np.sin((hour.hour - 6) / 24 * 2 * np.pi)
        if hour.weekday() >= 5:
            level *= 0.1
        count = int(level * rng.uniform(0.98, 1.02))
        samples.append(make_sample(hour, requests=count, latency_ms=50.0))
    return samples, hours(weeks * 7 * 24)


def test_weekly_baseline_learns_the_weekend() -> None:
    """From the third week on each hour is judged against the same hour of earlier weeks: quiet
    weekends are normal there (a daily baseline would call every weekend hour a drop), and a
    Sunday as busy as a weekday is the anomaly."""
    samples, starts = _weekly_hours(3)
    sunday_noon = EPOCH + timedelta(days=20, hours=12)
    index = starts.index(sunday_noon)
    samples[index] = make_sample(sunday_noon, requests=1_800, latency_ms=50.0)
    third_week = Window(EPOCH + timedelta(days=14), EPOCH + timedelta(days=21))
    facts = make_facts()
    result = analyze_performance({facts.id: facts}, samples, third_week, PerformanceThresholds())
    found = {(item.type, item.timestamp) for item in result.anomalies["dep-1"]}
    assert found == {("request_spike", sunday_noon)}
    assert result.total_requests == sum(
        sample.requests for sample in samples if sample.start >= third_week.start
    )


def test_a_short_window_is_judged_against_the_history_before_it() -> None:
    """A one-day window: its spike five hours in is judged against the days before the window
    (on the window alone there is no baseline yet); a spike before the window is not reported."""
    samples, counts = _diurnal_week(days=14)
    inside = 13 * 24 + 5
    before = 10 * 24 + 5
    for index in (inside, before):
        samples[index] = make_sample(samples[index].start, requests=counts[index] * 4)
    last_day = Window(EPOCH + timedelta(days=13), EPOCH + timedelta(days=14))
    facts = make_facts()
    result = analyze_performance({facts.id: facts}, samples, last_day, PerformanceThresholds())
    found = {(item.type, item.timestamp) for item in result.anomalies["dep-1"]}
    assert found == {("request_spike", EPOCH + timedelta(hours=inside))}
    assert result.total_requests == sum(counts[13 * 24 :]) + 3 * counts[inside]
    window_only = [sample for sample in samples if sample.start >= last_day.start]
    blind = analyze_performance({facts.id: facts}, window_only, last_day, PerformanceThresholds())
    assert blind.anomalies == {}


def test_caching_is_recommended_for_busy_slow_deployments() -> None:
    """Request contents are not recorded, so repeats cannot be counted: the recommendation rests
    on rate (3600/h or more) and mean latency (100 ms or more), and says so."""
    busy_slow = make_facts("busy-slow", model_type="optimized")
    busy_fast = make_facts("busy-fast")
    quiet_slow = make_facts("quiet-slow", model_type="optimized")
    samples = [
        make_sample(hour, deployment_id=key, requests=count, latency_ms=latency)
        for hour in hours(7 * 24)
        for key, count, latency in (
            ("busy-slow", 5_000, 150.0),
            ("busy-fast", 5_000, 20.0),
            ("quiet-slow", 100, 150.0),
        )
    ]
    facts = {item.id: item for item in (busy_slow, busy_fast, quiet_slow)}
    result = analyze_performance(facts, samples, WEEK, PerformanceThresholds())
    [caching] = [item for item in result.recommendations if item.type == "caching"]
    assert "busy-slow serve 3600 requests/h or more" in caching.message
    assert "busy-fast" not in caching.message
    assert "quiet-slow" not in caching.message
    assert "does not see request contents" in caching.message
