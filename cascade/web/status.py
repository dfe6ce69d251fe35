"""GET /webhooks/status: seed 000's "detailed system status including branch progress".

Per branch: the lead branch's counts (intake rows, slots, contacts and verdicts by status,
and the latest workflow runs); messaging and delivery say plainly that they are not built
yet. Per webhook provider: whether its deliveries are verified, with the unverified ones
named in a warning. All reads, one snapshot (REPEATABLE READ), so the counts agree.

The route needs no token (senders and seed 000's worker poll it beside the webhooks), so it
shows counts and configuration only. The Phase 1 metrics are for viewers: it names where
they are (`/api/monitoring/phase1`) instead of repeating them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, LiteralString

import asyncpg

from cascade.handling import Connection
from cascade.web.deliveries import WebhookSource
from cascade.workflows import BRANCHES, BUILT_BRANCHES, PHASE_OF_BRANCH

LATEST_RUNS = 10

# One row per (table, status): the lead branch's progress in a single round trip.
LEAD_COUNTS: LiteralString = """
    SELECT 'intake' AS stage, status, count(*) AS n
      FROM intake.company_raw_intake GROUP BY status
    UNION ALL
    SELECT 'slots', status, count(*) FROM marketing.company_slots GROUP BY status
    UNION ALL
    SELECT 'contacts', status, count(*) FROM marketing.contact_enrichment GROUP BY status
    UNION ALL
    SELECT 'verdicts', verdict, count(*) FROM marketing.email_verification GROUP BY verdict
"""
LATEST_WORKFLOW_RUNS: LiteralString = """
    SELECT id, workflow, branches, status, blueprint_id, unique_id, requested_by,
           correlation_id, detail, created_at, finished_at
      FROM marketing.workflow_runs
     ORDER BY id DESC
     LIMIT $1
"""
# Deliveries per provider over the last day, and how many of them nobody could verify.
DELIVERIES_24H: LiteralString = """
    SELECT provider, count(*) AS received, count(*) FILTER (WHERE NOT verified) AS unverified
      FROM marketing.processed_webhook_events
     WHERE received_at > now() - interval '24 hours'
     GROUP BY provider
"""
STAGES = ("intake", "slots", "contacts", "verdicts")
PHASE1_METRICS_ROUTE = "/api/monitoring/phase1"


async def report(conn: Connection, sources: Sequence[WebhookSource]) -> dict[str, Any]:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        counts = await conn.fetch(LEAD_COUNTS)
        runs = await conn.fetch(LATEST_WORKFLOW_RUNS, LATEST_RUNS)
        deliveries = {r["provider"]: r for r in await conn.fetch(DELIVERIES_24H)}
    return {
        "branches": _branches(counts, runs),
        "webhooks": _webhooks(sources, deliveries),
        "phase1_metrics": {"route": PHASE1_METRICS_ROUTE, "needs": "a viewer token"},
    }


def _branches(counts: list[asyncpg.Record], runs: list[asyncpg.Record]) -> dict[str, Any]:
    lead: dict[str, Any] = {stage: {} for stage in STAGES}
    for row in counts:
        lead[row["stage"]][row["status"]] = row["n"]
    branches: dict[str, Any] = {
        "lead": {"status": "built", **lead, "latest_workflow_runs": [_run(r) for r in runs]}
    }
    for branch in BRANCHES:
        if branch not in BUILT_BRANCHES:
            branches[branch] = {
                "status": "not built yet",
                "phase": PHASE_OF_BRANCH[branch],
            }
    return branches


def _webhooks(
    sources: Sequence[WebhookSource], deliveries: dict[str, asyncpg.Record]
) -> dict[str, Any]:
    providers = {}
    for source in sources:
        seen = deliveries.get(source.provider)
        providers[source.provider] = {
            "secret_set": source.signed,
            "scheme": source.secrets.scheme.value,
            "secret_variable": source.secrets.variable,
            "received_24h": seen["received"] if seen else 0,
            "unverified_24h": seen["unverified"] if seen else 0,
        }
    unverified = sorted(s.provider for s in sources if not s.signed)
    variables = ", ".join(s.secrets.variable for s in sources if not s.signed)
    warning = (
        f"UNVERIFIED: {', '.join(unverified)} accept unsigned deliveries; set {variables}"
        if unverified
        else None
    )
    return {"providers": providers, "unverified_providers": unverified, "warning": warning}


def _run(record: asyncpg.Record) -> dict[str, Any]:
    return {**_plain(record), "detail": json.loads(record["detail"])}  # jsonb arrives as text


def _plain(record: asyncpg.Record) -> dict[str, Any]:
    """A row as JSON can carry it: decimals as floats, times as ISO 8601, arrays as lists."""
    return {key: _json_value(value) for key, value in record.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value
