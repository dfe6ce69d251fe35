"""The role slots in the database, as the enrichment stage (handlers/slots_created.py) and the
Apify webhook (cascade/web/apify.py) both write them.

Every write is a compare-and-set on the state the writer last saw (status, providers_tried,
pending run), so whichever of the handler, a webhook or another event moves a slot first, the
others leave it alone. Slots are locked in id order everywhere, so no two writers deadlock.
A company's slots are written in one statement each, so the slots' statement trigger emits at
most one event per company and reason, never one per slot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, LiteralString

import asyncpg

from cascade.enrichment.waterfall import (
    Advance,
    Awaiting,
    Company,
    Deferred,
    Filled,
    Moved,
    Slot,
    SlotState,
    Unfilled,
)
from cascade.handling import BatchTx, Item, Tx

# Each company is enriched by one event alone (marketing.claim_company_enrichment, in
# triggers/300_enrichment.sql): two events for one company would otherwise pay providers twice.
# $1 the companies, in id order (the order their rows are locked in), $2 each one's event;
# `n` is the position (from 1) of a pair whose event got its company (one event per company).
CLAIM_COMPANIES: LiteralString = """
    SELECT batch.n, batch.company_id, claimed.company_name, claimed.domain, claimed.country
      FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS batch(company_id, event_id, n)
     CROSS JOIN LATERAL marketing.claim_company_enrichment(batch.company_id, batch.event_id)
           AS claimed
     ORDER BY batch.n
"""
COMPANIES_THAT_EXIST: LiteralString = """
    SELECT id FROM marketing.company_master WHERE id = ANY ($1::bigint[])
"""
# Open slots that are due (no retry_at in the future) and slots waiting for a run, with the
# run's deadline measured by the database's clock, the one that scheduled the deadline event.
READ_SLOTS: LiteralString = """
    SELECT company_id, id, role, status, providers_tried, pending_provider, pending_run_id,
           extract(epoch FROM pending_deadline - now())::float8 AS deadline_in,
           provider_failures
      FROM marketing.company_slots
     WHERE company_id = ANY ($1::bigint[])
       AND (status = 'awaiting_provider'
            OR (status = 'open' AND (retry_at IS NULL OR retry_at <= now())))
     ORDER BY id
