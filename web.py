"""The web app: health and readiness, the Phase 1 webhooks, the workflow trigger and status.

Run it as `uvicorn web:app` or `cascade web`. The pool opens in `lifespan`; routes are listed
at the bottom. Endpoints are thin: a webhook reads, verifies and parses its delivery
(cascade/web/deliveries.py) before any transaction opens, then claims it and applies it in
one transaction whose writes' triggers emit the events; it never calls a handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, LiteralString, TypeVar

import asyncpg
import pydantic
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cascade import workflows
from cascade.database import configured_url
from cascade.enrichment.settings import EnrichmentSettings
from cascade.handling import Connection
from cascade.intake import IntakeFileError
from cascade.web import (
    apify,
    campaigns,
    dashboard,
    heyreach,
    instantly,
    metrics,
    openapi,
    status,
    tokens,
    trigger,
    validator,
)
from cascade.web import delivery as delivery_reports
from cascade.web.auth import Access, Endpoint
from cascade.web.deliveries import CompositeKey, Delivery, WebhookSource, claim, receive
from cascade.web.group_commit import GroupCommit
from cascade.web.http import (
    ApiError,
    CorrelationId,
    api_error_response,
    correlation_id,
    envelope,
    http_error_response,
    invalid,
    parse,
    read_json_body,
    unexpected_error_response,
)
from cascade.webhooks.signatures import Scheme

# A listener counts as alive while its heartbeat is younger than this many seconds.
LISTENER_FRESH_SECONDS = 30
# Each has WEBHOOK_SECRET_<PROVIDER>; "trigger" guards POST /webhooks/trigger/{workflow}.
WEBHOOK_PROVIDERS = ("apify", "validator", "trigger", "delivery", "instantly", "heyreach")
# Standard Webhooks unless named here: Instantly signs nothing and can only send a fixed
# header (cascade/web/instantly.py).
DEFAULT_SCHEMES = {"instantly": Scheme.SHARED_SECRET}

LIVE_LISTENERS: LiteralString = """
    SELECT count(*) FROM marketing.listeners
     WHERE heartbeat_at > now() - make_interval(secs => $1)
