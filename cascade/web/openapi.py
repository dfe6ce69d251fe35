"""The OpenAPI 3.1 description of the web app, served at GET /api/openapi.json.

**One record per route.** `OPERATIONS` maps each (method, path) of web.ROUTES to a typed
`Operation`: its summary, the pydantic models it parses (request body, query string) and the
answers it gives. The rest is read from the route itself, so it cannot drift:

- the least role, from the `requires(role)` wrapper (`auth.required_role`): a route without one
  is public (`security: []`), one with one needs the bearer token (and says the role in its
  description and in `x-cascade-role`), with 401 and 429, and 403 above `viewer`;
- path parameters and their types, from the route's convertors (`{campaign_id:id}`: see
  cascade/web/__init__.py), and a mount of static files as GET of its path;
- request bodies, from the endpoint's own models: `Model.model_json_schema()` for all of them
  at once (pydantic's `models_json_schema`), with their `$defs` moved to
  `components/schemas`, plus the answers every body can get (400, 413, 415, 422).

Errors share one component, `Error`: seed 004's envelope `{"error": {"code", "message",
"details"}}`. Every operation accepts `x-correlation-id`, and every answer carries it.

tests/web/test_openapi.py walks the app's routes and fails naming any (method, path) that has
no operation here, and any operation here that no route serves.

**The document is public.** Everything else under /api needs a token, but this document holds
no data: it says what the code in any copy of Cascade says, and nothing about this deployment
(no secrets, no counts, not even which webhooks are signed). Clients and tools (code generators,
schemathesis, the dashboard) read it before they have a token, as they do for most APIs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.convertors import (
    Convertor,
    FloatConvertor,
    IntegerConvertor,
    PathConvertor,
    UUIDConvertor,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from cascade import workflows
from cascade.web import apify, dashboard, heyreach, instantly, metrics, tokens, trigger, validator
from cascade.web import campaigns as campaign_api
from cascade.web import delivery as delivery_reports
from cascade.web.auth import ROLES, Role, required_role
from cascade.web.fields import BIGINT_MAX
from cascade.web.http import CORRELATION_HEADER, MAX_BODY_BYTES
from cascade.webhooks.signatures import (
    DEFAULT_SECRET_HEADER,
    DEFAULT_STRIPE_HEADER,
    STANDARD_HEADERS,
    TOLERANCE_SECONDS,
)

Schema = dict[str, Any]
Method = Literal["GET", "POST", "PUT", "DELETE"]
OPENAPI_VERSION = "3.1.0"
TITLE = "Cascade"
API_VERSION = "0.1.0"
ERROR = "#/components/schemas/Error"
JSON = "application/json"
# A route answering GET also answers HEAD (Starlette adds it); HEAD is not described apart.
IMPLIED_METHODS = frozenset({"HEAD"})


# -- what a table row says -------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """A query or header parameter that no model describes."""

    name: str
    schema: Schema
    where: Literal["query", "header"] = "query"
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Answer:
    """A successful answer: a model (its serialization schema), a raw schema, or no body."""

    description: str
    body: type[BaseModel] | Schema | None = None
    media_types: tuple[str, ...] = (JSON,)


@dataclass(frozen=True)
class Operation:
    tag: str
    summary: str
    answers: Mapping[int, Answer]
    description: str = ""
    body: type[BaseModel] | None = None  # parsed by `http.parse`: 400, 413, 415, 422 implied
    body_required: bool = True  # False: an empty body is read as {} (`allow_empty`)
    query: type[BaseModel] | None = None  # its fields are the query parameters; 422 implied
    parameters: tuple[Parameter, ...] = ()
    path_schemas: Mapping[str, Schema] = field(default_factory=dict)  # over the convertor's
    errors: Mapping[int, str] = field(default_factory=dict)  # status: when, in the envelope
    webhook: bool = False  # the signature headers, and 401 for a delivery that fails them
    grouped: bool = False  # through a group commit: 503 with Retry-After when its queue is full


# -- answers that are not a model elsewhere ----------------------------------------------------


class _Open(BaseModel):
    # These describe JSON the endpoints build as dicts; more keys may come.
    model_config = ConfigDict(extra="allow")


class Liveness(_Open):
    status: Literal["ok"]


class Readiness(_Open):
    status: Literal["ready"]
    database: Literal["ok"]
    listeners: int


class WebhookAnswer(_Open):
    """A webhook's answer; an accepted delivery adds what it changed (per provider)."""

    status: Literal["accepted", "duplicate"]
    provider: str
    delivery_id: str
    verified: bool
    correlation_id: str