"""
RECORD_ATTEMPT: LiteralString = """
    INSERT INTO marketing.provider_attempts
        (purpose, provider, provider_mode, company_id, slot_id, event_id, phase, status,
         confidence, cost, latency_ms, external_id, detail)
    VALUES ('enrichment', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
"""
HAND_OFF: LiteralString = """
    UPDATE marketing.company_slots
       SET status = 'awaiting_provider', providers_tried = $5, provider_failures = $6::jsonb,
           pending_provider = $7, pending_run_id = $8,
           pending_deadline = now() + make_interval(secs => $9), retry_at = NULL,
           updated_at = now()
     WHERE id = $1 AND status = $2 AND providers_tried = $3
       AND pending_run_id IS NOT DISTINCT FROM $4
    RETURNING id
"""
RUN_STARTED: LiteralString = """
    UPDATE marketing.company_slots SET pending_run_id = $3, updated_at = now()
     WHERE id = $1 AND pending_run_id = $2
    RETURNING id
"""
TAKE_BACK: LiteralString = """
    UPDATE marketing.company_slots
       SET status = 'open', providers_tried = $3, provider_failures = $4::jsonb,
           pending_provider = NULL, pending_run_id = NULL, pending_deadline = NULL,
           updated_at = now()
     WHERE id = $1 AND pending_run_id = $2
    RETURNING id
"""
LOCK_SLOTS: LiteralString = """
    SELECT id, status, providers_tried, pending_run_id
      FROM marketing.company_slots WHERE id = ANY($1::bigint[])
     ORDER BY id FOR UPDATE
"""
# One company's contacts, with its event's lineage ($1-$3, handling.BatchTx.fetch_each): the
# insert emits contact_enriched for each.
ADD_CONTACTS: LiteralString = """
    INSERT INTO marketing.contact_enrichment
        (company_id, slot_id, role, full_name, first_name, last_name, title, company_name,
         email, email_type, linkedin_url, country, provider, provider_mode, confidence)
    SELECT slot.company_id, slot.id, slot.role, found.full_name, found.first_name,
           found.last_name, found.title, $5, found.email, found.email_type, found.linkedin_url,
           found.country, found.provider, found.provider_mode, found.confidence
      FROM unnest($4::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                  $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                  $16::numeric[])
           AS found(slot_id, full_name, first_name, last_name, title, email, email_type,
                    linkedin_url, country, provider, provider_mode, confidence)
      JOIN marketing.company_slots AS slot ON slot.id = found.slot_id
     WHERE marketing.set_event_context($1, $2, $3)
    ON CONFLICT (slot_id) DO NOTHING
    RETURNING id, slot_id
"""
# The contacts of slots that had one already (ADD_CONTACTS' ON CONFLICT: a slot re-opened by
# hand after it was filled keeps its person).
SLOT_CONTACTS: LiteralString = """
    SELECT id, slot_id FROM marketing.contact_enrichment WHERE slot_id = ANY($1::bigint[])
"""
# One company's slots, with its event's lineage ($1-$3, handling.BatchTx.for_each): the
# slots' statement trigger schedules a deferred slot's retry.
SAVE_SLOTS: LiteralString = """
    UPDATE marketing.company_slots AS slot
       SET status = next.status,
           providers_tried = string_to_array(next.tried, ','),
           provider_failures = next.failures::jsonb,
           pending_provider = NULL, pending_run_id = NULL, pending_deadline = NULL,
           retry_at = next.retry_at,
           contact_id = next.contact_id,
           unfilled_reason = next.reason,
           updated_at = now(),
           finished_at = CASE WHEN next.status IN ('filled', 'unfilled') THEN now() END
      FROM unnest($4::bigint[], $5::text[], $6::text[], $7::text[], $8::timestamptz[],
                  $9::bigint[], $10::text[])
           AS next(id, status, tried, failures, retry_at, contact_id, reason)
     WHERE slot.id = next.id AND marketing.set_event_context($1, $2, $3)
"""


def slot_from(record: asyncpg.Record) -> Slot:
    return Slot(
        id=record["id"],
        role=record["role"],
        status=record["status"],
        providers_tried=tuple(record["providers_tried"]),
        pending_provider=record["pending_provider"],
        pending_run_id=record["pending_run_id"],
        deadline_in=record["deadline_in"],
        provider_failures=json.loads(record["provider_failures"]),
    )


class SlotLedger:
    """The waterfall's RunLedger: each write a short transaction of its own (never one held
    across the provider call), with the lineage of the event whose pass it is."""

    def __init__(self, transaction: Callable[[], AbstractAsyncContextManager[Tx]]) -> None:
        self.transaction = transaction

    async def hand_off(
        self, slot_id: int, expected: SlotState, tried: list[str], failures: dict[str, int],
        provider: str, placeholder: str, timeout: float,
    ) -> bool:  # fmt: skip
        status, expected_tried, pending = expected
        return await self._changed(
            HAND_OFF, slot_id, status, list(expected_tried), pending, tried,
            json.dumps(failures), provider, placeholder, timeout,
        )  # fmt: skip

    async def started(self, slot_id: int, placeholder: str, run_id: str) -> bool:
        return await self._changed(RUN_STARTED, slot_id, placeholder, run_id)

    async def take_back(
        self, slot_id: int, placeholder: str, tried: list[str], failures: dict[str, int]
    ) -> bool:
        return await self._changed(TAKE_BACK, slot_id, placeholder, tried, json.dumps(failures))

    async def _changed(self, query: LiteralString, *args: object) -> bool:
        async with self.transaction() as tx:  # its events are this event's children
            return await tx.fetchval(query, *args) is not None


@dataclass(frozen=True, slots=True)
class Passes:
    """What one event's passes did to its company's slots, to be written back."""

    item: Item[Any]
    company: Company
    advances: list[Advance]


async def write_back(tx: BatchTx, batch: list[Passes]) -> None:
    """Saves each pass's outcome for the slots still as the pass last left them: one lock of
    every slot of the batch (in id order), then each company's contacts and slots in one
    pipelined round trip each, every statement with its own event's lineage."""
    slot_ids = [step.slot.id for passes in batch for step in passes.advances]
    if not slot_ids:
        return
    current = {r["id"]: r for r in await tx.fetch(LOCK_SLOTS, slot_ids)}
    saved = [
        (passes, [
            step for step in passes.advances
            if not isinstance(step.outcome, Awaiting | Moved)  # written already, or not ours
            and _state(current.get(step.slot.id)) == step.expected
        ])
        for passes in batch
    ]  # fmt: skip
    contacts = await _add_contacts(tx, saved)
    await tx.for_each(SAVE_SLOTS, [
        (passes.item, *(list(column) for column in zip(
            *(_slot_row(step, contacts.get(step.slot.id)) for step in steps), strict=True)))
        for passes, steps in saved if steps
    ])  # fmt: skip


async def _add_contacts(tx: BatchTx, saved: list[tuple[Passes, list[Advance]]]) -> dict[int, int]:
    """The contact of every filled slot, by slot id: inserted, or the one it had already."""
    filled = [
        (passes, [(s.slot.id, s.outcome) for s in steps if isinstance(s.outcome, Filled)])
        for passes, steps in saved
    ]
    rows = await tx.fetch_each(ADD_CONTACTS, [
        (passes.item, [slot_id for slot_id, _ in found], passes.company.name,
         *(list(column) for column in zip(
             *(_contact(f, passes.company) for _, f in found), strict=True)))
        for passes, found in filled if found
    ])  # fmt: skip
    contacts = {r["slot_id"]: r["id"] for r in rows}
    missing = [slot_id for _, found in filled for slot_id, _ in found if slot_id not in contacts]
    if missing:
        contacts.update({r["slot_id"]: r["id"] for r in await tx.fetch(SLOT_CONTACTS, missing)})
    return contacts


def _state(row: asyncpg.Record | None) -> SlotState | None:
    if row is None:
        return None
    return (row["status"], tuple(row["providers_tried"]), row["pending_run_id"])


def _contact(found: Filled, company: Company) -> tuple[object, ...]:
    person = found.candidate
    return (
        person.full_name, person.first_name, person.last_name, person.title, person.email,
        found.email_type, person.linkedin_url, person.country or company.country,
        found.provider, found.mode, round(Decimal(person.confidence), 3),
    )  # fmt: skip


def _slot_row(step: Advance, contact_id: int | None) -> tuple[object, ...]:
    outcome = step.outcome
    return (
        step.slot.id,
        _status(outcome),
        ",".join(step.tried),
        json.dumps(step.failures),
        outcome.retry_at if isinstance(outcome, Deferred) else None,
        contact_id,
        outcome.reason if isinstance(outcome, Unfilled) else None,
    )


def _status(outcome: object) -> str:
    if isinstance(outcome, Filled):
        return "filled"
    if isinstance(outcome, Unfilled):
        return "unfilled"
    return "open"  # Deferred: asked again at retry_at
