"""``aideploy analytics cost|performance|forecast|suggestions``: the API's analytics as tables,
and as PNG charts with ``--chart``.

The commands are clients of the REST API rather than readers of the database: usage only exists
where the API runs (deployments push it there), the API decides whose deployments a token may
see, and the same commands then work against a remote installation with nothing but a URL and a
token. Nothing heavy is imported at module level (httpx and matplotlib load when used).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aideploy.console import fail, settings_or_fail
from aideploy.schema import (
    CostAnalysis,
    OptimizationSuggestions,
    PerformanceAnalysis,
    PerformanceStats,
    Recommendation,
    UsageForecast,
)
from api.analytics.tokens import api_base_url

__all__ = ["analytics_app"]

analytics_app = typer.Typer(
    help="Cost, performance, forecasts and suggestions from recorded usage (asks the API).",
    no_args_is_help=True,
)
console = Console()

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url", help="The API's base URL (settings: api_public_url, else api_host:api_port)."
    ),
]
Token = Annotated[
    str | None,
    typer.Option("--token", help="Bearer token (settings: api_token, i.e. AIDEPLOY_API_TOKEN)."),
]
Username = Annotated[
    str | None, typer.Option("--username", help="Log in as this user instead of passing a token.")
]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="With --username: read the password from stdin.")
]
Start = Annotated[
    datetime | None, typer.Option("--start-time", help="Window start (ISO 8601, UTC if no zone).")
]
End = Annotated[
    datetime | None, typer.Option("--end-time", help="Window end (ISO 8601; default now).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of tables.")]
Chart = Annotated[
    Path | None, typer.Option("--chart", help="Also draw a PNG chart to this file.", dir_okay=False)
]

_IMPACT_STYLE = {"high": "bold red", "medium": "yellow", "low": "green"}


class _Api:
    """An authenticated HTTP client of the API, failing with one line on any problem."""

    def __init__(
        self, url: str | None, token: str | None, username: str | None, password_stdin: bool
    ) -> None:
        import httpx

        settings = settings_or_fail()
        self.base = (url or api_base_url(settings)).rstrip("/")
        self._client = httpx.Client(base_url=self.base, timeout=120.0)
        if token is None and username is not None:
            token = self._login(username, password_stdin)
        if token is None and settings.api_token is not None:
            token = settings.api_token.get_secret_value()
        if not token:
            fail("no API token: pass --token, set AIDEPLOY_API_TOKEN, or log in with --username")
        self._client.headers["Authorization"] = f"Bearer {token}"

    def _login(self, username: str, password_stdin: bool) -> str:
        password = (
            sys.stdin.readline().rstrip("\n")
            if password_stdin
            else typer.prompt("Password", hide_input=True)
        )
        body = self._call("POST", "/auth/token", json={"username": username, "password": password})
        return str(body["token"])

    def _call(self, method: str, path: str, **options: Any) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, **options)
        except httpx.HTTPError as exc:
            fail(
                f"cannot reach the API at {self.base} ({exc}); is `aideploy api` running? (--api-url)"
            )
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.text
                errors = response.json().get("errors") or []
            except ValueError:
                detail, errors = response.text, []
            extra = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
            fail(
                f"{method} {path}: HTTP {response.status_code}: {detail}{f' ({extra})' if extra else ''}"
            )
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        query = {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in params.items()
            if value is not None
        }
        with console.status(f"asking {self.base}{path}", spinner="dots"):
            return self._call("GET", path, params=query)

    def deployment_names(self) -> dict[str, str]:
        """Deployment ids to names, for readable tables (ids not found stay ids)."""
        return {row["id"]: row["name"] for row in self.deployments()}

    def deployments(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._call("GET", "/deployments", params={"limit": 1000})
        return rows


def format_money(value: float, currency: str) -> str:
    """Cents for real bills; four decimals for the fractions of a cent small usage costs."""
    return f"{value:,.2f} {currency}" if value >= 0.01 or value == 0 else f"{value:.4f} {currency}"


def _recommendations(items: list[Recommendation], title: str = "Recommendations") -> None:
    if not items:
        console.print(f"[dim]{title}: none[/]")
        return
    table = Table(title=title, show_lines=False)
    table.add_column("impact")
    table.add_column("type", style="bold")
    table.add_column("message", overflow="fold")
    for item in items:
        table.add_row(f"[{_IMPACT_STYLE[item.impact]}]{item.impact}[/]", item.type, item.message)
    console.print(table)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        fail("charts need matplotlib: pip install 'aideploy[analytics]'")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@analytics_app.command("cost")
def cost_command(
    start_time: Start = None,
    end_time: End = None,
    chart: Chart = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    token: Token = None,
    username: Username = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """What your deployments cost at list prices, and the same usage on managed ML endpoints."""
    api = _Api(api_url, token, username, password_stdin)
    raw = api.get("/analytics/cost", start_time=start_time, end_time=end_time)
    if as_json:
        typer.echo(_dumps(raw))
        return
    result = CostAnalysis.model_validate(raw)
    known = {row["id"]: row for row in api.deployments()}
    currency = result.currency
    summary = Table(
        title=f"Cost {_period(result.start_time, result.end_time)} (catalog {result.catalog_version})"
    )
    for column in ("total", "compute", "storage", "network"):
        summary.add_column(column, justify="right")
    breakdown = result.cost_breakdown
    summary.add_row(
        *(
            format_money(value, currency)
            for value in (
                result.total_cost,
                breakdown.compute,
                breakdown.storage,
                breakdown.network,
            )
        )
    )
    console.print(summary)
    deployments = Table(title="By deployment")
    deployments.add_column("deployment", style="bold")
    deployments.add_column("type")
    deployments.add_column("priced as")
    deployments.add_column("cost", justify="right")
    for key, value in sorted(result.cost_by_deployment.items(), key=lambda item: -item[1]):
        row = known.get(key, {})
        deployments.add_row(
            row.get("name", key),
            row.get("deployment_type", ""),
            result.priced_as.get(key, ""),
            format_money(value, currency),
        )
    for kind, value in result.cost_by_type.items():
        deployments.add_row(
            f"[dim]all {kind}[/]", kind, "", f"[dim]{format_money(value, currency)}[/]"
        )
    console.print(deployments)
    comparison = Table(title="The same usage on managed ML endpoints (always on)")
    comparison.add_column("where", style="bold")
    comparison.add_column("cost", justify="right")
    comparison.add_column("aideploy saves", justify="right")
    comparison.add_row("aideploy", format_money(result.comparison.our_platform, currency), "")
    for cloud, product in (
        ("aws", "SageMaker real-time"),
        ("gcp", "Vertex AI prediction"),
        ("azure", "Azure ML online"),
    ):
        saving = result.comparison.savings_percentage.get(cloud, 0.0)
        comparison.add_row(
            f"{cloud} ({product})",
            format_money(getattr(result.comparison, cloud), currency),
            f"{saving:.1f}%",
        )
    console.print(comparison)
    _recommendations(result.recommendations)
    for note in result.notes:
        console.print(f"[dim]note: {note}[/]")
    if chart is not None:
        _cost_chart(result, chart)


def _cost_chart(result: CostAnalysis, path: Path) -> None:
    plt = _pyplot()
    days = list(result.cost_by_day)
    figure, axis = plt.subplots(figsize=(10, 4.5), layout="constrained")
    axis.bar(days, list(result.cost_by_day.values()), color="#3b7dd8", width=0.8)
    axis.set_title(f"Daily cost: {result.total_cost:,.2f} {result.currency} in total")
    axis.set_ylabel(result.currency)
    axis.grid(axis="y", alpha=0.3)
    figure.autofmt_xdate()
    _save(figure, path, plt)


def _save(figure: Any, path: Path, plt: Any) -> None:
    try:
        figure.savefig(path, dpi=110)
    except OSError as exc:
        fail(f"--chart: cannot write {path}: {exc.strerror}")
    finally:
        plt.close(figure)
    console.print(f"chart written to {path}")


@analytics_app.command("performance")
def performance_command(
    start_time: Start = None,
    end_time: End = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    token: Token = None,
    username: Username = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Requests, latency and errors per deployment, with anomalies."""
    api = _Api(api_url, token, username, password_stdin)
    raw = api.get("/analytics/performance", start_time=start_time, end_time=end_time)
    if as_json:
        typer.echo(_dumps(raw))
        return
    result = PerformanceAnalysis.model_validate(raw)
    names = api.deployment_names()
    table = Table(title=f"Performance {_period(result.start_time, result.end_time)}")
    table.add_column("deployment", style="bold")
    for column in ("requests", "mean ms", "p95 ms", "p99 ms", "errors %"):
        table.add_column(column, justify="right")

    def row(label: str, stats: PerformanceStats) -> list[str]:
        return [
            label,
            f"{stats.requests:,}",
            f"{stats.avg_latency:.1f}",
            "-" if stats.p95_latency is None else f"{stats.p95_latency:.1f}",
            "-" if stats.p99_latency is None else f"{stats.p99_latency:.1f}",
            f"{stats.error_rate:.2f}",
        ]

    for key, stats in sorted(
        result.performance_by_deployment.items(), key=lambda item: -item[1].requests
    ):
        table.add_row(*row(names.get(key, key), stats))
    overall = PerformanceStats(
        requests=result.total_requests, avg_latency=result.avg_latency, error_rate=result.error_rate
    )
    table.add_row(*row("[dim]all[/]", overall))
    console.print(table)
    anomalies = Table(title="Anomalies")
    for column in ("deployment", "since (UTC)", "type", "message"):
        anomalies.add_column(column)
    for key, found in result.anomalies.items():
        for anomaly in found:
            anomalies.add_row(
                names.get(key, key),
                f"{anomaly.timestamp:%Y-%m-%d %H:%M}",
                anomaly.type,
                anomaly.message,
            )
    console.print(anomalies if anomalies.row_count else "[dim]Anomalies: none[/]")
    _recommendations(result.recommendations)


