"""Seed 001's campaign API over marketing.campaigns and marketing.campaign_runs.

    POST   /api/campaigns                create (201)                      ops
    GET    /api/campaigns                list: ?status= &limit= &offset=   viewer
    GET    /api/campaigns/{id}           one campaign                      viewer
    POST   /api/campaigns/{id}/run       record a manual run (202)         ops
    GET    /api/campaigns/{id}/runs      its runs, newest first            viewer
    POST   /api/campaigns/{id}/pause     active -> paused                  ops
    POST   /api/campaigns/{id}/resume    paused -> active                  ops
    DELETE /api/campaigns/{id}           archive                           ops
    GET    /api/stats                    campaigns and runs by status      viewer

Pause and resume also answer PUT, the verb seed 001's examples use.

**A run is recorded, not executed.** POST .../run inserts a 'queued' row in campaign_runs and
nothing else: what a run does (seed 001's steps, budgets, notifications) is built in a later
issue, which will move queued runs on. A campaign has at most one open (queued or running) run;
a partial unique index decides it, so of two racing requests one gets 409.

**Transitions.** pause: active only; resume: paused only (and recomputes next_run_at from now);
run: active only; anything else is 409 `invalid_transition`, naming the current status. Each
locks the campaign row first and decides under the lock, so a racing pause cannot slip between
the check and the write.

**DELETE archives** (status 'archived', schedule off): the row stays, so its run history, and
the engagement rows that point at it, keep their campaign. Archiving an archived campaign again
answers 200 and changes nothing. Archived is final here: no route leaves it.

Cron schedules have five fields, or six with node-cron's leading seconds, and are checked with
croniter, which also finds next_run_at in the campaign's IANA timezone (so across DST shifts).
"""

from __future__ import annotations

import functools
import json
import re
import zoneinfo
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, LiteralString, TypeVar, get_args

import asyncpg
from croniter import CroniterBadDateError, CroniterError, croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    StrictBool,
    StringConstraints,
    ValidationError,
)
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cascade.handling import Connection
from cascade.web.auth import principal, requires
from cascade.web.fields import BIGINT_MAX, OptionalText
from cascade.web.http import ApiError, correlation_id, invalid, parse, read_json_body

CampaignStatus = Literal["draft", "active", "paused", "completed", "archived"]
RunStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
CAMPAIGN_STATUSES: tuple[CampaignStatus, ...] = get_args(CampaignStatus)
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
PAGE_LIMIT_DEFAULT = 50
PAGE_LIMIT_MAX = 500
# No month or weekday name starts with H or R, so a field part that does is croniter's syntax.
_CRONITER_ONLY = re.compile(r"[HR](?![A-Z])", re.IGNORECASE)
RUN_NOTE = "recorded, not executed: what a campaign run does is built in a later issue"

