"""slots_created: contact enrichment, seed 004 §9's waterfall over the company's open slots.

Reads the company and its slots that are open, or waiting for an asynchronous run whose
deadline has passed; runs each through the waterfall (cascade/enrichment/waterfall.py) with no
transaction open, recording every provider attempt as it goes; then, in the completing
transaction, re-reads the slots under lock and writes back only those nobody else has moved
meanwhile (an Apify webhook, a second event for the same company): a filled slot gets its
contact in marketing.contact_enrichment (whose trigger emits contact_enriched), a slot handed
to Apify waits (the trigger emits a slots_created due at its deadline), a deferred one is asked
again at retry_at, and one nobody could fill ends `unfilled` with the reason.
Idempotent: one contact per slot (unique slot_id), and every write is conditional on the slot
being as it was read. Provider calls carry idempotency keys derived from the event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from typing import LiteralString

import asyncpg
from pydantic import BaseModel

from cascade import budgets
from cascade.enrichment.services import Enrichment
from cascade.enrichment.waterfall import (
    Advance,
    Awaiting,
    Company,
    Deferred,
    Filled,
    Slot,
    Unfilled,
    Waterfall,
)
from cascade.handling import Deps, Tx

EVENT_TYPE = "slots_created"
EXTERNAL = True

READ_COMPANY: LiteralString = """
    SELECT id, company_name, domain, country FROM marketing.company_master WHERE id = $1
"""
READ_SLOTS: LiteralString = """
    SELECT id, role, status, providers_tried, pending_provider, pending_run_id,
           pending_deadline, provider_failures
      FROM marketing.company_slots
     WHERE company_id = $1 AND status IN ('open', 'awaiting_provider')
     ORDER BY id
"""
RECORD_ATTEMPT: LiteralString = """
    INSERT INTO marketing.provider_attempts
        (purpose, provider, provider_mode, company_id, slot_id, event_id, phase, status,
         confidence, cost, latency_ms, external_id, detail)
    VALUES ('enrichment', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
"""
LOCK_SLOTS: LiteralString = """
    SELECT id, status, providers_tried, pending_run_id
      FROM marketing.company_slots WHERE id = ANY($1::bigint[])
     ORDER BY id FOR UPDATE  -- id order, as the Apify webhook locks them: no deadlock
"""
# One statement for all of the company's contacts and one for its slots: the slots' statement
# trigger then emits at most one event per company and reason (a deadline, a retry), never
# one per slot, so two events cannot race over the same company's slots.
ADD_CONTACTS: LiteralString = """
    INSERT INTO marketing.contact_enrichment
        (company_id, slot_id, role, full_name, first_name, last_name, title, company_name,
         email, email_type, linkedin_url, country, provider, provider_mode, confidence)
    SELECT slot.company_id, slot.id, slot.role, found.full_name, found.first_name,
           found.last_name, found.title, $2, found.email, found.email_type, found.linkedin_url,
           found.country, found.provider, found.provider_mode, found.confidence
      FROM unnest($1::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                  $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                  $13::numeric[])
           AS found(slot_id, full_name, first_name, last_name, title, email, email_type,
                    linkedin_url, country, provider, provider_mode, confidence)
      JOIN marketing.company_slots AS slot ON slot.id = found.slot_id
    ON CONFLICT (slot_id) DO NOTHING
    RETURNING id, slot_id
"""
SAVE_SLOTS: LiteralString = """
    UPDATE marketing.company_slots AS slot
       SET status = next.status,
           providers_tried = string_to_array(next.tried, ','),
           provider_failures = next.failures::jsonb,
           pending_provider = next.pending_provider,
           pending_run_id = next.pending_run_id,
           pending_deadline = next.pending_deadline,
           retry_at = next.retry_at,
           contact_id = next.contact_id,
           unfilled_reason = next.reason,
           updated_at = now(),
           finished_at = CASE WHEN next.status IN ('filled', 'unfilled') THEN now() END
      FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::timestamptz[], $8::timestamptz[], $9::bigint[], $10::text[])
           AS next(id, status, tried, failures, pending_provider, pending_run_id,
                   pending_deadline, retry_at, contact_id, reason)
     WHERE slot.id = next.id
