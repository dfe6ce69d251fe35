"""Monitoring over HTTP: `GET /metrics` for Prometheus, and JSON over the monitoring views.

Every route needs a `viewer` token (cascade/web/auth.py).

/metrics is read from SQL at scrape time: `Snapshot.read` runs four small named queries in one
read-only repeatable-read transaction (so every family describes the same instant), and a
`SqlCollector` turns that snapshot into metric families for prometheus_client's encoder. The
collector cannot query by itself: prometheus_client's `collect()` is synchronous and the pool
is asyncpg's, so the endpoint reads first and collects after. Nothing is cached between
scrapes. The in-process metrics, webhook verification failures and deliveries refused as busy,
are plain Counters in `REGISTRY`, incremented by cascade/web/deliveries.py and web.py; each
process counts its own.

The queue families read the rows the partial indexes of schema/0001 hold (pending, failed,
processing, dead). Handler durations and retries describe the events that *finished* in the
last `RECENT_SECONDS`: the web process cannot observe handlers (they run in the listener), and
a count over a sliding window goes down as well as up, so

- `cascade_handler_duration_seconds` is a gauge histogram (OpenMetrics `gaugehistogram`;
  rendered as `histogram` with `_gcount` and `_gsum` in the classic text format), not a
  counter histogram. Its buckets are cumulative counts computed in SQL with width_bucket, so
  `histogram_quantile(0.95, cascade_handler_duration_seconds_bucket)` is the p95 of the last
  10 minutes with no `rate()`, and buckets of several instances still add up. A summary was
  not chosen: its quantiles cannot be aggregated, and the rows would have to come to Python.
- `cascade_recent_retries` is a gauge, the sum of `attempts - 1` over those events, named
  without `_total` because it is no counter. An event still waiting to retry counts once it
  finishes; pipeline_errors rows were not used, since the last error of a dead event is a
  failure that no retry followed.

JSON endpoints return one document that PostgreSQL builds with json_agg, so numerics arrive as
JSON numbers, timestamps as ISO 8601 strings and jsonb payloads as nested JSON, with no
Decimal or datetime handling in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import LiteralString

import asyncpg
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cascade.web.auth import Endpoint, requires
from cascade.web.fields import whole_number
from cascade.web.http import ApiError

RECENT_SECONDS = 600  # the window of the duration histogram and the retry count
# Upper bounds (seconds) of the duration buckets: Prometheus's defaults, stretched to a minute
# because handlers wait on provider APIs.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUE_STATUSES = ("pending", "failed", "processing")  # cascade_queue_depth's statuses
DEFAULT_DEAD_LETTERS = 50
MAX_DEAD_LETTERS = 1000

# Process-wide metrics kept in memory, exposed after the SQL ones on every scrape.
REGISTRY = CollectorRegistry()
WEBHOOK_VERIFICATION_FAILURES = Counter(
    "cascade_webhook_verification_failures",
    "Webhook deliveries refused with 401 because their signature or secret did not verify",
    ["provider"],
    registry=REGISTRY,
)
WEBHOOK_BUSY_REFUSALS = Counter(
    "cascade_webhook_busy_refusals",
    "Webhook deliveries refused with 503, nothing stored, because too many waited to be written",
    ["provider"],
    registry=REGISTRY,
)

# -- metrics queries ---------------------------------------------------------------------------

# Events per type and state, with the oldest creation time. Every catalogued type appears with
# every state, zero when empty, so a drained queue reads 0 instead of vanishing; a type missing
# from the catalogue appears while it has rows. The WHERE matches the partial indexes.
QUEUE_STATE: LiteralString = """
    WITH queued AS (
        -- One branch per partial index (claimable, leased, dead): a single four-value IN
        -- matches none of them and would read every processed event.
        SELECT event_type, status, count(*) AS events, min(created_at) AS oldest_at
          FROM (SELECT event_type, status, created_at FROM marketing.pipeline_events
                 WHERE status IN ('pending', 'failed')
                UNION ALL
                SELECT event_type, status, created_at FROM marketing.pipeline_events
                 WHERE status = 'processing'
                UNION ALL
                SELECT event_type, status, created_at FROM marketing.pipeline_events
                 WHERE status = 'dead') AS unfinished
         GROUP BY event_type, status
    ), known AS (
        SELECT t.event_type, s.status
          FROM marketing.event_types AS t
         CROSS JOIN unnest(ARRAY['pending', 'failed', 'processing', 'dead']) AS s(status)
    )
    SELECT event_type, status, coalesce(q.events, 0) AS events,
           coalesce(extract(epoch FROM now() - q.oldest_at), 0)::float8 AS oldest_age_seconds
      FROM known FULL JOIN queued AS q USING (event_type, status)
     ORDER BY event_type, status
