"""contact_enriched: the MillionVerifier checker, a batch of contacts at a time.

Reads the batch's contacts and their current emails in one query (nothing to do for a contact
that is gone, has no address, or whose address has a verdict already); reserves the calls'
cost against the verification budget; asks the verifier about every address at once (at most
PROVIDER_CONCURRENCY in flight) with no transaction open; records every attempt in one round
trip; applies the gate (cascade/enrichment/verification.py). In the completing transaction it
stores each verdict in marketing.email_verification (a deliverable one emits email_verified)
and the contact's status, both only if the contact still has the email that was checked and
that email has no verdict yet (a validator webhook may have delivered one meanwhile: the first
verdict stands).
Outcomes, each contact its own: an `unknown` answer is asked again after
VERIFICATION_UNKNOWN_RETRY_SECONDS without spending an attempt, up to VERIFICATION_MAX_UNKNOWN
answers (counted from the attempt log); a 429 waits for its Retry-After; a used-up budget
waits for the budget's next period and says so; outages and provider faults (bad key, no
credits) retry with backoff and end as dead letters that name the fault, never as a verdict on
the email.
Idempotent: one verdict per contact, keyed by contact; each call carries its event's key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import LiteralString

from asyncpg import Record
from pydantic import BaseModel

from cascade import budgets
from cascade.enrichment.services import Enrichment
from cascade.enrichment.verification import Verdict, gate
from cascade.handling import BatchDeps, Item
from providers.base import EmailCheck, ProviderError, ProviderRateLimited

EVENT_TYPE = "contact_enriched"
EXTERNAL = True
BUDGET = "verification_budget"

READ_CONTACTS: LiteralString = """
    SELECT c.id, c.email, c.company_id, v.email AS verified_email,
           (SELECT count(*) FROM marketing.provider_attempts AS a
             WHERE a.contact_id = c.id AND a.purpose = 'verification'
               AND a.status = 'unknown' AND a.detail = c.email) AS unknown_checks
      FROM marketing.contact_enrichment AS c
      LEFT JOIN marketing.email_verification AS v ON v.contact_id = c.id
     WHERE c.id = ANY ($1::bigint[])