class RunStarted(_Open):
    status: Literal["started"]
    run_id: int
    workflow: str
    branches: dict[str, str]
    not_built: list[str]
    lead_import: dict[str, str]


class WebhookSecrets(_Open):
    providers: dict[str, Any]
    unverified_providers: list[str]
    warning: str | None


class WebhookStatus(_Open):
    branches: dict[str, Any]
    webhooks: WebhookSecrets
    phase1_metrics: dict[str, str]


class CampaignPage(_Open):
    campaigns: list[campaign_api.Campaign]
    total: int
    limit: int
    offset: int
    status: campaign_api.CampaignStatus | None


class RunQueued(_Open):
    run: campaign_api.CampaignRun
    executed: Literal[False]
    note: str


class RunPage(_Open):
    campaign_id: int
    runs: list[campaign_api.CampaignRun]
    total: int
    limit: int
    offset: int


class StatusCounts(_Open):
    total: int
    by_status: dict[str, int]


class Stats(_Open):
    campaigns: StatusCounts
    runs: StatusCounts
    pipeline_health: dict[str, Any]


class Me(_Open):
    token_id: int
    name: str
    role: Role
    can_replay: bool


class Funnel(_Open):
    stages: list[dict[str, Any]]


class Throughput(_Open):
    window: Literal["1h", "24h"]


class Timeline(_Open):
    key: str
    subjects: Any
    entries: list[dict[str, Any]]
    total: int
    limit: int
    truncated: bool
    newest_events_searched: int


class Replayed(_Open):
    replayed: Literal[True]
    event: dict[str, Any]


OBJECT: Schema = {"type": "object"}
ROWS: Schema = {"type": "array", "items": {"type": "object"}}
ID_NOT_FOUND = "no campaign with this id (`campaign_not_found`)"
TRANSITION = "the campaign's status does not allow it (`invalid_transition`, naming the status)"


def _ok(description: str, body: type[BaseModel] | Schema | None = None) -> dict[int, Answer]:
    return {200: Answer(description, body)}


def _view(summary: str, view: str, body: Schema) -> Operation:
    return Operation(
        "monitoring", summary, _ok(f"the rows of `{view}`, as PostgreSQL wrote them", body)
    )


def _campaign_change(
    summary: str, description: str, body: type[BaseModel] | None = None
) -> Operation:
    return Operation(
        "campaigns",
        summary,
        _ok("the campaign as it now is", campaign_api.Campaign),
        description=description,
        body=body,
        body_required=False,
        errors={404: ID_NOT_FOUND, 409: TRANSITION},
    )


_PAUSE = _campaign_change(
    "Pause an active campaign",
    "active to paused, with an optional reason; its queued run is cancelled. PUT does the same.",
    campaign_api.PauseRequest,
)
_RESUME = _campaign_change(
    "Resume a paused campaign",
    "paused to active; next_run_at is counted from now. PUT does the same. 409 "
    "`invalid_schedule` when a schedule written by SQL cannot be read.",
)
_STATIC_MEDIA_TYPES = ("text/css", "text/javascript", "image/svg+xml", "text/html")
_WEBHOOK_ANSWERS = {
    202: Answer(
        "accepted: stored in one transaction whose triggers emit the events", WebhookAnswer
    ),
    200: Answer(
        "a duplicate (same `webhook-id`, else the same body): nothing changed", WebhookAnswer
    ),
}