"""
# Events finished in the last $2 seconds, per type and duration bucket. width_bucket counts
# the bounds <= seconds; a duration exactly on a bound belongs to that bound's bucket
# (Prometheus buckets are "less than or equal"), hence the correction, so `bucket` is the
# number of bounds below the duration: the index of the first bucket that holds it. An event
# finished without a duration (a rescued lease) counts for retries only, in bucket NULL.
RECENT_FINISHED: LiteralString = """
    SELECT event_type,
           width_bucket(seconds, $1::float8[]) - (seconds = ANY ($1::float8[]))::int AS bucket,
           count(seconds) AS events,
           coalesce(sum(seconds), 0)::float8 AS seconds,
           sum(greatest(attempts - 1, 0))::bigint AS retries
      FROM (SELECT event_type, duration_ms / 1000 AS seconds, attempts
              FROM marketing.pipeline_events
             WHERE finished_at > now() - make_interval(secs => $2)
               -- Only the newest $3 events, read through the primary key: an event finishes
               -- soon after it is written, and an index on finished_at would cost the queue a
               -- write per status change (a BRIN one was measured: 25 % slower end to end).
               AND id > (SELECT coalesce(max(id), 0) FROM marketing.pipeline_events) - $3
           ) AS recent
     GROUP BY 1, 2
"""
# How far back, in events, the duration histogram looks for its RECENT_SECONDS.
RECENT_EVENTS_SCANNED = 200_000
# Firing alerts per kind: high_error_rate has a row per stage, the others at most one.
ACTIVE_ALERTS: LiteralString = """
    SELECT alert, severity, count(*) AS firing
      FROM marketing.vw_alerts
     GROUP BY alert, severity
     ORDER BY alert
"""
# The fraction (0 to 1) of the NOTIFY queue that waits for a slow listener; at 1, NOTIFY
# fails and so do the transactions that send one.
NOTIFICATION_QUEUE_USAGE: LiteralString = "SELECT pg_notification_queue_usage()"

# -- JSON queries ------------------------------------------------------------------------------
# Each returns one JSON document; json_agg of no rows is NULL, hence the coalesce.

HEALTH: LiteralString = "SELECT to_json(h) FROM marketing.vw_pipeline_health AS h"
ALERTS: LiteralString = """
    SELECT coalesce(json_agg(a ORDER BY a.severity, a.alert, a.scope), '[]')
      FROM marketing.vw_alerts AS a
"""
PENDING: LiteralString = """
    SELECT coalesce(json_agg(p ORDER BY p.pending_count DESC, p.event_type), '[]')
      FROM marketing.vw_pending_by_type AS p
"""
LATENCY: LiteralString = """
    SELECT json_build_object(
        'last_hour', (SELECT coalesce(json_agg(s ORDER BY s.avg_seconds DESC, s.event_type), '[]')
                        FROM marketing.vw_latency_by_stage AS s),
        'all_time', (SELECT coalesce(json_agg(l ORDER BY l.event_type), '[]')
                       FROM marketing.vw_event_latency AS l))
"""
ERRORS: LiteralString = """
    SELECT json_build_object(
        'recent', (SELECT coalesce(json_agg(r ORDER BY r.created_at DESC, r.id DESC), '[]')
                     FROM marketing.vw_recent_errors AS r),
        'error_rate_24h', (SELECT coalesce(json_agg(e ORDER BY e.error_count DESC,
                                                    e.event_type), '[]')
                             FROM marketing.vw_error_rate_24h AS e),
        'unresolved_count', (SELECT count(*) FROM marketing.vw_unresolved_errors))
"""
PHASE1: LiteralString = """
    SELECT coalesce(json_agg(m), '[]') FROM marketing.vw_phase1_metrics AS m
"""
# The newest $1 dead letters, and how many there are in all.
DEAD_LETTERS: LiteralString = """
    SELECT json_build_object(
        'total', (SELECT count(*) FROM marketing.vw_dead_letters),
        'limit', $1::int,
        'dead_letters', (SELECT coalesce(json_agg(d ORDER BY d.died_at DESC, d.event_id DESC),
                                         '[]')
                           FROM (SELECT * FROM marketing.vw_dead_letters
                                  ORDER BY died_at DESC NULLS LAST, event_id DESC
                                  LIMIT $1) AS d))
"""


# -- /metrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What one scrape read from the database."""

    queue: Sequence[asyncpg.Record]
    finished: Sequence[asyncpg.Record]
    alerts: Sequence[asyncpg.Record]
    notification_queue_usage: float

    @classmethod
    async def read(cls, pool: asyncpg.Pool) -> Snapshot:
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return cls(
                queue=await conn.fetch(QUEUE_STATE),
                finished=await conn.fetch(
                    RECENT_FINISHED, DURATION_BUCKETS, RECENT_SECONDS, RECENT_EVENTS_SCANNED
                ),
                alerts=await conn.fetch(ACTIVE_ALERTS),
                notification_queue_usage=await conn.fetchval(NOTIFICATION_QUEUE_USAGE),
            )


