"""CASCADE_MAX_LEASED bounds the handler calls in flight, whatever mix of batch types one lease
claim brings back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import LiteralString

import asyncpg

from cascade.handling import BatchDeps, Item, Registry
from tests.support.batch_handlers import (
    LEASED_TYPE,
    BatchPayload,
    batch_module,
    register_batch_types,
)
from tests.support.listening import running
from tests.support.waiting import eventually

SECOND_TYPE = "test_batch_leased_b"
REGISTER_SECOND: LiteralString = """
    INSERT INTO marketing.shq_process_key_reference
        (unique_id, process_id, blueprint_version_hash, human_description, branch_id, step_name)
    VALUES ('99.00.01.03.00000.103', 'TEST-001', 'test', 'second leased batch type',
            '99-test', 'test_batch_leased_b')
"""
THE_OTHER_EVENT_WAITS: LiteralString = """
    SELECT bool_and(status = 'pending' AND attempts = 0) FROM marketing.pipeline_events
     WHERE event_type IN ('test_batch_leased', 'test_batch_leased_b')
       AND status <> 'processing'
"""
INSERT_EVENT: LiteralString = """
    INSERT INTO marketing.pipeline_events (event_type, payload)
    VALUES ($1, jsonb_build_object('id', 1, 'plan', 'ok'))
"""


async def test_claim_and_run_leased__never_runs_more_batch_calls_than_max_leased(
    database_url: str, db: asyncpg.Connection
) -> None:
    await register_batch_types(db)
    await db.execute(REGISTER_SECOND)
    in_flight: list[str] = []
    most = 0
    release = asyncio.Event()

    async def blocking(items: Sequence[Item[BatchPayload]], deps: BatchDeps) -> None:
        nonlocal most
        in_flight.append(deps.event_type)
        most = max(most, len(in_flight))
        await release.wait()
        in_flight.remove(deps.event_type)

    registry = Registry(
        (
            batch_module(LEASED_TYPE, blocking, external=True),
            batch_module(SECOND_TYPE, blocking, external=True),
        )
    )
    await db.execute(INSERT_EVENT, LEASED_TYPE)
    await db.execute(INSERT_EVENT, SECOND_TYPE)
    async with running(database_url, registry, max_leased=1):
        await eventually(lambda: asyncio.sleep(0, bool(in_flight)))
        # One free call, two types: one type is claimed; the other waits, unclaimed, while
        # the first call holds the only slot.
        await eventually(lambda: db.fetchval(THE_OTHER_EVENT_WAITS))
        seen = most
        release.set()
    assert seen == 1, f"{seen} batch calls ran at once with max_leased=1"