# -- the table: every route of web.ROUTES -----------------------------------------------------

OPERATIONS: dict[tuple[Method, str], Operation] = {
    ("GET", "/health"): Operation("health", "Liveness", _ok("the process answers", Liveness)),
    ("GET", "/api/health"): Operation(
        "health", "Liveness (alias of /health)", _ok("the process answers", Liveness)
    ),
    ("GET", "/ready"): Operation(
        "health",
        "Readiness: the database answers and a listener has a fresh heartbeat",
        _ok("ready", Readiness),
        errors={
            503: "the database is unreachable (`database_unreachable`) or no listener "
            "has sent a heartbeat in the last 30 s (`no_listener`)"
        },
    ),
    ("POST", "/webhooks/apify"): Operation(
        "webhooks",
        "Apify's scrape result (seed 000): fills or re-opens the named slots",
        _WEBHOOK_ANSWERS,
        body=apify.ApifyDelivery,
        webhook=True,
    ),
    ("POST", "/webhooks/validator"): Operation(
        "webhooks",
        "The email validator's verdicts (seed 000)",
        _WEBHOOK_ANSWERS,
        body=validator.ValidatorDelivery,
        webhook=True,
    ),
    ("POST", "/webhooks/trigger/{workflow}"): Operation(
        "webhooks",
        "Start a workflow (seed 000's manual trigger)",
        {202: Answer("the run is recorded and its lead import runs in the background", RunStarted)},
        description="Every field is optional and falls back to seed 000's environment "
        "variables; csv_path must lie inside CASCADE_IMPORT_DIR. Signed with "
        "WEBHOOK_SECRET_TRIGGER, like a webhook.",
        body=trigger.TriggerBody,
        body_required=False,
        path_schemas={"workflow": {"type": "string", "enum": list(workflows.WORKFLOWS)}},
        errors={
            404: "no such workflow (`unknown_workflow`)",
            422: "the body, the process keys, the CSV or the branches refuse the run",
        },
        webhook=True,
    ),
    ("GET", "/webhooks/status"): Operation(
        "webhooks",
        "Branch progress and which providers accept unsigned deliveries",
        _ok("counts and configuration; no token needed", WebhookStatus),
    ),
    ("GET", "/metrics"): Operation(
        "monitoring",
        "Prometheus metrics (OpenMetrics when the Accept header asks for it)",
        {
            200: Answer(
                "the text exposition format",
                {"type": "string"},
                ("text/plain", "application/openmetrics-text"),
            )
        },
    ),
    ("GET", "/api/monitoring/health"): _view(
        "Pipeline health in one row", "marketing.vw_pipeline_health", OBJECT
    ),
    ("GET", "/api/monitoring/alerts"): _view(
        "Active operational alerts", "marketing.vw_alerts", ROWS
    ),
    ("GET", "/api/monitoring/pending"): _view(
        "Pending events per type", "marketing.vw_pending_by_type", ROWS
    ),
    ("GET", "/api/monitoring/latency"): _view(
        "Latency per stage: the last hour and all time",
        "marketing.vw_latency_by_stage and vw_event_latency",
        OBJECT,
    ),
    ("GET", "/api/monitoring/errors"): _view(
        "Recent errors, the 24-hour error rate and the unresolved count",
        "marketing.vw_recent_errors, vw_error_rate_24h and vw_unresolved_errors",
        OBJECT,
    ),
    ("GET", "/api/monitoring/phase1"): _view(
        "Seed 003's Phase 1 metrics with targets", "marketing.vw_phase1_metrics", ROWS
    ),
    ("GET", "/api/monitoring/dead-letters"): Operation(
        "monitoring",
        "The newest dead letters, and how many there are",
        _ok("`total`, `limit` and `dead_letters` (rows of marketing.vw_dead_letters)", OBJECT),
        parameters=(
            Parameter(
                "limit",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": metrics.MAX_DEAD_LETTERS,
                    "default": metrics.DEFAULT_DEAD_LETTERS,
                },
                description="how many of the newest to return",
            ),
        ),
        errors={422: "limit is not a whole number in range (`invalid_query`)"},
    ),
    ("POST", "/api/campaigns"): Operation(
        "campaigns",
        "Create a campaign (seed 001)",
        {201: Answer("created; Location names it", campaign_api.Campaign)},
        description="schedule_cron has 5 fields, or 6 with leading seconds; timezone is an "
        "IANA name. Text with a NUL character and numbers that are not finite are refused.",
        body=campaign_api.NewCampaign,
    ),
    ("GET", "/api/campaigns"): Operation(
        "campaigns",
        "List campaigns, newest first",
        _ok("a page of campaigns and the total", CampaignPage),
        query=campaign_api.CampaignFilter,
    ),
    ("GET", "/api/campaigns/{campaign_id}"): Operation(
        "campaigns",
        "One campaign",
        _ok("the campaign", campaign_api.Campaign),
        errors={404: ID_NOT_FOUND},
    ),
    ("DELETE", "/api/campaigns/{campaign_id}"): Operation(
        "campaigns",
        "Archive a campaign (its history is kept)",
        _ok("the archived campaign; archiving it again changes nothing", campaign_api.Campaign),
        errors={404: ID_NOT_FOUND},
    ),
    ("POST", "/api/campaigns/{campaign_id}/run"): Operation(
        "campaigns",
        "Record a manual run (queued; executing runs is not built yet)",
        {202: Answer("the queued run, with `executed: false`", RunQueued)},
        errors={
            404: ID_NOT_FOUND,
            409: "the campaign is not active (`invalid_transition`), or a run is already "
            "queued or running (`run_already_open`)",
        },
    ),
    ("GET", "/api/campaigns/{campaign_id}/runs"): Operation(
        "campaigns",
        "A campaign's runs, newest first",
        _ok("a page of runs and the total", RunPage),
        query=campaign_api.Page,
        errors={404: ID_NOT_FOUND},
    ),
    ("POST", "/api/campaigns/{campaign_id}/pause"): _PAUSE,
    ("PUT", "/api/campaigns/{campaign_id}/pause"): _PAUSE,
    ("POST", "/api/campaigns/{campaign_id}/resume"): _RESUME,
    ("PUT", "/api/campaigns/{campaign_id}/resume"): _RESUME,
    ("GET", "/api/stats"): Operation(
        "campaigns",
        "Campaigns and runs by status, and the pipeline's health",
        _ok("counts", Stats),
    ),
    ("GET", "/api/tokens"): Operation(
        "tokens",
        "List API tokens (revoked ones too); never a secret or a hash",
        _ok("every token", tokens.TokenList),
    ),
    ("POST", "/api/tokens"): Operation(
        "tokens",
        "Create an API token; its secret is in this answer and never again",
        {
            201: Answer(
                "the secret (send it as `Authorization: Bearer ...`) and the token",
                tokens.CreatedToken,
            )
        },
        body=tokens.NewToken,
    ),
    ("DELETE", "/api/tokens/{token_id}"): Operation(
        "tokens",
        "Revoke an API token, at once",
        _ok(
            "revoked; revoking again answers the same with `already_revoked: true`", tokens.Revoked
        ),
        errors={404: "no token with this id (`token_not_found`)"},
    ),
    ("POST", "/webhooks/delivery"): Operation(
        "webhooks",
        "The sending provider's results (seed 000): sent, bounced, replied",
        _WEBHOOK_ANSWERS,
        body=delivery_reports.DeliveryReport,
        webhook=True,
    ),
    ("POST", "/webhooks/instantly"): Operation(
        "webhooks",
        "Instantly's engagement events: opened, clicked, replied",
        _WEBHOOK_ANSWERS,
        description="Instantly signs nothing: by default it is checked with the shared_secret "
        "scheme, the secret sent in x-webhook-secret. The body below is seed 000's shape; "
        "Instantly's own flat payload (event_type beside lead_email, campaign_id, timestamp "
        "and the rest, with no data object) is accepted as well.",
        body=instantly.InstantlyEvent,
        webhook=True,
        grouped=True,
    ),
    ("POST", "/webhooks/heyreach"): Operation(
        "webhooks",
        "HeyReach's LinkedIn events: message sent, message replied",
        _WEBHOOK_ANSWERS,
        body=heyreach.HeyReachEvent,
        webhook=True,
    ),
    ("GET", "/"): Operation(
        "dashboard",
        "The dashboard page (it holds no data: it asks for a token and reads the API)",
        {200: Answer("the page", {"type": "string"}, ("text/html",))},
    ),
    ("GET", "/static/{path}"): Operation(
        "dashboard",
        "The dashboard's script, style sheet and icon",
        {200: Answer("the file", {"type": "string"}, _STATIC_MEDIA_TYPES)},
        errors={404: "no such file (`not_found`)"},
    ),
    ("GET", "/api/me"): Operation(
        "dashboard", "The caller's token: name and role", _ok("who is asking", Me)
    ),
    ("GET", "/api/dashboard/funnel"): Operation(
        "dashboard", "Rows through the pipeline's stages", _ok("one entry per stage", Funnel)
    ),
    ("GET", "/api/dashboard/throughput"): Operation(
        "dashboard",
        "Events processed per minute (1h) or hour (24h), with p50 and p95 latency per stage",
        _ok("the buckets of the window", Throughput),
        parameters=(
            Parameter(
                "window",
                {"type": "string", "enum": list(dashboard.WINDOWS), "default": "1h"},
                description="1h: per minute; 24h: per hour",
            ),
        ),
        errors={422: "window is not one of the windows (`invalid_query`)"},
    ),
    ("GET", "/api/timeline/company/{key}"): Operation(
        "dashboard",
        "A company's timeline: every event, provider attempt and state change, oldest first",
        _ok("the entries found", Timeline),
        description="key: the company's id, Barton ID or domain (or website).",
        errors={
            404: "no such company (`company_not_found`)",
            422: "the key is none of those (`invalid_key`)",
        },
    ),
    ("GET", "/api/timeline/contact/{key}"): Operation(
        "dashboard",
        "A contact's timeline: every event, provider attempt and state change, oldest first",
        _ok("the entries found", Timeline),
        description="key: the contact's id or email address.",
        errors={
            404: "no such contact (`contact_not_found`)",
            422: "the key is neither (`invalid_key`)",
        },
    ),
    ("POST", "/api/dead-letters/{event_id}/replay"): Operation(
        "dashboard",
        "Put a dead letter back in the queue, with a fresh set of attempts",
        _ok("replayed: the event's new state", Replayed),
        errors={
            404: "no such event (`event_not_found`)",
            409: "the event is not dead (any more): nothing was replayed (`not_dead`)",
        },
    ),
    ("GET", "/api/openapi.json"): Operation(
        "meta", "This document", _ok("the OpenAPI 3.1 description of every route", OBJECT)
    ),
}


