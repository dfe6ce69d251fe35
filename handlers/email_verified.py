"""email_verified: the contacts are ready for messaging.

Marks each contact `ready` in marketing.contact_enrichment, provided the address that was
verified deliverable is still its address. This is where the lead branch (seed 000's
`lead_only`) ends; the messaging phase that will pick ready contacts up is not built yet, and
nothing here pretends it is. The update emits no event, so the claimed batch takes one
statement (a trigger on the contact's status would need BatchTx.for_each for its lineage).
Idempotent: the UPDATE matches only a contact not yet ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import LiteralString

from pydantic import BaseModel

from cascade.handling import BatchDeps, Item

EVENT_TYPE = "email_verified"

MARK_READY: LiteralString = """
    UPDATE marketing.contact_enrichment AS c
       SET status = 'ready', ready_at = now(), updated_at = now()
      FROM marketing.email_verification AS v
     WHERE c.id = ANY ($1::bigint[]) AND v.contact_id = c.id AND v.email = c.email
       AND v.verdict = 'deliverable' AND c.status <> 'ready'
"""


class Payload(BaseModel, frozen=True):
    contact_id: int


async def handle_many(items: Sequence[Item[Payload]], deps: BatchDeps) -> None:
    async with deps.completing_transaction() as tx:
        await tx.execute(MARK_READY, [item.payload.contact_id for item in tx.held])
