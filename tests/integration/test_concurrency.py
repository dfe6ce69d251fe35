"""Several listeners at once on a real PostgreSQL: four processes share 20,000 events with each
handled exactly once, a concurrency limit holds across processes, and the lease's
compare-and-set settles every race between a rescue and a late completion."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

import listener
from tests.support.processes import ListenerProcesses
from tests.support.sql import one
from tests.support.waiting import eventually

UNFINISHED = """
    SELECT count(*) FROM marketing.pipeline_events
     WHERE status IN ('pending', 'failed', 'processing')
"""
STATUS_COUNTS = "SELECT status, count(*) FROM marketing.pipeline_events GROUP BY status"
INSERT_EXTERNAL = """
    INSERT INTO marketing.pipeline_events (event_type, payload)
    VALUES ('test_external', '{"id": 1}') RETURNING id
"""
EXPIRE_LEASE = """
    UPDATE marketing.pipeline_events SET lease_expires_at = now() - interval '1 s' WHERE id = $1
"""


def registered(
    db: asyncpg.Connection, processes: ListenerProcesses, count: int
) -> Callable[[], Awaitable[bool]]:
    """True once `count` listeners have registered; fails at once if one has died."""

    async def probe() -> bool:
        processes.assert_alive()
        return bool(await db.fetchval("SELECT count(*) FROM marketing.listeners") == count)

    return probe


def finished(db: asyncpg.Connection, processes: ListenerProcesses) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        processes.assert_alive()
        return bool(await db.fetchval(UNFINISHED) == 0)

    return probe


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at any instant; one that ends exactly when
    another starts does not overlap it."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def held_by(event_id: int, attempt: int, owner: str) -> tuple[object, ...]:
    """HOLD_LEASE's arguments: the lease to check, then the lineage context it sets."""
    return (event_id, attempt, owner, str(event_id), str(event_id), "")


async def claim(db: asyncpg.Connection, owner: str) -> asyncpg.Record:
    """The lease path's claim, as a listener named `owner` makes it."""
    return await one(db, listener.CLAIM_LEASED, owner, ["test_external"], 10, 30.0)


async def test_listeners__four_processes_handle_20000_events_exactly_once(
    db: asyncpg.Connection, listener_processes: ListenerProcesses
) -> None:
    started = [listener_processes.start("tests.support.handlers:ITEMS") for _ in range(4)]
    # All four running before the work arrives, so that the NOTIFY wakes every one of them.
    await eventually(registered(db, listener_processes, 4), timeout=30)

    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload) "
        "SELECT 'test_item_stage2', jsonb_build_object('id', g) FROM generate_series(1, 20000) g"
    )
    await eventually(finished(db, listener_processes), timeout=60, interval=0.2)

    effects = await one(
        db,
        "SELECT count(*) AS effects, count(DISTINCT event_id) AS events,"
        "       count(DISTINCT item_id) AS items FROM cascade_test.effects",
    )
    assert dict(effects) == {"effects": 20000, "events": 20000, "items": 20000}
    statuses = {r["status"]: r["count"] for r in await db.fetch(STATUS_COUNTS)}
    assert statuses == {"processed": 20000}
    workers = {r["pid"] for r in await db.fetch("SELECT DISTINCT pid FROM cascade_test.effects")}
    assert len(workers) > 1
    assert workers <= {process.pid for process in started}


async def test_concurrency_limit__holds_across_two_processes(
    db: asyncpg.Connection, listener_processes: ListenerProcesses
) -> None:
    await db.execute(
        "INSERT INTO marketing.event_types (event_type, phase, description, concurrency_limit)"
        " VALUES ('test_limited', 'test', 'test', 2)"
    )
    started = [listener_processes.start("tests.support.handlers:LIMITED") for _ in range(2)]
    await eventually(registered(db, listener_processes, 2), timeout=30)

    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload) "
        "SELECT 'test_limited', jsonb_build_object('id', g, 'sleep_ms', 200) "
        "  FROM generate_series(1, 20) g"
    )
    await eventually(finished(db, listener_processes), timeout=30, interval=0.1)

    # Each handler's [started, finished] lies inside its event's time in 'processing' (it
    # starts after the claim commits and ends before the completion commits), so these
    # intervals can overlap no more than the events in 'processing' did.
    effects = await db.fetch("SELECT pid, started, finished FROM cascade_test.effects")
    assert len(effects) == 20
    assert most_at_once([(r["started"], r["finished"]) for r in effects]) == 2
    assert {r["pid"] for r in effects} == {process.pid for process in started}


