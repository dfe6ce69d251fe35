"""The dashboard: the page at `/` and the JSON API behind it.

    GET  /                                       the page; no token (it holds no data)   —
    GET  /static/...                             its script, style sheet and icon        —
    GET  /api/me                                 the caller's token name and role        viewer
    GET  /api/dashboard/funnel                   rows through the stages                 viewer
    GET  /api/dashboard/throughput?window=1h|24h  processed per bucket, p50/p95 latency  viewer
    GET  /api/timeline/company/{key}             id, Barton ID or domain (or website)    viewer
    GET  /api/timeline/contact/{key}             id or email                             viewer
    POST /api/dead-letters/{event_id}/replay     back to pending, once                   ops

The page also reads cascade/web/metrics.py's /api/monitoring/{health,alerts,dead-letters}: one
query per view, never a second copy of it here.

**Replay** is marketing.replay_dead_letters (triggers/500_engine_functions.sql), the function
`cascade dlq replay` and maintenance/replay_dead_letters.sql call. Its UPDATE matches only
while the event is dead, and the row lock makes concurrent replays queue behind the first:
each later one re-reads the row, finds it pending and changes nothing. Such a replay answers
409 `not_dead` with the event's status, rather than 200: the caller asked to move a dead
letter and none moved, which a page showing a stale list (two operators, one click each)
must say rather than report success.

**Reading pipeline_events without scanning it.** The table can hold millions of rows, and any
index on it costs the queue a write per status change (a BRIN one was measured 25 % slower end
to end, docs/architecture.md), so these reads go through the indexes it already has.
Throughput finds where its window starts in the primary key by bisection
(marketing.first_event_id_at, schema/0011: ids grow with time) and reads from there, at most
RECENT_EVENTS_SCANNED events; the answer says when that cap cut the window short. A timeline
finds the events that name the subject's rows (record_id) among the newest events, the
unfinished and the dead ones (the partial indexes), and the events the rows themselves name
(provider attempts, the company's enrichment claim); then every event of their runs, by the
run index. An old, finished run that no provider attempt names (one a webhook started) is
outside that reach; the answer says how far it looked. Measured on 700,000 events and 100,000
companies: throughput 26 ms for the hour, 560 ms for the day (360,000 events); a timeline
30 ms; the funnel 160 ms.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, LiteralString

import asyncpg
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope as AsgiScope

from cascade.barton import serial_of
from cascade.enrichment.domains import NotACompany, website_domain
from cascade.handling import Connection
from cascade.web.auth import ROLES, principal, requires
from cascade.web.fields import BIGINT_MAX, whole_number
from cascade.web.http import ApiError, correlation_id

STATIC_DIR = Path(__file__).parent / "static"
# The page runs only its own files: no inline script or style, no other origin. It keeps an
# API token in sessionStorage, so nothing foreign may run beside it, nor frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Throughput windows: bucket width and count (seconds, buckets) — per minute over an hour,
# per hour over a day.
WINDOWS = {"1h": (60, 60), "24h": (3600, 24)}
# The most events (the newest, by id) a throughput window reads: one day of a busy pipeline can
# hold more, and the answer then says how far back it reached.
RECENT_EVENTS_SCANNED = 500_000
# The newest events (by id) a timeline searches for its subject's events beyond what the
# indexes reach (see the module's docstring): as many as /metrics reads.
TIMELINE_EVENTS_SCANNED = 200_000
# An event processed in a throughput window may have been created this much earlier (s): an
# `unknown` verdict is asked again after an hour, an Apify run waits 15 minutes, backoff up to
# 10. One created earlier still is not counted: a replayed dead letter, but also every event
# that waited longer than this in a backlog (an import the listeners take hours to clear), so
# while such a backlog drains the chart shows less than was processed and the percentiles
# leave out the slowest events; the answer does not say so (no index finds them cheaply).
LATE_SECONDS = 3600
TIMELINE_LIMIT = 500  # entries; the newest are kept
MAX_KEY_LENGTH = 320  # the longest email address; domains and Barton IDs are shorter
# Contacts one email may name (the same person found for several companies); past this, the
# oldest are shown.
MAX_CONTACTS_PER_EMAIL = 20
# A key of this shape is meant as a Barton ID (cascade/barton.py), even with wrong check digits.
_BARTON_SHAPED = re.compile(r"04\.04\.01\.\d\d\.\d{5}\.\d{3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

log = logging.getLogger("cascade.web")

FUNNEL: LiteralString = """
    SELECT coalesce(json_agg(f ORDER BY f.position), '[]') FROM marketing.vw_dashboard_funnel AS f
