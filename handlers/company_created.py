"""company_created: the validation gatekeeper.

Reads the intake row named by the payload's record_id (or, for seed 003's hand-made event
with no intake row, the payload's company_name and website). Normalises the name and reduces
the website to its registrable domain (cascade/enrichment/domains.py). A company that cannot
be one is marked `rejected` on its intake row with the reason. A valid one is inserted into
marketing.company_master, whose trigger emits company_validated; if that domain is already
there, the intake row is linked to the existing company as a `duplicate` and nothing new
starts. The claimed batch is read in one query and written in one round trip: the
rejections in one statement, the companies in one statement each, with its own event's
lineage. Idempotent: an intake row leaves `pending` once, and company_master holds one row per
domain. A hand-made event for something that is not a company is a permanent failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import LiteralString

from pydantic import BaseModel

from cascade.enrichment.domains import NotACompany, company_name, registrable_domain
from cascade.enrichment.regions import country_code
from cascade.handling import BatchDeps, Item, PermanentFailure

EVENT_TYPE = "company_created"

READ_INTAKE: LiteralString = """
    SELECT id, company_name, website, industry, employee_count, country, city, linkedin_url,
           workflow_run_id, status
      FROM intake.company_raw_intake WHERE id = ANY ($1::bigint[])
"""
# Emits nothing (no trigger follows an intake row's status), so one statement for the batch.
REJECT: LiteralString = """
    UPDATE intake.company_raw_intake AS intake
       SET status = 'rejected', reject_reason = rejected.reason, validated_at = now()
      FROM unnest($1::bigint[], $2::text[]) AS rejected(id, reason)
     WHERE intake.id = rejected.id AND intake.status = 'pending'
"""
# Inserts the company unless its domain is known, links the intake row ($12; NULL for a
# hand-made event) to the company it became or duplicates, and answers with the event ($1)
# it did so for. One per event, with its lineage ($1-$3: the insert emits company_validated).
# Under READ COMMITTED the fallback SELECT may not yet see a row another transaction has just
# committed; then nothing comes back and the event is retried (see handle_many).
PROMOTE_TO_MASTER: LiteralString = """
    WITH inserted AS (
        INSERT INTO marketing.company_master
            (company_name, domain, website, industry, employee_count, country, city,
             linkedin_url, source_intake_id, workflow_run_id)
        SELECT $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
         WHERE marketing.set_event_context($1, $2, $3)
        ON CONFLICT (domain) DO NOTHING
        RETURNING id
    ), company AS (
        SELECT id, true AS created FROM inserted
        UNION ALL
        SELECT id, false FROM marketing.company_master WHERE domain = $5
        LIMIT 1
    ), linked AS (
        UPDATE intake.company_raw_intake AS intake
           SET status = CASE WHEN company.created THEN 'validated' ELSE 'duplicate' END,
               company_id = company.id, validated_at = now()
          FROM company
         WHERE intake.id = $12 AND intake.status = 'pending'
    )
    SELECT $1 AS event_id FROM company
"""


class Payload(BaseModel, frozen=True):
    record_id: int | None = None
    company_name: str | None = None
    website: str | None = None


async def handle_many(items: Sequence[Item[Payload]], deps: BatchDeps) -> None:
    async with deps.completing_transaction() as tx:
        ids = [i.payload.record_id for i in tx.held if i.payload.record_id is not None]
        intake = {row["id"]: row for row in await tx.fetch(READ_INTAKE, ids)} if ids else {}
        rejected: list[tuple[int, str]] = []
        promoted: list[tuple[Item[Payload], tuple[object, ...]]] = []
        for item in tx.held:
            row = intake.get(item.payload.record_id) if item.payload.record_id else None
            if row is not None and row["status"] != "pending":
                continue  # decided already: a redelivered event changes nothing
            source = dict(row) if row is not None else item.payload.model_dump()
            try:
                name = company_name(source.get("company_name"))
                domain = registrable_domain(source.get("website"))
            except NotACompany as reason:
                if row is None:
                    item.fail(PermanentFailure(f"not a company: {reason}"))
                else:
                    rejected.append((row["id"], str(reason)))
                continue
            promoted.append((item, _company(row["id"] if row else None, name, domain, source)))
        if rejected:
            await tx.execute(REJECT, *(list(column) for column in zip(*rejected, strict=True)))
        rows = await tx.fetch_each(PROMOTE_TO_MASTER, [(i, *values) for i, values in promoted])
        answered = {row["event_id"] for row in rows}
        for item, _ in promoted:
            if item.lineage[0] not in answered:
                item.fail(
                    RuntimeError("the company was inserted concurrently; retrying to link it")
                )


def _company(
    intake_id: int | None, name: str, domain: str, source: dict[str, object]
) -> tuple[object, ...]:
    """PROMOTE_TO_MASTER's $4 to $13: the normalised company and its intake row."""
    country = _text(source.get("country"))
    return (
        name, domain, str(source.get("website") or "").strip(), source.get("industry"),
        source.get("employee_count"), country_code(country) or country, source.get("city"),
        source.get("linkedin_url"), intake_id, source.get("workflow_run_id"),
    )  # fmt: skip


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