@analytics_app.command("forecast")
def forecast_command(
    days: Annotated[int, typer.Option("--days", min=1, max=365, help="Days to forecast.")] = 30,
    start_time: Start = None,
    end_time: End = None,
    chart: Chart = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    token: Token = None,
    username: Username = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Daily requests and cost forecast from each deployment's history, with a 95% band."""
    api = _Api(api_url, token, username, password_stdin)
    raw = api.get("/analytics/forecast", days=days, start_time=start_time, end_time=end_time)
    if as_json:
        typer.echo(_dumps(raw))
        return
    result = UsageForecast.model_validate(raw)
    names = api.deployment_names()
    table = Table(title=f"Forecast of the next {result.days} day(s) from {result.first_day}")
    table.add_column("deployment", style="bold")
    table.add_column("method")
    table.add_column("history", justify="right")
    table.add_column("requests so far", justify="right")
    table.add_column(f"requests next {result.days}d", justify="right")
    table.add_column(f"cost next {result.days}d", justify="right")
    table.add_column("backtest error", justify="right")
    for key, item in result.forecast_by_deployment.items():
        table.add_row(
            names.get(key, key),
            item.method,
            f"{item.history_days}d",
            f"{item.current_requests:,}",
            f"{sum(item.requests_forecast):,.0f}" if item.requests_forecast else "-",
            f"{sum(item.cost_forecast):,.2f}" if item.cost_forecast else "-",
            "-" if item.backtest_error is None else f"{item.backtest_error:.1f}%",
        )
    if result.total_requests_forecast:
        table.add_row(
            "[dim]all[/]",
            "",
            "",
            "",
            f"{sum(result.total_requests_forecast):,.0f}",
            f"{sum(result.total_cost_forecast):,.2f}",
            "",
        )
    console.print(table)
    for key, item in result.forecast_by_deployment.items():
        if item.note:
            console.print(f"[dim]{names.get(key, key)}: {item.note}[/]")
    if result.note:
        console.print(f"[dim]{result.note}[/]")
    if chart is not None:
        if not result.total_requests_forecast:
            fail("--chart: there is no forecast to draw (no usage recorded in the window)")
        _forecast_chart(result, chart)


def _forecast_chart(result: UsageForecast, path: Path) -> None:
    from datetime import timedelta

    plt = _pyplot()
    assert result.first_day is not None
    future = [result.first_day + timedelta(days=k) for k in range(result.days)]
    figure, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True, layout="constrained")
    panels = (
        (
            "Requests per day",
            result.total_requests_history,
            result.total_requests_forecast,
            result.total_requests_lower,
            result.total_requests_upper,
        ),
        (
            "Cost per day (catalog list prices)",
            result.total_cost_history,
            result.total_cost_forecast,
            result.total_cost_lower,
            result.total_cost_upper,
        ),
    )
    for axis, (title, history, values, lower, upper) in zip(axes, panels, strict=True):
        axis.plot(list(history), list(history.values()), color="#333333", label="recorded")
        axis.plot(future, values, color="#3b7dd8", label="forecast")
        axis.fill_between(future, lower, upper, color="#3b7dd8", alpha=0.2, label="95% band")
        axis.axvline(result.first_day, color="#999999", linestyle="--", linewidth=1)
        axis.set_title(title)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left")
    figure.autofmt_xdate()
    _save(figure, path, plt)