# -- walking the routes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    method: Method
    path: str  # as OpenAPI writes it: /api/campaigns/{campaign_id}
    route: Route | Mount

    @property
    def role(self) -> Role | None:
        return required_role(self.route.endpoint) if isinstance(self.route, Route) else None


def served(routes: Sequence[BaseRoute]) -> Iterator[Served]:
    """Every (method, path) the routes answer, HEAD aside; a mount of static files answers
    GET below its path."""
    for route in routes:
        if isinstance(route, Route):
            for method in sorted(set(route.methods or ()) - IMPLIED_METHODS):
                yield Served(method, route.path_format, route)  # type: ignore[arg-type]
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            yield Served("GET", route.path_format, route)


def undescribed(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of each route with no row in OPERATIONS; ("?", path) for a route of a
    kind this module cannot describe yet (a mounted sub-application, say)."""
    missing = [(s.method, s.path) for s in served(routes) if (s.method, s.path) not in OPERATIONS]
    known = {id(s.route) for s in served(routes)}
    others = [("?", str(getattr(r, "path", r))) for r in routes if id(r) not in known]
    return missing + others


def phantoms(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of each row in OPERATIONS that no route serves."""
    answered = {(s.method, s.path) for s in served(routes)}
    return [key for key in OPERATIONS if key not in answered]


# -- building the document ---------------------------------------------------------------------


def document(routes: Sequence[BaseRoute]) -> Schema:
    """The OpenAPI document of `routes`, as far as OPERATIONS describes them."""
    described = [s for s in served(routes) if (s.method, s.path) in OPERATIONS]
    schemas, refs = _model_schemas(described)
    paths: dict[str, dict[str, Schema]] = {}
    for where in described:
        operation = _operation(where, OPERATIONS[where.method, where.path], refs)
        paths.setdefault(where.path, {})[where.method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": API_VERSION, "description": _INFO},
        "tags": [{"name": name} for name in dict.fromkeys(op.tag for op in OPERATIONS.values())],
        "paths": paths,
        "components": _components(schemas),
    }


Refs = dict[tuple[type[BaseModel], JsonSchemaMode], Schema]


def _model_schemas(described: Sequence[Served]) -> tuple[Schema, Refs]:
    """One schema per model, shared: requests in validation mode, answers in serialization."""
    keys: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for where in described:
        operation = OPERATIONS[where.method, where.path]
        if operation.body is not None:
            keys[operation.body, "validation"] = None
        for answer in operation.answers.values():
            if isinstance(answer.body, type):
                keys[answer.body, "serialization"] = None
    refs, top = models_json_schema(list(keys), ref_template="#/components/schemas/{model}")
    return _standard(top.get("$defs", {})), {
        (m, mode): ref for (m, mode), ref in refs.items() if issubclass(m, BaseModel)
    }


# pydantic writes a constraint it could not fold into the type (a Field after a
# BeforeValidator, as in fields.SlotId) under its own name, which JSON Schema ignores.
_KEYWORDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def _standard(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_standard(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") in ("integer", "number"):
        return {_KEYWORDS.get(key, key): _standard(value) for key, value in schema.items()}
    return {key: _standard(value) for key, value in schema.items()}


def _operation(where: Served, operation: Operation, refs: Refs) -> Schema:
    role = where.role
    description = operation.description
    if role is not None:
        description = f"Least role: {role}. {description}".strip()
    spec: Schema = {
        "tags": [operation.tag],
        "summary": operation.summary,
        "operationId": re.sub(r"[^a-z0-9]+", "_", f"{where.method} {where.path}".lower()).strip(
            "_"
        ),
        "parameters": [
            *_path_parameters(where.route, operation),
            *_query_parameters(operation),
            *(_parameter(p) for p in operation.parameters),
            *(_WEBHOOK_HEADERS if operation.webhook else ()),
            {"$ref": "#/components/parameters/CorrelationId"},
        ],
        "responses": _responses(operation, role, refs),
        "security": [{"bearer": []}] if role is not None else [],
    }
    if description:
        spec["description"] = description
    if role is not None:
        spec["x-cascade-role"] = role
    if operation.body is not None:
        spec["requestBody"] = {
            "required": operation.body_required,
            "content": {JSON: {"schema": refs[operation.body, "validation"]}},
        }
    return spec


def _path_parameters(route: Route | Mount, operation: Operation) -> Iterator[Schema]:
    for name, convertor in route.param_convertors.items():
        schema = operation.path_schemas.get(name) or _convertor_schema(convertor)
        yield {"name": name, "in": "path", "required": True, "schema": schema}


def _convertor_schema(convertor: Convertor[Any]) -> Schema:
    if isinstance(convertor, IntegerConvertor):
        # Starlette matches digits only, so a negative id is a 404 like any unknown one.
        return {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX}
    if isinstance(convertor, FloatConvertor):
        return {"type": "number", "minimum": 0}
    if isinstance(convertor, UUIDConvertor):
        return {"type": "string", "format": "uuid"}
    if isinstance(convertor, PathConvertor):
        return {"type": "string"}  # slashes included
    return {"type": "string", "pattern": "^[^/]+$"}


def _query_parameters(operation: Operation) -> Iterator[Schema]:
    if operation.query is None:
        return
    schema = _standard(operation.query.model_json_schema())
    for name, prop in schema.get("properties", {}).items():
        yield {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", ()),
            "schema": _not_null(prop),
        }


def _not_null(schema: Schema) -> Schema:
    # `X | None = None` in a query model means "leave it out": a query string has no null.
    options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if len(options) == 1:
        rest: Schema = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return rest | dict(options[0])
    return schema


def _parameter(parameter: Parameter) -> Schema:
    spec: Schema = {
        "name": parameter.name,
        "in": parameter.where,
        "required": parameter.required,
        "schema": parameter.schema,
    }
    if parameter.description:
        spec["description"] = parameter.description
    return spec


def _responses(operation: Operation, role: str | None, refs: Refs) -> dict[str, Schema]:
    answers: dict[int, Schema] = {}
    for status, answer in operation.answers.items():
        answers[status] = _answer(answer, refs)
    implied: dict[int, str] = {}
    if operation.body is not None:
        implied |= {
            400: "MalformedJson",
            413: "PayloadTooLarge",
            415: "UnsupportedMediaType",
            422: "InvalidInput",
        }
    if operation.query is not None or operation.parameters:
        implied[422] = "InvalidInput"
    if operation.webhook:
        implied[401] = "InvalidSignature"
    if operation.grouped:
        implied[503] = "Busy"
    if role is not None:
        implied |= {401: "Unauthorized", 429: "RateLimited"}
        if role != ROLES[0]:
            implied[403] = "Forbidden"
    for status, name in implied.items():
        answers[status] = {"$ref": f"#/components/responses/{name}"}
    for status, when in operation.errors.items():
        answers[status] = _error(when)
    return {str(status): answers[status] for status in sorted(answers)}


def _answer(answer: Answer, refs: Refs) -> Schema:
    spec: Schema = {"description": answer.description, "headers": _CORRELATION_HEADER}
    if answer.body is None:
        return spec
    schema = refs[answer.body, "serialization"] if isinstance(answer.body, type) else answer.body
    spec["content"] = {media_type: {"schema": schema} for media_type in answer.media_types}
    return spec


def _error(description: str, headers: Mapping[str, Schema] | None = None) -> Schema:
    return {
        "description": description,
        "headers": {**_CORRELATION_HEADER, **(headers or {})},
        "content": {JSON: {"schema": {"$ref": ERROR}}},
    }


_CORRELATION_HEADER = {CORRELATION_HEADER: {"$ref": "#/components/headers/CorrelationId"}}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "schema": {"type": "string"},
        "required": True,
        "description": "the Bearer challenge (RFC 6750)",
    }
}
_RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer", "minimum": 1},
        "required": True,
        "description": "seconds until a request may succeed",
    }
}
_SIGNATURE = (
    "Verified on the raw body when WEBHOOK_SECRET_<PROVIDER> is set (several, comma-separated, "
    "while a secret is rotated); otherwise deliveries are accepted unverified and "
    "GET /webhooks/status says so. WEBHOOK_SCHEME_<PROVIDER> picks the scheme: `standard` "
    "(Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature), `stripe` "
    f"({DEFAULT_STRIPE_HEADER}: t=...,v1=...), `shared_secret` ({DEFAULT_SECRET_HEADER}) or "
    f"`none`. Timestamps older or newer than {TOLERANCE_SECONDS} s are refused."
)
_WEBHOOK_HEADERS: tuple[Schema, ...] = (
    {
        "name": STANDARD_HEADERS[0],
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Standard Webhooks: the delivery's id, also its de-duplication key "
        "(without it, the SHA-256 of the body is)",
    },
    {
        "name": STANDARD_HEADERS[1],
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Standard Webhooks: Unix seconds of the signing, in ASCII digits",
    },
    {
        "name": STANDARD_HEADERS[2],
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Standard Webhooks: space-separated `v1,<base64 HMAC-SHA256>` entries. "
        + _SIGNATURE,
    },
    {
        "name": DEFAULT_STRIPE_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Stripe-style: `t=<seconds>,v1=<hex HMAC-SHA256 of t.body>`",
    },
    {
        "name": DEFAULT_SECRET_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "shared_secret: the secret itself, for providers that sign nothing",
    },
)
_INFO = (
    "Cascade's web app: health, the provider webhooks, the workflow trigger, and the "
    "operations API. Everything under /api except /api/health and this document needs "
    "`Authorization: Bearer cas_...` (made with `cascade token create --role ROLE`); roles, "
    "least to most: viewer (reads), ops (also changes campaigns and replays), admin (also "
    'manages tokens). Every error is `{"error": {"code", "message", "details"}}`.'
)


