"""POST /webhooks/delivery: a sending provider's reports on messages we sent (seed 000).

The body:

    {"event": "send_result" | "bounce_event" | "reply_event",
     "payload": {"message_ids": ["msg_123"],            # ours: 123, "123" or "msg_123"
                 "success": true,                       # send_result: sent (true) or failed
                 "external_id": "instantly_abc123",     # the provider's id of the message
                 "unique_id": "04.01.01.04.20000.003"}} # seed 000's process key

Only `message_ids` (at least one) and `success` are required: they are seed 000's. Optional,
by event (our additions; the seed leaves them open):

- send_result: `status`, one of sent, deferred, delivered, failed, for a provider that reports
  more than success (default: sent if `success`, else failed); `reason`, the provider's words.
- bounce_event: `bounce_type` (hard or soft) and `reason`.
- reply_event: `reply_id` (the provider's id of the reply), `from_address`, `subject`, `body`,
  `received_at` (ISO 8601; default now).

Any other field is kept, with `external_id` and `unique_id`, in the row's `metadata`.

`apply` runs inside the endpoint's transaction, after the delivery was claimed. It locks the
named messages in id order (so concurrent reports on the same messages cannot deadlock) and:

- send_result, bounce_event: moves each message's marketing.message_queue.delivery_status
  forward only (marketing.delivery_rank, schema/0010): sent < deferred < delivered < bounced =
  failed = complained, with the final states equal, so the first final report stands. A
  message that moved gets a marketing.delivery_log row and, when it had none, `external_id` as
  its provider_message_id. A report that would move a message back (a 'delivered' after its
  'bounced', a redelivered 'sent') changes nothing and is answered as superseded. These writes
  emit no event: message_sent belongs to the send executor, which is not built yet.
- reply_event: stores one marketing.responses row per message (contact, campaign and channel
  taken from the message), whose insert emits reply_received (triggers/400_engagement.sql).
  With `reply_id`, a reply already stored under that id is skipped.

A message id we do not have (never ours, or erased with its contact or campaign) is reported
in the 202's `unknown_message_ids`, as the Apify webhook reports unknown slots: one bad id
never loses the good ones, and refusing would only make the sender retry, for days, something
that cannot succeed (Standard Webhooks senders disable an endpoint that keeps failing).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, LiteralString

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, Field

from cascade.handling import Connection
from cascade.web.fields import MessageId, OptionalText, ProviderId

PROVIDER = "delivery"
DeliveryStatus = Literal["sent", "deferred", "delivered", "failed"]


# In id order: two deliveries naming the same messages lock them in the same order.
LOCK_MESSAGES: LiteralString = """
    SELECT id, delivery_status FROM marketing.message_queue
     WHERE id = ANY($1::bigint[])
     ORDER BY id
       FOR UPDATE
"""
# The compare-and-set: a message moves only to a state of higher rank, and only a message
# that moved is logged. $1 ids, $2 status, $3 bounce type, $4 detail, $5 the provider's
# message id, $6 the provider when the message names none, $7 metadata.
ADVANCE_DELIVERY: LiteralString = """
    WITH moved AS (
        UPDATE marketing.message_queue AS m
           SET delivery_status = $2::text, delivery_status_at = now(), updated_at = now(),
               provider_message_id = coalesce(m.provider_message_id, $5::text)
         WHERE m.id = ANY($1::bigint[])
           AND marketing.delivery_rank($2::text) > marketing.delivery_rank(m.delivery_status)
        RETURNING m.id, m.campaign_id, m.contact_id, m.provider, m.provider_message_id
    )
    INSERT INTO marketing.delivery_log
        (message_id, campaign_id, contact_id, status, bounce_type, provider,
         provider_message_id, detail, metadata)
    SELECT id, campaign_id, contact_id, $2::text, $3::text, coalesce(provider, $6::text),
           provider_message_id, $4::text, $7::jsonb
      FROM moved
     ORDER BY id
    RETURNING message_id
"""
# One reply per message named; with the provider's reply id, a reply stored before (this
# delivery's twin sent by another route) conflicts and is skipped. $1 ids, $2 from, $3
# subject, $4 body, $5 the provider when the message names none, $6 reply id, $7 received at,
# $8 metadata. Emits reply_received per row (triggers/400_engagement.sql).
STORE_REPLIES: LiteralString = """
    INSERT INTO marketing.responses
        (contact_id, message_id, campaign_id, channel, from_address, subject, body, provider,
         provider_message_id, received_at, metadata)
    SELECT m.contact_id, m.id, m.campaign_id, m.channel, $2::text, $3::text, $4::text,
           coalesce(m.provider, $5::text), $6::text, coalesce($7::timestamptz, now()),
           $8::jsonb
      FROM marketing.message_queue AS m
     WHERE m.id = ANY($1::bigint[])
     ORDER BY m.id
    ON CONFLICT ON CONSTRAINT responses_provider_message_key DO NOTHING
    RETURNING message_id
"""
# The engagement webhooks' reply (cascade/web/instantly.py, heyreach.py): one response for a
# contact they found, with the message when they found one; the same conflict rule.
STORE_REPLY: LiteralString = """
    INSERT INTO marketing.responses
        (contact_id, message_id, campaign_id, channel, from_address, subject, body, provider,
         provider_message_id, received_at, metadata)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, now()), $11::jsonb)
    ON CONFLICT ON CONSTRAINT responses_provider_message_key DO NOTHING
    RETURNING id