class SqlCollector:
    """A prometheus_client Collector over one Snapshot, followed by REGISTRY's metrics."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        yield from self._queue()
        yield from self._finished()
        yield self._alerts()
        yield GaugeMetricFamily(
            "cascade_notification_queue_usage",
            "Fraction of PostgreSQL's NOTIFY queue in use (pg_notification_queue_usage())",
            value=self.snapshot.notification_queue_usage,
        )
        yield from REGISTRY.collect()

    def _queue(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "cascade_queue_depth",
            "Events waiting (pending), due to retry (failed) or in a handler (processing)",
            labels=["event_type", "status"],
        )
        oldest = GaugeMetricFamily(
            "cascade_oldest_pending_age_seconds",
            "Age of the oldest pending event since it was created; 0 when none is pending",
            labels=["event_type"],
        )
        dead = GaugeMetricFamily(
            "cascade_dead_letters",
            "Dead events (given up on) still in marketing.pipeline_events",
            labels=["event_type"],
        )
        for row in self.snapshot.queue:
            if row["status"] in QUEUE_STATUSES:
                depth.add_metric([row["event_type"], row["status"]], row["events"])
            if row["status"] == "pending":
                oldest.add_metric([row["event_type"]], row["oldest_age_seconds"])
            if row["status"] == "dead":
                dead.add_metric([row["event_type"]], row["events"])
        return depth, oldest, dead

    def _finished(self) -> Iterable[Metric]:
        durations = GaugeHistogramMetricFamily(
            "cascade_handler_duration_seconds",
            f"Handler run time of the events finished in the last {RECENT_SECONDS} s",
            labels=["event_type"],
        )
        retries = GaugeMetricFamily(
            "cascade_recent_retries",
            f"Attempts beyond the first of the events finished in the last {RECENT_SECONDS} s",
            labels=["event_type"],
        )
        for event_type, rows in _by_event_type(self.snapshot.finished).items():
            buckets, total_seconds = _cumulative_buckets(rows)
            durations.add_metric([event_type], buckets, total_seconds)
            retries.add_metric([event_type], sum(row["retries"] for row in rows))
        return durations, retries

    def _alerts(self) -> Metric:
        alerts = GaugeMetricFamily(
            "cascade_active_alerts",
            "Alerts firing in marketing.vw_alerts (high_error_rate: one per stage)",
            labels=["alert", "severity"],
        )
        for row in self.snapshot.alerts:
            alerts.add_metric([row["alert"], row["severity"]], row["firing"])
        return alerts


def _by_event_type(rows: Iterable[asyncpg.Record]) -> dict[str, list[asyncpg.Record]]:
    grouped: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        grouped.setdefault(row["event_type"], []).append(row)
    return grouped


def _cumulative_buckets(rows: Iterable[asyncpg.Record]) -> tuple[list[tuple[str, float]], float]:
    """Prometheus's cumulative `le` buckets (+Inf last) and the sum, from per-bucket counts."""
    counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one: above every bound
    for row in rows:
        if row["bucket"] is not None:
            counts[row["bucket"]] += row["events"]
    bounds = [*map(str, DURATION_BUCKETS), "+Inf"]
    total_seconds = sum(row["seconds"] for row in rows)
    return [(le, float(n)) for le, n in zip(bounds, accumulate(counts), strict=True)], total_seconds


@requires("viewer")
async def metrics(request: Request) -> Response:
    snapshot = await Snapshot.read(_pool(request))
    # The classic text format unless the scraper asks for OpenMetrics in Accept.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(SqlCollector(snapshot)), headers={"Content-Type": content_type})


# -- JSON --------------------------------------------------------------------------------------


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


async def _document(request: Request, query: LiteralString, *args: object) -> Response:
    """The JSON document `query` builds, sent as PostgreSQL wrote it."""
    return Response(await _pool(request).fetchval(query, *args), media_type="application/json")


def view_document(query: LiteralString) -> Endpoint:
    """A viewer's GET of the JSON document one view query builds."""

    @requires("viewer")
    async def endpoint(request: Request) -> Response:
        return await _document(request, query)

    return endpoint


@requires("viewer")
async def dead_letters(request: Request) -> Response:
    return await _document(request, DEAD_LETTERS, _limit(request))


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", str(DEFAULT_DEAD_LETTERS)).strip()
    limit = whole_number(text)
    if limit is None or not 1 <= limit <= MAX_DEAD_LETTERS:
        raise ApiError(
            422,
            "invalid_query",
            f"limit must be a whole number from 1 to {MAX_DEAD_LETTERS}, not {text!r}",
            {"field": "limit"},
        )
    return limit


ROUTES = [
    Route("/metrics", metrics),
    Route("/api/monitoring/health", view_document(HEALTH)),
    Route("/api/monitoring/alerts", view_document(ALERTS)),
    Route("/api/monitoring/pending", view_document(PENDING)),
    Route("/api/monitoring/latency", view_document(LATENCY)),
    Route("/api/monitoring/errors", view_document(ERRORS)),
    Route("/api/monitoring/phase1", view_document(PHASE1)),
    Route("/api/monitoring/dead-letters", dead_letters),
]