GET_CAMPAIGN: LiteralString = """
    SELECT id, campaign_name, description, status, config, schedule_cron, timezone,
           schedule_enabled, next_run_at, last_run_at, budget_daily, budget_weekly,
           budget_monthly, budget_currency, created_by, created_at, updated_at, paused_at,
           paused_reason, completed_at
      FROM marketing.campaigns WHERE id = $1
"""
# Newest first; $1 NULL means every status.
LIST_CAMPAIGNS: LiteralString = """
    SELECT id, campaign_name, description, status, config, schedule_cron, timezone,
           schedule_enabled, next_run_at, last_run_at, budget_daily, budget_weekly,
           budget_monthly, budget_currency, created_by, created_at, updated_at, paused_at,
           paused_reason, completed_at
      FROM marketing.campaigns
     WHERE $1::text IS NULL OR status = $1
     ORDER BY id DESC LIMIT $2 OFFSET $3
"""
COUNT_CAMPAIGNS: LiteralString = """
    SELECT count(*) FROM marketing.campaigns WHERE $1::text IS NULL OR status = $1
"""
INSERT_CAMPAIGN: LiteralString = """
    INSERT INTO marketing.campaigns
        (campaign_name, description, config, schedule_cron, timezone, schedule_enabled,
         budget_daily, budget_weekly, budget_monthly, budget_currency, created_by, next_run_at)
    VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12)
 RETURNING id
"""
# Transitions decide under this lock; FOR UPDATE waits for a racing transition to commit.
LOCK_CAMPAIGN: LiteralString = """
    SELECT status, schedule_cron, timezone, schedule_enabled
      FROM marketing.campaigns WHERE id = $1
       FOR UPDATE
"""
# A run only reads the campaign: FOR SHARE lets runs of one campaign proceed side by side (the
# unique index sorts them out) while a pause or archive waits for the run to commit.
SHARE_CAMPAIGN: LiteralString = """
    SELECT status, schedule_cron, timezone, schedule_enabled
      FROM marketing.campaigns WHERE id = $1
       FOR SHARE
"""
# No run is due while paused: next_run_at is cleared here and recomputed on resume.
PAUSE: LiteralString = """
    UPDATE marketing.campaigns
       SET status = 'paused', paused_at = now(), paused_reason = $2, next_run_at = NULL,
           updated_at = now()
     WHERE id = $1
"""
RESUME: LiteralString = """
    UPDATE marketing.campaigns
       SET status = 'active', paused_at = NULL, paused_reason = NULL, next_run_at = $2,
           updated_at = now()
     WHERE id = $1
"""
ARCHIVE: LiteralString = """
    UPDATE marketing.campaigns
       SET status = 'archived', paused_at = NULL, paused_reason = NULL, next_run_at = NULL,
           updated_at = now()
     WHERE id = $1
"""
# A paused or archived campaign runs nothing: its queued run is cancelled with it. (A running
# one is the executor's to stop, in a later issue; nothing runs yet.)
CANCEL_QUEUED_RUNS: LiteralString = """
    UPDATE marketing.campaign_runs
       SET status = 'cancelled', finished_at = now(),
           detail = detail || jsonb_build_object('cancelled_because', $2::text)
     WHERE campaign_id = $1 AND status = 'queued'
"""
# Nothing is returned when the campaign already has an open run (campaign_runs_one_open_key).
QUEUE_RUN: LiteralString = """
    INSERT INTO marketing.campaign_runs (campaign_id, status, trigger, requested_by, detail)
    VALUES ($1, 'queued', 'manual', $2, $3::jsonb)
        ON CONFLICT (campaign_id) WHERE status IN ('queued', 'running') DO NOTHING
 RETURNING id, campaign_id, status, trigger, requested_by, started_at, finished_at, detail,
           created_at
"""
OPEN_RUN: LiteralString = """
    SELECT id, status FROM marketing.campaign_runs
     WHERE campaign_id = $1 AND status IN ('queued', 'running')
"""
LIST_RUNS: LiteralString = """
    SELECT id, campaign_id, status, trigger, requested_by, started_at, finished_at, detail,
           created_at
      FROM marketing.campaign_runs WHERE campaign_id = $1
     ORDER BY id DESC LIMIT $2 OFFSET $3
"""
COUNT_RUNS: LiteralString = """
    SELECT count(*) FROM marketing.campaign_runs WHERE campaign_id = $1
"""
CAMPAIGNS_BY_STATUS: LiteralString = """
    SELECT status, count(*) AS n FROM marketing.campaigns GROUP BY status
"""
RUNS_BY_STATUS: LiteralString = """
    SELECT status, count(*) AS n FROM marketing.campaign_runs GROUP BY status
"""
PIPELINE_HEALTH: LiteralString = "SELECT * FROM marketing.vw_pipeline_health"


# -- schedules ---------------------------------------------------------------------------------


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """The first time strictly after `after` that `cron` fires, read in `timezone`."""
    # Six fields are node-cron's, whose seconds lead; croniter puts them last unless told.
    local = after.astimezone(zoneinfo.ZoneInfo(timezone))
    schedule = croniter(cron, local, second_at_beginning=len(cron.split()) == 6)
    fire: datetime = schedule.get_next(datetime)
    return fire


def next_run_at(cron: str | None, timezone: str, enabled: bool) -> datetime | None:
    return next_fire(cron, timezone, datetime.now(UTC)) if cron and enabled else None