"""


def _not_a_number(value: object) -> object:
    # pydantic reads a number as Unix seconds; the providers write ISO 8601 text, and a number
    # here is a mistake, not a time.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be ISO 8601 text with an offset, not a number")
    return value


def _in_utc(moment: dt.datetime) -> dt.datetime:
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:  # year 1 at +14:00 is year 0 in UTC, which nothing can store
        raise ValueError("is out of range once in UTC") from None


# When something happened, as the provider writes it (ISO 8601 text with an offset), kept in
# UTC: equal instants then make equal de-duplication keys however they were written.
Moment = Annotated[AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_in_utc)]


class DeliveryPayload(BaseModel, frozen=True, extra="allow"):
    message_ids: Annotated[list[MessageId], Field(min_length=1, max_length=10_000)]
    success: Annotated[bool, Field(strict=True)]  # `"yes"` or `1` is no answer
    external_id: ProviderId = None
    unique_id: OptionalText = None
    status: DeliveryStatus | None = None
    bounce_type: Literal["hard", "soft"] | None = None
    reason: OptionalText = None
    reply_id: ProviderId = None
    from_address: OptionalText = None
    subject: OptionalText = None
    body: OptionalText = None
    received_at: Moment | None = None

    def metadata(self) -> str:
        """What has no column of its own (external_id, unique_id, any extra field), as jsonb
        text."""
        return json.dumps(self.model_dump(mode="json", exclude=COLUMNS, exclude_none=True))


# Stored in a column of their own (or only used to find the rows): not repeated in metadata.
COLUMNS = {
    "message_ids", "success", "status", "bounce_type", "reason", "reply_id", "from_address",
    "subject", "body", "received_at",
}  # fmt: skip


class DeliveryReport(BaseModel, frozen=True):
    event: Literal["send_result", "bounce_event", "reply_event"]
    payload: DeliveryPayload


@dataclass(frozen=True)
class Reply:
    """A reply as marketing.responses stores it; `metadata` is jsonb text."""

    provider: str
    reply_id: str | None
    from_address: str | None
    subject: str | None
    body: str | None
    received_at: dt.datetime | None
    metadata: str


@dataclass
class Summary:
    applied: list[int] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    unknown_message_ids: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "skipped": self.skipped,
            "unknown_message_ids": self.unknown_message_ids,
        }


async def apply(conn: Connection, report: DeliveryReport) -> Summary:
    """Applies the report to the messages it names (see the module docstring)."""
    payload = report.payload
    named = list(dict.fromkeys(payload.message_ids))
    current = {r["id"]: r["delivery_status"] for r in await conn.fetch(LOCK_MESSAGES, named)}
    known = [i for i in named if i in current]
    summary = Summary(unknown_message_ids=[i for i in named if i not in current])
    if not known:
        return summary
    if report.event == "reply_event":
        summary.applied = await store_replies(conn, known, _reply(payload))
        summary.skipped = [
            {"message_id": i, "reason": f"reply {payload.reply_id} is stored already"}
            for i in known
            if i not in summary.applied
        ]
        return summary
    status = reported_status(report)
    summary.applied = await advance(
        conn, known, status, provider=None, external_id=payload.external_id,
        bounce_type=payload.bounce_type, reason=payload.reason, metadata=payload.metadata(),
    )  # fmt: skip
    summary.skipped = [superseded(i, status, current[i]) for i in known if i not in summary.applied]
    return summary


def reported_status(report: DeliveryReport) -> str:
    if report.event == "bounce_event":
        return "bounced"
    payload = report.payload
    return payload.status or ("sent" if payload.success else "failed")


def _reply(payload: DeliveryPayload) -> Reply:
    return Reply(
        PROVIDER, payload.reply_id, payload.from_address, payload.subject, payload.body,
        payload.received_at, payload.metadata(),
    )  # fmt: skip


async def advance(
    conn: Connection,
    message_ids: list[int],
    status: str,
    *,
    provider: str | None,
    external_id: str | None = None,
    bounce_type: str | None = None,
    reason: str | None = None,
    metadata: str = "{}",
) -> list[int]:
    """Moves the messages' delivery state forward to `status` and logs each move; returns
    the ids of the messages that moved. `provider` names the sender for a message that names
    none; `external_id` becomes the provider_message_id of a message that has none."""
    rows = await conn.fetch(
        ADVANCE_DELIVERY, message_ids, status, bounce_type if status == "bounced" else None,
        reason, external_id, provider, metadata,
    )  # fmt: skip
    return sorted(row["message_id"] for row in rows)


async def store_replies(conn: Connection, message_ids: list[int], reply: Reply) -> list[int]:
    """One response per message; the ids of the messages whose reply is new."""
    rows = await conn.fetch(
        STORE_REPLIES, message_ids, reply.from_address, reply.subject, reply.body,
        reply.provider, reply.reply_id, reply.received_at, reply.metadata,
    )  # fmt: skip
    return sorted(row["message_id"] for row in rows)


async def store_reply(
    conn: Connection,
    reply: Reply,
    contact_id: int,
    message_id: int | None,
    campaign_id: int | None,
    channel: str,
) -> int | None:
    """One response for a contact; its id, or None if the provider's reply id is stored."""
    stored: int | None = await conn.fetchval(
        STORE_REPLY, contact_id, message_id, campaign_id, channel, reply.from_address,
        reply.subject, reply.body, reply.provider, reply.reply_id, reply.received_at,
        reply.metadata,
    )  # fmt: skip
    return stored


def superseded(message_id: int, reported: str, current: str | None) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "reported": reported,
        "current": current,
        "reason": f"superseded: the message is {current} already, and its state only moves on",
    }
