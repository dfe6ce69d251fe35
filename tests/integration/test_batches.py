"""Batch handlers (`handle_many`) through a real listener on a real PostgreSQL: each item gets
its own outcome on both paths, per-item writes emit events that name their own item, a lease
rescued mid-call is left out of the completing transaction, an exception is every unfinished
item's outcome on the lease path and one poison item's alone on the locked path (a swallowed
SQL error too), a malformed item dies alone, and asking for the completing transaction twice
never hangs; BatchTx's per-item statements on their own; and budgets.reserve_each, which
batch handlers book their provider calls with."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, LiteralString

import asyncpg
import pytest

from cascade.budgets import reserve_each
from cascade.handling import ITEM_CONTEXT, BatchTx, EventInfo, Item
from tests.support.batch_handlers import (
    LEASED_TYPE,
    LOCKED_TYPE,
    BatchPayload,
    Calls,
    Plan,
    batch_registry,
    register_batch_types,
)
from tests.support.listening import drain, running
from tests.support.sql import one
from tests.support.waiting import eventually

INSERT_EVENTS: LiteralString = """
    INSERT INTO marketing.pipeline_events (event_type, payload, run_id, correlation_id)
    SELECT $1, jsonb_build_object('id', n, 'plan', plan), run_id, correlation_id
      FROM unnest($2::text[], $3::bigint[], $4::text[]) WITH ORDINALITY
           AS planned(plan, run_id, correlation_id, n)
     ORDER BY n
    RETURNING id
"""
# Nothing left that a listener would take now: retries are an hour away, children are done.
UNSETTLED: LiteralString = """
    SELECT count(*) FROM marketing.pipeline_events
     WHERE status = 'processing' OR (status IN ('pending', 'failed') AND run_after <= now())
"""
# Per root event of a type, in id order: (status, attempts, effects, error rows, children).
OUTCOMES: LiteralString = """
    SELECT e.status, e.attempts,
           (SELECT count(*) FROM cascade_test.effects AS f WHERE f.event_id = e.id),
           (SELECT count(*) FROM marketing.pipeline_errors AS r WHERE r.event_id = e.id),
           (SELECT count(*) FROM marketing.pipeline_events AS c WHERE c.parent_event_id = e.id)
      FROM marketing.pipeline_events AS e
     WHERE e.event_type = $1
     ORDER BY e.id
"""
ERRORS: LiteralString = """
    SELECT event_id, attempt, severity, error_message FROM marketing.pipeline_errors
     WHERE event_type = $1
     ORDER BY event_id, attempt
"""
CHILDREN: LiteralString = """
    SELECT parent_event_id, run_id, correlation_id, payload ->> 'name' AS name
      FROM marketing.pipeline_events
     WHERE event_type = 'test_item_created'
     ORDER BY parent_event_id, id
"""
PROCESSING: LiteralString = (
    "SELECT count(*) FROM marketing.pipeline_events WHERE status = 'processing'"
)
RETRIED: LiteralString = """
    SELECT run_after > now() + interval '59 minutes' AS later, last_error
      FROM marketing.pipeline_events WHERE id = $1
"""
EFFECT_ATTEMPTS: LiteralString = "SELECT event_id, attempt FROM cascade_test.effects ORDER BY 1"

ADD_CHILD_RETURNING: LiteralString = """
    INSERT INTO cascade_test.items (name)
    SELECT $4 WHERE marketing.set_event_context($1, $2, $3)
    RETURNING name
