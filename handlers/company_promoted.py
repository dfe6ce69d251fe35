"""company_promoted: the slot creator.

Creates the company's executive role slots in marketing.company_slots: CEO, CFO and HR, each
switched by seed 000's INCLUDE_CEO, INCLUDE_CFO, INCLUDE_HR (default on). The insert's
statement trigger emits one slots_created for the company. Idempotent: a slot is unique per
(company, role) and the insert skips existing ones. With every role switched off the company
stops here, and the log says so. A company that no longer exists is a permanent failure.
"""

from __future__ import annotations

from typing import LiteralString

from pydantic import BaseModel

from cascade.enrichment.services import Enrichment
from cascade.handling import Deps, PermanentFailure

EVENT_TYPE = "company_promoted"

CREATE_SLOTS: LiteralString = """
    INSERT INTO marketing.company_slots (company_id, role)
    SELECT company.id, role
      FROM marketing.company_master AS company, unnest($2::text[]) AS role
     WHERE company.id = $1
    ON CONFLICT (company_id, role) DO NOTHING
"""
EXISTS: LiteralString = "SELECT EXISTS (SELECT FROM marketing.company_master WHERE id = $1)"


class Payload(BaseModel, frozen=True):
    id: int


async def handle(payload: Payload, deps: Deps) -> None:
    roles = deps.resource(Enrichment).settings.roles
    if not roles:
        deps.log.warning("INCLUDE_CEO, INCLUDE_CFO and INCLUDE_HR are all off: no slots")
        return
    async with deps.completing_transaction() as tx:
        if await tx.execute(CREATE_SLOTS, payload.id, list(roles)) == "INSERT 0 0" and not (
            await tx.fetchval(EXISTS, payload.id)
        ):
            raise PermanentFailure(f"company {payload.id} does not exist")