async def test_hold_lease__refuses_every_late_write_of_a_rescued_attempt(
    db: asyncpg.Connection,
) -> None:
    event_id = await db.fetchval(INSERT_EXTERNAL)
    assert (await claim(db, "old-owner"))["attempts"] == 1
    await db.execute(EXPIRE_LEASE, event_id)
    assert await db.fetchval(listener.RESCUE_EXPIRED) == 1
    assert (await claim(db, "new-owner"))["attempts"] == 2

    # The old owner comes back from a long stall: nothing it sends applies.
    async with db.transaction():
        assert await db.fetchrow(listener.HOLD_LEASE, *held_by(event_id, 1, "old-owner")) is None
    assert await db.execute(listener.EXTEND_LEASES, "old-owner", [event_id], 30.0) == "UPDATE 0"
    assert await db.execute(listener.RELEASE_LEASES, "old-owner", [event_id]) == "UPDATE 0"
    # RECORD_FAILURE's arguments: id, attempts seen, owner, status, outcome, attempt, delay,
    # message, severity, duration, traceback.
    late_failure = (event_id, 1, "old-owner", "failed", None, 1, 0.0, "late", "error", 1.0, None)
    assert await db.fetchval(listener.RECORD_FAILURE, *late_failure) is None
    assert await db.execute(listener.SNOOZE, event_id, 1, "old-owner", 0, 0.0, "late") == (
        "UPDATE 0"
    )

    async with db.transaction():
        assert (
            await db.fetchrow(listener.HOLD_LEASE, *held_by(event_id, 2, "new-owner")) is not None
        )
        await db.execute(listener.COMPLETE_LEASED, event_id, 1.0)
    event = await one(db, "SELECT status, attempts, lease_owner FROM marketing.pipeline_events")
    assert dict(event) == {"status": "processed", "attempts": 2, "lease_owner": None}


async def test_hold_lease__waiting_behind_a_rescue_finds_the_event_gone(
    db: asyncpg.Connection, database_url: str
) -> None:
    event_id = await db.fetchval(INSERT_EXTERNAL)
    await claim(db, "owner")
    await db.execute(EXPIRE_LEASE, event_id)
    rescuer = await asyncpg.connect(database_url)
    owner = await asyncpg.connect(database_url)
    try:
        rescue = rescuer.transaction()
        await rescue.start()
        assert await rescuer.fetchval(listener.RESCUE_EXPIRED) == 1
        async with owner.transaction():
            # The late completion's compare-and-set queues on the row the rescue has locked...
            holding = asyncio.create_task(
                owner.fetchrow(listener.HOLD_LEASE, *held_by(event_id, 1, "owner"))
            )

            async def waiting() -> bool:
                return bool(
                    await db.fetchval(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                        owner.get_server_pid(),
                    )
                )

            await eventually(waiting)
            await rescue.commit()
            # ...and, re-checked against the committed rescue, no longer matches.
            assert await holding is None
    finally:
        await rescuer.close()
        await owner.close()
    event = await one(db, "SELECT status, attempts, lease_owner FROM marketing.pipeline_events")
    assert dict(event) == {"status": "failed", "attempts": 1, "lease_owner": None}


async def test_rescue__never_reverts_an_event_its_owner_is_completing(
    db: asyncpg.Connection, database_url: str
) -> None:
    event_id = await db.fetchval(INSERT_EXTERNAL)
    await claim(db, "owner")
    # The owner stalled past its lease, but no rescue has run yet: it still holds the lease.
    await db.execute(EXPIRE_LEASE, event_id)
    owner = await asyncpg.connect(database_url)
    try:
        async with owner.transaction():
            assert (
                await owner.fetchrow(listener.HOLD_LEASE, *held_by(event_id, 1, "owner"))
                is not None
            )
            # The rescue skips the row the completion holds rather than wait for it.
            assert await db.fetchval(listener.RESCUE_EXPIRED) == 0
            await owner.execute(listener.COMPLETE_LEASED, event_id, 1.0)
    finally:
        await owner.close()

    # Even a stale expiry left on a processed row is no reason to rescue it.
    await db.execute(EXPIRE_LEASE, event_id)
    assert await db.fetchval(listener.RESCUE_EXPIRED) == 0
    event = await one(db, "SELECT status, attempts FROM marketing.pipeline_events")
    assert dict(event) == {"status": "processed", "attempts": 1}
    assert await db.fetchval("SELECT count(*) FROM marketing.pipeline_errors") == 0