@analytics_app.command("suggestions")
def suggestions_command(
    start_time: Start = None,
    end_time: End = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    token: Token = None,
    username: Username = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Right-sizing, spot, hibernation, serverless and latency suggestions per deployment."""
    api = _Api(api_url, token, username, password_stdin)
    raw = api.get("/analytics/suggestions", start_time=start_time, end_time=end_time)
    if as_json:
        typer.echo(_dumps(raw))
        return
    result = OptimizationSuggestions.model_validate(raw)
    if not result.suggestions_by_deployment:
        console.print("No suggestions: every deployment looks well configured for its usage.")
        return
    table = Table(title=f"Suggestions {_period(result.start_time, result.end_time)}")
    for column in ("deployment", "impact", "type", "change", "would save", "message"):
        table.add_column(column, overflow="fold")
    for entry in result.suggestions_by_deployment.values():
        for item in entry.suggestions:
            change = (
                f"{item.current_value} -> {item.recommended_value}"
                if item.recommended_value
                else ""
            )
            saving = "" if item.estimated_savings is None else f"{item.estimated_savings:,.2f}"
            table.add_row(
                entry.deployment_name,
                f"[{_IMPACT_STYLE[item.impact]}]{item.impact}[/]",
                item.type,
                change,
                saving,
                item.message,
            )
    console.print(table)


def _period(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    return f"{start:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M} UTC"


def _dumps(raw: Any) -> str:
    import json

    return json.dumps(raw, indent=2)
