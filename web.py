"""The web app: health and readiness, the Phase 1 webhooks, the workflow trigger and status.

Run it as `uvicorn web:app` or `cascade web`. The pool opens in `lifespan`; routes are listed
at the bottom. Endpoints are thin: a webhook reads, verifies and parses its delivery
(cascade/web/deliveries.py) before any transaction opens, then claims it and applies it in
one transaction whose writes' triggers emit the events; it never calls a handler. Webhooks
are ASGI apps of their own (`Webhook`), which the app (`CascadeApp`) calls ahead of its
middleware and router.
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
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

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
from cascade.web.auth import Access
from cascade.web.deliveries import CompositeKey, Delivery, WebhookSource, claim, read_delivery
from cascade.web.fields import positive_setting
from cascade.web.group_commit import MAX_WAITING, WRITERS, Busy, GroupCommit
from cascade.web.http import (
    CORRELATION_HEADER,
    ApiError,
    CorrelationId,
    api_error_response,
    body_chunks,
    correlation_id,
    correlation_id_of,
    envelope,
    header_map,
    http_error_response,
    internal_error,
    invalid,
    parse,
    read_json,
    read_json_body,
    send_json,
    unexpected_error_response,
)
from cascade.web.metrics import WEBHOOK_BUSY_REFUSALS
from cascade.webhooks.signatures import Scheme

# A listener counts as alive while its heartbeat is younger than this many seconds.
LISTENER_FRESH_SECONDS = 30
# Each has WEBHOOK_SECRET_<PROVIDER>; "trigger" guards POST /webhooks/trigger/{workflow}.
WEBHOOK_PROVIDERS = ("apify", "validator", "trigger", "delivery", "instantly", "heyreach")
# Standard Webhooks unless named here: Instantly signs nothing and can only send a fixed
# header (cascade/web/instantly.py).
DEFAULT_SCHEMES = {"instantly": Scheme.SHARED_SECRET}
# Seconds a webhook refused as busy (503) tells its sender to wait: the queue it found full
# drains in about one.
BUSY_RETRY_AFTER = 1

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
    # Deliveries waiting for a group commit at which a webhook answers 503 (group_commit.py).
    max_waiting: int = MAX_WAITING
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


class Webhook(Generic[B]):
    """A provider's webhook, as an ASGI app: read the body, verify and parse it
    (`read_delivery`), then one transaction that claims the delivery (a duplicate answers 200
    and changes nothing) and applies it; 202. `composite_key` keys a delivery that carries no
    id header (deliveries.py). With `grouped`, the deliveries it takes share a transaction
    with others (group commit) and are answered when it has committed.

    It answers for itself, errors included (the envelope and the correlation id), because
    `CascadeApp` hands it its POSTs ahead of the middleware and the router: a webhook is the
    one route whose volume is the senders' to choose, and Starlette's request, response and
    middleware stack were a third of its CPU (bench/RESULTS.md, "Webhook ingestion")."""

    def __init__(
        self,
        provider: str,
        model: type[B],
        apply: Apply[B],
        *,
        event_field: str = "event",
        composite_key: CompositeKey[B] | None = None,
        grouped: Grouped[B] | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.apply = apply
        self.event_field = event_field
        self.composite_key = composite_key
        self.grouped = grouped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        # Set by the CorrelationId middleware when the router brought the request here.
        correlation = scope.get("state", {}).get("correlation_id") or correlation_id_of(headers)
        answer_headers = [(CORRELATION_HEADER.encode(), correlation.encode())]
        try:
            status, answer = await self._ingest(scope["app"].state, headers, receive, correlation)
        except ApiError as exc:
            status, answer = exc.status, exc.envelope()
            # ASGI wants header names in lower case, as the rest of these answers are.
            answer_headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        except ClientDisconnect:
            return  # nobody to answer, and nothing was written
        except Exception:
            await send_json(send, 500, internal_error(correlation).envelope(), answer_headers)
            raise  # for the server to log with its traceback, as Starlette does
        await send_json(send, status, answer, answer_headers)

    async def _ingest(
        self, state: State, headers: dict[str, str], receive: Receive, correlation: str
    ) -> tuple[int, dict[str, Any]]:
        config: Config = state.config
        raw = await read_json(headers, body_chunks(receive))
        delivery = read_delivery(
            config.sources[self.provider], self.model, headers, raw, correlation,
            self.composite_key,
        )  # fmt: skip
        if self.grouped is not None and self.grouped.takes(delivery.body):
            try:
                summary = await self._group_commit(state).submit(delivery)
            except Busy as busy:
                WEBHOOK_BUSY_REFUSALS.labels(provider=self.provider).inc()
                raise ApiError(
                    503, "busy",
                    f"{busy.waiting} deliveries are waiting to be written; this one was not "
                    "stored: send it again shortly",
                    {"waiting": busy.waiting, "retry_after": BUSY_RETRY_AFTER},
                    {"Retry-After": str(BUSY_RETRY_AFTER)},
                ) from busy  # fmt: skip
        else:
            summary = await self._write_alone(state.pool, config, delivery)
        about = {
            "provider": delivery.provider,
            "delivery_id": delivery.key,
            "verified": delivery.verified,
            "correlation_id": delivery.correlation_id,
        }
        if summary is None:
            # 200, not 202: nothing new was accepted, and the sender must stop redelivering.
            return 200, {"status": "duplicate", **about}
        return 202, {"status": "accepted", **about, **summary}

    async def _write_alone(
        self, pool: asyncpg.Pool, config: Config, delivery: Delivery[B]
    ) -> Summary:
        async with pool.acquire() as conn, conn.transaction():
            event = str(delivery.body.model_dump(include={self.event_field})[self.event_field])
            if not await claim(conn, delivery, event):
                return None
            return await self.apply(conn, delivery.body, config)

    def _group_commit(self, state: State) -> GroupCommit[Delivery[B], Summary]:
        assert self.grouped is not None
        commits: dict[str, GroupCommit[Delivery[B], Summary]] = state.group_commits
        group = commits.get(self.provider)
        if group is None:
            write_one = functools.partial(self._write_alone, state.pool, state.config)
            group = commits[self.provider] = GroupCommit(
                state.writer_pool,
                self.grouped.write_many,
                write_one,
                key=operator.attrgetter("key"),
                max_waiting=state.config.max_waiting,
            )
        return group


class CascadeApp(Starlette):
    """Starlette, with one shortcut: a POST to a provider's webhook goes straight to its
    `Webhook`, which answers for itself, without the middleware and the router. Any other
    request, and a webhook reached under another path (a root_path), takes the usual way."""

    def __init__(self, *, routes: Sequence[BaseRoute], **options: Any) -> None:
        super().__init__(routes=routes, **options)
        self.webhooks = {
            route.path: route.endpoint
            for route in routes
            if isinstance(route, Route) and isinstance(route.endpoint, Webhook)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            webhook = self.webhooks.get(scope["path"])
            if webhook is not None:
                scope["app"] = self
                await webhook(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


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
    keeps no session state but one it wants kept: its correlation id is transaction-local, it
    takes no advisory lock and listens to nothing, and the writers' pool sets its plan mode
    once per connection (PLAN_ONCE). asyncpg still rolls back a transaction left open first."""


