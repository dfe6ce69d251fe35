"""Failures at the edges: errors that look like lost connections, errors PostgreSQL cannot
store, handlers that swallow SQL errors, writers in REPEATABLE READ, and non-critical events
whose listener died. Each once sent the engine into a loop or a silent wait."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from cascade.handling import Deps, Registry, RetryLater
from tests.support.handlers import ItemPayload, handler_module, stage
from tests.support.listening import drain, running
from tests.support.sql import one
from tests.support.waiting import eventually

ITEM_EVENTS = (
    "INSERT INTO marketing.pipeline_events (event_type, payload) "
    "SELECT $1, jsonb_build_object('id', g) FROM generate_series(1, $2::int) g"
)
ONE_ATTEMPT = (
    "INSERT INTO marketing.event_types (event_type, phase, description, max_attempts, critical)"
    " VALUES ($1, 'test', 'test', 1, $2)"
)
STATUSES = "SELECT status, count(*) FROM marketing.pipeline_events GROUP BY 1"


async def statuses(db: asyncpg.Connection) -> dict[str, int]:
    return {r["status"]: r["count"] for r in await db.fetch(STATUSES)}


def raising(exc: Exception) -> Registry:
    async def handle(item: ItemPayload, deps: Deps) -> None:
        if item.id == 2:
            raise exc
        await stage(None)(item, deps)

    return Registry((handler_module("test_flaky", handle),))


@pytest.mark.parametrize(
    ("error", "stored"),
    [
        # A TimeoutError is an OSError, like a lost connection; the connection is fine.
        (TimeoutError("provider took too long"), "TimeoutError: provider took too long"),
        # PostgreSQL refuses NUL bytes in text.
        (ValueError("bad\x00byte"), "ValueError: bad\\x00byte"),
    ],
    ids=["timeout-is-the-handlers-failure", "nul-byte-is-escaped"],
)
async def test_failing_handler__error_is_recorded_once_not_looped(
    db: asyncpg.Connection, database_url: str, error: Exception, stored: str
) -> None:
    await db.execute(ONE_ATTEMPT, "test_flaky", True)
    await db.execute(ITEM_EVENTS, "test_flaky", 3)

    await drain(database_url, raising(error), timeout=10)

    assert await statuses(db) == {"processed": 2, "dead": 1}
    assert await db.fetchval("SELECT last_error FROM marketing.vw_dead_letters") == stored


async def test_endless_retry_after__waits_a_week_at_most(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(ITEM_EVENTS, "test_retry_after", 1)

    async def forever(item: ItemPayload, deps: Deps) -> None:
        raise RetryLater(float("inf"), "Retry-After: never")

    async with running(database_url, Registry((handler_module("test_retry_after", forever),))):

        async def snoozed() -> bool:
            row = await one(
                db, "SELECT status, run_after - now() AS wait FROM marketing.pipeline_events"
            )
            return bool(row["status"] == "pending" and row["wait"].days >= 6)

        await eventually(snoozed)


async def test_handler_that_swallows_a_sql_error__is_found_and_its_neighbours_commit(
    db: asyncpg.Connection, database_url: str
) -> None:
    async def careless(item: ItemPayload, deps: Deps) -> None:
        if item.id == 2:
            async with deps.completing_transaction() as tx:
                try:
                    await tx.execute("SELECT 1 / 0")
                except asyncpg.DivisionByZeroError:
                    return  # the transaction is now aborted, and nobody says so
        await stage(None)(item, deps)

    await db.execute(ONE_ATTEMPT, "test_flaky", True)
    await db.execute(ITEM_EVENTS, "test_flaky", 3)

    await drain(database_url, Registry((handler_module("test_flaky", careless),)), timeout=10)

    assert await statuses(db) == {"processed": 2, "dead": 1}
    dead = await one(db, "SELECT payload ->> 'id' AS item FROM marketing.vw_dead_letters")
    assert dead["item"] == "2"
    assert await db.fetchval("SELECT count(*) FROM cascade_test.effects") == 2


async def test_writer_in_repeatable_read__wakes_a_sleeping_listener(
    db: asyncpg.Connection, database_url: str
) -> None:
    writer = await asyncpg.connect(database_url)
    try:
        transaction = writer.transaction(isolation="repeatable_read")
        await transaction.start()
        await writer.fetchval("SELECT count(*) FROM marketing.listeners")  # snapshot taken
        async with running(
            database_url, Registry((handler_module("test_noop", stage(None)),)), poll_interval=30
        ):

            async def asleep() -> bool:
                return bool(await db.fetchval("SELECT bool_or(sleeping) FROM marketing.listeners"))

            await eventually(asleep)
            await writer.execute(ITEM_EVENTS, "test_noop", 1)
            committed = time.monotonic()
            await transaction.commit()

            async def processed() -> bool:
                return await statuses(db) == {"processed": 1}

            await eventually(processed, timeout=5)
            assert time.monotonic() - committed < 2, "woken by the poll, not by NOTIFY"
    finally:
        await writer.close()


async def test_rescued_non_critical_event__is_skipped_not_dead(db: asyncpg.Connection) -> None:
    await db.execute(ONE_ATTEMPT, "test_optional", False)
    await db.execute(ITEM_EVENTS, "test_optional", 1)
    await db.execute(
        "UPDATE marketing.pipeline_events SET status = 'processing', attempts = 1,"
        " lease_owner = 'gone', lease_expires_at = now() - interval '1 second'"
    )

    assert await db.fetchval("SELECT marketing.rescue_expired_leases()") == 1

    event = await one(db, "SELECT status, outcome FROM marketing.pipeline_events")
    assert dict(event) == {"status": "processed", "outcome": "skipped"}
    assert await db.fetchval("SELECT severity FROM marketing.pipeline_errors") == "warning"


async def test_busy_locked_loops__do_not_silence_the_leased_lane(
    db: asyncpg.Connection, database_url: str
) -> None:
    """While the locked loops work through a backlog, an external event still wakes the
    leased loop at once instead of waiting for the poll."""

    async def slow(item: ItemPayload, deps: Deps) -> None:
        await asyncio.sleep(0.01)

    started: list[float] = []

    async def external(item: ItemPayload, deps: Deps) -> None:
        started.append(time.monotonic())

    registry = Registry(
        (
            handler_module("test_noop", slow),
            handler_module("test_external", external, external=True),
        )
    )
    async with running(database_url, registry, poll_interval=30, batch_size=10):

        async def leased_lane_asleep() -> bool:
            return bool(await db.fetchval("SELECT bool_or(sleeping) FROM marketing.listeners"))

        await eventually(leased_lane_asleep)
        await db.execute(ITEM_EVENTS, "test_noop", 500)  # keeps the locked loops busy ~2.5 s
        await db.execute(ITEM_EVENTS, "test_external", 1)
        inserted = time.monotonic()

        async def external_ran() -> bool:
            return bool(started)

        await eventually(external_ran, timeout=10)
        assert started[0] - inserted < 1.0
