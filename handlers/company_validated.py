"""company_validated: the promotion runner, for the claimed batch of companies.

Gives each company in marketing.company_master its Barton ID (marketing.next_barton_id(), the
scheme documented in triggers/300_enrichment.sql) and status `promoted`; that write's trigger
emits company_promoted. One statement per company, all in one round trip, each with its own
event's lineage. Idempotent: the UPDATE matches only while barton_id IS NULL, so an ID is
assigned exactly once. A company that no longer exists is a permanent failure of its event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import LiteralString

from pydantic import BaseModel

from cascade.handling import BatchDeps, Item, PermanentFailure

EVENT_TYPE = "company_validated"

PROMOTE: LiteralString = """
    UPDATE marketing.company_master
       SET barton_id = marketing.next_barton_id(), status = 'promoted', promoted_at = now()
     WHERE id = $4 AND barton_id IS NULL AND marketing.set_event_context($1, $2, $3)
    RETURNING id
"""
EXISTING: LiteralString = "SELECT id FROM marketing.company_master WHERE id = ANY ($1::bigint[])"


class Payload(BaseModel, frozen=True):
    id: int


async def handle_many(items: Sequence[Item[Payload]], deps: BatchDeps) -> None:
    async with deps.completing_transaction() as tx:  # the IDs and "events done" commit together
        in_id_order = sorted(tx.held, key=lambda item: item.payload.id)  # no lock-order deadlock
        rows = await tx.fetch_each(PROMOTE, [(item, item.payload.id) for item in in_id_order])
        promoted = {row["id"] for row in rows}
        others = [item for item in tx.held if item.payload.id not in promoted]
        if not others:
            return
        existing = {r["id"] for r in await tx.fetch(EXISTING, [i.payload.id for i in others])}
        for item in others:  # promoted already (a redelivery), or gone
            if item.payload.id not in existing:
                item.fail(PermanentFailure(f"company {item.payload.id} does not exist"))
