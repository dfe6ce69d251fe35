"""company_validated: the promotion runner.

Gives the company in marketing.company_master its Barton ID (marketing.next_barton_id(), the
scheme documented in triggers/300_enrichment.sql) and status `promoted`; that write's trigger
emits company_promoted. Idempotent: the UPDATE matches only while barton_id IS NULL, so an ID
is assigned exactly once. A company that no longer exists is a permanent failure.
"""

from __future__ import annotations

from typing import LiteralString

from pydantic import BaseModel

from cascade.handling import Deps, PermanentFailure

EVENT_TYPE = "company_validated"

PROMOTE: LiteralString = """
    UPDATE marketing.company_master
       SET barton_id = marketing.next_barton_id(), status = 'promoted', promoted_at = now()
     WHERE id = $1 AND barton_id IS NULL
"""
EXISTS: LiteralString = "SELECT EXISTS (SELECT FROM marketing.company_master WHERE id = $1)"


class Payload(BaseModel, frozen=True):
    id: int


async def handle(payload: Payload, deps: Deps) -> None:
    async with deps.completing_transaction() as tx:  # the ID and "event done" commit together
        if await tx.execute(PROMOTE, payload.id) == "UPDATE 0" and not await tx.fetchval(
            EXISTS, payload.id
        ):
            raise PermanentFailure(f"company {payload.id} does not exist")
