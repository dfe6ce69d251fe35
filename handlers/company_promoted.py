"""company_promoted: the slot creator, for the claimed batch of companies.

Creates each company's executive role slots in marketing.company_slots: CEO, CFO and HR, each
switched by seed 000's INCLUDE_CEO, INCLUDE_CFO, INCLUDE_HR (default on). One insert per
company, all in one round trip, each with its own event's lineage; an insert's statement
trigger emits one slots_created for its company. Idempotent: a slot is unique per (company,
role) and the insert skips existing ones. With every role switched off the companies stop
here, and the log says so. A company that no longer exists is a permanent failure of its event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import LiteralString

from pydantic import BaseModel

from cascade.enrichment.services import Enrichment
from cascade.handling import BatchDeps, Item, PermanentFailure

EVENT_TYPE = "company_promoted"

CREATE_SLOTS: LiteralString = """
    INSERT INTO marketing.company_slots (company_id, role)
    SELECT company.id, role
      FROM marketing.company_master AS company, unnest($5::text[]) AS role
     WHERE company.id = $4 AND marketing.set_event_context($1, $2, $3)
    ON CONFLICT (company_id, role) DO NOTHING
    RETURNING company_id
"""
EXISTING: LiteralString = "SELECT id FROM marketing.company_master WHERE id = ANY ($1::bigint[])"


class Payload(BaseModel, frozen=True):
    id: int


async def handle_many(items: Sequence[Item[Payload]], deps: BatchDeps) -> None:
    roles = list(deps.resource(Enrichment).settings.roles)
    if not roles:
        deps.log.warning("INCLUDE_CEO, INCLUDE_CFO and INCLUDE_HR are all off: no slots")
        return
    async with deps.completing_transaction() as tx:
        rows = await tx.fetch_each(CREATE_SLOTS, [(i, i.payload.id, roles) for i in tx.held])
        created = {row["company_id"] for row in rows}
        others = [item for item in tx.held if item.payload.id not in created]
        if not others:
            return
        existing = {r["id"] for r in await tx.fetch(EXISTING, [i.payload.id for i in others])}
        for item in others:  # slots made already (a redelivery), or the company is gone
            if item.payload.id not in existing:
                item.fail(PermanentFailure(f"company {item.payload.id} does not exist"))