# The group commit's writers have connections of their own, on which its statement is planned
# once. Its arrays have a length PostgreSQL cannot see when it plans, and by default it
# chooses between a plan per execution and one generic plan from the first five executions:
# on a connection whose first batches were small it planned every batch afresh, ~250 µs of
# the backend's CPU each, more than the work of a batch of a few deliveries (bench/
# RESULTS.md, "Webhook ingestion"). The generic plan (an index lookup per delivery, hash
# joins between the statement's parts) suits a batch of one and one of hundreds alike. Set
# with SET when a connection opens, not as a startup parameter, which PgBouncer and Neon's
# pooled endpoints refuse; the pool's reset (_keep_session) keeps it.
PLAN_ONCE: LiteralString = "SET plan_cache_mode = force_generic_plan"


async def _plan_once(connection: asyncpg.Connection) -> None:
    await connection.execute(PLAN_ONCE)


def create_app(
    database_url: str | None = None, environ: Mapping[str, str] = os.environ
) -> CascadeApp:
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
        max_waiting=positive_setting(environ, "CASCADE_WEBHOOK_MAX_WAITING", MAX_WAITING),
    )
    # Tokens and rate limits for routes wrapped in auth.requires(role) (cascade/web/auth.py);
    # read now, so a bad setting stops the app before it serves.
    access = Access.from_env(environ)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.config = config
        app.state.access = access
        async with contextlib.AsyncExitStack() as opened:
            # Closed in reverse order, each whatever happened to those opened after it.
            app.state.pool = await opened.enter_async_context(
                asyncpg.create_pool(url, min_size=1, max_size=10, reset=_keep_session)
            )
            app.state.writer_pool = await opened.enter_async_context(
                asyncpg.create_pool(
                    url, min_size=1, max_size=WRITERS, reset=_keep_session, init=_plan_once
                )
            )
            app.state.group_commits = {}
            try:
                yield
            finally:
                # An import thread cannot be cancelled; let it finish its batches.
                await asyncio.gather(*config.imports, return_exceptions=True)
                for group in list(app.state.group_commits.values()):
                    await group.close()

    return CascadeApp(
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
        "/webhooks/apify", Webhook("apify", apify.ApifyDelivery, _settle_apify), methods=["POST"]
    ),
    Route(
        "/webhooks/validator",
        Webhook("validator", validator.ValidatorDelivery, _apply_validator),
        methods=["POST"],
    ),
    Route(
        "/webhooks/delivery",
        Webhook("delivery", delivery_reports.DeliveryReport, _apply_delivery),
        methods=["POST"],
    ),
    Route(
        "/webhooks/instantly",
        Webhook(
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
        Webhook(
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