"""

log = logging.getLogger("cascade.web")


@dataclass(frozen=True)
class Config:
    """Read once at startup, so a bad secret or setting stops the app before it serves."""

    url: str
    environ: Mapping[str, str]
    settings: EnrichmentSettings
    sources: dict[str, WebhookSource]
    # Lead imports started by the trigger; lifespan waits for them on shutdown.
    imports: set[asyncio.Task[None]] = field(default_factory=set)


def _config(request: Request) -> Config:
    config: Config = request.app.state.config
    return config


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    try:
        listeners = await _pool(request).fetchval(LIVE_LISTENERS, LISTENER_FRESH_SECONDS)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return envelope(503, "database_unreachable", f"database check failed: {exc}")
    if not listeners:
        return envelope(503, "no_listener", "no listener has sent a heartbeat in the last 30 s")
    return JSONResponse({"status": "ready", "database": "ok", "listeners": listeners})


# A webhook's body (seed 000's, which names its event in `event`, or in `event_field`), and
# what the webhook does with it inside the transaction that claimed the delivery; the summary
# answers the sender (None: a duplicate).
B = TypeVar("B", bound=BaseModel)
Apply = Callable[[Connection, B, Config], Awaitable[dict[str, Any]]]
Summary = dict[str, Any] | None


@dataclass(frozen=True)
class Grouped(Generic[B]):
    """The deliveries of a provider that go through a group commit (cascade/web/group_commit.py):
    those `takes` accepts, claimed and applied many at once by `write_many`."""

    takes: Callable[[B], bool]
    write_many: Callable[[Connection, Sequence[Delivery[B]]], Awaitable[list[Summary]]]


def webhook(
    provider: str,
    model: type[B],
    apply: Apply[B],
    *,
    event_field: str = "event",
    composite_key: CompositeKey[B] | None = None,
    grouped: Grouped[B] | None = None,
) -> Endpoint:
    """A provider's webhook: verify and parse (`receive`), then one transaction that claims
    the delivery (a duplicate answers 200 and changes nothing) and applies it; 202.
    `composite_key` keys a delivery that carries no id header (deliveries.py). With
    `grouped`, the deliveries it takes share a transaction with others (group commit) and are
    answered when it has committed."""

    async def write_alone(pool: asyncpg.Pool, config: Config, delivery: Delivery[B]) -> Summary:
        async with pool.acquire() as conn, conn.transaction():
            event = str(delivery.body.model_dump(include={event_field})[event_field])
            if not await claim(conn, delivery, event):
                return None
            return await apply(conn, delivery.body, config)

    async def endpoint(request: Request) -> Response:
        config = _config(request)
        delivery = await receive(request, config.sources[provider], model, composite_key)
        pool = _pool(request)
        if grouped is not None and grouped.takes(delivery.body):
            commits: dict[str, GroupCommit[Delivery[B], Summary]] = request.app.state.group_commits
            group = commits.get(provider)
            if group is None:
                write_one = functools.partial(write_alone, pool, config)
                group = commits[provider] = GroupCommit(
                    pool, grouped.write_many, write_one, key=operator.attrgetter("key")
                )
            summary = await group.submit(delivery)
        else:
            summary = await write_alone(pool, config, delivery)
        if summary is None:
            return _duplicate(delivery)
        return _accepted(delivery, summary)

    return endpoint


async def _settle_apify(
    conn: Connection, body: apify.ApifyDelivery, config: Config
) -> dict[str, Any]:
    return (await apify.settle(conn, body, config.settings.confidence_threshold)).as_json()


async def _apply_validator(
    conn: Connection, body: validator.ValidatorDelivery, config: Config
) -> dict[str, Any]:
    return (await validator.apply(conn, body, config.settings)).as_json()


async def _apply_delivery(
    conn: Connection, body: delivery_reports.DeliveryReport, config: Config
) -> dict[str, Any]:
    return (await delivery_reports.apply(conn, body)).as_json()


async def _apply_instantly(
    conn: Connection, body: instantly.InstantlyEvent, config: Config
) -> dict[str, Any]:
    return (await instantly.apply(conn, body)).as_json()


async def _apply_heyreach(
    conn: Connection, body: heyreach.HeyReachEvent, config: Config
) -> dict[str, Any]:
    return (await heyreach.apply(conn, body)).as_json()


def _accepted(delivery: Delivery[Any], summary: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"status": "accepted", **_about(delivery), **summary}, 202)


def _duplicate(delivery: Delivery[Any]) -> JSONResponse:
    # 200, not 202: nothing new was accepted, and the sender must stop redelivering.
    return JSONResponse({"status": "duplicate", **_about(delivery)}, 200)


def _about(delivery: Delivery[Any]) -> dict[str, Any]:
    return {
        "provider": delivery.provider,
        "delivery_id": delivery.key,
        "verified": delivery.verified,
        "correlation_id": delivery.correlation_id,
    }


async def trigger_workflow(request: Request) -> JSONResponse:
    config = _config(request)
    workflow: str = request.path_params["workflow"]
    if workflow not in workflows.WORKFLOWS:
        raise ApiError(404, "unknown_workflow", f"no workflow {workflow!r}",
                       {"workflows": list(workflows.WORKFLOWS)})  # fmt: skip
    raw = await read_json_body(request, allow_empty=True)
    config.sources["trigger"].check(request.headers, raw)
    body = parse(trigger.TriggerBody, raw)
    try:
        asked = trigger.request_for(workflow, body, correlation_id(request), config.environ)
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None
    started = await _begin(config.url, asked)
    task = asyncio.create_task(asyncio.to_thread(trigger.import_leads, config.url, asked, started))
    config.imports.add(task)
    task.add_done_callback(config.imports.discard)
    return JSONResponse(_run_started(workflow, started), 202)


async def _begin(url: str, asked: workflows.WorkflowRequest) -> trigger.Started:
    try:
        return await asyncio.to_thread(trigger.begin, url, asked)
    except workflows.UnmappedProcessKey as exc:
        raise ApiError(422, "unmapped_process_key", str(exc)) from None
    except workflows.NothingBuilt as exc:
        raise ApiError(422, "not_built", str(exc)) from None
    except (workflows.WorkflowError, IntakeFileError) as exc:
        raise ApiError(422, "workflow_refused", str(exc)) from None


def _run_started(workflow: str, started: trigger.Started) -> dict[str, Any]:
    branches = {
        branch: "started" if branch in workflows.BUILT_BRANCHES else "not built yet"
        for branch in started.branches
    }
    return {
        "status": "started",
        "run_id": started.run_id,
        "workflow": workflow,
        "branches": branches,
        "not_built": list(started.not_built),
        "lead_import": {"csv": started.csv_path.name, "status": "running in the background"},
    }


async def webhooks_status(request: Request) -> JSONResponse:
    async with _pool(request).acquire() as conn:
        body = await status.report(conn, list(_config(request).sources.values()))
    return JSONResponse(body)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset on release, in place of asyncpg's default (a round trip of
    pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL on every request). The web app
    keeps no session state: its one setting is transaction-local, it takes no advisory lock
    and listens to nothing; asyncpg still rolls back a transaction left open before this."""


