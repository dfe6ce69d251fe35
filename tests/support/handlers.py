"""Small handlers for the engine's tests, driven by the data they read so that a listener in a
subprocess (`--handlers tests.support.handlers:ITEMS`) behaves the way a test arranged.

Each records its effect in cascade_test.effects inside its completing transaction, so a test
can count effects per event: exactly one each is exactly-once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, LiteralString

from pydantic import BaseModel

from cascade.handling import Deps, Registry

RECORD_EFFECT: LiteralString = """
    INSERT INTO cascade_test.effects
           (event_id, event_type, item_id, attempt, pid, started, finished)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
ADVANCE: LiteralString = "UPDATE cascade_test.items SET stage = $2 WHERE id = $1"

PROVIDER_URL_ENV = "CASCADE_TEST_PROVIDER_URL"


class ItemPayload(BaseModel, frozen=True):
    id: int
    stage: int = 0
    sleep_ms: int = 0
    fail_until_attempt: int = 0


Handle = Callable[[Any, Deps], Awaitable[None]]


def handler_module(
    event_type: str,
    handle: Handle,
    payload: type[BaseModel] = ItemPayload,
    *,
    external: bool = False,
) -> ModuleType:
    """A handler module made in code: tests need many small ones."""
    module = ModuleType(f"tests.support.handlers.{event_type}")
    module.EVENT_TYPE = event_type  # type: ignore[attr-defined]
    module.Payload = payload  # type: ignore[attr-defined]
    module.handle = handle  # type: ignore[attr-defined]
    module.EXTERNAL = external  # type: ignore[attr-defined]
    return module


async def record_effect(
    deps: Deps, item: ItemPayload, started: float, next_stage: int | None
) -> None:
    async with deps.completing_transaction() as tx:
        event = deps.event
        await tx.execute(
            RECORD_EFFECT,
            event.id,
            event.event_type,
            item.id,
            event.attempt,
            os.getpid(),
            started,
            time.time(),
        )
        if next_stage is not None:
            await tx.execute(ADVANCE, item.id, next_stage)


def stage(next_stage: int | None) -> Handle:
    """Sleeps `sleep_ms`, fails until `fail_until_attempt`, records, advances the item."""

    async def handle(item: ItemPayload, deps: Deps) -> None:
        started = time.time()
        if item.sleep_ms:
            await asyncio.sleep(item.sleep_ms / 1000)
        if deps.event.attempt <= item.fail_until_attempt:
            raise RuntimeError(f"planned failure on attempt {deps.event.attempt}")
        await record_effect(deps, item, started, next_stage)

    return handle


async def call_provider(item: ItemPayload, deps: Deps) -> None:
    """An external handler: POSTs to the test provider with the idempotency key, with no
    transaction open, then records its effect under the lease."""
    started = time.time()
    response = await deps.http.post(
        os.environ[PROVIDER_URL_ENV],
        json={"item_id": item.id, "sleep_ms": item.sleep_ms},
        headers={"Idempotency-Key": deps.idempotency_key},
    )
    response.raise_for_status()
    await record_effect(deps, item, started, None)


ITEM_STAGES = (
    handler_module("test_item_created", stage(1)),
    handler_module("test_item_stage1", stage(2)),
    handler_module("test_item_stage2", stage(None)),
)

# The three-stage item cascade, all database handlers.
ITEMS = Registry(ITEM_STAGES)
# The same cascade with an external first stage and a concurrency-limited database stage.
LIMITED = Registry((handler_module("test_limited", stage(None)),))
EXTERNAL = Registry((handler_module("test_external", call_provider, external=True),))
