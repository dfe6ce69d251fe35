"""Crashes and chaos on a real PostgreSQL: listeners killed with SIGKILL or stopped with
SIGTERM, the LISTEN connection terminated, the server restarted or crashed, a notification
lost, leases left to expire. After each, every event runs to completion and each database
effect happens exactly once (cascade_test.effects holds one row per event)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from cascade.wakeup import CHANNEL
from tests.support.handlers import EXTERNAL, ITEMS, PROVIDER_URL_ENV
from tests.support.listening import drain, running
from tests.support.processes import ListenerProcesses
from tests.support.provider import Provider
from tests.support.servers import dedicated_server
from tests.support.sql import one
from tests.support.waiting import eventually

ITEM_HANDLERS = "tests.support.handlers:ITEMS"
EXTERNAL_HANDLERS = "tests.support.handlers:EXTERNAL"

STATUS_COUNTS = "SELECT status, count(*) FROM marketing.pipeline_events GROUP BY status"
EVENTS_WITHOUT_ONE_EFFECT = """
    SELECT count(*) FROM marketing.pipeline_events AS e
     WHERE (SELECT count(*) FROM cascade_test.effects AS f WHERE f.event_id = e.id) <> 1
"""
# A listener's pooled connection in the middle of a locked batch: it has written effects
# that are not committed yet.
UNCOMMITTED_BATCHES = """
    SELECT count(DISTINCT a.pid)
      FROM pg_stat_activity AS a JOIN pg_locks AS l ON l.pid = a.pid
     WHERE a.datname = current_database() AND a.application_name = 'cascade-listener'
       AND l.relation = 'cascade_test.effects'::regclass AND l.mode = 'RowExclusiveLock'
"""
# A listener's pooled connection holding a locked claim open (its handlers are running).
CLAIMED_BATCHES = """
    SELECT count(DISTINCT a.pid)
      FROM pg_stat_activity AS a JOIN pg_locks AS l ON l.pid = a.pid
     WHERE a.datname = current_database() AND a.application_name = 'cascade-listener'
       AND a.state = 'idle in transaction'
       AND l.relation = 'marketing.pipeline_events'::regclass AND l.mode = 'RowShareLock'
"""
LISTEN_BACKENDS = """
    SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND application_name = 'cascade-listen'
"""
INSERT_EXTERNAL = """
    INSERT INTO marketing.pipeline_events (event_type, payload)
    VALUES ('test_external', '{"id": 1}') RETURNING id
