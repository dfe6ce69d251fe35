"""email_opened: put the open on the contact's timeline.

Reads the marketing.engagement_events row the event names (an 'open' that a provider webhook
recorded: triggers/400_engagement.sql emits this event for it) and writes one
marketing.contact_timeline row of type `email_opened`, with the message, campaign, provider
and provider event id as its data and the time of the open as its time. That write emits
nothing.

This is the engagement tracker's first step only. Lead scoring, which will read these rows
and emit lead_qualified, is a later issue, and nothing here pretends to score.

Idempotent: the timeline row is keyed by its source (contact_timeline_source_key), so a
re-run event inserts nothing. If the engagement row is gone (its contact was erased), there
is nothing to record and the event is done; a database error retries with backoff.
"""

from __future__ import annotations

from typing import LiteralString

from pydantic import BaseModel

from cascade.handling import Deps

EVENT_TYPE = "email_opened"

# $1 the engagement row, $2 the timeline event type. Shared with handlers/email_clicked.py.
RECORD_ENGAGEMENT: LiteralString = """
    INSERT INTO marketing.contact_timeline
        (contact_id, event_type, event_data, event_timestamp, source, source_id)
    SELECT e.contact_id, $2::text,
           jsonb_strip_nulls(jsonb_build_object(
               'engagement_event_id', e.id, 'message_id', e.message_id,
               'campaign_id', e.campaign_id, 'provider', e.provider,
               'provider_event_id', e.provider_event_id, 'url', e.url)),
           e.occurred_at, 'engagement_events', e.id
      FROM marketing.engagement_events AS e
     WHERE e.id = $1
    ON CONFLICT ON CONSTRAINT contact_timeline_source_key DO NOTHING
"""


class Payload(BaseModel, frozen=True):
    id: int  # marketing.engagement_events.id


async def handle(payload: Payload, deps: Deps) -> None:
    async with deps.completing_transaction() as tx:  # the row and "event done" commit together
        await tx.execute(RECORD_ENGAGEMENT, payload.id, EVENT_TYPE)
