"""Performance totals, and anomalies found where they were planted and nowhere else."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from api.analytics.performance import PerformanceThresholds, analyze_performance
from api.analytics.records import UsageSample, Window
from tests.analytics.support import EPOCH, hours, make_facts, make_sample

WEEK = Window(EPOCH, EPOCH + timedelta(days=7))


def _diurnal_week(
    deployment_id: str = "dep-1", seed: int = 3
) -> tuple[list[UsageSample], list[int]]:
    """A week of hourly traffic with a daily rhythm (busy days, quiet nights) and noise."""
    rng = np.random.default_rng(seed)
    samples, counts = [], []
    for hour in hours(7 * 24):
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