"""


async def status_counts(db: asyncpg.Connection) -> dict[str, int]:
    return {r["status"]: r["count"] for r in await db.fetch(STATUS_COUNTS)}


def all_processed(db: asyncpg.Connection, expected: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await status_counts(db) == {"processed": expected}

    return probe


def listener_asleep(db: asyncpg.Connection) -> Callable[[], Awaitable[bool]]:
    """True once every registered listener has armed: writers now send a NOTIFY."""

    async def probe() -> bool:
        return bool(await db.fetchval("SELECT bool_and(sleeping) FROM marketing.listeners"))

    return probe


async def test_listener__killed_mid_batch_loses_no_work_and_repeats_no_effect(
    db: asyncpg.Connection, database_url: str, listener_processes: ListenerProcesses
) -> None:
    await db.execute(
        "INSERT INTO cascade_test.items (name, sleep_ms) "
        "SELECT 'item ' || g, 5 FROM generate_series(1, 1000) g"
    )
    victim = listener_processes.start(ITEM_HANDLERS)

    async def mid_batch() -> bool:
        victim.assert_alive()
        committed = await db.fetchval("SELECT count(*) FROM cascade_test.effects")
        return bool(committed > 0 and await db.fetchval(UNCOMMITTED_BATCHES) > 0)

    await eventually(mid_batch, timeout=20)
    victim.kill()

    # The crash rolled the open batches back and their row locks went with the connection.
    await drain(database_url, ITEMS, workers=8)

    assert await db.fetchval("SELECT count(*) FROM cascade_test.items WHERE stage = 2") == 1000
    assert await status_counts(db) == {"processed": 3000}
    assert await db.fetchval(EVENTS_WITHOUT_ONE_EFFECT) == 0
    assert await db.fetchval("SELECT count(*) FROM cascade_test.effects") == 3000
    # A rolled-back batch cost its events no attempt.
    assert await db.fetchval("SELECT max(attempts) FROM marketing.pipeline_events") == 1
    pids = {r["pid"] for r in await db.fetch("SELECT DISTINCT pid FROM cascade_test.effects")}
    assert pids == {victim.pid, os.getpid()}


async def test_listen_connection__reconnects_after_being_terminated(
    db: asyncpg.Connection, database_url: str
) -> None:
    async def listen_backends() -> list[int]:
        return [r["pid"] for r in await db.fetch(LISTEN_BACKENDS)]

    # A poll interval far beyond the test's timeouts: only a NOTIFY can wake this listener.
    async with running(database_url, ITEMS, poll_interval=60.0):
        first = await eventually(listen_backends)
        assert len(first) == 1
        assert await db.fetchval("SELECT pg_terminate_backend($1)", first[0])

        async def replaced() -> list[int]:
            return [pid for pid in await listen_backends() if pid not in first]

        assert len(await eventually(replaced, timeout=10)) == 1
        await eventually(listener_asleep(db))
        await db.execute(
            "INSERT INTO cascade_test.items (name) "
            "SELECT 'item ' || g FROM generate_series(1, 20) g"
        )

        await eventually(all_processed(db, 60), timeout=10)

    assert await db.fetchval(EVENTS_WITHOUT_ONE_EFFECT) == 0


async def test_listener__resumes_by_itself_after_the_server_restarts(scratch: Path) -> None:
    with dedicated_server(scratch / "pg") as server:
        async with running(server.url, ITEMS):
            db = await asyncpg.connect(server.url)
            try:
                await db.execute(
                    "INSERT INTO cascade_test.items (name, sleep_ms) "
                    "SELECT 'before ' || g, 10 FROM generate_series(1, 100) g"
                )

                async def mid_batch() -> bool:
                    committed = await db.fetchval("SELECT count(*) FROM cascade_test.effects")
                    return bool(committed > 0 and await db.fetchval(UNCOMMITTED_BATCHES) > 0)

                await eventually(mid_batch)
                listen_pid = await db.fetchval(LISTEN_BACKENDS)
            finally:
                await db.close()

            # In a thread, so that the listener lives through the outage as it would in
            # production; the batch in flight dies with its connection.
            await asyncio.to_thread(server.restart, "fast")

            db = await asyncpg.connect(server.url)
            try:
                await db.execute("INSERT INTO cascade_test.items (name) VALUES ('after')")
                await eventually(all_processed(db, 303), timeout=20)
                assert await db.fetchval(EVENTS_WITHOUT_ONE_EFFECT) == 0

                async def listening_again() -> bool:
                    return await db.fetchval(LISTEN_BACKENDS) not in (None, listen_pid)

                await eventually(listening_again, timeout=10)
            finally:
                await db.close()


async def test_listener__registers_again_after_a_server_crash_empties_the_listeners_table(
    scratch: Path,
) -> None:
    # marketing.listeners is UNLOGGED, so crash recovery empties it. A listener that is not
    # registered is never sent a NOTIFY (triggers/900_wake_listeners.sql): it must register
    # again, or every event waits for its poll interval from then on.
    with dedicated_server(scratch / "pg") as server:
        async with running(server.url, ITEMS, poll_interval=60.0):
            db = await asyncpg.connect(server.url)
            try:
                await eventually(listener_asleep(db))
            finally:
                await db.close()

            await asyncio.to_thread(server.restart, "immediate")

            db = await asyncpg.connect(server.url)
            try:

                async def registered() -> bool:
                    return bool(await db.fetchval("SELECT count(*) FROM marketing.listeners"))

                await eventually(registered, timeout=10)
                await eventually(listener_asleep(db))
                await db.execute("INSERT INTO cascade_test.items (name) VALUES ('after')")
                await eventually(all_processed(db, 3), timeout=10)
            finally:
                await db.close()


async def test_poll__picks_up_an_event_whose_notification_was_lost(
    db: asyncpg.Connection, database_url: str
) -> None:
    poll_interval = 0.5
    notifications: list[str] = []
    spy = await asyncpg.connect(database_url)
    try:
        await spy.add_listener(CHANNEL, lambda *args: notifications.append(args[3]))
        async with running(database_url, ITEMS, poll_interval=poll_interval):
            await eventually(listener_asleep(db))
            async with db.transaction():
                # Replica mode fires no ordinary triggers: the statement trigger that sends
                # the NOTIFY stays silent, as if the notification had been lost.
                await db.execute("SET LOCAL session_replication_role = replica")
                await db.execute(
                    "INSERT INTO marketing.pipeline_events (event_type, payload) "
                    "VALUES ('test_item_stage2', '{\"id\": 1}')"
                )
            inserted = time.monotonic()

            await eventually(all_processed(db, 1), timeout=5)
            waited = time.monotonic() - inserted
            lost = list(notifications)  # before the listener's stop sends one of its own
    finally:
        await spy.close()

    assert lost == []
    assert waited < poll_interval + 1.0
    assert await db.fetchval(EVENTS_WITHOUT_ONE_EFFECT) == 0


async def test_sigterm__finishes_what_it_can_and_gives_back_the_rest(
    db: asyncpg.Connection,
    database_url: str,
    provider: Provider,
    listener_processes: ListenerProcesses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Events 1-2 call a provider that answers in 0.7 s, well within the 1 s drain; events
    # 3-4 call one that hangs for 30 s.
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload) "
        "SELECT 'test_external', jsonb_build_object('id', g, 'sleep_ms', "
        "       CASE WHEN g <= 2 THEN 700 ELSE 30000 END) "
        "  FROM generate_series(1, 4) g"
    )
    stopping = listener_processes.start(
        EXTERNAL_HANDLERS, CASCADE_DRAIN_TIMEOUT="1", **{PROVIDER_URL_ENV: provider.url}
    )

    async def calls_in_flight() -> bool:
        stopping.assert_alive()
        return len(provider.keys()) == 4

    await eventually(calls_in_flight, timeout=20)
    assert await stopping.terminate() < 5
    after_stop = await db.fetch(
        "SELECT (payload->>'id')::int AS item, status, attempts, lease_owner, lease_expires_at"
        "  FROM marketing.pipeline_events ORDER BY item"
    )
    assert [tuple(r) for r in after_stop] == [
        (1, "processed", 1, None, None),
        (2, "processed", 1, None, None),
        # Released: back in the queue at once, the attempt given back.
        (3, "pending", 0, None, None),
        (4, "pending", 0, None, None),
    ]

    provider.delay = 0.05
    monkeypatch.setenv(PROVIDER_URL_ENV, provider.url)
    restarted = time.monotonic()
    async with running(database_url, EXTERNAL):
        await eventually(all_processed(db, 4), timeout=5)
    assert time.monotonic() - restarted < 2.0

    assert await db.fetchval(EVENTS_WITHOUT_ONE_EFFECT) == 0
    # Every effect is attempt 1: the released events' first attempt was given back.
    assert await db.fetchval("SELECT array_agg(DISTINCT attempt) FROM cascade_test.effects") == [1]
    calls = provider.keys()
    assert sorted(calls.count(key) for key in set(calls)) == [1, 1, 2, 2]


async def test_sigterm__rolls_back_a_locked_batch_it_cannot_finish(
    db: asyncpg.Connection, database_url: str, listener_processes: ListenerProcesses
) -> None:
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload) "
        "SELECT 'test_item_stage2', jsonb_build_object('id', g, 'sleep_ms', 30000) "
        "  FROM generate_series(1, 3) g"
    )
    stopping = listener_processes.start(ITEM_HANDLERS, CASCADE_DRAIN_TIMEOUT="1")

    async def batch_in_flight() -> bool:
        stopping.assert_alive()
        return bool(await db.fetchval(CLAIMED_BATCHES))

    await eventually(batch_in_flight, timeout=20)
    assert await stopping.terminate() < 5
    assert await status_counts(db) == {"pending": 3}
    assert await db.fetchval("SELECT max(attempts) FROM marketing.pipeline_events") == 0
    assert await db.fetchval("SELECT count(*) FROM cascade_test.effects") == 0

    await db.execute("UPDATE marketing.pipeline_events SET payload = payload - 'sleep_ms'")
    await drain(database_url, ITEMS)
    assert await status_counts(db) == {"processed": 3}
    assert await db.fetchval(EVENTS_WITHOUT_ONE_EFFECT) == 0


async def test_lease__of_a_killed_listener_is_rescued_and_completed_once(
    db: asyncpg.Connection,
    database_url: str,
    provider: Provider,
    listener_processes: ListenerProcesses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider.delay = 30.0
    event_id = await db.fetchval(INSERT_EXTERNAL)
    victim = listener_processes.start(
        EXTERNAL_HANDLERS,
        CASCADE_LEASE_SECONDS="1",
        CASCADE_HEARTBEAT_INTERVAL="0.25",
        **{PROVIDER_URL_ENV: provider.url},
    )

    async def calling() -> bool:
        victim.assert_alive()
        return bool(provider.keys())

    await eventually(calling, timeout=20)
    first_expiry = await db.fetchval("SELECT lease_expires_at FROM marketing.pipeline_events")

    async def lease_renewed() -> bool:
        row = await one(db, "SELECT status, lease_expires_at FROM marketing.pipeline_events")
        assert row["status"] == "processing", "rescued while its listener was alive"
        return bool(row["lease_expires_at"] > first_expiry)

    # While the call hangs, heartbeats keep renewing the one-second lease.
    await eventually(lease_renewed, timeout=5)
    victim.kill()

    provider.delay = 0.0
    monkeypatch.setenv(PROVIDER_URL_ENV, provider.url)
    await drain(database_url, EXTERNAL)

    event = await one(db, "SELECT status, attempts FROM marketing.pipeline_events")
    assert dict(event) == {"status": "processed", "attempts": 2}
    effects = await db.fetch("SELECT event_id, attempt, pid FROM cascade_test.effects")
    assert [tuple(r) for r in effects] == [(event_id, 2, os.getpid())]
    assert provider.keys() == [f"cascade-event-{event_id}"] * 2
    error = await one(db, "SELECT attempt, severity, error_message FROM marketing.pipeline_errors")
    assert (error["attempt"], error["severity"]) == (1, "error")
    assert error["error_message"].startswith("lease expired: listener ")
