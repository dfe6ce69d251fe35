"""POST /webhooks/heyreach: HeyReach's LinkedIn messages sent and replies (seed 000).

Seed 000's body is `{"type": "message_sent" | "message_replied", "payload": {...}}` and leaves
`payload` open. HeyReach's own webhook reference could not be checked (it is not among the
sources available to us); the fields below follow a third-party integration guide's account
of HeyReach's payloads and are assumptions:

    "payload": {"leadProfile": {"linkedInUrl": "https://www.linkedin.com/in/ada",
                                "emailAddress": "ada@example.com",
                                "firstName": "Ada", "lastName": "Lovelace"},
                "message": {"id": "m_abc", "text": "Thanks for reaching out"},
                "campaign": {"id": 123, "name": "LinkedIn Q2"},
                "timestamp": "2025-05-26T12:00:00Z"}

Required: `leadProfile` with `linkedInUrl` (or `profileUrl`) or `emailAddress`, to find the
person. The same guide says HeyReach signs nothing; WEBHOOK_SCHEME_HEYREACH may then be
`shared_secret` (a fixed header), though the default is Standard Webhooks, as for a relay
that signs. Anything else HeyReach sends is kept in the row's metadata.

`apply` runs inside the endpoint's transaction, after the delivery was claimed. The contact is
found by LinkedIn URL (case, scheme, `www.` and a trailing slash ignored), else by email (any
case), the newest first. The message is the one sent with provider 'heyreach' under
`message.id` (its provider_message_id), else the contact's newest LinkedIn message. Then:

- message_sent: the message's delivery state moves forward to 'sent' with a
  marketing.delivery_log row, exactly as /webhooks/delivery's send_result does
  (cascade/web/delivery.py), and `message.id` becomes its provider_message_id if it had none.
  It emits nothing (message_sent belongs to the send executor, not built yet). A message
  that is further along already is reported as superseded.
- message_replied: a marketing.responses row (channel linkedin, provider 'heyreach', body
  `message.text`, received at `timestamp`), whose insert emits reply_received.

De-duplication: the Standard Webhooks `webhook-id` when there is one; else the composite
[type, message.id] when the message has an id (a reply's id is unique), else [type, the
lead's URL or email, timestamp] when there is a timestamp; else the body's hash
(deliveries.py). A reply's provider_message_id is `message.id`, or else that composite key,
so the responses' UNIQUE constraint holds it too. A person or message we do not have is
reported in the 202 (`unknown`), as the Apify webhook reports unknown slots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, LiteralString

import asyncpg
from pydantic import AliasChoices, BaseModel, Field, model_validator

from cascade.handling import Connection
from cascade.web.deliveries import bounded_key
from cascade.web.delivery import LOCK_MESSAGES, Moment, Reply, advance, store_reply, superseded
from cascade.web.fields import OptionalText, ProviderId

PROVIDER = "heyreach"

# The LinkedIn URL compared as contact_enrichment_linkedin_idx (schema/0010) indexes it:
# case, scheme, `www.` and trailing slashes ignored. A match by URL wins over one by email.
FIND_CONTACT: LiteralString = """
    WITH by_url AS (
        SELECT id, 1 AS rank FROM marketing.contact_enrichment
         WHERE linkedin_url IS NOT NULL
           AND regexp_replace(lower(linkedin_url), '^(https?://)?(www\\.)?|/+$', '', 'g')
               = regexp_replace(lower($1::text), '^(https?://)?(www\\.)?|/+$', '', 'g')
    ), by_email AS (
        SELECT id, 2 AS rank FROM marketing.contact_enrichment
         WHERE email IS NOT NULL AND lower(email) = lower($2::text)
    )
    SELECT id FROM (SELECT * FROM by_url UNION ALL SELECT * FROM by_email) AS found
     ORDER BY rank, id DESC
     LIMIT 1
"""
# The exact match first; coalesce, because a message with no provider or provider message id
# makes the comparison NULL, and DESC puts NULLs first.
FIND_MESSAGE: LiteralString = """
    SELECT id, campaign_id FROM marketing.message_queue
     WHERE contact_id = $1
       AND (($2::text IS NOT NULL AND provider = 'heyreach' AND provider_message_id = $2::text)
            OR channel = 'linkedin')
     ORDER BY coalesce(provider = 'heyreach' AND provider_message_id = $2::text, false) DESC,
              id DESC
     LIMIT 1
