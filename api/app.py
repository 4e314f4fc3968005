"""``create_app()``: the Litestar application with its plugins, routes, error mapping and the
start-up work (migrations, the bootstrap admin, resuming interrupted jobs)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.handlers import HTTPRouteHandler
from litestar.logging import LoggingConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.pydantic import PydanticPlugin

from aideploy import __version__
from aideploy.settings import Settings, load_settings
from api.analytics.controllers import AnalyticsController, UsageController
from api.auth.controllers import AuthController
from api.auth.middleware import BearerAuthMiddleware
from api.auth.ratelimit import LoginRateLimiter
from api.auth.service import bootstrap_admin
from api.auth.tokens import TokenSigner, load_signing_key
from api.context import ApiContext
from api.db.engine import Database
from api.dependencies import dependencies
from api.deployments.controllers import DeploymentController
from api.deployments.jobs import DeploymentJobHandler, hibernate_idle, record_crash
from api.deployments.service import restore_local_deployments
from api.errors import documented_errors, exception_handlers
from api.jobs.queue import JobKind, job_queue_for, recover_jobs, register_handler
from api.models.controllers import ModelController
from api.models.orphans import sweep_orphans
from api.optimizations.controllers import OptimizationController
from api.optimizations.jobs import OptimizationJobHandler
from api.runners.base import RunnerSet
from api.security import RedactingHandler, add_security_headers, reject_control_characters
from api.storage import open_artifact_store

log = logging.getLogger("aideploy.api")

_PUBLIC_PATHS = ["^/schema", "^/health$"]


@get("/health", operation_id="Health", tags=["health"], exclude_from_auth=True, security=[])
async def health() -> dict[str, str]:
    """Liveness: the process answers (no authentication)."""
    return {"status": "ok"}


def default_runners(settings: Settings) -> RunnerSet:
    """The embedded local runner (its servers report usage to this API), and the Automation
    API runner for the clouds."""
    from api.analytics.tokens import usage_environment
    from api.runners.automation import AutomationRunner
    from api.runners.local import LocalRunner

    local = LocalRunner(settings, lambda deployment_id: usage_environment(settings, deployment_id))
    return RunnerSet(local=local, cloud=AutomationRunner(settings))


def create_app(settings: Settings | None = None, *, runners: RunnerSet | None = None) -> Litestar:
    """The API. ``runners`` replaces the engines (tests inject the mock-engine runner)."""
    settings = settings or load_settings()
    register_handler(JobKind.OPTIMIZE, OptimizationJobHandler())
    register_handler(JobKind.DEPLOY, DeploymentJobHandler())
    database = Database(settings.effective_database_url)
    context = ApiContext(
        settings=settings,
        database=database,
        store=open_artifact_store(settings.effective_artifact_store_url, settings.data_dir),
        signer=TokenSigner(load_signing_key(settings), settings.token_ttl_seconds),
        login_limiter=LoginRateLimiter(),
        jobs=job_queue_for(settings.redis_url, settings.redis_queue_prefix),
        runners=runners or default_runners(settings),
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await database.migrate()
        async with database.session() as session:
            await bootstrap_admin(session, settings)
        await sweep_orphans(database, context.store, settings.data_dir)  # before jobs resume
        await context.jobs.start(context)
        await context.runners.start(
            lambda deployment_id: hibernate_idle(context, deployment_id),
            lambda deployment_id, message, running: record_crash(
                context, deployment_id, message, running
            ),
        )
        await recover_jobs(context)
        await restore_local_deployments(context)
        try:
            yield
        finally:
            context.stopping.set()
            await context.jobs.stop()
            await context.runners.close()
            await database.dispose()

    app = Litestar(
        route_handlers=[
            health,
            AuthController,
            ModelController,
            OptimizationController,
            DeploymentController,
            AnalyticsController,
            UsageController,
        ],
        dependencies=dependencies,
        state=State({"context": context}),
        lifespan=[lifespan],
        middleware=[DefineMiddleware(BearerAuthMiddleware, exclude=_PUBLIC_PATHS)],
        exception_handlers=exception_handlers,
        logging_config=_logging_config(context),
        before_request=reject_control_characters,
        before_send=[add_security_headers],
        cors_config=(
            CORSConfig(allow_origins=settings.cors_allowed_origins, allow_credentials=False)
            if settings.cors_allowed_origins
            else None
        ),
        plugins=[PydanticPlugin(prefer_alias=False)],
        openapi_config=OpenAPIConfig(
            title="aideploy",
            version=__version__,
            description="Optimize ML models and deploy them as cheap, scale-to-zero endpoints.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            security=[{"BearerToken": []}],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http", scheme="bearer", bearer_format="opaque"
                    )
                }
            ),
        ),
    )
    _document_common_errors(app)
    return app


def _logging_config(context: ApiContext) -> LoggingConfig:
    """The API's loggers mask their records in place and pass them on to the root logger, which
    the host owns (``aideploy api`` gives it a stderr handler; tests, the demo and embedding
    programs their own), so every record is written once, masked."""
    redact = {"()": RedactingHandler, "redactor": context.redactor}
    return LoggingConfig(
        logging_module="logging",
        configure_root_logger=False,
        handlers={"redact": redact},
        loggers={
            "aideploy": {"level": context.settings.log_level, "handlers": ["redact"]},
            "litestar": {"level": "WARNING", "handlers": ["redact"]},
            # At DEBUG it logs every statement with its parameter values.
            "aiosqlite": {"level": "WARNING", "handlers": ["redact"]},
        },
        log_exceptions="never",  # api.errors logs unexpected errors once, with traceback
    )


def _document_common_errors(app: Litestar) -> None:
    """Document on every route the errors the app answers whatever the handler: 401 wherever a
    token is required (the bearer middleware, the usage token), 422 from parameter and body
    validation, 404 for an id in the path that is not the caller's, 400 and 503 (a malformed
    request, an unreachable database). A handler's own entries take precedence."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler) or not handler.include_in_schema:
                continue
            if handler.security == []:  # declares no authentication (/health)
                continue
            codes = [401, 422, 404] if route.path_parameters else [401, 422]
            handler.responses = {**documented_errors(*codes), **(handler.responses or {})}
