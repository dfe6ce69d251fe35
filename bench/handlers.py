"""The benchmarks' handler registries, built in code the way tests/support/handlers.py builds
the tests' (a registry of modules with EVENT_TYPE, Payload and `async def handle`).

All are database handlers, so they run on the locked path: claimed 100 at a time with SKIP
LOCKED and run inside the claiming transaction.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, LiteralString

from pydantic import BaseModel

from cascade.handling import Deps, Registry

# Stage k of the five-stage cascade: its trigger emits stage k + 1 (bench/schema.sql).
ADVANCE: LiteralString = "UPDATE bench.items SET stage = $2 WHERE id = $1"

STAGES = 5


class Row(BaseModel, frozen=True):
    """The emitted row: marketing.emit_event sends to_jsonb(NEW); only the id is read."""

    id: int


Handle = Callable[[Any, Deps], Awaitable[None]]


class FirstCall:
    """When the first handler of a drain started (time.perf_counter()): the throughput
    scenarios time a drain from its first event, not from the listener's startup."""

    def __init__(self) -> None:
        self.at: float | None = None

    def mark(self) -> None:
        if self.at is None:
            self.at = time.perf_counter()


FIRST_CALL = FirstCall()


def handler_module(event_type: str, handle: Handle) -> ModuleType:
    module = ModuleType(f"bench.handlers.{event_type}")
    module.EVENT_TYPE = event_type  # type: ignore[attr-defined]
    module.Payload = Row  # type: ignore[attr-defined]
    module.handle = handle  # type: ignore[attr-defined]
    return module


async def do_nothing(row: Row, deps: Deps) -> None:
    """Returns at once: the event is done when the batch commits."""
    FIRST_CALL.mark()


def advance_to(stage: int) -> Handle:
    """Stage `stage`'s handler: one UPDATE in the completing transaction."""

    async def handle(row: Row, deps: Deps) -> None:
        FIRST_CALL.mark()
        async with deps.completing_transaction() as tx:
            await tx.execute(ADVANCE, row.id, stage)

    return handle


# When each ping's handler started (time.time()), by ping id: the latency scenario's clock.
PING_STARTS: dict[int, float] = {}


async def record_start(row: Row, deps: Deps) -> None:
    PING_STARTS[row.id] = time.time()


NOOP = Registry((handler_module("bench_noop", do_nothing),))
CASCADE = Registry(
    handler_module(f"bench_stage_{stage}", advance_to(stage)) for stage in range(1, STAGES + 1)
)
PINGS = Registry((handler_module("bench_ping", record_start),))
# For `cascade listen --handlers bench.handlers:LEADS` in the writers' scenario.
LEADS = Registry((handler_module("bench_lead_created", do_nothing),))