"""


class LeadProfile(BaseModel, frozen=True, extra="allow"):
    # Integrations describe HeyReach's lead API naming it `profileUrl`: either name is taken.
    linkedin_url: OptionalText = Field(
        None, validation_alias=AliasChoices("linkedInUrl", "profileUrl")
    )
    email_address: OptionalText = Field(None, validation_alias="emailAddress")

    @model_validator(mode="after")
    def _names_someone(self) -> LeadProfile:
        if self.linkedin_url is None and self.email_address is None:
            raise ValueError("needs linkedInUrl or emailAddress to find the person")
        return self


class HeyReachMessage(BaseModel, frozen=True, extra="allow"):
    id: ProviderId = None
    text: OptionalText = None


class HeyReachPayload(BaseModel, frozen=True, extra="allow"):
    lead_profile: LeadProfile = Field(validation_alias="leadProfile")
    message: HeyReachMessage = HeyReachMessage()
    timestamp: Moment | None = None


class HeyReachEvent(BaseModel, frozen=True):
    type: Literal["message_sent", "message_replied"]
    payload: HeyReachPayload

    def metadata(self) -> str:
        return json.dumps(self.payload.model_dump(mode="json", exclude_none=True))


def composite_key(event: HeyReachEvent) -> str | None:
    """The delivery's documented key (see the module docstring); None when it cannot be made."""
    payload = event.payload
    if payload.message.id is not None:
        return bounded_key(json.dumps([event.type, payload.message.id], separators=(",", ":")))
    if payload.timestamp is None:
        return None
    lead = payload.lead_profile
    who = (lead.linkedin_url or lead.email_address or "").strip().lower()
    return bounded_key(
        json.dumps([event.type, who, payload.timestamp.isoformat()], separators=(",", ":"))
    )


@dataclass
class Summary:
    applied: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "skipped": self.skipped, "unknown": self.unknown}


async def apply(conn: Connection, event: HeyReachEvent) -> Summary:
    """Records the message sent or the reply (see the module docstring)."""
    summary = Summary()
    lead = event.payload.lead_profile
    contact_id: int | None = await conn.fetchval(
        FIND_CONTACT, lead.linkedin_url, lead.email_address
    )
    if contact_id is None:
        who = {"linkedInUrl": lead.linkedin_url, "emailAddress": lead.email_address}
        summary.unknown.append(who)
        return summary
    message = await conn.fetchrow(FIND_MESSAGE, contact_id, event.payload.message.id)
    if event.type == "message_replied":
        await _replied(conn, event, contact_id, message, summary)
    elif message is None:
        summary.unknown.append({"contact_id": contact_id, "message": event.payload.message.id})
    else:
        await _sent(conn, event, message["id"], summary)
    return summary


async def _sent(conn: Connection, event: HeyReachEvent, message_id: int, summary: Summary) -> None:
    locked = await conn.fetchrow(LOCK_MESSAGES, [message_id])
    current = None if locked is None else locked["delivery_status"]
    moved = await advance(
        conn, [message_id], "sent", provider=PROVIDER, external_id=event.payload.message.id,
        metadata=event.metadata(),
    )  # fmt: skip
    if moved:
        summary.applied.append({"event": "sent", "message_id": message_id})
    else:
        summary.skipped.append(superseded(message_id, "sent", current))


async def _replied(
    conn: Connection,
    event: HeyReachEvent,
    contact_id: int,
    message: asyncpg.Record | None,
    summary: Summary,
) -> None:
    payload = event.payload
    reply = Reply(
        PROVIDER, payload.message.id or composite_key(event), payload.lead_profile.email_address,
        None, payload.message.text, payload.timestamp, event.metadata(),
    )  # fmt: skip
    message_id = None if message is None else message["id"]
    campaign_id = None if message is None else message["campaign_id"]
    stored = await store_reply(conn, reply, contact_id, message_id, campaign_id, "linkedin")
    found = {"contact_id": contact_id, "message_id": message_id}
    if stored is None:
        summary.skipped.append({"event": "reply", **found, "reason": "recorded already"})
    else:
        summary.applied.append({"event": "reply", **found, "response_id": stored})