"""

# $1 bucket width (s), $2 buckets, $3 the most events read, $4 how much earlier than the window
# an event processed in it may have been created (s). Buckets are whole (the last one holds
# now); an event counts in the bucket of its processed_at, and its latency runs from created to
# processed. The events are read by primary key from where the window (less $4) starts
# (marketing.first_event_id_at, schema/0011), but never more than the newest $3: `complete`
# is false when that cap cut the window short, and `read_back_to` then says how far it reached.
THROUGHPUT: LiteralString = """
    WITH span AS (
        SELECT to_timestamp((floor(extract(epoch FROM now()) / $1) + 1 - $2) * $1) AS start_at,
               to_timestamp((floor(extract(epoch FROM now()) / $1) + 1) * $1) AS end_at
    ), bounds AS (
        SELECT s.start_at, s.end_at,
               coalesce(marketing.first_event_id_at(s.start_at - make_interval(secs => $4)), 0)
                   AS window_id,
               (SELECT coalesce(max(id), 0) FROM marketing.pipeline_events) - $3 + 1 AS cap_id
          FROM span AS s
    ), processed AS (
        SELECT e.event_type,
               floor(extract(epoch FROM e.processed_at - b.start_at) / $1)::int AS bucket,
               extract(epoch FROM e.processed_at - e.created_at)::float8 AS latency
          FROM bounds AS b
          JOIN marketing.pipeline_events AS e ON e.id >= greatest(b.window_id, b.cap_id)
         WHERE e.processed_at >= b.start_at
           -- Not past the window: an event finished after now() (the transaction's start)
           -- and committed before the snapshot can sit beyond the last bucket's end.
           AND e.processed_at < b.end_at
    ), per_bucket AS (
        SELECT event_type, bucket, count(*) AS processed,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY latency) AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY latency) AS p95
          FROM processed GROUP BY event_type, bucket
    ), per_stage AS (
        SELECT event_type, count(*) AS processed,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY latency) AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY latency) AS p95
          FROM processed GROUP BY event_type
    )
    SELECT json_build_object(
        'bucket_seconds', $1::int,
        'from', b.start_at,
        'to', b.end_at,
        'events_read_at_most', $3::int,
        'complete', b.window_id >= b.cap_id,
        'read_back_to', CASE WHEN b.window_id < b.cap_id THEN
                            (SELECT e.created_at FROM marketing.pipeline_events AS e
                              WHERE e.id >= b.cap_id ORDER BY e.id LIMIT 1) END,
        'totals', (SELECT json_agg(json_build_object(
                              'at', b.start_at + make_interval(secs => i * $1),
                              'processed', coalesce(t.processed, 0)) ORDER BY i)
                     FROM generate_series(0, $2 - 1) AS i
                     LEFT JOIN (SELECT bucket, sum(processed) AS processed
                                  FROM per_bucket GROUP BY bucket) AS t ON t.bucket = i),
        'stages', (SELECT coalesce(json_agg(json_build_object(
                              'event_type', s.event_type,
                              'processed', s.processed,
                              'p50_seconds', round(s.p50::numeric, 3),
                              'p95_seconds', round(s.p95::numeric, 3),
                              'points', (SELECT json_agg(json_build_object(
                                                    'bucket', p.bucket,
                                                    'processed', p.processed,
                                                    'p50_seconds', round(p.p50::numeric, 3),
                                                    'p95_seconds', round(p.p95::numeric, 3))
                                                ORDER BY p.bucket)
                                           FROM per_bucket AS p
                                          WHERE p.event_type = s.event_type))
                          ORDER BY s.event_type), '[]')
                     FROM per_stage AS s))::text
      FROM bounds AS b
