"""slots_created: contact enrichment, seed 004 §9's waterfall over the company's slots.

Claims the company for this event (two events for one company never pay providers twice: the
second waits a moment and finds the work done); reads its slots that are due — open with no
retry pending, or waiting for an asynchronous run — and runs each through the waterfall
(cascade/enrichment/waterfall.py) with no transaction open. A slot handed to Apify is marked
waiting in a short write of its own *before* the run starts, so a webhook that answers at once
finds it. Every provider attempt is recorded. Then, in the completing transaction, the slots
are locked and each pass's outcome is written only where the slot is still as the pass left it
(cascade/enrichment/slots.py): a filled slot gets its contact in marketing.contact_enrichment
(whose trigger emits contact_enriched), a deferred one is asked again at retry_at (the trigger
schedules it), and one nobody could fill ends `unfilled` with the reason.
Idempotent: one contact per slot (unique slot_id) and compare-and-set writes; provider calls
carry idempotency keys made of the event, slot and provider.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import LiteralString

from pydantic import BaseModel

from cascade import budgets
from cascade.enrichment import slots
from cascade.enrichment.services import Enrichment
from cascade.enrichment.waterfall import Advance, Company, Waterfall
from cascade.handling import Deps, RetryLater

EVENT_TYPE = "slots_created"
EXTERNAL = True

# How soon an event that found its company claimed by another event looks again.
CLAIMED_RETRY_SECONDS = 2.0
BUDGET = "enrichment_budget"
COMPANY_EXISTS: LiteralString = "SELECT EXISTS (SELECT FROM marketing.company_master WHERE id = $1)"


class Payload(BaseModel, frozen=True):
    company_id: int
    reason: str = "created"


async def handle(payload: Payload, deps: Deps) -> None:
    enrichment = deps.resource(Enrichment)
    async with deps.connection() as conn:
        row = await conn.fetchrow(slots.CLAIM_COMPANY, payload.company_id, deps.event.id)
        if row is None:
            if await conn.fetchval(COMPANY_EXISTS, payload.company_id):
                raise RetryLater(CLAIMED_RETRY_SECONDS, "another event is enriching the company")
            return  # the company is gone
        due = [slots.slot_from(r) for r in await conn.fetch(slots.READ_SLOTS, payload.company_id)]

    async def spend(amount: Decimal) -> None:
        if amount > 0:
            async with deps.connection() as conn:
                await budgets.reserve(conn, BUDGET, amount)

    async def refund(amount: Decimal) -> None:
        if amount > 0:
            async with deps.connection() as conn:
                await budgets.refund(conn, BUDGET, amount)

    company = Company(payload.company_id, row["company_name"], row["domain"], row["country"])
    waterfall = Waterfall(
        enrichment.settings, enrichment.providers, (spend, refund), slots.SlotLedger(deps), _now
    )
    # Every pass runs to its end, even when another fails, so that no provider is still being
    # paid after this event has let go of the company, and every attempt made is recorded.
    passes = await asyncio.gather(
        *(waterfall.advance(company, slot, deps.idempotency_key) for slot in due),
        return_exceptions=True,
    )
    advances = [step for step in passes if isinstance(step, Advance)]
    async with deps.connection() as conn:
        await conn.executemany(
            slots.RECORD_ATTEMPT,
            [
                (a.provider, a.mode, company.id, s.slot.id, deps.event.id, a.phase, a.status,
                 a.confidence, a.cost, a.latency_ms, a.external_id, a.detail)
                for s in advances
                for a in s.attempts
            ],
        )  # fmt: skip
    failures = [error for error in passes if isinstance(error, BaseException)]
    if failures:
        raise failures[0]  # retried; the passes that succeeded are redone from their slots' state
    waiting = [s.deadline_in for s in due if s.deadline_in is not None and s.deadline_in > 0]
    if payload.reason == "deadline" and waiting and not advances:
        # Scheduled by the database's clock, run a little early by ours: come back on time.
        raise RetryLater(min(waiting), "the run's deadline has not passed yet")
    async with deps.completing_transaction() as tx:
        if advances:
            await slots.write_back(tx, company, advances)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
