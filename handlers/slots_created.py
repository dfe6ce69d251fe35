"""slots_created: contact enrichment, seed 004 §9's waterfall over a batch of companies' slots.

Claims each company for its event (two events for one company never pay providers twice: the
second waits a moment and finds the work done); reads the companies' slots that are due —
open with no retry pending, or waiting for an asynchronous run — and runs every slot through
the waterfall (cascade/enrichment/waterfall.py) at once, with no transaction open. A slot
handed to Apify is marked waiting in a short write of its own *before* the run starts, so a
webhook that answers at once finds it. Every provider attempt is recorded. Then, in the
completing transaction, the slots are locked and each pass's outcome is written only where
the slot is still as the pass left it (cascade/enrichment/slots.py): a filled slot gets its
contact in marketing.contact_enrichment (whose trigger emits contact_enriched), a deferred one
is asked again at retry_at (the trigger schedules it), and one nobody could fill ends
`unfilled` with the reason. An event whose passes failed writes nothing and is retried; its
company's slots are redone from their state.
Idempotent: one contact per slot (unique slot_id) and compare-and-set writes; provider calls
carry idempotency keys made of the event, slot and provider.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel

from cascade import budgets
from cascade.enrichment import slots
from cascade.enrichment.services import Enrichment
from cascade.enrichment.waterfall import Advance, Company, Slot, Waterfall
from cascade.handling import BatchDeps, Item

EVENT_TYPE = "slots_created"
EXTERNAL = True

# How soon an event that found its company claimed by another event looks again.
CLAIMED_RETRY_SECONDS = 2.0
BUDGET = "enrichment_budget"


class Payload(BaseModel, frozen=True):
    company_id: int
    reason: str = "created"


async def handle_many(items: Sequence[Item[Payload]], deps: BatchDeps) -> None:
    enrichment = deps.resource(Enrichment)
    ordered = sorted(items, key=lambda item: item.payload.company_id)  # the lock order
    company_ids = [item.payload.company_id for item in ordered]
    async with deps.connection() as conn:
        rows = await conn.fetch(
            slots.CLAIM_COMPANIES, company_ids, [item.event.id for item in ordered]
        )
        claimed = {id(ordered[row["n"] - 1]): row for row in rows}
        due: dict[int, list[Slot]] = {}
        for row in await conn.fetch(slots.READ_SLOTS, [row["company_id"] for row in rows]):
            due.setdefault(row["company_id"], []).append(slots.slot_from(row))
        unclaimed = [item for item in ordered if id(item) not in claimed]
        if unclaimed:
            ids = [item.payload.company_id for item in unclaimed]
            existing = {r["id"] for r in await conn.fetch(slots.COMPANIES_THAT_EXIST, ids)}
            for item in unclaimed:
                if item.payload.company_id in existing:  # else gone: nothing to do
                    item.retry_later(CLAIMED_RETRY_SECONDS, "another event is enriching it")

    async def spend(amount: Decimal) -> None:
        if amount > 0:
            async with deps.connection() as conn:
                await budgets.reserve(conn, BUDGET, amount)

    async def refund(amount: Decimal) -> None:
        if amount > 0:
            async with deps.connection() as conn:
                await budgets.refund(conn, BUDGET, amount)

    work = [
        (
            item,
            Company(found["company_id"], found["company_name"], found["domain"], found["country"]),
        )
        for item in ordered
        if (found := claimed.get(id(item))) is not None
    ]
    waterfalls = {
        id(item): Waterfall(enrichment.settings, enrichment.providers, (spend, refund),
                            slots.SlotLedger(functools.partial(deps.separate_transaction, item)),
                            _now)
        for item, _ in work
    }  # fmt: skip
    # Every pass runs to its end, even when another fails, so that no provider is still being
    # paid after this event has let go of the company, and every attempt made is recorded.
    passes = await asyncio.gather(
        *(waterfalls[id(item)].advance(company, slot, item.idempotency_key)
          for item, company in work for slot in due.get(company.id, ()))
    , return_exceptions=True)  # fmt: skip
    results = iter(passes)
    batch: list[slots.Passes] = []
    for item, company in work:
        mine = [next(results) for _ in due.get(company.id, ())]
        advances = [step for step in mine if isinstance(step, Advance)]
        batch.append(slots.Passes(item, company, advances))
        failures = [error for error in mine if isinstance(error, BaseException)]
        waiting = [
            s.deadline_in
            for s in due.get(company.id, ())
            if s.deadline_in is not None and s.deadline_in > 0
        ]
        if failures:
            item.fail(_exception(failures[0]))
        elif item.payload.reason == "deadline" and waiting and not advances:
            # Scheduled by the database's clock, run a little early by ours: come back on time.
            item.retry_later(min(waiting), "the run's deadline has not passed yet")
    attempts = [
        (a.provider, a.mode, p.company.id, s.slot.id, p.item.event.id, a.phase, a.status,
         a.confidence, a.cost, a.latency_ms, a.external_id, a.detail)
        for p in batch for s in p.advances for a in s.attempts
    ]  # fmt: skip
    if attempts:
        async with deps.connection() as conn:
            await conn.executemany(slots.RECORD_ATTEMPT, attempts)
    async with deps.completing_transaction() as tx:
        held = {id(item) for item in tx.held}
        await slots.write_back(tx, [p for p in batch if id(p.item) in held and p.advances])


def _exception(error: BaseException) -> Exception:
    if isinstance(error, Exception):
        return error
    raise error  # cancelled: the listener is stopping


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