def _components(schemas: Schema) -> Schema:
    return {
        "schemas": schemas | {"Error": _ENVELOPE},
        "responses": {
            "MalformedJson": _error("the body is not JSON (`malformed_json`)"),
            "PayloadTooLarge": _error(
                f"the body exceeds {MAX_BODY_BYTES} bytes (`payload_too_large`)"
            ),
            "UnsupportedMediaType": _error(
                "Content-Type is not application/json (`unsupported_media_type`)"
            ),
            "InvalidInput": _error(
                "a field is missing or refused (`invalid_payload`, "
                "`invalid_query`): details.errors names each field"
            ),
            "InvalidSignature": _error(
                "the signature, its timestamp or the shared secret did "
                "not verify (`invalid_signature`)"
            ),
            "Unauthorized": _error(
                "no bearer token, or a malformed, unknown or revoked one (`unauthorized`)",
                _WWW_AUTHENTICATE,
            ),
            "Forbidden": _error(
                "the token's role is below the route's (`forbidden`)", _WWW_AUTHENTICATE
            ),
            "Busy": _error(
                "opens and clicks: too many deliveries are waiting to be written (`busy`); "
                "nothing of this one was stored, so sending it again is safe",
                _RETRY_AFTER,
            ),
            "RateLimited": _error(
                "too many requests from this address or token (`rate_limited`)", _RETRY_AFTER
            ),
        },
        "parameters": {
            "CorrelationId": {
                "name": CORRELATION_HEADER,
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "carried into every event the request causes; a value that is "
                "not 1 to 128 printable ASCII characters is replaced by a generated one",
            },
        },
        "headers": {
            "CorrelationId": {
                "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,128}$"},
                "required": True,
                "description": "the request's x-correlation-id, or the one generated for it",
            },
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "an API token, `cas_` and 43 characters; each operation names "
                "its least role in x-cascade-role",
            },
        },
    }


_ENVELOPE: Schema = {
    "type": "object",
    "description": "seed 004's error envelope",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "examples": ["invalid_payload"]},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        },
    },
}


# -- the endpoint ------------------------------------------------------------------------------


async def openapi_json(request: Request) -> Response:
    # Built on the first request and kept: the document changes only with the code.
    state = request.app.state
    rendered: bytes | None = getattr(state, "openapi_document", None)
    if rendered is None:
        rendered = json.dumps(document(request.app.routes), separators=(",", ":")).encode()
        state.openapi_document = rendered
    return Response(rendered, media_type=JSON)


ROUTES = [Route("/api/openapi.json", openapi_json, methods=["GET"])]
