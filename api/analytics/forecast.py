"""Daily request and cost forecasts from each deployment's own history.

The model grows with the history, and the response names the one used:

- **no history**: no forecast at all (empty lists) and a note saying so;
- **under 7 days** (``level``): the daily mean, flat: too few days to tell a trend from noise;
- **7 to 13 days** (``linear_trend``): least-squares line through the daily values;
- **14 days or more** (``trend_weekly``): least-squares line plus a day-of-week profile
  (additive, effect-coded so the profile sums to zero), fitted jointly.

The band is the ordinary-least-squares 95 % prediction interval: it widens with the distance
from the data and with the scatter the model could not explain. The error measure comes from a
backtest: the last ``min(7, n // 3)`` days are held out, the very model that makes the forecast
(``trend_weekly`` stays ``trend_weekly`` even when fewer than 14 days remain) is fitted to the
rest, and the weighted absolute percentage error of its forecast of the held-out days is
reported; ``null`` when the rest has no more days than the model has parameters. Forecasts are
clamped at zero (traffic is never negative); request forecasts are whole requests.

History is made of whole UTC days; a deployment's history starts on its first whole day with
usage.
``current_requests`` and ``current_cost`` are the totals over the history window, so they match
``GET /analytics/cost`` for the same window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from aideploy.schema import DeploymentForecast, UsageForecast
from api.analytics.cost import PricingOptions, control_plane_shares, deployment_cost
from api.analytics.records import DeploymentFacts, UsageSample, Window

__all__ = ["SeriesForecast", "daily_history", "forecast_series", "forecast_usage"]

DAY = timedelta(days=1)
_Z95 = 1.959964
MIN_TREND_DAYS = 7
MIN_SEASONAL_DAYS = 14


@dataclass(frozen=True)
class SeriesForecast:
    """A forecast of one daily series: values with their 95 % band and standard errors."""

    values: list[float]
    lower: list[float]
    upper: list[float]
    sigma: list[float]
    """The standard error of each forecast day (combines into totals' bands)."""
    method: str
    history_days: int
    backtest_error: float | None
    """Weighted absolute percentage error of a backtest on held-out days, in percent."""
    note: str | None = None


def _design(days: np.ndarray, weekdays: np.ndarray, method: str) -> np.ndarray:
    columns = [np.ones_like(days, dtype=float)]
    if method != "level":
        columns.append(days.astype(float))
    if method == "trend_weekly":
        # Effect coding: Monday..Saturday columns, Sunday is -1 in all of them.
        for weekday in range(6):
            columns.append(np.where(weekdays == weekday, 1.0, np.where(weekdays == 6, -1.0, 0.0)))
    return np.column_stack(columns)


def _method_for(days: int) -> str:
    if days >= MIN_SEASONAL_DAYS:
        return "trend_weekly"
    if days >= MIN_TREND_DAYS:
        return "linear_trend"
    return "level"


def _fit_and_predict(
    history: np.ndarray, first_weekday: int, horizon: int, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Forecast ``horizon`` days after ``history`` and each day's standard error."""
    count = len(history)
    days = np.arange(count + horizon)
    weekdays = (first_weekday + days) % 7
    design = _design(days, weekdays, method)
    fitted, future = design[:count], design[count:]
    coefficients, *_ = np.linalg.lstsq(fitted, history, rcond=None)
    residuals = history - fitted @ coefficients
    freedom = count - fitted.shape[1]
    scatter = float(np.sqrt(residuals @ residuals / freedom)) if freedom > 0 else 0.0
    inverse = np.linalg.pinv(fitted.T @ fitted)
    leverage = np.einsum("ij,jk,ik->i", future, inverse, future)
    return future @ coefficients, scatter * np.sqrt(1.0 + leverage)


def _parameters(method: str) -> int:
    """Coefficients of a method's design: level, slope, six day-of-week effects."""
    return {"level": 1, "linear_trend": 2}.get(method, 8)


def _backtest(history: np.ndarray, first_weekday: int, method: str) -> float | None:
    """The held-out error of ``method`` itself (not of whatever the shorter history would pick)."""
    held_out = min(7, len(history) // 3)
    if held_out < 1 or len(history) - held_out <= _parameters(method):
        return None
    train, test = history[:-held_out], history[-held_out:]
    predicted, _ = _fit_and_predict(train, first_weekday, held_out, method)
    scale = float(np.abs(test).sum())
    if scale == 0:
        return None
    return round(100.0 * float(np.abs(test - np.maximum(predicted, 0.0)).sum()) / scale, 2)


def forecast_series(
    history: Sequence[float], first_weekday: int, horizon: int, *, whole: bool = False
) -> SeriesForecast:
    """Forecast ``horizon`` days following the daily ``history`` (``first_weekday``: 0=Monday);
    ``whole`` rounds the values and band to whole numbers (requests)."""
    count = len(history)
    if count == 0:
        return SeriesForecast(
            [], [], [], [], "none", 0, None, "no usage recorded yet: nothing to forecast"
        )
    values = np.asarray(history, dtype=float)
    method = _method_for(count)
    predicted, sigma = _fit_and_predict(values, first_weekday, horizon, method)
    note = None
    if method == "level":
        note = (
            f"only {count} day(s) of history: the forecast is the daily mean, without a trend "
            f"(a trend is fitted from {MIN_TREND_DAYS} days, a weekly pattern from "
            f"{MIN_SEASONAL_DAYS})"
        )
    elif method == "linear_trend":
        note = f"{count} days of history: no weekly pattern before {MIN_SEASONAL_DAYS} days"
    digits = 0 if whole else 4

    def shown(series: np.ndarray) -> list[float]:
        return [round(float(value), digits) for value in np.maximum(series, 0.0)]

    return SeriesForecast(
        values=shown(predicted),
        lower=shown(predicted - _Z95 * sigma),
        upper=shown(predicted + _Z95 * sigma),
        sigma=[float(value) for value in sigma],
        method=method,
        history_days=count,
        backtest_error=_backtest(values, first_weekday, method),
        note=note,
    )


def _day_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _day_ceil(moment: datetime) -> datetime:
    floor = _day_floor(moment)
    return floor if floor == moment else floor + DAY


def daily_history(
    facts: DeploymentFacts,
    samples: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
    shares: Mapping[datetime, float] | None = None,
) -> tuple[list[datetime], list[float], list[float]]:
    """The whole UTC days of ``window`` since the deployment first served, with its requests and
    cost (days before its first usage are not zeros of its history: it was not running yet);
    ``shares`` holds each day's control-plane seconds (see
    :func:`~api.analytics.cost.control_plane_shares`; default: alone on its cluster)."""
    first = max(_day_ceil(window.start), _day_ceil(facts.deployment.created_at))
    if samples:
        first = max(first, _day_ceil(min(sample.start for sample in samples)))
    last = _day_floor(window.end)
    days = [first + DAY * index for index in range(max(0, (last - first) // DAY))]
    per_day: dict[datetime, list[UsageSample]] = {day: [] for day in days}
    for sample in samples:
        day = _day_floor(sample.start)
        if day in per_day:
            per_day[day].append(sample)
    requests = [float(sum(sample.requests for sample in per_day[day])) for day in days]
    costs = [
        deployment_cost(
            facts, per_day[day], Window(day, day + DAY), options, (shares or {}).get(day)
        ).total
        for day in days
    ]
    return days, requests, costs


def _totals(
    parts: Sequence[SeriesForecast], horizon: int, *, whole: bool = False
) -> tuple[list[float], list[float], list[float]]:
    """Sums of the deployments' forecasts; the band assumes their errors independent."""
    usable = [part for part in parts if part.values]
    if not usable:
        return [], [], []
    digits = 0 if whole else 4
    values, lower, upper = [], [], []
    for day in range(horizon):
        value = sum(part.values[day] for part in usable)
        spread = _Z95 * math.sqrt(sum(part.sigma[day] ** 2 for part in usable))
        values.append(round(value, digits))
        lower.append(round(max(0.0, value - spread), digits))
        upper.append(round(value + spread, digits))
    return values, lower, upper


def forecast_usage(
    facts: Mapping[str, DeploymentFacts],
    samples: Sequence[UsageSample],
    window: Window,
    horizon: int,
    options: PricingOptions,
) -> UsageForecast:
    """``GET /analytics/forecast``: ``horizon`` days from one owner's history in ``window``."""
    grouped: dict[str, list[UsageSample]] = {key: [] for key in facts}
    for sample in samples:
        if sample.deployment_id in grouped and window.start <= sample.start < window.end:
            grouped[sample.deployment_id].append(sample)
    per_deployment: dict[str, DeploymentForecast] = {}
    request_parts: list[SeriesForecast] = []
    cost_parts: list[SeriesForecast] = []
    requests_history: dict[date, float] = {}
    cost_history: dict[date, float] = {}
    shares = control_plane_shares(facts, window, options)
    first, last = _day_ceil(window.start), _day_floor(window.end)
    day_shares = {
        day: control_plane_shares(facts, Window(day, day + DAY), options)
        for day in (first + DAY * index for index in range(max(0, (last - first) // DAY)))
    }
    for key, item in facts.items():
        if item.ended_at is not None:
            continue  # deleted: it has no future
        days, requests, costs = daily_history(
            item,
            grouped[key],
            window,
            options,
            {day: per[key] for day, per in day_shares.items() if key in per},
        )
        for day, count, cost in zip(days, requests, costs, strict=True):
            requests_history[day.date()] = requests_history.get(day.date(), 0.0) + count
            cost_history[day.date()] = cost_history.get(day.date(), 0.0) + cost
        weekday = days[0].weekday() if days else 0
        request_forecast = forecast_series(requests, weekday, horizon, whole=True)
        cost_forecast = forecast_series(costs, weekday, horizon)
        request_parts.append(request_forecast)
        cost_parts.append(cost_forecast)
        per_deployment[key] = DeploymentForecast(
            deployment_name=item.name,
            current_requests=int(sum(sample.requests for sample in grouped[key])),
            current_cost=round(
                deployment_cost(item, grouped[key], window, options, shares.get(key)).total, 4
            ),
            requests_forecast=request_forecast.values,
            cost_forecast=cost_forecast.values,
            requests_lower=request_forecast.lower,
            requests_upper=request_forecast.upper,
            cost_lower=cost_forecast.lower,
            cost_upper=cost_forecast.upper,
            method=request_forecast.method,
            history_days=request_forecast.history_days,
            backtest_error=request_forecast.backtest_error,
            cost_backtest_error=cost_forecast.backtest_error,
            note=request_forecast.note,
        )
    total_requests, requests_lower, requests_upper = _totals(request_parts, horizon, whole=True)
    total_cost, cost_lower, cost_upper = _totals(cost_parts, horizon)
    longest = max((part.history_days for part in request_parts), default=0)
    return UsageForecast(
        timestamp=window.end,
        days=horizon,
        total_requests_forecast=total_requests,
        total_cost_forecast=total_cost,
        forecast_by_deployment=per_deployment,
        first_day=_day_floor(window.end).date(),
        total_requests_lower=requests_lower,
        total_requests_upper=requests_upper,
        total_cost_lower=cost_lower,
        total_cost_upper=cost_upper,
        history_days=longest,
        total_requests_history=dict(sorted(requests_history.items())),
        total_cost_history={day: round(cost, 4) for day, cost in sorted(cost_history.items())},
        note=None
        if total_requests
        else "no usage recorded in the history window: nothing to forecast",
    )
