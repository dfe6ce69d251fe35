"""POST /webhooks/apify: an Apify run's results for the role slots waiting on it (seed 000).

The body:

    {"event": "scrape_done" | "scrape_failed",
     "payload": {"slot_ids": ["slot_123", 456],        # the slots the run was started for
                 "contacts": [{"slot_id": "slot_123",  # which slot this person is for
                               "full_name": "Ada Lovelace", "first_name": "Ada",
                               "last_name": "Lovelace", "title": "CEO",
                               "email": "ada@example.com", "linkedin_url": "https://...",
                               "country": "GB", "confidence": 0.92}],
                 "run_id": "optional Apify run id",
                 "unique_id": "04.01.01.04.20000.003", "process_id": "PLE-001"}}

Slot ids are integers or `slot_<integer>`. Only `slot_id`, `full_name` and `confidence`
(0 to 1) are required of a contact; a contact's slot counts as named even if `slot_ids`
omits it.

`settle` runs inside the endpoint's transaction, after the delivery was claimed. Each slot
still waiting on Apify (and on this run, when `run_id` is given) moves forward exactly once:
with a contact that `judge` accepts it is filled (the contact insert emits contact_enriched);
otherwise, or on scrape_failed, it goes back to `open` with its pending columns cleared (the
slot trigger emits slots_created, and the waterfall goes on with the next provider). Apify is
already in the slot's providers_tried, set when the run started. A slot that is no longer
waiting (timed out, filled) only gets a `late` attempt row: state never moves backwards.
Slots are locked in id order, so concurrent deliveries cannot deadlock on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, LiteralString

import asyncpg
from pydantic import BaseModel, Field

from cascade.enrichment.regions import email_type
from cascade.enrichment.slots import ADD_CONTACTS, RECORD_ATTEMPT, SLOT_CONTACTS
from cascade.enrichment.waterfall import Judgement, judge
from cascade.handling import Connection
from cascade.web.fields import OptionalText, SlotId
from providers.base import Candidate

PROVIDER = "apify"
MODE = "webhook"

LOCK_SLOTS: LiteralString = """
    SELECT s.id, s.company_id, s.status, s.pending_provider, s.pending_run_id,
           c.company_name, c.country
      FROM marketing.company_slots AS s
      JOIN marketing.company_master AS c ON c.id = s.company_id
     WHERE s.id = ANY($1::bigint[])
     ORDER BY s.id
       FOR UPDATE OF s
"""
# One statement each, as in cascade/enrichment/slots.py: the slots' statement trigger then emits
# one slots_created per company, never one per slot. Both compare-and-set on the waiting
# state, so neither can undo a later decision.
FILL_SLOTS: LiteralString = """
    UPDATE marketing.company_slots AS slot
       SET status = 'filled', contact_id = filled.contact_id, pending_provider = NULL,
           pending_run_id = NULL, pending_deadline = NULL, retry_at = NULL,
           updated_at = now(), finished_at = now()
      FROM unnest($1::bigint[], $2::bigint[]) AS filled(id, contact_id)
     WHERE slot.id = filled.id AND slot.status = 'awaiting_provider'
"""
REOPEN_SLOTS: LiteralString = """
    UPDATE marketing.company_slots
       SET status = 'open', pending_provider = NULL, pending_run_id = NULL,
           pending_deadline = NULL, updated_at = now()
     WHERE id = ANY($1::bigint[]) AND status = 'awaiting_provider'
