"""email_clicked: put the click on the contact's timeline.

Reads the marketing.engagement_events row the event names (a 'click' that a provider webhook
recorded: triggers/400_engagement.sql emits this event for it) and writes one
marketing.contact_timeline row of type `email_clicked`, with the clicked URL, message,
campaign and provider as its data and the time of the click as its time. That write emits
nothing. The statement is handlers/email_opened.py's: an open and a click are recorded alike.

This is the engagement tracker's first step only. Lead scoring, which will read these rows
and emit lead_qualified, is a later issue, and nothing here pretends to score.

Idempotent: the timeline row is keyed by its source (contact_timeline_source_key), so a
re-run event inserts nothing. If the engagement row is gone (its contact was erased), there
is nothing to record and the event is done; a database error retries with backoff.
"""

from __future__ import annotations

from pydantic import BaseModel

from cascade.handling import Deps
from handlers.email_opened import RECORD_ENGAGEMENT

EVENT_TYPE = "email_clicked"


class Payload(BaseModel, frozen=True):
    id: int  # marketing.engagement_events.id


async def handle(payload: Payload, deps: Deps) -> None:
    async with deps.completing_transaction() as tx:  # the row and "event done" commit together
        await tx.execute(RECORD_ENGAGEMENT, payload.id, EVENT_TYPE)