"""

# The company a key names: exactly one of $1 (id), $2 (Barton ID), $3 (domain) is set. With
# the ids the timeline needs: its slots and contacts.
COMPANY_SCOPE: LiteralString = """
    SELECT c.id,
           ARRAY(SELECT s.id FROM marketing.company_slots AS s WHERE s.company_id = c.id)
               AS slot_ids,
           ARRAY(SELECT ct.id FROM marketing.contact_enrichment AS ct WHERE ct.company_id = c.id)
               AS contact_ids,
           json_build_object('kind', 'company', 'company_id', c.id, 'barton_id', c.barton_id,
                             'company_name', c.company_name, 'domain', c.domain,
                             'status', c.status)::text AS subject
      FROM marketing.company_master AS c
     WHERE c.id = $1 OR c.barton_id = $2 OR c.domain = $3
"""
# The contacts a key names: $1 an id, or $2 an email in any case (providers store it as they
# have it, "Ada.Lovelace@…"; people type it as they remember it). One branch per index
# (schema/0010's lower(email)): one OR of the two would read the whole table.
CONTACT_SCOPE: LiteralString = """
    SELECT ct.id, ct.company_id, ct.slot_id,
           json_build_object('kind', 'contact', 'contact_id', ct.id, 'full_name', ct.full_name,
                             'email', ct.email, 'role', ct.role, 'title', ct.title,
                             'company_id', ct.company_id, 'company_name', ct.company_name,
                             'status', ct.status)::text AS subject
      FROM (SELECT * FROM marketing.contact_enrichment WHERE id = $1
            UNION ALL
            SELECT * FROM marketing.contact_enrichment
             WHERE email IS NOT NULL AND lower(email) = lower($2::text)) AS ct
     ORDER BY ct.id
     LIMIT $3