"""


class ApifyContact(BaseModel, frozen=True):
    slot_id: SlotId
    full_name: Annotated[str, Field(min_length=1)]
    first_name: OptionalText = None
    last_name: OptionalText = None
    title: OptionalText = None
    email: OptionalText = None
    linkedin_url: OptionalText = None
    country: OptionalText = None
    confidence: Annotated[float, Field(ge=0, le=1, strict=True)]  # `true` is no 1.0

    def candidate(self) -> Candidate:
        return Candidate(
            self.full_name, self.first_name, self.last_name, self.title, self.email,
            self.linkedin_url, self.country, self.confidence,
        )  # fmt: skip


class ApifyPayload(BaseModel, frozen=True):
    slot_ids: Annotated[list[SlotId], Field(min_length=1, max_length=10_000)]
    contacts: list[ApifyContact] = []
    run_id: OptionalText = None
    unique_id: str | None = None
    process_id: str | None = None


class ApifyDelivery(BaseModel, frozen=True):
    event: Literal["scrape_done", "scrape_failed"]
    payload: ApifyPayload


@dataclass
class Summary:
    filled: list[int] = field(default_factory=list)
    reopened: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    unknown_slot_ids: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, list[int]]:
        return {
            "filled": self.filled,
            "reopened": self.reopened,
            "late": self.late,
            "unknown_slot_ids": self.unknown_slot_ids,
        }


async def settle(conn: Connection, delivery: ApifyDelivery, threshold: float) -> Summary:
    """Moves each named slot forward (see the module docstring); records every attempt."""
    payload = delivery.payload
    named = list(dict.fromkeys([*payload.slot_ids, *(c.slot_id for c in payload.contacts)]))
    slots = await conn.fetch(LOCK_SLOTS, named)
    found = {slot["id"] for slot in slots}
    summary = Summary(unknown_slot_ids=[slot_id for slot_id in named if slot_id not in found])
    accepted: dict[int, tuple[asyncpg.Record, Candidate]] = {}
    attempts: list[tuple[Any, ...]] = []
    for slot in slots:
        run_id = payload.run_id or slot["pending_run_id"]
        if not _awaiting(slot, payload.run_id):
            summary.late.append(slot["id"])
            attempts.append(_attempt(slot, "late", run_id, detail=_late_detail(slot)))
            continue
        verdict = _judge(delivery, slot, threshold)
        if verdict.accepted is not None:
            accepted[slot["id"]] = (slot, verdict.accepted)
            summary.filled.append(slot["id"])
            attempts.append(_attempt(slot, "completed", run_id, verdict.confidence))
        else:
            summary.reopened.append(slot["id"])
            attempts.append(
                _attempt(slot, verdict.status, run_id, verdict.confidence, verdict.detail)
            )
    if accepted:
        contacts = await _add_contacts(conn, list(accepted.values()))
        await conn.execute(FILL_SLOTS, list(contacts), list(contacts.values()))
    if summary.reopened:
        await conn.execute(REOPEN_SLOTS, summary.reopened)
    await conn.executemany(RECORD_ATTEMPT, attempts)
    return summary


def _awaiting(slot: asyncpg.Record, run_id: str | None) -> bool:
    """Whether the slot waits for this run. A `pending:` placeholder means the handler marked
    the slot waiting and was starting the run when its webhook came back: it is this one."""
    pending = slot["pending_run_id"]
    return (
        slot["status"] == "awaiting_provider"
        and slot["pending_provider"] == PROVIDER
        and (run_id is None or pending == run_id or pending.startswith("pending:"))
    )


def _late_detail(slot: asyncpg.Record) -> str:
    if slot["status"] == "awaiting_provider":
        return f"slot awaits {slot['pending_provider']} run {slot['pending_run_id']}, not this one"
    return f"slot is {slot['status']}: the waterfall moved on before this webhook"


def _judge(delivery: ApifyDelivery, slot: asyncpg.Record, threshold: float) -> Judgement:
    if delivery.event == "scrape_failed":
        return Judgement(None, "failed", None, "Apify reported scrape_failed")
    candidates = tuple(c.candidate() for c in delivery.payload.contacts if c.slot_id == slot["id"])
    return judge(candidates, threshold, slot["country"])


async def _add_contacts(
    conn: Connection, people: list[tuple[asyncpg.Record, Candidate]]
) -> dict[int, int]:
    """Inserts the accepted people (one ADD_CONTACTS per company, whose name it takes);
    returns the contact id of every slot."""
    by_company: dict[int, list[tuple[asyncpg.Record, Candidate]]] = {}
    for slot, person in people:
        by_company.setdefault(slot["company_id"], []).append((slot, person))
    contacts: dict[int, int] = {}
    for rows in by_company.values():
        # No event's lineage: the contacts' events keep the request's correlation id.
        inserted = await conn.fetch(ADD_CONTACTS, None, None, None, *_contact_columns(rows))
        contacts.update((row["slot_id"], row["id"]) for row in inserted)
    missing = [slot["id"] for slot, _ in people if slot["id"] not in contacts]
    if missing:
        contacts.update((r["slot_id"], r["id"]) for r in await conn.fetch(SLOT_CONTACTS, missing))
    return contacts


def _contact_columns(rows: list[tuple[asyncpg.Record, Candidate]]) -> list[Any]:
    """ADD_CONTACTS' parameters: slot ids, the company's name, then one array per column."""
    columns: list[list[Any]] = [[] for _ in range(12)]
    for slot, person in rows:
        assert person.email is not None  # judge accepts only candidates with an email
        values = (
            slot["id"], person.full_name, person.first_name, person.last_name, person.title,
            person.email, email_type(person.email), person.linkedin_url,
            person.country or slot["country"], PROVIDER, MODE, round(person.confidence, 3),
        )  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return [columns[0], rows[0][0]["company_name"], *columns[1:]]


def _attempt(
    slot: asyncpg.Record,
    status: str,
    run_id: str | None,
    confidence: float | None = None,
    detail: str | None = None,
) -> tuple[Any, ...]:
    """A row for slots_created.RECORD_ATTEMPT (purpose 'enrichment'); no event caused it."""
    score = None if confidence is None else round(confidence, 3)
    return (PROVIDER, MODE, slot["company_id"], slot["id"], None, "async", status, score, 0,
            None, run_id, detail)  # fmt: skip
