"""Batch handlers (`handle_many`) for the engine's tests, steered by each item's payload so that
one batch can hold every outcome a test wants to watch.

An item's `plan` says what the handler does with it: `ok` (done), `retry_later`, `fail`
(ValueError), `permanent` (PermanentFailure), `stolen` (its lease is rescued behind the
handler's back on its first attempt, then it is done), three poisons that make the whole
call raise: `poison_before` (before the completing transaction opens), `poison` (inside it,
after the writes) and `poison_after` (after it committed); `swallow`, which breaks the
transaction with a SQL error that the handler catches and keeps quiet about; and `nested`,
which asks for the completing transaction again inside it (as a helper that opens it
itself would, called from within it), then writes in the inner one. Every item the
completing transaction holds gets an effect in cascade_test.effects and a child row in
cascade_test.items, whose trigger emits a `test_item_created` event: counting effects counts
completions, and the children's lineage shows which item wrote them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal, LiteralString

import asyncpg
from pydantic import BaseModel

from cascade.handling import (
    BatchDeps,
    BatchHandle,
    BatchTx,
    Deps,
    Item,
    PermanentFailure,
    Registry,
)
from tests.support.handlers import ItemPayload, handler_module
from tests.support.waiting import eventually

LEASED_TYPE = "test_batch_leased"  # EXTERNAL: the lease path
LOCKED_TYPE = "test_batch_locked"  # the locked path
CHILD_TYPE = "test_item_created"  # emitted by every child row the handlers insert
RETRY_LATER_SECONDS = 3600.0  # far enough that a retried item stays put while a test looks

# The batch types' process keys: the listener refuses events whose step is not registered
# (tests/support/schema.sql registers the other test types the same way).
REGISTER_STEPS: LiteralString = """
    INSERT INTO marketing.shq_process_key_reference
        (unique_id, process_id, blueprint_version_hash, human_description, branch_id, step_name)
    VALUES ('99.00.01.01.00000.101', 'TEST-001', 'test', 'test step test_batch_leased',
            '99-test', 'test_batch_leased'),
           ('99.00.01.02.00000.102', 'TEST-001', 'test', 'test step test_batch_locked',
            '99-test', 'test_batch_locked')
"""
TYPE_SETTINGS: LiteralString = """
    INSERT INTO marketing.event_types
           (event_type, phase, description, max_attempts, backoff_base_seconds)
    SELECT t, 'test', 'test', $1, $2
      FROM unnest(ARRAY['test_batch_leased', 'test_batch_locked']) AS t
"""

# Per-item writes (BatchTx.for_each): $1-$3 are the item's lineage.
RECORD_EFFECT_EACH: LiteralString = """
    INSERT INTO cascade_test.effects
           (event_id, event_type, item_id, attempt, pid, started, finished)
    SELECT $4, $5, $6, $7, $8, $9, $10
     WHERE marketing.set_event_context($1, $2, $3)
"""
ADD_CHILD_EACH: LiteralString = """
    INSERT INTO cascade_test.items (name)
    SELECT $4 WHERE marketing.set_event_context($1, $2, $3)
"""

# A rescue as another listener's housekeeping would do it, in one transaction: the row lock
# taken by the UPDATE keeps this listener's heartbeat (SKIP LOCKED) from renewing the lease
# between the expiry and the rescue.
EXPIRE_LEASES: LiteralString = """
    UPDATE marketing.pipeline_events
       SET lease_expires_at = clock_timestamp() - interval '1 second'
     WHERE id = ANY ($1::bigint[])
"""
BREAK_THE_TRANSACTION: LiteralString = "SELECT 1 / 0"
RESCUE_EXPIRED: LiteralString = "SELECT marketing.rescue_expired_leases()"
# The rescued events are leased again (by this same listener: same owner, next attempt).
LEASED_AGAIN: LiteralString = """
    SELECT count(*) = cardinality($1::bigint[]) FROM marketing.pipeline_events
     WHERE id = ANY ($1::bigint[]) AND attempts >= 2
