"""What a claim reads and what it leaves: only due events of the types it handles, whatever
else waits in the table; and events no running listener handles are dead-lettered, while a
type some live listener handles waits for it."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from listener import BURY_UNHANDLED, CLAIM_LOCKED
from tests.support.handlers import ITEMS
from tests.support.listening import drain
from tests.support.sql import one

BACKLOG = """
    INSERT INTO marketing.pipeline_events (event_type, payload, status, run_after)
    SELECT $1, jsonb_build_object('id', g), $2, now() + make_interval(secs => $3)
      FROM generate_series(1, $4::int) g
"""
# EXPLAIN ANALYZE runs the claim, so both run in a transaction that is rolled back.
EXPLAIN_CLAIM = "EXPLAIN (ANALYZE, FORMAT JSON) " + CLAIM_LOCKED
REGISTER = """
    INSERT INTO marketing.listeners (listener_id, hostname, pid, event_types)
    VALUES ($1, 'elsewhere', 1, $2)
"""


def index_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Index Scan node of an EXPLAIN (FORMAT JSON) plan."""
    found = [plan] if plan.get("Node Type") == "Index Scan" else []
    for child in plan.get("Plans", []):
        found += index_scans(child)
    return found


async def test_locked_claim__reads_only_the_due_events_of_its_types(db: asyncpg.Connection) -> None:
    # In id order, 5,000 events of an external type and 2,000 retries not yet due come first.
    await db.execute(BACKLOG, "test_external", "pending", 0, 5000)
    await db.execute(BACKLOG, "test_item_stage2", "failed", 3600, 2000)
    await db.execute(BACKLOG, "test_item_stage2", "pending", 0, 10)
    await db.execute("ANALYZE marketing.pipeline_events")

    transaction = db.transaction()
    await transaction.start()
    try:
        explained = await db.fetchval(EXPLAIN_CLAIM, ["test_item_stage2"], 100)
        claimed = await db.fetch(CLAIM_LOCKED, ["test_item_stage2"], 100)
    finally:
        await transaction.rollback()

    assert len(claimed) == 10
    (scan,) = index_scans(json.loads(explained)[0]["Plan"])
    assert scan["Index Name"] == "pipeline_events_claimable_idx"
    assert scan["Actual Rows"] == 10  # nothing read and thrown away
    assert "Rows Removed by Filter" not in scan or scan["Rows Removed by Filter"] == 0


async def test_unhandled_event__is_dead_lettered_only_when_no_live_listener_handles_it(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(BACKLOG, "test_external", "pending", 0, 1)
    await db.execute(REGISTER, "other-host:1:new-release", ["test_external"])

    # Another live listener handles test_external: it waits for that one.
    assert await db.fetchval(BURY_UNHANDLED, 0.0, 60.0) == 0
    await db.execute("DELETE FROM marketing.listeners")

    await drain(database_url, ITEMS)  # ITEMS has no handler for test_external

    dead = await one(db, "SELECT attempts, last_error FROM marketing.vw_dead_letters")
    assert dict(dead) == {
        "attempts": 1,
        "last_error": "no handler registered for event type 'test_external'",
    }
