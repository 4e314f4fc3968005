"""Forecasts recover the shape they were given, and say so when the history is too short."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from api.analytics.cost import PricingOptions
from api.analytics.forecast import forecast_series, forecast_usage
from api.analytics.records import UsageSample, Window
from tests.analytics.support import EPOCH, make_facts, make_sample

WEEKLY = [1.0, 1.1, 1.2, 1.15, 1.05, 0.4, 0.3]
"""Monday..Sunday traffic relative to the weekly mean: busy weekdays, quiet weekend."""


def _daily_samples(daily_requests: list[float], deployment_id: str = "dep-1") -> list[UsageSample]:
    """Each day's requests spread over its 24 hours, one instance up all along."""
    return [
        make_sample(
            EPOCH + timedelta(days=day, hours=hour),
            deployment_id=deployment_id,
            requests=round(total / 24),
        )
        for day, total in enumerate(daily_requests)
        for hour in range(24)
    ]


def test_a_linear_trend_is_recovered_within_two_percent() -> None:
    rng = np.random.default_rng(7)
    days = np.arange(28)
    history = 10_000 + 400 * days + rng.normal(0, 100, size=28)
    result = forecast_series(list(history), first_weekday=0, horizon=30)
    truth = 10_000 + 400 * np.arange(28, 58)
    assert result.method == "trend_weekly"
    assert np.allclose(result.values, truth, rtol=0.02)
    assert all(
        lo <= value <= hi
        for lo, value, hi in zip(result.lower, result.values, result.upper, strict=True)
    )
    assert result.backtest_error is not None
    assert result.backtest_error < 2.0
    # The band widens with the horizon.
    assert result.upper[-1] - result.lower[-1] > result.upper[0] - result.lower[0]


def test_a_weekly_pattern_is_recovered() -> None:
    history = [5_000 * WEEKLY[day % 7] + 20 * day for day in range(35)]  # Monday first
    result = forecast_series(history, first_weekday=0, horizon=14)
    truth = [5_000 * WEEKLY[day % 7] + 20 * day for day in range(35, 49)]
    assert result.method == "trend_weekly"
    assert np.allclose(result.values, truth, rtol=0.02)
    saturday, tuesday = result.values[5], result.values[1]
    assert saturday < 0.5 * tuesday


def test_a_noisy_weekly_pattern_is_recovered() -> None:
    rng = np.random.default_rng(5)
    truth_of = [5_000 * WEEKLY[day % 7] + 20 * day for day in range(49)]
    history = [value + rng.normal(0, 150) for value in truth_of[:35]]  # about 3 % noise
    result = forecast_series(history, first_weekday=0, horizon=14)
    assert result.method == "trend_weekly"
    error = np.abs(np.subtract(result.values, truth_of[35:]))
    assert error.sum() / sum(truth_of[35:]) < 0.03  # weighted absolute percentage error
    assert error.max() < 2 * 150  # no day off by more than twice the noise
    saturday, tuesday = result.values[5], result.values[1]
    assert saturday < 0.5 * tuesday
    assert result.backtest_error is not None
    assert result.backtest_error < 5.0


@pytest.mark.parametrize("days", range(14, 21))
def test_the_backtest_measures_the_model_that_forecasts(days: int) -> None:
    """From 14 days the weekly model forecasts, and it is the weekly model that is backtested
    on the held-out days (fewer than 14 days remain to fit it): a weekly series it fits
    exactly has no backtest error."""
    history = [5_000 * WEEKLY[day % 7] + 20 * day for day in range(days)]
    result = forecast_series(history, first_weekday=0, horizon=7)
    assert result.method == "trend_weekly"
    assert result.backtest_error is not None
    assert result.backtest_error < 0.01


def test_short_histories_say_so_instead_of_inventing_a_trend() -> None:
    rising = [100.0, 200.0, 300.0]
    result = forecast_series(rising, first_weekday=0, horizon=5)
    assert result.method == "level"
    assert result.values == [200.0] * 5
    assert result.note is not None
    assert "3 day(s)" in result.note
    week = forecast_series([100.0 + 10 * day for day in range(10)], first_weekday=0, horizon=3)
    assert week.method == "linear_trend"
    assert week.values == pytest.approx([200.0, 210.0, 220.0])
    assert forecast_series([], 0, 5).values == []


def test_forecast_usage_totals_and_per_deployment(pricing: PricingOptions) -> None:
    first = make_facts("first", model_size_bytes=0)
    second = make_facts("second", model_size_bytes=0)
    daily = [24_000.0 + 240 * day for day in range(21)]
    samples = _daily_samples(daily, "first") + _daily_samples([4_800.0] * 21, "second")
    window = Window(EPOCH, EPOCH + timedelta(days=21))
    result = forecast_usage({"first": first, "second": second}, samples, window, 7, pricing)
    assert result.days == 7
    assert result.first_day == (EPOCH + timedelta(days=21)).date()
    assert len(result.total_requests_history) == 21
    assert result.total_requests_history[EPOCH.date()] == 24_000 + 4_800
    one = result.forecast_by_deployment["first"]
    assert one.method == "trend_weekly"
    assert one.history_days == 21
    assert one.current_requests == sum(round(total / 24) * 24 for total in daily)
    truth = [24_000 + 240 * day for day in range(21, 28)]
    assert np.allclose(one.requests_forecast, truth, rtol=0.02)
    # Requests are forecast in whole requests, as the API contract shows them.
    for values in (
        one.requests_forecast,
        one.requests_lower,
        one.requests_upper,
        result.total_requests_forecast,
        result.total_requests_lower,
        result.total_requests_upper,
    ):
        assert values
        assert all(float(value).is_integer() for value in values)
    assert np.allclose(
        result.total_requests_forecast,
        np.add(one.requests_forecast, result.forecast_by_deployment["second"].requests_forecast),
    )
    # One instance all day, every day: the cost is flat and so is its forecast.
    assert np.allclose(one.cost_forecast, one.cost_forecast[0])
    assert one.cost_forecast[0] > 0
    assert one.current_cost == pytest.approx(21 * one.cost_forecast[0], rel=1e-3)


def test_no_history_gives_no_forecast(pricing: PricingOptions) -> None:
    facts = make_facts(model_size_bytes=0)
    window = Window(EPOCH, EPOCH + timedelta(days=3))
    result = forecast_usage({facts.id: facts}, [], window, 30, pricing)
    deployment = result.forecast_by_deployment["dep-1"]
    assert deployment.method == "level"  # three idle days are history: zero traffic
    assert deployment.requests_forecast == [0.0] * 30
    empty = forecast_usage({}, [], window, 30, pricing)
    assert empty.total_requests_forecast == []
    assert empty.note is not None