"""


class Payload(BaseModel, frozen=True):
    company_id: int
    reason: str = "created"


async def handle(payload: Payload, deps: Deps) -> None:
    enrichment = deps.resource(Enrichment)
    async with deps.connection() as conn:
        row = await conn.fetchrow(READ_COMPANY, payload.company_id)
        slots = [_slot(r) for r in await conn.fetch(READ_SLOTS, payload.company_id)]
    if row is None or not slots:
        return  # the company is gone, or its slots are finished: nothing left to do

    async def spend(amount: Decimal) -> None:
        if amount:
            async with deps.connection() as conn:
                await budgets.reserve(conn, "enrichment_budget", amount)

    company = Company(row["id"], row["company_name"], row["domain"], row["country"])
    waterfall = Waterfall(enrichment.settings, enrichment.providers, spend, _now)
    passes = await asyncio.gather(
        *(waterfall.advance(company, slot, deps.idempotency_key) for slot in slots)
    )
    advances = [step for step in passes if step is not None]
    if not advances:
        return
    async with deps.connection() as conn:
        await conn.executemany(
            RECORD_ATTEMPT,
            [
                (a.provider, a.mode, company.id, s.slot.id, deps.event.id, a.phase, a.status,
                 a.confidence, a.cost, a.latency_ms, a.external_id, a.detail)
                for s in advances
                for a in s.attempts
            ],
        )  # fmt: skip
    async with deps.completing_transaction() as tx:
        await _write_back(tx, company, advances)


async def _write_back(tx: Tx, company: Company, advances: list[Advance]) -> None:
    current = {r["id"]: r for r in await tx.fetch(LOCK_SLOTS, [step.slot.id for step in advances])}
    unchanged = [step for step in advances if _unchanged(step, current.get(step.slot.id))]
    filled = [(s.slot.id, s.outcome) for s in unchanged if isinstance(s.outcome, Filled)]
    contacts: dict[int, int] = {}
    if filled:
        rows = await tx.fetch(
            ADD_CONTACTS,
            [slot_id for slot_id, _ in filled],
            company.name,
            *(
                list(column)
                for column in zip(*(_contact(f, company) for _, f in filled), strict=True)
            ),
        )
        contacts = {r["slot_id"]: r["id"] for r in rows}
    if unchanged:
        columns = zip(
            *(_slot_row(step, contacts.get(step.slot.id)) for step in unchanged), strict=True
        )
        await tx.execute(SAVE_SLOTS, *(list(column) for column in columns))


def _unchanged(step: Advance, now: asyncpg.Record | None) -> bool:
    """Whether the slot is as we read it; if not, it moved on while we asked the providers
    (an Apify webhook, another event) and its new state stands."""
    return now is not None and (
        now["status"],
        tuple(now["providers_tried"]),
        now["pending_run_id"],
    ) == (step.slot.status, step.slot.providers_tried, step.slot.pending_run_id)


def _contact(found: Filled, company: Company) -> tuple[object, ...]:
    person = found.candidate
    return (
        person.full_name, person.first_name, person.last_name, person.title, person.email,
        found.email_type, person.linkedin_url, person.country or company.country,
        found.provider, found.mode, round(Decimal(person.confidence), 3),
    )  # fmt: skip


def _slot_row(step: Advance, contact_id: int | None) -> tuple[object, ...]:
    outcome = step.outcome
    awaiting = outcome if isinstance(outcome, Awaiting) else None
    return (
        step.slot.id,
        _status(step),
        ",".join(step.tried),
        json.dumps(step.failures),
        awaiting.provider if awaiting else None,
        awaiting.run_id if awaiting else None,
        awaiting.deadline if awaiting else None,
        outcome.retry_at if isinstance(outcome, Deferred) else None,
        contact_id,
        outcome.reason if isinstance(outcome, Unfilled) else None,
    )


def _status(step: Advance) -> str:
    match step.outcome:
        case Filled():
            return "filled"
        case Awaiting():
            return "awaiting_provider"
        case Unfilled():
            return "unfilled"
        case Deferred():
            return "open"


def _slot(record: asyncpg.Record) -> Slot:
    return Slot(
        id=record["id"],
        role=record["role"],
        status=record["status"],
        providers_tried=tuple(record["providers_tried"]),
        pending_provider=record["pending_provider"],
        pending_run_id=record["pending_run_id"],
        pending_deadline=record["pending_deadline"],
        provider_failures=json.loads(record["provider_failures"]),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
