"""``/analytics/cost|performance|forecast|suggestions`` for the caller's deployments, and
``POST /deployments/{id}/usage`` where serving processes report what they did."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath, JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import (
    CostAnalysis,
    OptimizationSuggestions,
    PerformanceAnalysis,
    UsageForecast,
    utc_now,
)
from aideploy.settings import Settings
from aideploy_iac.pricing import load_catalog
from api.analytics.cost import PricingOptions, analyze_cost
from api.analytics.forecast import forecast_usage
from api.analytics.performance import (
    BASELINE_LOOKBACK,
    PerformanceThresholds,
    analyze_performance,
)
from api.analytics.records import DeploymentFacts, UsageSample, Window
from api.analytics.schemas import UsageReceipt, UsageReport
from api.analytics.store import (
    RollupScheduler,
    load_facts,
    load_samples,
    load_threshold_minutes,
    record_usage,
)
from api.analytics.suggestions import suggest
from api.analytics.tokens import verify_usage_token
from api.auth.middleware import CurrentUser
from api.auth.tokens import load_signing_key
from api.context import ApiContext
from api.db.tables import DeploymentRow
from api.errors import InvalidFieldError, NotFoundError

__all__ = ["AnalyticsController", "UsageController"]

DEFAULT_DAYS = 30
SUGGESTION_DAYS = 14

StartTime = Annotated[
    datetime | None,
    Parameter(description="Start of the analysed window (ISO 8601; default: 30 days before end)."),
]
EndTime = Annotated[
    datetime | None, Parameter(description="End of the analysed window (ISO 8601; default: now).")
]

_rollups = RollupScheduler()


def _utc(moment: datetime) -> datetime:
    """Times without a zone are taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Windows lie between these: far enough from the calendar's ends (years 1 and 9999) that a
