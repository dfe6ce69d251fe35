"""reply_received: put the reply on the contact's timeline.

Reads the marketing.responses row the event names (a reply that a provider webhook stored:
triggers/400_engagement.sql emits this event for it) and writes one marketing.contact_timeline
row of type `reply_received`, with the response, message, campaign, channel, provider and
subject as its data and the time the reply arrived as its time. The reply's body stays in
marketing.responses. That write emits nothing.

This is the response processor's first step only. Classifying the reply (sentiment,
category), scoring the lead, syncing it to the CRM and cancelling follow-ups are a later
issue; the response keeps status 'received' until then, and nothing here pretends otherwise.

Idempotent: the timeline row is keyed by its source (contact_timeline_source_key), so a
re-run event inserts nothing. If the response is gone (its contact was erased), there is
nothing to record and the event is done; a database error retries with backoff.
"""

from __future__ import annotations

from typing import LiteralString

from pydantic import BaseModel

from cascade.handling import Deps

EVENT_TYPE = "reply_received"

RECORD_REPLY: LiteralString = """
    INSERT INTO marketing.contact_timeline
        (contact_id, event_type, event_data, event_timestamp, source, source_id)
    SELECT r.contact_id, 'reply_received',
           jsonb_strip_nulls(jsonb_build_object(
               'response_id', r.id, 'message_id', r.message_id, 'campaign_id', r.campaign_id,
               'channel', r.channel, 'provider', r.provider,
               'provider_message_id', r.provider_message_id, 'subject', r.subject)),
           r.received_at, 'responses', r.id
      FROM marketing.responses AS r
     WHERE r.id = $1
    ON CONFLICT ON CONSTRAINT contact_timeline_source_key DO NOTHING
"""


class Payload(BaseModel, frozen=True):
    id: int  # marketing.responses.id


async def handle(payload: Payload, deps: Deps) -> None:
    async with deps.completing_transaction() as tx:  # the row and "event done" commit together
        await tx.execute(RECORD_REPLY, payload.id)