"""

Plan = Literal[
    "ok",
    "retry_later",
    "fail",
    "permanent",
    "stolen",
    "poison_before",
    "poison",
    "poison_after",
    "swallow",
    "nested",
]


class BatchPayload(BaseModel, frozen=True):
    id: int
    plan: Plan = "ok"


@dataclass
class Calls:
    """What each handle_many call was given ((event id, attempt) per item) and which event ids
    its completing transaction held, in call order; each call's items sorted by event id (a
    lease claim hands them over in no particular order)."""

    given: list[list[tuple[int, int]]] = field(default_factory=list)
    held: list[list[int]] = field(default_factory=list)


def batch_module(event_type: str, handle_many: BatchHandle, *, external: bool) -> ModuleType:
    """A batch handler module made in code (handle_many instead of handle)."""
    module = ModuleType(f"tests.support.batch_handlers.{event_type}")
    module.EVENT_TYPE = event_type  # type: ignore[attr-defined]
    module.Payload = BatchPayload  # type: ignore[attr-defined]
    module.handle_many = handle_many  # type: ignore[attr-defined]
    module.EXTERNAL = external  # type: ignore[attr-defined]
    return module


def batch_registry(calls: Calls, *, leased: bool) -> Registry:
    """The planned batch handler on the lease path (`leased`) or the locked path, and a no-op
    handler for the children its writes emit."""
    event_type = LEASED_TYPE if leased else LOCKED_TYPE
    return Registry(
        (
            batch_module(event_type, planned(calls), external=leased),
            handler_module(CHILD_TYPE, ignore_child, ItemPayload),
        )
    )


async def register_batch_types(
    conn: asyncpg.Connection, *, max_attempts: int = 5, backoff_base_seconds: float = 3600.0
) -> None:
    """Registers the batch types' steps and retry settings; by default a failed item waits an
    hour for its retry, so a test sees the state its first attempt left."""
    await conn.execute(REGISTER_STEPS)
    await conn.execute(TYPE_SETTINGS, max_attempts, backoff_base_seconds)


async def ignore_child(item: ItemPayload, deps: Deps) -> None:
    """Children only need to exist (and carry their lineage)."""


def planned(calls: Calls) -> BatchHandle:
    """The batch handler: every item as its plan says (see the module docstring)."""

    async def handle_many(items: Sequence[Item[BatchPayload]], deps: BatchDeps) -> None:
        calls.given.append(sorted((item.event.id, item.event.attempt) for item in items))
        for item in items:
            give_planned_outcome(item)
        stolen = [
            item.event.id
            for item in items
            if item.payload.plan == "stolen" and item.event.attempt == 1
        ]
        if stolen:
            await rescue_behind_our_back(deps, stolen)
        raise_if_poisoned(items, "poison_before")
        async with deps.completing_transaction() as tx:
            calls.held.append(sorted(item.event.id for item in tx.held))
            if any(item.payload.plan == "nested" for item in items):
                async with deps.completing_transaction() as inner:
                    await write_effects(inner)
            else:
                await write_effects(tx)
            if any(item.payload.plan == "swallow" for item in items):
                with contextlib.suppress(asyncpg.DivisionByZeroError):
                    await tx.execute(BREAK_THE_TRANSACTION)
            raise_if_poisoned(items, "poison")
        raise_if_poisoned(items, "poison_after")

    return handle_many


def give_planned_outcome(item: Item[BatchPayload]) -> None:
    number = item.payload.id
    match item.payload.plan:
        case "retry_later":
            item.retry_later(RETRY_LATER_SECONDS, f"item {number} is not ready")
        case "fail":
            item.fail(ValueError(f"item {number} is malformed"))
        case "permanent":
            item.fail(PermanentFailure(f"item {number} can never work"))
        case _:
            pass


def raise_if_poisoned(items: Sequence[Item[BatchPayload]], poison: Plan) -> None:
    if any(item.payload.plan == poison for item in items):
        raise RuntimeError(f"{poison}: the batch call raised")


async def rescue_behind_our_back(deps: BatchDeps, event_ids: list[int]) -> None:
    """Another listener's rescue takes these leases; then wait until this listener has leased
    them again (next attempt, same owner), the case only the attempt check can tell apart."""
    async with deps.connection() as conn:
        async with conn.transaction():
            await conn.execute(EXPIRE_LEASES, event_ids)
            await conn.fetchval(RESCUE_EXPIRED)

        async def leased_again() -> bool:
            return bool(await conn.fetchval(LEASED_AGAIN, event_ids))

        await eventually(leased_again, timeout=5)


async def write_effects(tx: BatchTx) -> None:
    """An effect and a child row for every item the transaction holds, each with its lineage."""
    now = time.time()
    held: Sequence[Item[BatchPayload]] = tx.held
    await tx.for_each(
        RECORD_EFFECT_EACH,
        [
            (item, item.event.id, item.event.event_type, item.payload.id, item.event.attempt,
             os.getpid(), now, now)
            for item in held
        ],
    )  # fmt: skip
    await tx.for_each(ADD_CHILD_EACH, [(item, f"child of event {item.event.id}") for item in held])