"""
RECORD_ATTEMPT: LiteralString = """
    INSERT INTO marketing.provider_attempts
        (purpose, provider, provider_mode, company_id, contact_id, event_id, status, confidence,
         cost, latency_ms, detail)
    VALUES ('verification', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
# One statement per contact, with its event's lineage ($1-$3, see BatchTx.for_each): lock the
# contact (the validator webhook takes the same lock, so whichever verdict lands first stands
# and the other sees it), store the verdict unless this address has one already, and only
# then set the contact's status. A deliverable contact stays 'enriched' until email_verified
# makes it 'ready'.
SAVE_VERDICT: LiteralString = """
    WITH contact AS (
        SELECT id, email FROM marketing.contact_enrichment
         WHERE id = $4 AND email = $5 AND marketing.set_event_context($1, $2, $3)
           FOR UPDATE
    ), saved AS (
        INSERT INTO marketing.email_verification
            (contact_id, email, result, verdict, reason, score, quality, subresult, provider,
             provider_mode, source)
        SELECT id, email, $6, $7, $8, $9, $10, $11, $12, $13, 'api' FROM contact
        ON CONFLICT (contact_id) DO UPDATE
           SET email = EXCLUDED.email, result = EXCLUDED.result, verdict = EXCLUDED.verdict,
               reason = EXCLUDED.reason, score = EXCLUDED.score, quality = EXCLUDED.quality,
               subresult = EXCLUDED.subresult, provider = EXCLUDED.provider,
               provider_mode = EXCLUDED.provider_mode, source = 'api', verified_at = now()
         WHERE marketing.email_verification.email IS DISTINCT FROM EXCLUDED.email
        RETURNING contact_id
    )
    UPDATE marketing.contact_enrichment AS c
       SET status = $14, updated_at = now()
      FROM saved
     WHERE c.id = saved.contact_id AND $14 <> 'enriched'
"""
CONTACT_STATUS = {
    "deliverable": "enriched",
    "undeliverable": "undeliverable",
    "risky": "risky",
    "unverifiable": "unverifiable",
}


class Payload(BaseModel, frozen=True):
    id: int


async def handle_many(items: Sequence[Item[Payload]], deps: BatchDeps) -> None:
    enrichment = deps.resource(Enrichment)
    verifier = enrichment.providers.verifier
    async with deps.connection() as conn:
        rows = await conn.fetch(READ_CONTACTS, [item.payload.id for item in items])
        contacts = {row["id"]: row for row in rows}
        asked = [
            Check(item, contact)
            for item in items
            if (contact := contacts.get(item.payload.id)) is not None
            and contact["email"]
            and contact["verified_email"] != contact["email"]
        ]  # the others are done: gone, no address, or this address has its verdict already
        paid, refused = await budgets.reserve_each(conn, BUDGET, verifier.cost_per_call, len(asked))
    if refused is not None:
        deps.log.warning("verification stopped spending: %s", refused)
        wait = (refused.resets_at - dt.datetime.now(dt.UTC)).total_seconds()
        for check in asked[paid:]:
            check.record("budget_exhausted")
            check.item.retry_later(wait, str(refused))
    answers = await asyncio.gather(
        *(verifier.verify(c.email, idempotency_key=c.item.idempotency_key) for c in asked[:paid]),
        return_exceptions=True,
    )
    verdicts: list[tuple[Check, EmailCheck, Verdict]] = []
    for check, answer in zip(asked[:paid], answers, strict=True):
        if isinstance(answer, ProviderRateLimited):
            check.record("rate_limited", cost=answer.cost)
            check.item.retry_later(answer.retry_after, str(answer))
        elif isinstance(answer, ProviderError):
            check.record("error", cost=answer.cost)
            check.item.fail(answer)
        elif isinstance(answer, Exception):
            check.item.fail(answer)
        elif isinstance(answer, BaseException):
            raise answer  # cancelled: the listener is stopping
        else:
            verdict = gate(answer, enrichment.settings, check.contact["unknown_checks"])
            check.record("unknown" if answer.result == "unknown" else "verified",
                         score=answer.score, cost=answer.cost, latency_ms=answer.latency_ms,
                         mode=answer.mode)  # fmt: skip
            if verdict is None:
                check.item.retry_later(
                    enrichment.settings.unknown_retry_seconds, f"{check.email}: result unknown"
                )
            else:
                verdicts.append((check, answer, verdict))
    attempts = [
        (verifier.name, mode or verifier.mode, *attempt)
        for check in asked
        for mode, *attempt in check.attempts
    ]
    if attempts:
        async with deps.connection() as conn:
            await conn.executemany(RECORD_ATTEMPT, attempts)
    async with deps.completing_transaction() as tx:
        held = {id(item) for item in tx.held}
        await tx.for_each(SAVE_VERDICT, [
            (c.item, c.item.payload.id, c.email, answer.result, verdict.verdict, verdict.reason,
             round(answer.score, 3), answer.quality, answer.subresult, answer.provider,
             answer.mode, CONTACT_STATUS[verdict.verdict])
            # In contact id order: two batches (or a validator webhook) that lock the same
            # contacts in different orders would deadlock.
            for c, answer, verdict in sorted(verdicts, key=lambda v: v[0].item.payload.id)
            if id(c.item) in held
        ])  # fmt: skip


@dataclass(slots=True)
class Check:
    """One contact's check and the attempts it made: RECORD_ATTEMPT's rows without the
    verifier's name, and with its mode only where the answer said (a sandbox answer)."""

    item: Item[Payload]
    contact: Record
    attempts: list[tuple[object, ...]] = field(default_factory=list)

    @property
    def email(self) -> str:
        return str(self.contact["email"])

    def record(self, status: str, *, score: float | None = None, cost: object = 0,
               latency_ms: float | None = None, mode: str | None = None) -> None:  # fmt: skip
        item = self.item
        self.attempts.append((mode, self.contact["company_id"], item.payload.id, item.event.id,
                              status, score, cost, latency_ms, self.email))  # fmt: skip