"""

# Everything that happened to a set of companies ($1), slots ($2) and contacts ($3): their
# rows' state changes (the contacts' contact_timeline rows among them), provider attempts,
# pipeline events and those events' errors; the newest
# $5 entries in time order, and how many there were. $4: the newest events read by id (see the
# module's docstring for how events are found). At one instant, a row's state change comes
# before the event its write emitted (same transaction, same now()).
TIMELINE: LiteralString = """
    WITH companies AS (
        SELECT * FROM marketing.company_master WHERE id = ANY ($1::bigint[])
    ), intake_rows AS (
        -- The row each company came from, and the rows that duplicated it (two index reads;
        -- one OR of the two would read the whole table).
        SELECT * FROM intake.company_raw_intake
         WHERE id IN (SELECT source_intake_id FROM companies
                      UNION ALL
                      SELECT i.id FROM intake.company_raw_intake AS i
                       WHERE i.company_id = ANY ($1::bigint[]))
    ), slots AS (
        SELECT * FROM marketing.company_slots WHERE id = ANY ($2::bigint[])
    ), contacts AS (
        SELECT * FROM marketing.contact_enrichment WHERE id = ANY ($3::bigint[])
    ), verdicts AS (
        SELECT * FROM marketing.email_verification WHERE contact_id = ANY ($3::bigint[])
    ), attempts AS (
        SELECT * FROM marketing.provider_attempts
         WHERE slot_id = ANY ($2::bigint[]) OR contact_id = ANY ($3::bigint[])
    ), records (event_type, record_id) AS (
        -- The events' record_id per type (triggers/300_enrichment.sql).
        SELECT 'company_created', id FROM intake_rows
        UNION ALL
        SELECT stage.event_type, c.id
          FROM companies AS c,
               (VALUES ('company_validated'), ('company_promoted'), ('slots_created'))
                   AS stage(event_type)
        UNION ALL
        SELECT 'contact_enriched', id FROM contacts
        UNION ALL
        SELECT 'email_verified', id FROM verdicts
    ), named AS (
        -- One branch per index that reaches them: the primary key's newest $4, the claimable,
        -- leased and dead partial indexes, and the primary key for ids the rows name. (The
        -- record_id filter first: hashing the $4 events for the join costs three times more.)
        SELECT e.id, e.run_id
          FROM marketing.pipeline_events AS e
         WHERE e.id > (SELECT coalesce(max(id), 0) FROM marketing.pipeline_events) - $4
           AND e.record_id = ANY (ARRAY(SELECT record_id FROM records))
           AND (e.event_type, e.record_id) IN (SELECT event_type, record_id FROM records)
        UNION
        SELECT e.id, e.run_id
          FROM marketing.pipeline_events AS e JOIN records AS r USING (event_type, record_id)
         WHERE e.status IN ('pending', 'failed')
        UNION
        SELECT e.id, e.run_id
          FROM marketing.pipeline_events AS e JOIN records AS r USING (event_type, record_id)
         WHERE e.status = 'processing'
        UNION
        SELECT e.id, e.run_id
          FROM marketing.pipeline_events AS e JOIN records AS r USING (event_type, record_id)
         WHERE e.status = 'dead'
        UNION
        SELECT e.id, e.run_id FROM marketing.pipeline_events AS e
         WHERE e.id IN (SELECT event_id FROM attempts
                        UNION ALL
                        SELECT enrichment_event_id FROM companies)
    ), runs AS (
        SELECT DISTINCT coalesce(run_id, id) AS run_id FROM named
    ), run_events AS (
        -- A run is its root (run_id NULL) and the events whose run_id names it.
        SELECT e.* FROM marketing.pipeline_events AS e WHERE e.id IN (SELECT run_id FROM runs)
        UNION ALL
        SELECT e.* FROM marketing.pipeline_events AS e
         WHERE e.run_id IN (SELECT run_id FROM runs)
    ), events AS (
        -- Of a company's run, a contact's timeline keeps the root and the company's stages,
        -- not its sibling contacts' events.
        SELECT e.* FROM run_events AS e
         WHERE e.run_id IS NULL
            OR e.event_type NOT IN ('company_created', 'company_validated', 'company_promoted',
                                    'slots_created', 'contact_enriched', 'email_verified')
            OR EXISTS (SELECT FROM records AS r
                        WHERE r.event_type = e.event_type AND r.record_id = e.record_id)
    ), entries AS (
        SELECT i.created_at AS at, 0 AS ord, i.id AS ref, 'state' AS source,
               'intake.received' AS kind,
               jsonb_build_object('intake_id', i.id, 'company_name', i.company_name,
                                  'website', i.website, 'source', i.source,
                                  'source_line', i.source_line) AS detail
          FROM intake_rows AS i
        UNION ALL
        SELECT i.validated_at, 0, i.id, 'state', 'intake.' || i.status,
               jsonb_build_object('intake_id', i.id, 'company_id', i.company_id,
                                  'reason', i.reject_reason)
          FROM intake_rows AS i WHERE i.validated_at IS NOT NULL
        UNION ALL
        SELECT c.created_at, 0, c.id, 'state', 'company.validated',
               jsonb_build_object('company_id', c.id, 'company_name', c.company_name,
                                  'domain', c.domain)
          FROM companies AS c
        UNION ALL
        SELECT c.promoted_at, 0, c.id, 'state', 'company.promoted',
               jsonb_build_object('company_id', c.id, 'barton_id', c.barton_id)
          FROM companies AS c WHERE c.promoted_at IS NOT NULL
        UNION ALL
        SELECT s.created_at, 0, s.id, 'state', 'slot.opened',
               jsonb_build_object('slot_id', s.id, 'role', s.role)
          FROM slots AS s
        UNION ALL
        SELECT s.finished_at, 0, s.id, 'state', 'slot.' || s.status,
               jsonb_build_object('slot_id', s.id, 'role', s.role, 'contact_id', s.contact_id,
                                  'reason', s.unfilled_reason)
          FROM slots AS s WHERE s.finished_at IS NOT NULL
        UNION ALL
        SELECT ct.created_at, 0, ct.id, 'state', 'contact.found',
               jsonb_build_object('contact_id', ct.id, 'full_name', ct.full_name,
                                  'title', ct.title, 'role', ct.role, 'email', ct.email,
                                  'provider', ct.provider, 'provider_mode', ct.provider_mode,
                                  'confidence', ct.confidence)
          FROM contacts AS ct
        UNION ALL
        SELECT ct.ready_at, 0, ct.id, 'state', 'contact.ready',
               jsonb_build_object('contact_id', ct.id, 'full_name', ct.full_name)
          FROM contacts AS ct WHERE ct.ready_at IS NOT NULL
        UNION ALL
        SELECT v.verified_at, 0, v.id, 'state', 'email.' || v.verdict,
               jsonb_build_object('contact_id', v.contact_id, 'email', v.email,
                                  'result', v.result, 'score', v.score, 'reason', v.reason,
                                  'provider', v.provider, 'source', v.source)
          FROM verdicts AS v
        UNION ALL
        -- What the engagement stages record per contact (seed 003's contact_timeline).
        SELECT t.event_timestamp, 0, t.event_id, 'state', 'timeline.' || t.event_type,
               t.event_data || jsonb_build_object('contact_id', t.contact_id)
          FROM marketing.contact_timeline AS t WHERE t.contact_id = ANY ($3::bigint[])
        UNION ALL
        SELECT e.created_at, 1, e.id, 'event', e.event_type,
               jsonb_build_object('event_id', e.id, 'status', e.status,
                                  'attempts', e.attempts, 'record_id', e.record_id,
                                  'run_id', coalesce(e.run_id, e.id),
                                  'parent_event_id', e.parent_event_id,
                                  'processed_at', e.processed_at,
                                  'latency_seconds',
                                  round(extract(epoch FROM e.processed_at - e.created_at), 3),
                                  'duration_ms', round(e.duration_ms::numeric, 1),
                                  'run_after', CASE WHEN e.finished_at IS NULL
                                                    THEN e.run_after END,
                                  'last_error', e.last_error,
                                  'replay_count', e.replay_count)
          FROM events AS e
        UNION ALL
        SELECT a.created_at, 2, a.id, 'attempt', a.provider,
               jsonb_build_object('purpose', a.purpose, 'status', a.status,
                                  'provider_mode', a.provider_mode, 'phase', a.phase,
                                  'confidence', a.confidence, 'cost', a.cost,
                                  'latency_ms', round(a.latency_ms::numeric, 1),
                                  'slot_id', a.slot_id, 'contact_id', a.contact_id,
                                  'event_id', a.event_id, 'detail', a.detail)
          FROM attempts AS a
        UNION ALL
        SELECT er.created_at, 3, er.id, 'error', er.severity,
               jsonb_build_object('event_id', er.event_id, 'event_type', er.event_type,
                                  'message', er.error_message, 'attempt', er.attempt,
                                  'resolved', er.resolved)
          FROM marketing.pipeline_errors AS er
         WHERE er.event_id IN (SELECT id FROM events)
    )
    SELECT json_build_object(
        'total', (SELECT count(*) FROM entries),
        'entries', coalesce((SELECT json_agg(x ORDER BY x.at, x.ord, x.ref)
                               FROM (SELECT * FROM entries
                                      ORDER BY at DESC, ord DESC, ref DESC
                                      LIMIT $5) AS x), '[]'))::text
"""

REPLAY: LiteralString = "SELECT marketing.replay_dead_letters(ARRAY[$1::bigint])"
EVENT_STATE: LiteralString = """
    SELECT id, event_type, status, attempts, replay_count, run_after, record_id
      FROM marketing.pipeline_events WHERE id = $1
"""


@dataclass(frozen=True)
class Scope:
    """What one timeline covers: rows by id, and the subject as the answer names it."""

    company_ids: list[int]
    slot_ids: list[int]
    contact_ids: list[int]
    subjects: list[dict[str, Any]]


# -- the page ----------------------------------------------------------------------------------


async def page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


class Revalidated(StaticFiles):
    """The page's files, each load revalidated (ETag, so an unchanged one costs a 304): their
    names never change, so a browser caching them by heuristic would run last release's
    script on this release's page."""

    def file_response(
        self, full_path: str | PathLike[str], stat_result: os.stat_result, scope: AsgiScope,
        status_code: int = 200,
    ) -> Response:  # fmt: skip
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


# -- reads -------------------------------------------------------------------------------------


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


@requires("viewer")
async def me(request: Request) -> JSONResponse:
    caller = principal(request)
    can_replay = ROLES.index(caller.role) >= ROLES.index("ops")
    return JSONResponse({"token_id": caller.token_id, "name": caller.name,
                         "role": caller.role, "can_replay": can_replay})  # fmt: skip


@requires("viewer")
async def funnel(request: Request) -> Response:
    stages = await _pool(request).fetchval(FUNNEL)
    return Response(f'{{"stages": {stages}}}', media_type="application/json")


@requires("viewer")
async def throughput(request: Request) -> Response:
    window = request.query_params.get("window", "1h")
    if window not in WINDOWS:
        raise ApiError(422, "invalid_query", f"window must be one of 1h, 24h, not {window!r}",
                       {"field": "window", "allowed": list(WINDOWS)})  # fmt: skip
    bucket_seconds, buckets = WINDOWS[window]
    async with _reading(request) as conn:
        document = await conn.fetchval(
            THROUGHPUT, bucket_seconds, buckets, RECENT_EVENTS_SCANNED, LATE_SECONDS
        )
    body = json.loads(document)
    return JSONResponse({"window": window, **body})


@requires("viewer")
async def company_timeline(request: Request) -> JSONResponse:
    key = _key(request)
    async with _reading(request) as conn:
        scope = await _company_scope(conn, key)
        return JSONResponse(await _timeline(conn, key, scope))


@requires("viewer")
async def contact_timeline(request: Request) -> JSONResponse:
    key = _key(request)
    async with _reading(request) as conn:
        scope = await _contact_scope(conn, key)
        return JSONResponse(await _timeline(conn, key, scope))


@contextlib.asynccontextmanager
async def _reading(request: Request) -> AsyncIterator[Connection]:
    """A pooled connection in one read-only repeatable-read transaction, so every query of an
    answer sees the same instant."""
    async with (
        _pool(request).acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        yield conn


# -- timelines ---------------------------------------------------------------------------------


def _key(request: Request) -> str:
    """The path's key, trimmed; 422 for one PostgreSQL could not take (NUL) or no key could be
    (control characters, longer than any email)."""
    key: str = request.path_params["key"].strip()
    if not key or len(key) > MAX_KEY_LENGTH or _CONTROL.search(key):
        raise ApiError(422, "invalid_key",
                       f"the key must be 1 to {MAX_KEY_LENGTH} printable characters",
                       {"field": "key"})  # fmt: skip
    return key


def _company_lookup(key: str) -> tuple[int | None, str | None, str | None]:
    """(id, Barton ID, domain): the one the key is. A website is read as its domain."""
    if (number := whole_number(key)) is not None:
        return number, None, None
    if _BARTON_SHAPED.fullmatch(key):
        if serial_of(key) is None:
            raise ApiError(422, "invalid_key",
                           f"{key!r} is shaped like a Barton ID but its check digits do not "
                           "match: mistyped?", {"field": "key"})  # fmt: skip
        return None, key, None
    try:
        return None, None, website_domain(key)
    except NotACompany as exc:
        message = f"{key!r} is not a company id, Barton ID or domain: {exc}"
        raise ApiError(422, "invalid_key", message, {"field": "key"}) from None


async def _company_scope(conn: Connection, key: str) -> Scope:
    company_id, barton_id, domain = _company_lookup(key)
    row = None
    if company_id is None or company_id <= BIGINT_MAX:  # a larger id names no company
        row = await conn.fetchrow(COMPANY_SCOPE, company_id, barton_id, domain)
    if row is None:
        raise ApiError(404, "company_not_found", f"no company {key!r}", {"key": key})
    return Scope([row["id"]], list(row["slot_ids"]), list(row["contact_ids"]),
                 [json.loads(row["subject"])])  # fmt: skip


async def _contact_scope(conn: Connection, key: str) -> Scope:
    contact_id, email = whole_number(key), None
    if contact_id is None:
        if "@" not in key:
            raise ApiError(422, "invalid_key", f"{key!r} is not a contact id or email address",
                           {"field": "key"})  # fmt: skip
        email = key
    rows = []
    if contact_id is None or contact_id <= BIGINT_MAX:
        rows = await conn.fetch(CONTACT_SCOPE, contact_id, email, MAX_CONTACTS_PER_EMAIL)
    if not rows:
        raise ApiError(404, "contact_not_found", f"no contact {key!r}", {"key": key})
    return Scope(
        company_ids=sorted({row["company_id"] for row in rows}),
        slot_ids=sorted({row["slot_id"] for row in rows if row["slot_id"] is not None}),
        contact_ids=[row["id"] for row in rows],
        subjects=[json.loads(row["subject"]) for row in rows],
    )


async def _timeline(conn: Connection, key: str, scope: Scope) -> dict[str, Any]:
    document = await conn.fetchval(
        TIMELINE, scope.company_ids, scope.slot_ids, scope.contact_ids,
        TIMELINE_EVENTS_SCANNED, TIMELINE_LIMIT,
    )  # fmt: skip
    found = json.loads(document)
    return {
        "key": key,
        "subjects": scope.subjects,
        "entries": found["entries"],
        "total": found["total"],
        "limit": TIMELINE_LIMIT,
        "truncated": found["total"] > TIMELINE_LIMIT,
        "newest_events_searched": TIMELINE_EVENTS_SCANNED,
    }


# -- replay ------------------------------------------------------------------------------------


@requires("ops")
async def replay_dead_letter(request: Request) -> JSONResponse:
    """Puts one dead letter back in the queue: 200 with its new state; 409 `not_dead` when it
    is not dead (any more); 404 when there is no such event."""
    event_id: int = request.path_params["event_id"]
    if event_id > BIGINT_MAX:
        raise _no_event(event_id)
    async with _pool(request).acquire() as conn, conn.transaction():
        replayed = await conn.fetchval(REPLAY, event_id)
        row = await conn.fetchrow(EVENT_STATE, event_id)
    if row is None:
        raise _no_event(event_id)
    event = {**dict(row), "run_after": row["run_after"].isoformat()}
    if not replayed:
        message = f"event {event_id} is {row['status']}, not dead: nothing was replayed"
        raise ApiError(409, "not_dead", message, {"event": event})
    log.info("dead letter %s replayed by token %r", event_id, principal(request).name,
             extra={"event_id": event_id, "correlation_id": correlation_id(request)})  # fmt: skip
    return JSONResponse({"replayed": True, "event": event})


def _no_event(event_id: int) -> ApiError:
    return ApiError(404, "event_not_found", f"no event {event_id}", {"event_id": event_id})


ROUTES: list[BaseRoute] = [
    Route("/", page, methods=["GET"]),
    Mount("/static", Revalidated(directory=STATIC_DIR), name="static"),
    Route("/api/me", me, methods=["GET"]),
    Route("/api/dashboard/funnel", funnel, methods=["GET"]),
    Route("/api/dashboard/throughput", throughput, methods=["GET"]),
    Route("/api/timeline/company/{key:path}", company_timeline, methods=["GET"]),
    Route("/api/timeline/contact/{key:path}", contact_timeline, methods=["GET"]),
    Route("/api/dead-letters/{event_id:id}/replay", replay_dead_letter, methods=["POST"]),
]
