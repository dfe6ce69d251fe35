"""contact_enriched: the MillionVerifier checker.

Reads the contact's current email (nothing to do if the contact is gone, or that email has a
verdict already); reserves the call's cost against the verification budget; asks the verifier
with no transaction open; records the attempt; applies the gate (cascade/enrichment/
verification.py). In the completing transaction it stores the verdict in
marketing.email_verification (a deliverable one emits email_verified) and the contact's
status, both only if the contact still has the email that was checked and that email has no
verdict yet (a validator webhook may have delivered one meanwhile: the first verdict stands).
Retries: an `unknown` answer is asked again after VERIFICATION_UNKNOWN_RETRY_SECONDS without
spending an attempt, up to VERIFICATION_MAX_UNKNOWN answers (counted from the attempt log);
a 429 waits for its Retry-After; a used-up budget waits for the budget's next period and
says so; outages and provider faults (bad key, no credits) retry with backoff and end as dead
letters that name the fault, never as a verdict on the email.
Idempotent: one verdict per contact, keyed by contact; the call carries the event's key.
"""

from __future__ import annotations

import datetime as dt
from typing import LiteralString

from pydantic import BaseModel

from cascade import budgets
from cascade.enrichment.services import Enrichment
from cascade.enrichment.verification import gate
from cascade.handling import Deps, RetryLater
from providers.base import ProviderError, ProviderRateLimited

EVENT_TYPE = "contact_enriched"
EXTERNAL = True

READ_CONTACT: LiteralString = """
    SELECT c.email, c.company_id, v.email AS verified_email,
           (SELECT count(*) FROM marketing.provider_attempts AS a
             WHERE a.contact_id = c.id AND a.purpose = 'verification'
               AND a.status = 'unknown' AND a.detail = c.email) AS unknown_checks
      FROM marketing.contact_enrichment AS c
      LEFT JOIN marketing.email_verification AS v ON v.contact_id = c.id
     WHERE c.id = $1
"""
RECORD_ATTEMPT: LiteralString = """
    INSERT INTO marketing.provider_attempts
        (purpose, provider, provider_mode, company_id, contact_id, event_id, status, confidence,
         cost, latency_ms, detail)
    VALUES ('verification', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
# One statement: lock the contact (the validator webhook takes the same lock, so whichever
# verdict lands first stands and the other sees it), store the verdict unless this address has
# one already, and only then set the contact's status. A deliverable contact stays 'enriched'
# until email_verified makes it 'ready'.
SAVE_VERDICT: LiteralString = """
    WITH contact AS (
        SELECT id, email FROM marketing.contact_enrichment
         WHERE id = $1 AND email = $2
           FOR UPDATE
    ), saved AS (
        INSERT INTO marketing.email_verification
            (contact_id, email, result, verdict, reason, score, quality, subresult, provider,
             provider_mode, source)
        SELECT id, email, $3, $4, $5, $6, $7, $8, $9, $10, 'api' FROM contact
        ON CONFLICT (contact_id) DO UPDATE
           SET email = EXCLUDED.email, result = EXCLUDED.result, verdict = EXCLUDED.verdict,
               reason = EXCLUDED.reason, score = EXCLUDED.score, quality = EXCLUDED.quality,
               subresult = EXCLUDED.subresult, provider = EXCLUDED.provider,
               provider_mode = EXCLUDED.provider_mode, source = 'api', verified_at = now()
         WHERE marketing.email_verification.email IS DISTINCT FROM EXCLUDED.email
        RETURNING contact_id
    )
    UPDATE marketing.contact_enrichment AS c
       SET status = $11, updated_at = now()
      FROM saved
     WHERE c.id = saved.contact_id AND $11 <> 'enriched'
"""
CONTACT_STATUS = {
    "deliverable": "enriched",
    "undeliverable": "undeliverable",
    "risky": "risky",
    "unverifiable": "unverifiable",
}


class Payload(BaseModel, frozen=True):
    id: int


async def handle(payload: Payload, deps: Deps) -> None:
    enrichment = deps.resource(Enrichment)
    verifier = enrichment.providers.verifier
    async with deps.connection() as conn:
        contact = await conn.fetchrow(READ_CONTACT, payload.id)
    if contact is None or not contact["email"] or contact["verified_email"] == contact["email"]:
        return  # gone, no address, or this address has its verdict already
    email: str = contact["email"]

    async def record(
        status: str,
        *,
        score: float | None = None,
        cost: object = 0,
        latency_ms: float | None = None,
        mode: str = verifier.mode,
    ) -> None:
        async with deps.connection() as conn:
            await conn.execute(
                RECORD_ATTEMPT, verifier.name, mode, contact["company_id"], payload.id,
                deps.event.id, status, score, cost, latency_ms, email,
            )  # fmt: skip

    try:
        if verifier.cost_per_call:
            async with deps.connection() as conn:
                await budgets.reserve(conn, "verification_budget", verifier.cost_per_call)
    except budgets.BudgetExhausted as exc:
        await record("budget_exhausted")
        deps.log.warning("verification stopped spending: %s", exc)
        wait = (exc.resets_at - dt.datetime.now(dt.UTC)).total_seconds()
        raise RetryLater(wait, str(exc)) from None
    try:
        check = await verifier.verify(email, idempotency_key=deps.idempotency_key)
    except ProviderRateLimited as exc:
        await record("rate_limited", cost=exc.cost)
        raise RetryLater(exc.retry_after, str(exc)) from None
    except ProviderError as exc:
        await record("error", cost=exc.cost)
        raise
    verdict = gate(check, enrichment.settings, contact["unknown_checks"])
    status = "unknown" if check.result == "unknown" else "verified"
    await record(status, score=check.score, cost=check.cost, latency_ms=check.latency_ms,
                 mode=check.mode)  # fmt: skip
    if verdict is None:
        raise RetryLater(enrichment.settings.unknown_retry_seconds, f"{email}: result unknown")
    async with deps.completing_transaction() as tx:
        await tx.execute(
            SAVE_VERDICT, payload.id, email, check.result, verdict.verdict, verdict.reason,
            round(check.score, 3), check.quality, check.subresult, check.provider, check.mode,
            CONTACT_STATUS[verdict.verdict],
        )  # fmt: skip
