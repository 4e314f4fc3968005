"""``aideploy api`` (serve the REST API) and ``aideploy users add`` (create an account).

Nothing heavy at top level: Litestar, SQLAlchemy and uvicorn load inside the commands.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer

from aideploy.console import fail, settings_or_fail

users_app = typer.Typer(help="Manage API users.", no_args_is_help=True)


def serve_api(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on [settings: api_host].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [settings: api_port].", min=1, max=65535)
    ] = None,
) -> None:
    """Run the REST API (migrations run at start-up; Ctrl-C stops it)."""
    import uvicorn

    from api.app import create_app

    # This command is the host: the root logger writes the API's records (and other
    # libraries' warnings) to stderr, once.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_or_fail()
    # The listening address is part of the settings: local deployments report usage to it.
    settings = settings.model_copy(
        update={"api_host": host or settings.api_host, "api_port": port or settings.api_port}
    )
    asyncio.run(_check_database(settings.effective_database_url))
    app = create_app(settings)
    typer.echo(
        f"aideploy API on http://{settings.api_host}:{settings.api_port} "
        f"(data in {settings.data_dir}; OpenAPI at /schema)",
        err=True,
    )
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        proxy_headers=False,
    )


def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's data directory.")] = False,
) -> None:
    """Walk a first session over HTTP: token, upload, optimize, deploy locally, infer,
    hibernate and activate, analytics."""
    from api.demo import run_demo

    run_demo(keep=keep)


@users_app.command("add")
def add_user(
    username: Annotated[str, typer.Argument(help="The new user's name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator.")] = False,
) -> None:
    """Create an API user (the password never appears on the command line)."""
    if not password_stdin:
        fail("pass --password-stdin and send the password on standard input")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("password: nothing was read from standard input")
    asyncio.run(_add_user(username, password, admin=admin))
    typer.echo(f"user {username!r} created{' (admin)' if admin else ''}")


async def _check_database(url: str) -> None:
    """Reach and migrate the database before serving, so a bad URL is one line, not a trace."""
    from aideploy.errors import AideployError
    from api.db.engine import Database

    try:
        database = Database(url)
        try:
            await database.migrate()
        finally:
            await database.dispose()
    except AideployError as exc:
        fail(str(exc))


async def _add_user(username: str, password: str, *, admin: bool) -> None:
    from aideploy.errors import InputError
    from api.auth.service import create_user
    from api.db.engine import Database

    database = Database(settings_or_fail().effective_database_url)
    try:
        await database.migrate()
        async with database.session() as session:
            await create_user(session, username, password, is_admin=admin)
    except InputError as exc:
        fail(str(exc))
    finally:
        await database.dispose()