def _stored_schedule_next_run(campaign_id: int, row: asyncpg.Record) -> datetime | None:
    """next_run_at for a schedule read back from the table, which SQL may have written
    without the API's checks: one that cannot be read is a 409, not a 500."""
    try:
        return next_run_at(row["schedule_cron"], row["timezone"], row["schedule_enabled"])
    except (ValueError, KeyError, zoneinfo.ZoneInfoNotFoundError, CroniterError) as exc:
        raise ApiError(
            409,
            "invalid_schedule",
            f"campaign {campaign_id}'s stored schedule cannot be read ({exc}); "
            "correct schedule_cron and timezone first",
            {"schedule_cron": row["schedule_cron"], "timezone": row["timezone"]},
        ) from None


def _valid_cron(value: str) -> str:
    fields = value.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            "must have 5 fields (minute hour day-of-month month day-of-week), "
            "or 6 with leading seconds"
        )
    cron = " ".join(fields)
    if any(_CRONITER_ONLY.match(part) for field in fields for part in field.split(",")):
        # H (hashed) and R (random) are croniter's own: R would move next_run_at each time it
        # is counted, and neither means anything to another cron reader.
        raise ValueError(f"{cron!r} uses H or R, which are not standard cron")
    try:
        next_fire(cron, "UTC", datetime.now(UTC))
    except CroniterBadDateError:
        raise ValueError(f"{cron!r} never fires") from None
    except (ValueError, TypeError) as exc:  # croniter's errors are ValueErrors, a few TypeErrors
        raise ValueError(f"{cron!r} is not a valid cron expression: {exc}") from None
    return cron


@functools.cache
def _timezones() -> frozenset[str]:
    # "localtime" is the host's own zone file, listed beside the IANA names on Debian.
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def _valid_timezone(value: str) -> str:
    # The IANA list, not ZoneInfo(value): that would also open any file under the zone folder.
    if value not in _timezones():
        raise ValueError(f"{value!r} is not an IANA timezone name such as 'America/New_York'")
    return value


# -- models ------------------------------------------------------------------------------------


def _json_object(value: object) -> object:
    # asyncpg hands jsonb over as text unless a codec is set; the pool here sets none.
    return json.loads(value) if isinstance(value, str) else value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
CronExpression = Annotated[str, AfterValidator(_valid_cron)]
TimeZoneName = Annotated[str, AfterValidator(_valid_timezone)]
# numeric(12, 2) in the table; a number in JSON both ways.
Budget = Annotated[
    Decimal,
    Field(ge=0, max_digits=12, decimal_places=2),
    PlainSerializer(float, return_type=float, when_used="json"),
]
JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object)]


class NewCampaign(BaseModel, frozen=True, extra="forbid"):
    """POST /api/campaigns. `config` keeps seed 001's steps and notifications as given."""

    campaign_name: Name
    description: OptionalText = None
    schedule_cron: CronExpression | None = None
    timezone: TimeZoneName = "UTC"
    schedule_enabled: StrictBool = True  # true or false: not 0, "off" or "no"
    budget_daily: Budget | None = None
    budget_weekly: Budget | None = None
    budget_monthly: Budget | None = None
    budget_currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    config: dict[str, Any] = Field(default_factory=dict)


class PauseRequest(BaseModel, frozen=True, extra="forbid"):
    reason: OptionalText = None


class Page(BaseModel, frozen=True):
    limit: int = Field(PAGE_LIMIT_DEFAULT, ge=1, le=PAGE_LIMIT_MAX)
    offset: int = Field(0, ge=0, le=BIGINT_MAX)


class CampaignFilter(Page, frozen=True):
    status: CampaignStatus | None = None


AnyPage = TypeVar("AnyPage", bound=Page)


class Campaign(BaseModel, frozen=True):
    id: int
    campaign_name: str
    description: str | None
    status: CampaignStatus
    schedule_cron: str | None
    timezone: str
    schedule_enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    budget_daily: Budget | None
    budget_weekly: Budget | None
    budget_monthly: Budget | None
    budget_currency: str
    config: JsonObject
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    paused_at: datetime | None
    paused_reason: str | None
    completed_at: datetime | None


class CampaignRun(BaseModel, frozen=True):
    id: int
    campaign_id: int
    status: RunStatus
    trigger: Literal["manual", "schedule"]
    requested_by: str | None
    started_at: datetime | None
    finished_at: datetime | None
    detail: JsonObject
    created_at: datetime


