"""A cascade through real triggers and the listener: stages in order, each effect exactly once,
lineage recorded, and every way an event can be refused."""

from __future__ import annotations

import asyncpg
from pydantic import BaseModel

from cascade.handling import Deps, Registry
from tests.support.handlers import ITEMS, handler_module, stage
from tests.support.listening import drain
from tests.support.sql import one


class SeedPayload(BaseModel, frozen=True):
    """Seed 003's manual company_created payload."""

    record_id: int
    company_name: str
    website: str


EFFECTS_PER_EVENT = """
    SELECT count(*) AS effects, count(DISTINCT event_id) AS events,
           count(DISTINCT (item_id, event_type)) AS item_stages
      FROM cascade_test.effects
"""


async def test_cascade__three_stages_run_in_order_exactly_once(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(
        "INSERT INTO cascade_test.items (name) SELECT 'item ' || g FROM generate_series(1, 250) g"
    )

    await drain(database_url, ITEMS)

    assert await db.fetchval("SELECT count(*) FROM cascade_test.items WHERE stage = 2") == 250
    effects = await one(db, EFFECTS_PER_EVENT)
    assert dict(effects) == {"effects": 750, "events": 750, "item_stages": 750}
    statuses = await db.fetch("SELECT status, count(*) FROM marketing.pipeline_events GROUP BY 1")
    assert {r["status"]: r["count"] for r in statuses} == {"processed": 750}


async def test_cascade__each_stage_records_its_parent_run_and_timing(
    db: asyncpg.Connection, database_url: str
) -> None:
    item_id = await db.fetchval(
        "INSERT INTO cascade_test.items (name) VALUES ('Acme') RETURNING id"
    )

    await drain(database_url, ITEMS)

    events = await db.fetch(
        "SELECT id, event_type, parent_event_id, run_id, started_at, processed_at, duration_ms,"
        "       outcome"
        "  FROM marketing.pipeline_events ORDER BY id"
    )
    assert [e["event_type"] for e in events] == [
        "test_item_created",
        "test_item_stage1",
        "test_item_stage2",
    ]
    root, first, second = events
    assert (root["parent_event_id"], root["run_id"]) == (None, None)
    assert (first["parent_event_id"], first["run_id"]) == (root["id"], root["id"])
    assert (second["parent_event_id"], second["run_id"]) == (first["id"], root["id"])
    for event in events:
        assert event["outcome"] == "ok"
        assert event["started_at"] <= event["processed_at"]
        assert event["duration_ms"] >= 0
    run = await one(db, "SELECT * FROM marketing.vw_pipeline_runs WHERE run_id = $1", root["id"])
    assert run["stages_done"] == 3
    assert run["stage_path"] == ["test_item_created", "test_item_stage1", "test_item_stage2"]
    assert (run["status"], run["failed_at_stage"]) == ("completed", None)
    assert run["total_duration_ms"] > 0
    assert item_id is not None


async def test_manual_seed_insert__is_processed_like_any_other_event(
    db: asyncpg.Connection, database_url: str
) -> None:
    seen: list[SeedPayload] = []

    async def validate(payload: SeedPayload, deps: Deps) -> None:
        seen.append(payload)

    registry = Registry((handler_module("company_created", validate, SeedPayload),))
    # Seed 003's "Manually insert event for testing", verbatim.
    await db.execute(
        """
        INSERT INTO marketing.pipeline_events (event_type, payload, status)
        VALUES (
          'company_created',
          jsonb_build_object(
            'record_id', 999,
            'company_name', 'Test Company',
            'website', 'https://test.com',
            'trigger_time', NOW()
          ),
          'pending'
        );
        """
    )

    await drain(database_url, registry)

    assert [(p.record_id, p.company_name) for p in seen] == [(999, "Test Company")]
    event = await one(db, "SELECT status, record_id FROM marketing.pipeline_events")
    assert dict(event) == {"status": "processed", "record_id": 999}


async def test_unknown_event_type__becomes_a_dead_letter_that_says_why(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload) VALUES ('test_unknown', '{}')"
    )

    await drain(database_url, ITEMS)

    dead = await one(db, "SELECT event_type, attempts, last_error FROM marketing.vw_dead_letters")
    assert dead["event_type"] == "test_unknown"
    assert dead["last_error"] == "no handler registered for event type 'test_unknown'"
    error = await one(db, "SELECT severity, error_message FROM marketing.pipeline_errors")
    assert error["severity"] == "critical"


async def test_invalid_payload__dead_letter_names_the_field(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload) "
        "VALUES ('test_item_created', '{\"id\": \"not a number\"}')"
    )

    await drain(database_url, ITEMS)

    last_error = await db.fetchval("SELECT last_error FROM marketing.vw_dead_letters")
    assert "payload of test_item_created event" in last_error
    assert "id: Input should be a valid integer" in last_error


async def test_unmapped_process_key__fails_as_a_critical_error(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload, unique_id) "
        "VALUES ('test_item_created', '{\"id\": 1}', '04.99.99.99.99999.999')"
    )

    await drain(database_url, ITEMS)

    error = await one(
        db, "SELECT event_type, severity, error_message FROM marketing.pipeline_errors"
    )
    assert error["error_message"] == (
        "UNMAPPED UNIQUE_ID: 04.99.99.99.99999.999 not found in shq_process_key_reference"
    )
    assert error["severity"] == "critical"
    assert await db.fetchval("SELECT status FROM marketing.pipeline_events") == "dead"
    assert await db.fetchval("SELECT count(*) FROM cascade_test.effects") == 0


async def test_unregistered_step__is_unmapped_too(
    db: asyncpg.Connection, database_url: str
) -> None:
    registry = Registry((handler_module("test_unregistered_step", stage(None)),))
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload) "
        "VALUES ('test_unregistered_step', '{\"id\": 1}')"
    )

    await drain(database_url, registry)

    assert await db.fetchval("SELECT last_error FROM marketing.pipeline_events") == (
        "UNMAPPED UNIQUE_ID: test_unregistered_step not found in shq_process_key_reference"
    )


async def test_failing_event__does_not_cost_its_batch_neighbours_their_work(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(
        "INSERT INTO cascade_test.items (name, fail_until_attempt) "
        "SELECT 'item ' || g, CASE WHEN g = 50 THEN 99 ELSE 0 END FROM generate_series(1, 100) g"
    )
    await db.execute(
        "INSERT INTO marketing.event_types"
        "       (event_type, phase, description, max_attempts, backoff_base_seconds)"
        " VALUES ('test_item_created', 'test', 'test', 2, 0.01)"
    )

    await drain(database_url, ITEMS)

    assert await db.fetchval("SELECT count(*) FROM cascade_test.items WHERE stage = 2") == 99
    assert (
        await db.fetchval(
            "SELECT count(*) FROM cascade_test.effects GROUP BY event_id ORDER BY 1 DESC LIMIT 1"
        )
        == 1
    )
    dead = await one(db, "SELECT record_id, attempts FROM marketing.vw_dead_letters")
    assert dict(dead) == {"record_id": 50, "attempts": 2}


async def test_record_id__taken_from_the_payload_only_when_it_is_a_whole_number(
    db: asyncpg.Connection,
) -> None:
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload) VALUES"
        " ('x', '{\"record_id\": 7}'), ('x', '{\"record_id\": \"slot_123\"}'), ('x', '{}')"
    )
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload, record_id)"
        " VALUES ('x', '{\"record_id\": 8}', 9)"
    )

    rows = await db.fetch("SELECT record_id FROM marketing.pipeline_events ORDER BY id")
    assert [r["record_id"] for r in rows] == [7, None, None, 9]