"""
ADD_CHILD_WITHOUT_LINEAGE: LiteralString = "INSERT INTO cascade_test.items (name) VALUES ($4)"
CHILD_ITEMS: LiteralString = "SELECT count(*) FROM cascade_test.items"

BUDGET = "enrichment_budget"  # seeded by schema/0001: limit 100 USD per month
USED: LiteralString = "SELECT used FROM marketing.shq_guardrails WHERE guardrail_key = $1"
SET_USED: LiteralString = "UPDATE marketing.shq_guardrails SET used = $2 WHERE guardrail_key = $1"

PATHS = [pytest.param(True, id="lease_path"), pytest.param(False, id="locked_path")]


async def insert_events(
    db: asyncpg.Connection,
    event_type: str,
    plans: Sequence[str],  # Plan, or what BatchPayload refuses
    run_ids: list[int | None] | None = None,
    correlation_ids: list[str | None] | None = None,
) -> list[int]:
    """One root event per plan, item ids 1, 2, ... in that order; their event ids, ascending."""
    rows = await db.fetch(
        INSERT_EVENTS,
        event_type,
        list(plans),
        run_ids or [None] * len(plans),
        correlation_ids or [None] * len(plans),
    )
    return sorted(row["id"] for row in rows)


def settled(db: asyncpg.Connection) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return bool(await db.fetchval(UNSETTLED) == 0)

    return probe


async def outcomes(db: asyncpg.Connection, event_type: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await db.fetch(OUTCOMES, event_type)]


async def errors(db: asyncpg.Connection, event_type: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await db.fetch(ERRORS, event_type)]


DONE = ("processed", 1, 1, 0, 1)  # one attempt, one effect, no error, one child


@pytest.mark.parametrize("leased", PATHS)
async def test_handle_many__gives_each_item_its_own_outcome(
    db: asyncpg.Connection, database_url: str, leased: bool
) -> None:
    await register_batch_types(db)
    event_type = LEASED_TYPE if leased else LOCKED_TYPE
    ids = await insert_events(
        db, event_type, ["ok", "retry_later", "ok", "fail", "permanent", "ok"]
    )
    calls = Calls()

    async with running(database_url, batch_registry(calls, leased=leased)):
        await eventually(settled(db))

    assert [[event_id for event_id, _ in call] for call in calls.given] == [ids]
    assert calls.held == [[ids[0], ids[2], ids[5]]]
    assert await outcomes(db, event_type) == [
        DONE,
        ("pending", 0, 0, 0, 0),  # its attempt given back, no error recorded
        DONE,
        ("failed", 1, 0, 1, 0),
        ("dead", 1, 0, 1, 0),
        DONE,
    ]
    assert await errors(db, event_type) == [
        (ids[3], 1, "error", "ValueError: item 4 is malformed"),
        (ids[4], 1, "critical", "PermanentFailure: item 5 can never work"),
    ]
    retried = await one(db, RETRIED, ids[1])
    assert retried["later"]
    assert retried["last_error"] == "item 2 is not ready; retry in 3600s"


@pytest.mark.parametrize("leased", PATHS)
async def test_handle_many__per_item_writes_emit_events_with_their_items_lineage(
    db: asyncpg.Connection, database_url: str, leased: bool
) -> None:
    await register_batch_types(db)
    event_type = LEASED_TYPE if leased else LOCKED_TYPE
    # Neighbours differ in every part of their lineage, so one item's leaking into the next
    # item's statement would show.
    ids = await insert_events(
        db,
        event_type,
        ["ok", "ok", "ok", "ok"],
        run_ids=[7001, None, 7003, None],
        correlation_ids=["corr-1", None, None, "corr-4"],
    )
    calls = Calls()

    await drain(database_url, batch_registry(calls, leased=leased))

    assert calls.held == [ids]  # one transaction wrote for all four
    children = [tuple(row) for row in await db.fetch(CHILDREN)]
    assert children == [
        (ids[0], 7001, "corr-1", f"child of event {ids[0]}"),
        (ids[1], ids[1], None, f"child of event {ids[1]}"),  # a root is its own run
        (ids[2], 7003, None, f"child of event {ids[2]}"),
        (ids[3], ids[3], "corr-4", f"child of event {ids[3]}"),
    ]


async def test_handle_many__leaves_an_item_whose_lease_was_rescued_out_of_its_transaction(
    db: asyncpg.Connection, database_url: str
) -> None:
    await register_batch_types(db)
    ids = await insert_events(db, LEASED_TYPE, ["ok", "stolen", "ok"])
    calls = Calls()

    await drain(database_url, batch_registry(calls, leased=True))

    # The first call had all three; by its commit the rescued one was leased again (same
    # listener, attempt 2) and ran in a call of its own.
    assert calls.given == [[(ids[0], 1), (ids[1], 1), (ids[2], 1)], [(ids[1], 2)]]
    assert sorted(calls.held) == [[ids[0], ids[2]], [ids[1]]]
    assert await outcomes(db, LEASED_TYPE) == [DONE, ("processed", 2, 1, 1, 1), DONE]
    assert [tuple(row) for row in await db.fetch(EFFECT_ATTEMPTS)] == [
        (ids[0], 1),
        (ids[1], 2),
        (ids[2], 1),
    ]
    rescue = await errors(db, LEASED_TYPE)
    assert [(event_id, attempt) for event_id, attempt, _, _ in rescue] == [(ids[1], 1)]
    assert rescue[0][3].startswith("lease expired")  # the rescue's row; the lost call wrote none


@pytest.mark.parametrize("poison", ["poison_before", "poison"])
async def test_handle_many__raising_fails_every_unfinished_item_once_on_the_lease_path(
    db: asyncpg.Connection, database_url: str, poison: Plan
) -> None:
    await register_batch_types(db)
    ids = await insert_events(db, LEASED_TYPE, ["ok", poison, "retry_later", "ok"])
    calls = Calls()

    async with running(database_url, batch_registry(calls, leased=True)):
        await eventually(settled(db))

    failed = ("failed", 1, 0, 1, 0)  # no effect and no child: the writes rolled back
    assert await outcomes(db, LEASED_TYPE) == [failed, failed, ("pending", 0, 0, 0, 0), failed]
    message = f"RuntimeError: {poison}: the batch call raised"
    assert await errors(db, LEASED_TYPE) == [
        (ids[0], 1, "error", message),
        (ids[1], 1, "error", message),
        (ids[3], 1, "error", message),
    ]
    assert len(calls.given) == 1


async def test_handle_many__raising_after_its_commit_leaves_the_committed_items_done(
    db: asyncpg.Connection, database_url: str
) -> None:
    await register_batch_types(db)
    await insert_events(db, LEASED_TYPE, ["ok", "poison_after", "ok"])
    calls = Calls()

    await drain(database_url, batch_registry(calls, leased=True))

    assert await outcomes(db, LEASED_TYPE) == [DONE, DONE, DONE]
    assert await errors(db, LEASED_TYPE) == []
    assert len(calls.given) == 1


async def test_handle_many__poison_item_fails_alone_on_the_locked_path(
    db: asyncpg.Connection, database_url: str
) -> None:
    await register_batch_types(db, max_attempts=2, backoff_base_seconds=0.01)
    ids = await insert_events(db, LOCKED_TYPE, ["ok", "ok", "poison", "ok", "ok"])
    calls = Calls()

    await drain(database_url, batch_registry(calls, leased=False))

    assert calls.given[0] == [(event_id, 1) for event_id in ids]
    # Its neighbours' writes in the calls that raised rolled back: one effect each.
    assert await outcomes(db, LOCKED_TYPE) == [DONE, DONE, ("dead", 2, 0, 2, 0), DONE, DONE]
    message = "RuntimeError: poison: the batch call raised"
    assert await errors(db, LOCKED_TYPE) == [
        (ids[2], 1, "error", message),
        (ids[2], 2, "critical", message),
    ]


async def test_handle_many__outcomes_given_beside_a_poison_item_are_recorded_once(
    db: asyncpg.Connection, database_url: str
) -> None:
    await register_batch_types(db)
    ids = await insert_events(db, LOCKED_TYPE, ["fail", "ok", "poison"])
    calls = Calls()

    async with running(database_url, batch_registry(calls, leased=False)):
        await eventually(settled(db))

    # One call for all three raised; one call each then pinned it on the poison, which rolled
    # back the failure recorded in the first of them; the events before the poison ran again.
    a, b, c = ((event_id, 1) for event_id in ids)
    assert calls.given == [[a, b, c], [a], [b], [c], [a], [b]]
    failed = ("failed", 1, 0, 1, 0)  # one error row each, not two
    assert await outcomes(db, LOCKED_TYPE) == [failed, DONE, failed]
    assert [error[:2] for error in await errors(db, LOCKED_TYPE)] == [(ids[0], 1), (ids[2], 1)]


@pytest.mark.parametrize("leased", PATHS)
async def test_handle_many__asking_for_the_completing_transaction_inside_it_does_not_hang(
    db: asyncpg.Connection, database_url: str, leased: bool
) -> None:
    await register_batch_types(db)
    event_type = LEASED_TYPE if leased else LOCKED_TYPE
    await insert_events(db, event_type, ["nested", "ok"])
    calls = Calls()

    async with running(database_url, batch_registry(calls, leased=leased)):
        # Deps.completing_transaction is re-entrant; BatchDeps' must at least not wait on
        # the row locks of its own outer transaction: the call ends, one way or the other.
        await eventually(settled(db), timeout=5)

    assert await db.fetchval(PROCESSING) == 0


async def test_handle_many__swallowed_sql_error_is_pinned_on_its_item_on_the_locked_path(
    db: asyncpg.Connection, database_url: str
) -> None:
    await register_batch_types(db, max_attempts=1)
    ids = await insert_events(db, LOCKED_TYPE, ["ok", "swallow", "ok"])
    calls = Calls()

    await drain(database_url, batch_registry(calls, leased=False), timeout=10)

    # The whole call's writes went with its broken transaction; run again one event per call,
    # only the swallowing one fails.
    assert calls.given[0] == [(event_id, 1) for event_id in ids]
    assert await outcomes(db, LOCKED_TYPE) == [DONE, ("dead", 1, 0, 1, 0), DONE]


@pytest.mark.parametrize("leased", PATHS)
async def test_handle_many__malformed_item_is_dead_lettered_alone(
    db: asyncpg.Connection, database_url: str, leased: bool
) -> None:
    await register_batch_types(db)
    event_type = LEASED_TYPE if leased else LOCKED_TYPE
    ids = await insert_events(db, event_type, ["ok", "no such plan", "ok"])
    calls = Calls()

    await drain(database_url, batch_registry(calls, leased=leased))

    # (The locked path leaves the events after a refused one to the next claim.)
    assert sorted(event_id for held in calls.held for event_id in held) == [ids[0], ids[2]]
    assert await outcomes(db, event_type) == [DONE, ("dead", 1, 0, 1, 0), DONE]
    error = (await errors(db, event_type))[0]
    assert error[:3] == (ids[1], 1, "critical")
    assert f"payload of {event_type} event {ids[1]} is invalid: plan:" in error[3]


def item(event_id: int, run_id: int, correlation_id: str | None) -> Item[BatchPayload]:
    info = EventInfo(event_id, LOCKED_TYPE, 1, run_id, None, correlation_id)
    return Item(BatchPayload(id=event_id), info)


async def test_batch_tx__fetch_each_returns_every_statements_rows_with_its_items_lineage(
    db: asyncpg.Connection,
) -> None:
    first, second = item(101, 7001, "corr-1"), item(102, 102, None)

    async with db.transaction():
        rows = await BatchTx(db, [first, second]).fetch_each(
            ADD_CHILD_RETURNING, [(first, "first"), (second, "second")]
        )

    assert [row["name"] for row in rows] == ["first", "second"]
    assert [tuple(row) for row in await db.fetch(CHILDREN)] == [
        (101, 7001, "corr-1", "first"),
        (102, 102, None, "second"),
    ]


async def test_batch_tx__refuses_a_per_item_statement_that_does_not_set_its_lineage(
    db: asyncpg.Connection,
) -> None:
    orphan = item(101, 101, None)
    tx = BatchTx(db, [orphan])

    with pytest.raises(ValueError, match=re.escape(ITEM_CONTEXT)):
        await tx.for_each(ADD_CHILD_WITHOUT_LINEAGE, [(orphan, "orphan")])
    with pytest.raises(ValueError, match=re.escape(ITEM_CONTEXT)):
        await tx.fetch_each(ADD_CHILD_WITHOUT_LINEAGE, [(orphan, "orphan")])

    assert await db.fetchval(CHILD_ITEMS) == 0


async def test_batch_tx__refuses_a_row_that_does_not_start_with_its_item(
    db: asyncpg.Connection,
) -> None:
    tx = BatchTx(db, [item(101, 101, None)])

    with pytest.raises(TypeError, match="starts with its Item, not str"):
        await tx.for_each(ADD_CHILD_RETURNING, [("orphan",)])

    assert await db.fetchval(CHILD_ITEMS) == 0


async def test_reserve_each__books_every_call_at_once_when_all_fit(
    db: asyncpg.Connection,
) -> None:
    booked = await reserve_each(db, BUDGET, Decimal("0.25"), 4)

    assert booked == (4, None)
    assert await db.fetchval(USED, BUDGET) == Decimal("1.00")


async def test_reserve_each__books_what_fits_one_by_one_and_returns_the_refusal(
    db: asyncpg.Connection,
) -> None:
    await db.execute(SET_USED, BUDGET, Decimal("99.50"))

    booked, refused = await reserve_each(db, BUDGET, Decimal("0.20"), 5)

    assert booked == 2
    assert refused is not None
    assert (refused.used, refused.requested) == (Decimal("99.90"), Decimal("0.20"))
    assert await db.fetchval(USED, BUDGET) == Decimal("99.90")


async def test_reserve_each__a_single_call_that_does_not_fit_books_nothing(
    db: asyncpg.Connection,
) -> None:
    await db.execute(SET_USED, BUDGET, Decimal("99.90"))

    booked, refused = await reserve_each(db, BUDGET, Decimal("0.20"), 1)

    assert booked == 0
    assert refused is not None
    assert (refused.used, refused.requested) == (Decimal("99.90"), Decimal("0.20"))
    assert await db.fetchval(USED, BUDGET) == Decimal("99.90")


async def test_reserve_each__no_calls_book_nothing(db: asyncpg.Connection) -> None:
    assert await reserve_each(db, BUDGET, Decimal("0.20"), 0) == (0, None)
    assert await db.fetchval(USED, BUDGET) == Decimal(0)