# -- helpers -----------------------------------------------------------------------------------


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _campaign_id(request: Request) -> int:
    campaign_id: int = request.path_params["campaign_id"]
    if campaign_id > BIGINT_MAX:  # no such id can exist, and asyncpg would refuse to send it
        raise _not_found(campaign_id)
    return campaign_id


def _not_found(campaign_id: int) -> ApiError:
    return ApiError(404, "campaign_not_found", f"no campaign {campaign_id}",
                    {"campaign_id": campaign_id})  # fmt: skip


def _query(model: type[AnyPage], request: Request) -> AnyPage:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise invalid(exc) from None


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


async def _fetch_campaign(conn: Connection, campaign_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(GET_CAMPAIGN, campaign_id)
    if row is None:
        raise _not_found(campaign_id)
    return _dump(Campaign.model_validate(dict(row)))


async def _lock(
    conn: Connection, campaign_id: int, action: str, allowed: tuple[CampaignStatus, ...],
    statement: LiteralString = LOCK_CAMPAIGN,
) -> asyncpg.Record:  # fmt: skip
    """The campaign's row, locked; 404 when there is none, 409 when `action` cannot apply."""
    row = await conn.fetchrow(statement, campaign_id)
    if row is None:
        raise _not_found(campaign_id)
    if row["status"] not in allowed:
        message = f"cannot {action} a campaign that is {row['status']}"
        details = {"campaign_id": campaign_id, "action": action, "status": row["status"],
                   "allowed_from": list(allowed)}  # fmt: skip
        raise ApiError(409, "invalid_transition", message, details)
    return row


# -- endpoints ---------------------------------------------------------------------------------


@requires("ops")
async def create_campaign(request: Request) -> JSONResponse:
    new = parse(NewCampaign, await read_json_body(request))
    fires = next_run_at(new.schedule_cron, new.timezone, new.schedule_enabled)
    async with _pool(request).acquire() as conn, conn.transaction():
        campaign_id = await conn.fetchval(
            INSERT_CAMPAIGN, new.campaign_name, new.description, json.dumps(new.config),
            new.schedule_cron, new.timezone, new.schedule_enabled, new.budget_daily,
            new.budget_weekly, new.budget_monthly, new.budget_currency,
            principal(request).name, fires,
        )  # fmt: skip
        body = await _fetch_campaign(conn, campaign_id)
    return JSONResponse(body, 201, headers={"Location": f"/api/campaigns/{campaign_id}"})


@requires("viewer")
async def list_campaigns(request: Request) -> JSONResponse:
    query = _query(CampaignFilter, request)
    async with _pool(request).acquire() as conn:
        rows = await conn.fetch(LIST_CAMPAIGNS, query.status, query.limit, query.offset)
        total = await conn.fetchval(COUNT_CAMPAIGNS, query.status)
    campaigns = [_dump(Campaign.model_validate(dict(row))) for row in rows]
    return JSONResponse({"campaigns": campaigns, "total": total, **_dump(query)})


@requires("viewer")
async def get_campaign(request: Request) -> JSONResponse:
    async with _pool(request).acquire() as conn:
        return JSONResponse(await _fetch_campaign(conn, _campaign_id(request)))


@requires("ops")
async def run_campaign(request: Request) -> JSONResponse:
    """Records a manual run as 'queued' and returns 202. It is recorded, not executed: what a
    run does is built in a later issue. 409 unless active, or while another run is open."""
    campaign_id = _campaign_id(request)
    detail = json.dumps({"correlation_id": correlation_id(request)})
    async with _pool(request).acquire() as conn, conn.transaction():
        await _lock(conn, campaign_id, "run", ("active",), SHARE_CAMPAIGN)
        row = await conn.fetchrow(QUEUE_RUN, campaign_id, principal(request).name, detail)
        if row is None:
            raise await _run_already_open(conn, campaign_id)
    run = _dump(CampaignRun.model_validate(dict(row)))
    return JSONResponse({"run": run, "executed": False, "note": RUN_NOTE}, 202)


async def _run_already_open(conn: Connection, campaign_id: int) -> ApiError:
    # The open run committed before our insert gave up on it, so this read sees it.
    open_run = await conn.fetchrow(OPEN_RUN, campaign_id)
    details: dict[str, Any] = {"campaign_id": campaign_id}
    if open_run is not None:
        details |= {"run_id": open_run["id"], "run_status": open_run["status"]}
    message = f"campaign {campaign_id} already has a run queued or running"
    return ApiError(409, "run_already_open", message, details)


@requires("viewer")
async def list_runs(request: Request) -> JSONResponse:
    campaign_id = _campaign_id(request)
    page = _query(Page, request)
    async with _pool(request).acquire() as conn:
        await _fetch_campaign(conn, campaign_id)  # 404 for an unknown campaign, not []
        rows = await conn.fetch(LIST_RUNS, campaign_id, page.limit, page.offset)
        total = await conn.fetchval(COUNT_RUNS, campaign_id)
    runs = [_dump(CampaignRun.model_validate(dict(row))) for row in rows]
    return JSONResponse({"campaign_id": campaign_id, "runs": runs, "total": total, **_dump(page)})


@requires("ops")
async def pause_campaign(request: Request) -> JSONResponse:
    """active -> paused, with an optional {"reason": "..."}; 409 from any other status."""
    campaign_id = _campaign_id(request)
    asked = parse(PauseRequest, await read_json_body(request, allow_empty=True))
    async with _pool(request).acquire() as conn, conn.transaction():
        await _lock(conn, campaign_id, "pause", ("active",))
        await conn.execute(PAUSE, campaign_id, asked.reason)
        await conn.execute(CANCEL_QUEUED_RUNS, campaign_id, "campaign paused")
        return JSONResponse(await _fetch_campaign(conn, campaign_id))


@requires("ops")
async def resume_campaign(request: Request) -> JSONResponse:
    """paused -> active, next_run_at counted from now; 409 from any other status."""
    campaign_id = _campaign_id(request)
    async with _pool(request).acquire() as conn, conn.transaction():
        row = await _lock(conn, campaign_id, "resume", ("paused",))
        fires = _stored_schedule_next_run(campaign_id, row)
        await conn.execute(RESUME, campaign_id, fires)
        return JSONResponse(await _fetch_campaign(conn, campaign_id))


@requires("ops")
async def archive_campaign(request: Request) -> JSONResponse:
    """Archives (the row and its runs stay); again on an archived campaign is a no-op 200."""
    campaign_id = _campaign_id(request)
    async with _pool(request).acquire() as conn, conn.transaction():
        row = await _lock(conn, campaign_id, "archive", CAMPAIGN_STATUSES)
        if row["status"] != "archived":
            await conn.execute(ARCHIVE, campaign_id)
            await conn.execute(CANCEL_QUEUED_RUNS, campaign_id, "campaign archived")
        return JSONResponse(await _fetch_campaign(conn, campaign_id))


@requires("viewer")
async def stats(request: Request) -> JSONResponse:
    async with _pool(request).acquire() as conn:
        campaigns = await conn.fetch(CAMPAIGNS_BY_STATUS)
        runs = await conn.fetch(RUNS_BY_STATUS)
        health = await conn.fetchrow(PIPELINE_HEALTH)
    return JSONResponse({
        "campaigns": _by_status(campaigns, CAMPAIGN_STATUSES),
        "runs": _by_status(runs, RUN_STATUSES),
        "pipeline_health": {key: _plain(value) for key, value in (health or {}).items()},
    })  # fmt: skip


def _by_status(rows: list[asyncpg.Record], statuses: tuple[str, ...]) -> dict[str, Any]:
    counts = dict.fromkeys(statuses, 0) | {row["status"]: row["n"] for row in rows}
    return {"total": sum(counts.values()), "by_status": counts}


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


CAMPAIGN = "/api/campaigns/{campaign_id:id}"
ROUTES = [
    Route("/api/campaigns", create_campaign, methods=["POST"]),
    Route("/api/campaigns", list_campaigns, methods=["GET"]),
    Route(CAMPAIGN, get_campaign, methods=["GET"]),
    Route(CAMPAIGN, archive_campaign, methods=["DELETE"]),
    Route(CAMPAIGN + "/run", run_campaign, methods=["POST"]),
    Route(CAMPAIGN + "/runs", list_runs, methods=["GET"]),
    Route(CAMPAIGN + "/pause", pause_campaign, methods=["POST", "PUT"]),
    Route(CAMPAIGN + "/resume", resume_campaign, methods=["POST", "PUT"]),
    Route("/api/stats", stats, methods=["GET"]),
]
