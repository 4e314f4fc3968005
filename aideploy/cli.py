"""The ``aideploy`` command.

Each part of the platform adds its subcommands here; their modules import nothing heavy at top
level, so ``aideploy --version`` stays instant and a missing extra is reported only when the
command that needs it runs.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from aideploy import __version__
from aideploy.console import err_console, settings_or_fail
from aideploy.errors import AideployError
from aideploy.schema import field_errors
from aideploy.settings import ENV_PREFIX
from aideploy_iac.cli import synth
from api.analytics.cli import analytics_app
from api.cli import demo, serve_api, users_app
from optimizer.cli import optimize_command
from serving.cli import serve_command

app = typer.Typer(
    name="aideploy",
    help="Optimize ML models and deploy them as cheap, scale-to-zero endpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"aideploy {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """aideploy: from model upload to a cheap, fast, scale-to-zero endpoint."""


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the effective settings, with secrets masked."""
    values = settings_or_fail().masked()
    if as_json:
        typer.echo(json.dumps(values, indent=2, sort_keys=True))
        return
    table = Table(title="aideploy settings", show_lines=False)
    table.add_column("setting", style="bold")
    table.add_column("value")
    table.add_column("environment variable", style="dim")
    for key in sorted(values):
        value = values[key]
        shown = (
            "-"
            if value is None or value == []
            else json.dumps(value)
            if isinstance(value, dict | list)
            else str(value)
        )
        variable = "" if key.startswith("effective_") else f"{ENV_PREFIX}{key.upper()}"
        table.add_row(key, shown, variable)
    Console().print(table)


# --- subcommands of the platform's parts ---------------------------------------------------
# Each part's cli module imports nothing heavy at top level (onnxruntime, torch, litestar... are
# imported inside the command function), so a missing extra only matters to its own command.
app.command("api")(serve_api)
app.command("demo")(demo)
app.add_typer(users_app, name="users")
app.command("optimize")(optimize_command)
app.command("serve")(serve_command)
app.command("synth")(synth)
app.add_typer(analytics_app, name="analytics")


def main() -> None:
    """Entry point: user errors become one line and exit code 2, never a traceback."""
    try:
        app()
    except AideployError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:
        problems = "; ".join(f"{e.field}: {e.message}" for e in field_errors(exc))
        err_console.print(f"[bold red]error:[/] {problems}", highlight=False, soft_wrap=True)
        sys.exit(2)
