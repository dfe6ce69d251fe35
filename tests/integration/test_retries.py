"""Failure handling: retries with backoff, Retry-After without spending an attempt, permanent
failures, dead letters and their replay, and seed 002's non-critical stages."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time

import asyncpg

from cascade.database import PROJECT_ROOT
from cascade.handling import Deps, PermanentFailure, Registry, RetryLater
from tests.support.handlers import ItemPayload, handler_module, stage
from tests.support.listening import drain
from tests.support.sql import one

ITEM_EVENT = (
    "INSERT INTO marketing.pipeline_events (event_type, payload) "
    "VALUES ($1, jsonb_build_object('id', 1, 'fail_until_attempt', $2::int))"
)
SETTINGS = (
    "INSERT INTO marketing.event_types"
    "       (event_type, phase, description, critical, max_attempts, backoff_base_seconds)"
    " VALUES ($1, 'test', 'test', $2, $3, $4)"
)
ATTEMPT_ERRORS = "SELECT attempt, severity FROM marketing.pipeline_errors ORDER BY attempt"


def always(exc: Exception, event_type: str = "test_flaky") -> Registry:
    """A registry whose one handler always raises `exc`."""

    async def handle(item: ItemPayload, deps: Deps) -> None:
        raise exc

    return Registry((handler_module(event_type, handle),))


async def test_flaky_event__retries_with_backoff_until_it_succeeds(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(SETTINGS, "test_flaky", True, 5, 0.1)
    await db.execute(ITEM_EVENT, "test_flaky", 2)

    await drain(database_url, Registry((handler_module("test_flaky", stage(None)),)))

    event = await one(
        db, "SELECT status, attempts, created_at, processed_at FROM marketing.pipeline_events"
    )
    assert (event["status"], event["attempts"]) == ("processed", 3)
    errors = await db.fetch(ATTEMPT_ERRORS)
    assert [(e["attempt"], e["severity"]) for e in errors] == [(1, "error"), (2, "error")]
    # Backoff: at least half of 0.1 s after the first failure, half of 0.2 s after the second.
    waited = (event["processed_at"] - event["created_at"]).total_seconds()
    assert waited >= 0.05 + 0.1
    effect = await one(db, "SELECT attempt FROM cascade_test.effects")
    assert effect["attempt"] == 3


async def test_exhausted_retries__end_as_a_dead_letter(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(SETTINGS, "test_flaky", True, 3, 0.01)
    await db.execute(ITEM_EVENT, "test_flaky", 99)

    await drain(database_url, always(RuntimeError("provider said no")))

    dead = await one(db, "SELECT attempts, last_error FROM marketing.vw_dead_letters")
    assert dict(dead) == {"attempts": 3, "last_error": "RuntimeError: provider said no"}
    errors = await db.fetch(ATTEMPT_ERRORS)
    assert [(e["attempt"], e["severity"]) for e in errors] == [
        (1, "error"),
        (2, "error"),
        (3, "critical"),
    ]
    traceback = await db.fetchval("SELECT traceback FROM marketing.pipeline_errors LIMIT 1")
    assert "provider said no" in traceback


async def test_permanent_failure__skips_the_retries(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(ITEM_EVENT, "test_flaky", 0)

    await drain(database_url, always(PermanentFailure("company has no website")))

    dead = await one(db, "SELECT attempts, last_error FROM marketing.vw_dead_letters")
    assert dict(dead) == {"attempts": 1, "last_error": "PermanentFailure: company has no website"}


async def test_retry_later__waits_without_spending_an_attempt(
    db: asyncpg.Connection, database_url: str
) -> None:
    calls: list[float] = []

    async def rate_limited_then_fine(item: ItemPayload, deps: Deps) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RetryLater(0.2, "429 Too Many Requests")

    await db.execute(ITEM_EVENT, "test_retry_after", 0)

    await drain(
        database_url, Registry((handler_module("test_retry_after", rate_limited_then_fine),))
    )

    event = await one(db, "SELECT status, attempts FROM marketing.pipeline_events")
    assert (event["status"], event["attempts"]) == ("processed", 1)
    assert len(calls) == 3
    assert min(b - a for a, b in itertools.pairwise(calls)) >= 0.2
    assert await db.fetchval("SELECT count(*) FROM marketing.pipeline_errors") == 0


async def test_dead_letter__replays_after_the_fix_and_replay_is_safe_twice(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(ITEM_EVENT, "test_flaky", 0)
    await drain(database_url, always(PermanentFailure("bug in the handler")))
    event_id = await db.fetchval("SELECT event_id FROM marketing.vw_dead_letters")

    assert (
        await db.fetchval("SELECT marketing.replay_dead_letters(ARRAY[$1::bigint])", event_id) == 1
    )
    assert (
        await db.fetchval("SELECT marketing.replay_dead_letters(ARRAY[$1::bigint])", event_id) == 0
    )
    await drain(database_url, Registry((handler_module("test_flaky", stage(None)),)))

    event = await one(db, "SELECT status, attempts, replay_count FROM marketing.pipeline_events")
    assert dict(event) == {"status": "processed", "attempts": 1, "replay_count": 1}
    assert await db.fetchval("SELECT count(*) FROM marketing.vw_dead_letters") == 0


async def test_cascade_dlq_replay__puts_a_type_back_in_the_queue(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(ITEM_EVENT, "test_flaky", 0)
    await db.execute(ITEM_EVENT, "test_permanent", 0)
    await db.execute("UPDATE marketing.pipeline_events SET status = 'dead'")

    replay = [sys.executable, "-m", "cascade.cli", "dlq", "replay", "--event-type", "test_flaky"]
    env = {**os.environ, "DATABASE_URL": database_url}

    def run_replay() -> subprocess.CompletedProcess[str]:
        return subprocess.run(replay, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)

    first = await asyncio.to_thread(run_replay)
    second = await asyncio.to_thread(run_replay)

    assert first.stdout.strip() == "replayed 1 dead letter(s)", first.stderr
    assert second.stdout.strip() == "replayed 0 dead letter(s)", second.stderr
    statuses = await db.fetch(
        "SELECT event_type, status FROM marketing.pipeline_events ORDER BY id"
    )
    assert [tuple(r) for r in statuses] == [("test_flaky", "pending"), ("test_permanent", "dead")]


async def test_non_critical_stage__warns_and_lets_the_run_go_on(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(SETTINGS, "test_optional", False, 2, 0.01)
    await db.execute(ITEM_EVENT, "test_optional", 0)

    await drain(database_url, always(RuntimeError("log sink down"), "test_optional"))

    event = await one(db, "SELECT status, outcome, attempts FROM marketing.pipeline_events")
    assert dict(event) == {"status": "processed", "outcome": "skipped", "attempts": 2}
    severities = await db.fetch("SELECT severity FROM marketing.pipeline_errors")
    assert {r["severity"] for r in severities} == {"warning"}
    run = await one(db, "SELECT status, failed_at_stage FROM marketing.vw_pipeline_runs")
    assert dict(run) == {"status": "completed_with_warnings", "failed_at_stage": None}
