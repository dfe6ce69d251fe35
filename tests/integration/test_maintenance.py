"""The psql maintenance scripts do what their headers say, and running each twice is safe."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from cascade.database import PROJECT_ROOT

OLD_EVENTS = """
    INSERT INTO marketing.pipeline_events (event_type, payload, status, processed_at)
    VALUES ('test_noop', '{}', 'processed', now() - interval '40 days'),
           ('test_noop', '{}', 'processed', now() - interval '1 day'),
           ('test_noop', '{}', 'dead', NULL)
"""
DEAD_EVENTS = """
    INSERT INTO marketing.pipeline_events (event_type, payload, status, attempts)
    VALUES ('test_flaky', '{}', 'dead', 5), ('test_permanent', '{}', 'dead', 1)
"""


async def psql(database_url: str, script: str, *variables: str) -> str:
    """Runs a maintenance script with `cascade psql -f`, as the README says to."""
    command = [sys.executable, "-m", "cascade.cli", "psql", "-X", "-v", "ON_ERROR_STOP=1"]
    for variable in variables:
        command += ["-v", variable]
    command += ["-f", str(PROJECT_ROOT / "maintenance" / script)]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            env={**os.environ, "DATABASE_URL": database_url},
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )

    done = await asyncio.to_thread(run)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_purge_old_events__deletes_only_old_processed_events_once(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(OLD_EVENTS)

    first = await psql(database_url, "purge_old_events.sql")
    second = await psql(database_url, "purge_old_events.sql")

    assert (first.strip(), second.strip()) == ("DELETE 1", "DELETE 0")
    left = await db.fetch("SELECT status FROM marketing.pipeline_events ORDER BY id")
    assert [r["status"] for r in left] == ["processed", "dead"]


async def test_purge_resolved_errors__keeps_unresolved_and_recent_ones(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(
        "INSERT INTO marketing.pipeline_errors"
        "       (event_type, error_message, severity, resolved, resolved_at)"
        " VALUES ('x', 'old', 'error', true, now() - interval '100 days'),"
        "        ('x', 'recent', 'error', true, now() - interval '1 day'),"
        "        ('x', 'open', 'error', false, NULL)"
    )

    first = await psql(database_url, "purge_resolved_errors.sql")
    second = await psql(database_url, "purge_resolved_errors.sql", "keep_days=90")

    assert (first.strip(), second.strip()) == ("DELETE 1", "DELETE 0")
    assert await db.fetchval("SELECT count(*) FROM marketing.pipeline_errors") == 2


async def test_vacuum__runs_twice(database_url: str) -> None:
    assert (await psql(database_url, "vacuum.sql")).split() == ["VACUUM", "VACUUM"]
    assert (await psql(database_url, "vacuum.sql")).split() == ["VACUUM", "VACUUM"]


async def test_replay_dead_letters__one_type_then_nothing_left_of_it(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(DEAD_EVENTS)

    first = await psql(database_url, "replay_dead_letters.sql", "event_type=test_flaky")
    second = await psql(database_url, "replay_dead_letters.sql", "event_type=test_flaky")

    assert first.split()[-3:-1] == ["1", "(1"]
    assert second.split()[-3:-1] == ["0", "(1"]
    statuses = await db.fetch("SELECT event_type, status, attempts FROM marketing.pipeline_events")
    assert {tuple(r) for r in statuses} == {
        ("test_flaky", "pending", 0),
        ("test_permanent", "dead", 1),
    }


async def test_resolve_errors__resolves_errors_of_events_that_later_succeeded(
    db: asyncpg.Connection, database_url: str
) -> None:
    ok = await db.fetchval(
        "INSERT INTO marketing.pipeline_events (event_type, payload, status)"
        " VALUES ('x', '{}', 'processed') RETURNING id"
    )
    dead = await db.fetchval(
        "INSERT INTO marketing.pipeline_events (event_type, payload, status)"
        " VALUES ('x', '{}', 'dead') RETURNING id"
    )
    await db.execute(
        "INSERT INTO marketing.pipeline_errors (event_id, event_type, error_message, severity)"
        " VALUES ($1, 'x', 'flaky', 'error'), ($2, 'x', 'broken', 'critical')",
        ok,
        dead,
    )

    first = await psql(database_url, "resolve_errors.sql")
    second = await psql(database_url, "resolve_errors.sql")

    assert (first.strip(), second.strip()) == ("UPDATE 1", "UPDATE 0")
    unresolved = await db.fetch("SELECT event_id FROM marketing.vw_unresolved_errors")
    assert [r["event_id"] for r in unresolved] == [dead]


async def test_requeue_stuck_events__frees_events_of_a_vanished_listener(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(
        "INSERT INTO marketing.pipeline_events"
        "       (event_type, payload, status, attempts, lease_owner, lease_expires_at)"
        " VALUES ('test_external', '{}', 'processing', 1, 'gone-host:1:dead',"
        "         now() + interval '1 hour')"
    )

    first = await psql(database_url, "requeue_stuck_events.sql")
    second = await psql(database_url, "requeue_stuck_events.sql")

    assert "UPDATE 1" in first
    assert "UPDATE 0" in second
    event = await db.fetchrow("SELECT status, lease_owner FROM marketing.pipeline_events")
    assert event is not None
    assert (event["status"], event["lease_owner"]) == ("failed", None)
