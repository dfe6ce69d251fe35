"""email_verified: the contact is ready for messaging.

Marks the contact `ready` in marketing.contact_enrichment, provided the address that was
verified deliverable is still its address. This is where the lead branch (seed 000's
`lead_only`) ends; the messaging phase that will pick ready contacts up is not built yet, and
nothing here pretends it is. Idempotent: the UPDATE matches only a contact not yet ready.
"""

from __future__ import annotations

from typing import LiteralString

from pydantic import BaseModel

from cascade.handling import Deps

EVENT_TYPE = "email_verified"

MARK_READY: LiteralString = """
    UPDATE marketing.contact_enrichment AS c
       SET status = 'ready', ready_at = now(), updated_at = now()
      FROM marketing.email_verification AS v
     WHERE c.id = $1 AND v.contact_id = c.id AND v.email = c.email
       AND v.verdict = 'deliverable' AND c.status <> 'ready'
"""


class Payload(BaseModel, frozen=True):
    contact_id: int


async def handle(payload: Payload, deps: Deps) -> None:
    async with deps.completing_transaction() as tx:
        await tx.execute(MARK_READY, payload.contact_id)