def create_app(
    database_url: str | None = None, environ: Mapping[str, str] = os.environ
) -> Starlette:
    url = database_url or configured_url(environ)
    if url is None:
        raise RuntimeError(
            "DATABASE_URL is not set (`cascade web` and `cascade up` set it for you)"
        )
    config = Config(
        url=url,
        environ=dict(environ),
        settings=EnrichmentSettings.from_env(environ),
        sources={
            name: WebhookSource.from_env(name, environ, DEFAULT_SCHEMES.get(name, Scheme.STANDARD))
            for name in WEBHOOK_PROVIDERS
        },
    )
    # Tokens and rate limits for routes wrapped in auth.requires(role) (cascade/web/auth.py);
    # read now, so a bad setting stops the app before it serves.
    access = Access.from_env(environ)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.config = config
        app.state.access = access
        app.state.pool = await asyncpg.create_pool(
            url, min_size=1, max_size=10, reset=_keep_session
        )
        app.state.group_commits = {}
        try:
            yield
        finally:
            # An import thread cannot be cancelled; let it finish its batches and record them.
            await asyncio.gather(*config.imports, return_exceptions=True)
            for group in list(app.state.group_commits.values()):
                await group.close()
            await app.state.pool.close()

    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=[Middleware(CorrelationId)],
        exception_handlers={
            ApiError: api_error_response,
            HTTPException: http_error_response,
            Exception: unexpected_error_response,
        },
    )


def __getattr__(name: str) -> Starlette:
    # `uvicorn web:app` with DATABASE_URL set: build the app on first access, not at import.
    if name == "app":
        return create_app(os.environ.get("DATABASE_URL") or os.environ.get("NEON_DATABASE_URL"))
    raise AttributeError(name)


ROUTES = [
    Route("/health", health),
    Route("/api/health", health),
    Route("/ready", ready),
    Route(
        "/webhooks/apify", webhook("apify", apify.ApifyDelivery, _settle_apify), methods=["POST"]
    ),
    Route(
        "/webhooks/validator",
        webhook("validator", validator.ValidatorDelivery, _apply_validator),
        methods=["POST"],
    ),
    Route(
        "/webhooks/delivery",
        webhook("delivery", delivery_reports.DeliveryReport, _apply_delivery),
        methods=["POST"],
    ),
    Route(
        "/webhooks/instantly",
        webhook(
            "instantly",
            instantly.InstantlyEvent,
            _apply_instantly,
            event_field="event_type",
            composite_key=instantly.composite_key,
            grouped=Grouped(instantly.grouped, instantly.record_engagements),
        ),
        methods=["POST"],
    ),
    Route(
        "/webhooks/heyreach",
        webhook(
            "heyreach",
            heyreach.HeyReachEvent,
            _apply_heyreach,
            event_field="type",
            composite_key=heyreach.composite_key,
        ),
        methods=["POST"],
    ),
    Route("/webhooks/trigger/{workflow}", trigger_workflow, methods=["POST"]),
    Route("/webhooks/status", webhooks_status),
    *metrics.ROUTES,
    *campaigns.ROUTES,
    *tokens.ROUTES,
    *openapi.ROUTES,
    *dashboard.ROUTES,
]
