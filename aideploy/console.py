"""Terminal output shared by every ``aideploy`` subcommand: one-line errors and settings.

Kept apart from :mod:`aideploy.cli` so the parts' command modules can use it without importing
the command tree that registers them.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from aideploy.schema import field_errors
from aideploy.settings import ENV_PREFIX, Settings, load_settings

__all__ = ["err_console", "fail", "settings_or_fail"]

err_console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """Report a user error as one line on stderr and exit with code 2."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def settings_or_fail() -> Settings:
    """Load the settings, turning a bad variable or file into one line naming it."""
    try:
        return load_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{error.field.upper().replace('.', '__')}: {error.message}"
            for error in field_errors(exc)
        )
        fail(f"invalid settings: {problems}")
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