window, its baselines and a year of forecast stay representable."""


def _bounded(field: str, moment: datetime | None) -> datetime | None:
    """``moment`` in UTC, or a 422 naming ``field`` when it is outside the supported range."""
    if moment is None:
        return None
    try:
        utc = _utc(moment)
    except OverflowError:  # 0001-01-01T00:00-01:00 has no UTC equivalent
        utc = _EARLIEST - timedelta(days=1)
    if not _EARLIEST <= utc <= _LATEST:
        raise InvalidFieldError(field, "must lie between 1970-01-01 and 9000-01-01")
    return utc


def _window(start: datetime | None, end: datetime | None, default_days: int) -> Window:
    finish = _bounded("end_time", end) or utc_now()
    begin = _bounded("start_time", start) or finish - timedelta(days=default_days)
    if finish <= begin:
        raise InvalidFieldError("end_time", "must be after start_time")
    if finish - begin > timedelta(days=366):
        raise InvalidFieldError("start_time", "the window may span at most 366 days")
    return Window(begin, finish)


def pricing_options(settings: Settings) -> PricingOptions:
    return PricingOptions(
        catalog=load_catalog(),
        regions=settings.default_regions,
        local_priced_as=settings.analytics_reference_cloud,
    )


def thresholds(settings: Settings) -> PerformanceThresholds:
    return PerformanceThresholds(
        error_rate_percent=settings.analytics_error_rate_threshold,
        latency_ms=settings.analytics_latency_threshold_ms,
    )


async def _usage(
    session: AsyncSession, owner_id: str, window: Window
) -> tuple[dict[str, DeploymentFacts], list[UsageSample]]:
    """The caller's deployments and their samples: nobody else's ever enter an analysis."""
    facts = await load_facts(session, owner_id)
    return facts, await load_samples(session, list(facts), window)


class AnalyticsController(Controller):
    path = "/analytics"
    tags = ["analytics"]

    @get("/cost", operation_id="AnalyticsCost")
    async def cost(
        self,
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
        start_time: StartTime = None,
        end_time: EndTime = None,
    ) -> CostAnalysis:
        """What the caller's deployments cost in the window at catalog list prices, and what the
        same usage would cost on each cloud's managed ML endpoint."""
        window = _window(start_time, end_time, DEFAULT_DAYS)
        facts, samples = await _usage(db_session, current_user.id, window)
        return analyze_cost(facts, samples, window, pricing_options(context.settings))

    @get("/performance", operation_id="AnalyticsPerformance")
    async def performance(
        self,
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
        start_time: StartTime = None,
        end_time: EndTime = None,
        error_rate_threshold: Annotated[
            float | None,
            Parameter(gt=0, le=100, description="*Extension*: anomaly threshold in percent."),
        ] = None,
        latency_threshold: Annotated[
            float | None,
            Parameter(gt=0, description="*Extension*: anomaly threshold on mean latency, ms."),
        ] = None,
    ) -> PerformanceAnalysis:
        """Requests, latency and errors, with threshold and statistical anomalies (thresholds
        from the settings unless given)."""
        window = _window(start_time, end_time, DEFAULT_DAYS)
        facts = await load_facts(db_session, current_user.id)
        # The anomalies' baselines reach back before the window; only its anomalies are reported.
        baseline = Window(window.start - BASELINE_LOOKBACK, window.end)
        samples = await load_samples(db_session, list(facts), baseline)
        limits = thresholds(context.settings)
        limits = replace(
            limits,
            error_rate_percent=error_rate_threshold or limits.error_rate_percent,
            latency_ms=latency_threshold or limits.latency_ms,
        )
        detail = await load_threshold_minutes(db_session, list(facts), window, limits)
        return analyze_performance(facts, samples, window, limits, detail)

    @get("/forecast", operation_id="AnalyticsForecast")
    async def forecast(
        self,
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
        days: Annotated[
            int, Parameter(ge=1, le=365, description="Days to forecast (default 30).")
        ] = DEFAULT_DAYS,
        start_time: StartTime = None,
        end_time: EndTime = None,
    ) -> UsageForecast:
        """Daily request and cost forecasts fitted to the window's history."""
        window = _window(start_time, end_time, DEFAULT_DAYS)
        facts, samples = await _usage(db_session, current_user.id, window)
        return forecast_usage(facts, samples, window, days, pricing_options(context.settings))

    @get("/suggestions", operation_id="AnalyticsSuggestions")
    async def suggestions(
        self,
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
        start_time: Annotated[
            datetime | None,
            Parameter(
                description="*Extension*: start of the window (default: 14 days before end)."
            ),
        ] = None,
        end_time: Annotated[
            datetime | None, Parameter(description="*Extension*: end of the window (default: now).")
        ] = None,
    ) -> OptimizationSuggestions:
        """Right-sizing, spot, hibernation, serverless and latency suggestions per deployment."""
        window = _window(start_time, end_time, SUGGESTION_DAYS)
        facts, samples = await _usage(db_session, current_user.id, window)
        settings = context.settings
        return suggest(
            facts, samples, window, pricing_options(settings), limits=thresholds(settings)
        )


class UsageController(Controller):
    path = "/deployments"
    tags = ["analytics"]

    @post(
        "/{deployment_id:str}/usage",
        operation_id="ReportUsage",
        status_code=202,
        exclude_from_auth=True,
    )
    async def report_usage(
        self,
        request: Request[Any, Any, Any],
        deployment_id: FromPath[str],
        data: JSONBody[UsageReport],
        db_session: NamedDependency[AsyncSession],
        context: NamedDependency[ApiContext],
    ) -> UsageReceipt:
        """*Extension*: a deployment's serving process reports its usage per minute, with the
        deployment-scoped token the platform gave it (``Authorization: Bearer dpl_...``); a user
        token is refused. A minute sent again replaces the earlier copy."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = load_signing_key(context.settings)
        if scheme.lower() != "bearer" or not verify_usage_token(key, deployment_id, token.strip()):
            raise NotAuthorizedException(
                "missing or invalid usage token: send 'Authorization: Bearer <the deployment's "
                "usage token>' (AIDEPLOY_SERVE_USAGE_TOKEN)"
            )
        if await db_session.get(DeploymentRow, deployment_id) is None:
            raise NotFoundError(f"deployment {deployment_id} not found")
        retention = timedelta(days=context.settings.usage_minute_retention_days)
        try:
            receipt = await record_usage(
                db_session, deployment_id, data, now=utc_now(), retention=retention
            )
        except LookupError:  # deleted while the report was on its way
            raise NotFoundError(f"deployment {deployment_id} not found") from None
        _rollups.maybe_start(context.database, retention)
        return receipt
