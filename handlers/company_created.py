"""company_created: the validation gatekeeper.

Reads the intake row named by the payload's record_id (or, for seed 003's hand-made event
with no intake row, the payload's company_name and website). Normalises the name and reduces
the website to its registrable domain (cascade/enrichment/domains.py). A company that cannot
be one is marked `rejected` on its intake row with the reason. A valid one is inserted into
marketing.company_master, whose trigger emits company_validated; if that domain is already
there, the intake row is linked to the existing company as a `duplicate` and nothing new
starts. Idempotent: an intake row leaves `pending` once, and company_master holds one row per
domain. A hand-made event for something that is not a company is a permanent failure.
"""

from __future__ import annotations

from typing import LiteralString

from pydantic import BaseModel

from cascade.enrichment.domains import NotACompany, company_name, registrable_domain
from cascade.enrichment.regions import country_code
from cascade.handling import Deps, PermanentFailure, Tx

EVENT_TYPE = "company_created"

READ_INTAKE: LiteralString = """
    SELECT company_name, website, industry, employee_count, country, city, linkedin_url,
           workflow_run_id, status
      FROM intake.company_raw_intake WHERE id = $1
"""
REJECT: LiteralString = """
    UPDATE intake.company_raw_intake
       SET status = 'rejected', reject_reason = $2, validated_at = now()
     WHERE id = $1 AND status = 'pending'
"""
# Inserts the company unless its domain is known, links the intake row ($9; NULL for a
# hand-made event) to the company it became or duplicates, and answers with the company. Under
# READ COMMITTED the fallback SELECT may not yet see a row another transaction has just
# committed; then nothing comes back and the event is retried (see _promote).
PROMOTE_TO_MASTER: LiteralString = """
    WITH inserted AS (
        INSERT INTO marketing.company_master
            (company_name, domain, website, industry, employee_count, country, city,
             linkedin_url, source_intake_id, workflow_run_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (domain) DO NOTHING
        RETURNING id
    ), company AS (
        SELECT id, true AS created FROM inserted
        UNION ALL
        SELECT id, false FROM marketing.company_master WHERE domain = $2
        LIMIT 1
    ), linked AS (
        UPDATE intake.company_raw_intake AS intake
           SET status = CASE WHEN company.created THEN 'validated' ELSE 'duplicate' END,
               company_id = company.id, validated_at = now()
          FROM company
         WHERE intake.id = $9 AND intake.status = 'pending'
    )
    SELECT id, created FROM company
"""


class Payload(BaseModel, frozen=True):
    record_id: int | None = None
    company_name: str | None = None
    website: str | None = None


async def handle(payload: Payload, deps: Deps) -> None:
    async with deps.completing_transaction() as tx:
        intake = None
        if payload.record_id is not None:
            intake = await tx.fetchrow(READ_INTAKE, payload.record_id)
        if intake is not None and intake["status"] != "pending":
            return  # decided already: a redelivered event changes nothing
        source = dict(intake) if intake is not None else payload.model_dump()
        try:
            name = company_name(source.get("company_name"))
            domain = registrable_domain(source.get("website"))
        except NotACompany as reason:
            if intake is None:
                raise PermanentFailure(f"not a company: {reason}") from None
            await tx.execute(REJECT, payload.record_id, str(reason))
            return
        await _promote(tx, payload.record_id if intake else None, name, domain, source)


async def _promote(
    tx: Tx, intake_id: int | None, name: str, domain: str, source: dict[str, object]
) -> None:
    company = await tx.fetchrow(
        PROMOTE_TO_MASTER,
        name,
        domain,
        str(source.get("website") or "").strip(),
        source.get("industry"),
        source.get("employee_count"),
        country_code(_text(source.get("country"))) or _text(source.get("country")),
        source.get("city"),
        source.get("linkedin_url"),
        intake_id,
        source.get("workflow_run_id"),
    )
    if company is None:
        raise RuntimeError(f"company {domain} was inserted concurrently; retrying to link it")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
