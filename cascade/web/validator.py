"""POST /webhooks/validator: MillionVerifier's bulk results (seed 000).

The body:

    {"event": "validate_result",
     "payload": {"results": [{"person_id": "person_123",   # or 123 or "123": our contact id
                              "email": "ada@example.com",
                              "status": "valid",           # valid (= ok), ok, catch_all,
                                                           # unknown, invalid, disposable
                              "score": 0.95,               # 0 to 1
                              "quality": null, "subresult": null}]}}   # both optional

`apply` runs inside the endpoint's transaction, after the delivery was claimed. Each result
whose contact still has that email goes through the same gate as the API path
(cascade/enrichment/verification.py) and is stored as handlers/contact_enriched.py stores it,
with source 'webhook': a verdict in marketing.email_verification (a deliverable one emits
email_verified) and the contact's status. Each is logged as a verification attempt, so an
`unknown` here counts towards VERIFICATION_MAX_UNKNOWN just as one from the API does; an
unknown that has not reached that limit stores nothing and is skipped. A result for a contact
we do not have, whose email has changed since, or whose email already has a verdict is
skipped with the reason: one stale line never fails the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal, LiteralString

import asyncpg
from pydantic import BaseModel, Field

from cascade.enrichment.settings import EnrichmentSettings
from cascade.enrichment.verification import Verdict, gate
from cascade.handling import Connection
from cascade.web.fields import OptionalText, PersonId
from handlers.contact_enriched import CONTACT_STATUS, READ_CONTACTS, RECORD_ATTEMPT
from providers.base import EmailCheck
from providers.millionverifier import NAME as PROVIDER

MODE = "webhook"

# handlers/contact_enriched.py's SAVE_VERDICT with source 'webhook': insert, or replace a
# verdict given to an earlier email; a verdict for this same email is never overwritten.
SAVE_VERDICT: LiteralString = """
    INSERT INTO marketing.email_verification
        (contact_id, email, result, verdict, reason, score, quality, subresult, provider,
         provider_mode, source)
    SELECT id, email, $3, $4, $5, $6, $7, $8, $9, 'webhook', 'webhook'
      FROM marketing.contact_enrichment WHERE id = $1 AND email = $2
    ON CONFLICT (contact_id) DO UPDATE
       SET email = EXCLUDED.email, result = EXCLUDED.result, verdict = EXCLUDED.verdict,
           reason = EXCLUDED.reason, score = EXCLUDED.score, quality = EXCLUDED.quality,
           subresult = EXCLUDED.subresult, provider = EXCLUDED.provider,
           provider_mode = EXCLUDED.provider_mode, source = 'webhook', verified_at = now()
     WHERE marketing.email_verification.email IS DISTINCT FROM EXCLUDED.email
"""
# A deliverable contact waits for email_verified to become 'ready'; the others stop here.
SET_CONTACT_STATUS: LiteralString = """
    UPDATE marketing.contact_enrichment SET status = $3, updated_at = now()
     WHERE id = $1 AND email = $2 AND $3 <> 'enriched'
"""
# The contact row is locked first, as the API check's SAVE_VERDICT does: the first verdict
# for an address stands and the other finds it.
# Every contact the delivery names, locked up front in id order: the verification batches lock
# contacts in id order too, so a bulk delivery racing one cannot deadlock with it.
LOCK_CONTACTS: LiteralString = """
    SELECT id FROM marketing.contact_enrichment
     WHERE id = ANY ($1::bigint[])
     ORDER BY id
       FOR UPDATE
"""


class ValidatorResult(BaseModel, frozen=True):
    person_id: PersonId
    email: Annotated[str, Field(min_length=3)]
    status: Literal["valid", "ok", "catch_all", "unknown", "invalid", "disposable"]
    score: Annotated[float, Field(ge=0, le=1, strict=True)]  # `true` is no 1.0
    quality: OptionalText = None
    subresult: OptionalText = None

    def check(self) -> EmailCheck:
        result = "ok" if self.status == "valid" else self.status
        # The gate reads result, score and subresult only; "live" because a real provider
        # answered (EmailCheck has no webhook mode; the stored row says 'webhook').
        return EmailCheck(
            PROVIDER, "live", self.email, result, self.score, self.quality, self.subresult,
            Decimal(0), 0.0,
        )  # fmt: skip


class ValidatorPayload(BaseModel, frozen=True):
    results: Annotated[list[ValidatorResult], Field(min_length=1, max_length=10_000)]


class ValidatorDelivery(BaseModel, frozen=True):
    event: Literal["validate_result"]
    payload: ValidatorPayload


@dataclass
class Summary:
    applied: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        return {"applied": self.applied, "skipped": self.skipped}


async def apply(
    conn: Connection, delivery: ValidatorDelivery, settings: EnrichmentSettings
) -> Summary:
    summary = Summary()
    await conn.execute(LOCK_CONTACTS, [result.person_id for result in delivery.payload.results])
    for result in delivery.payload.results:
        contact = await conn.fetchrow(READ_CONTACTS, [result.person_id])
        reason = _stale(contact, result)
        if reason is None:
            assert contact is not None
            reason = await _store(conn, contact, result, settings, summary)
        if reason is not None:
            summary.skipped.append({"person_id": result.person_id, "reason": reason})
    return summary


def _stale(contact: asyncpg.Record | None, result: ValidatorResult) -> str | None:
    if contact is None:
        return "unknown contact"
    email: str | None = contact["email"]
    if email is None or email.casefold() != result.email.strip().casefold():
        return "email changed: the contact no longer has this address"
    if contact["verified_email"] == email:
        return "this email already has a verdict"
    return None


async def _store(
    conn: Connection,
    contact: asyncpg.Record,
    result: ValidatorResult,
    settings: EnrichmentSettings,
    summary: Summary,
) -> str | None:
    """Gate and store one result; the skip reason if the gate gives no verdict yet."""
    check = result.check()
    email: str = contact["email"]  # the stored spelling: the writes below match on it
    verdict = gate(check, settings, contact["unknown_checks"])
    await conn.execute(
        RECORD_ATTEMPT, PROVIDER, MODE, contact["company_id"], result.person_id, None,
        "unknown" if check.result == "unknown" else "verified", round(check.score, 3), 0,
        None, email,
    )  # fmt: skip
    if verdict is None:
        return "result unknown: no verdict stored yet"
    await _save(conn, result.person_id, email, check, verdict)
    summary.applied.append(
        {"person_id": result.person_id, "result": check.result, "verdict": verdict.verdict}
    )
    return None


async def _save(
    conn: Connection, contact_id: int, email: str, check: EmailCheck, verdict: Verdict
) -> None:
    await conn.execute(
        SAVE_VERDICT, contact_id, email, check.result, verdict.verdict, verdict.reason,
        round(check.score, 3), check.quality, check.subresult, PROVIDER,
    )  # fmt: skip
    await conn.execute(SET_CONTACT_STATUS, contact_id, email, CONTACT_STATUS[verdict.verdict])
