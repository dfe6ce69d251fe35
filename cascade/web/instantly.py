"""POST /webhooks/instantly: Instantly's opens, clicks and replies (seed 000).

Seed 000's body is `{"event_type": "email_opened" | "email_clicked" | "email_replied",
"data": {...}}` and leaves `data` open. What Instantly really posts was checked against its
API v2 documentation (developer.instantly.ai, "Webhook events" and "Create webhook"):

- one flat JSON object: `timestamp` (ISO 8601, when the event happened), `event_type`,
  `workspace`, `campaign_id` and `campaign_name` (Instantly's campaign, a UUID) always;
  `lead_email`, `email_account`, `step` and `variant` (from 1), `is_first`, `email_id`, the
  sent email's subject and text, and for replies `reply_subject`, `reply_text`,
  `reply_text_snippet`, `reply_html` when they apply; the lead's own fields as extra keys.
- its names for these events are email_opened, link_clicked (email_link_clicked when
  subscribing) and reply_received.
- it signs nothing and sends no event id; a webhook may carry fixed custom headers, which is
  how the shared secret arrives (WEBHOOK_SCHEME_INSTANTLY defaults to `shared_secret`: set the
  `x-webhook-secret` header in the webhook's `headers` to WEBHOOK_SECRET_INSTANTLY).

Both shapes are accepted: a body without `data` is Instantly's flat object, whose fields other
than event_type are the data. email_clicked, link_clicked and email_link_clicked are a click;
email_replied and reply_received a reply. Any other event type is refused with 422 naming
`event_type`: subscribe the webhook to these three only. Assumed, since the documentation does
not say: a click's link arrives as `link_url`, and `email_id` is Instantly's id of the email
we sent. Only `lead_email` is required; everything Instantly sent is kept in the row's
metadata.

`apply` runs inside the endpoint's transaction, after the delivery was claimed. The person is
found by `email_id` among messages sent with provider 'instantly' (their provider_message_id),
else by `lead_email` (any case): the contact with that address, preferring one with an email
message of this `step`, the newest. Our campaign is the message's (Instantly's campaign_id is
Instantly's own and is only kept). Then:

- an open or a click: a marketing.engagement_events row (provider 'instantly', occurred at
  `timestamp`), whose insert emits email_opened or email_clicked;
- a reply: a marketing.responses row (channel email, from `lead_email`, subject
  `reply_subject`, body `reply_text` or else the snippet, received at `timestamp`), whose
  insert emits reply_received.

De-duplication: since Instantly sends no event id, a delivery's key is the composite
[event, lead_email in lower case, campaign_id, timestamp, step], the event named by kind so a
click is one whatever it is called, and for a click its `link_url` too (a link scanner opens
every link of an email in the same millisecond: each is a click of its own); it applies
only when `timestamp` is present (without it, deliveries.py keys on the body's hash). The
same key is the engagement row's provider_event_id and the reply's provider_message_id, so
their UNIQUE constraints hold it too. An address we have no contact for is reported in the
202's `unknown_lead_emails`, as the Apify webhook reports unknown slots: a retry could not
make it known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, LiteralString

import asyncpg
from pydantic import BaseModel, Field, model_validator

from cascade.handling import Connection
from cascade.web.deliveries import Delivery, bounded_key
from cascade.web.delivery import Moment, Reply, store_reply
from cascade.web.fields import OptionalText, ProviderId

PROVIDER = "instantly"
KIND = {
    "email_opened": "open",
    "email_clicked": "click",
    "link_clicked": "click",
    "email_link_clicked": "click",
    "email_replied": "reply",
    "reply_received": "reply",
}

FIND_BY_EMAIL_ID: LiteralString = """
    SELECT contact_id, id AS message_id, campaign_id
      FROM marketing.message_queue
     WHERE provider = 'instantly' AND provider_message_id = $1
     ORDER BY id DESC
     LIMIT 1
"""
# One probe of contact_enrichment_email_lower_idx; a contact with a matching message first.
FIND_BY_LEAD_EMAIL: LiteralString = """
    SELECT c.id AS contact_id, m.id AS message_id, m.campaign_id
      FROM marketing.contact_enrichment AS c
      LEFT JOIN LATERAL (
          SELECT q.id, q.campaign_id
            FROM marketing.message_queue AS q
           WHERE q.contact_id = c.id AND q.channel = 'email'
             AND ($2::integer IS NULL OR q.sequence_step = $2::integer)
           ORDER BY q.provider IS NOT DISTINCT FROM 'instantly' DESC, q.id DESC
           LIMIT 1
      ) AS m ON true
     WHERE lower(c.email) = lower($1) AND c.email IS NOT NULL
     ORDER BY m.id IS NULL, c.id DESC
     LIMIT 1
"""
# Emits email_opened or email_clicked (triggers/400_engagement.sql); a copy with the same
# composite key conflicts and inserts nothing.
RECORD_ENGAGEMENT: LiteralString = """
    INSERT INTO marketing.engagement_events
        (contact_id, message_id, campaign_id, event_type, url, metadata, provider,
         provider_event_id, occurred_at)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, 'instantly', $7, coalesce($8, now()))
    ON CONFLICT ON CONSTRAINT engagement_events_provider_event_key DO NOTHING
    RETURNING id
"""


# Opens and clicks of many requests at once (group commit, cascade/web/group_commit.py): the
# claims, the lookups and the engagement rows of a whole batch in one statement, whose
# statement trigger emits every event in one insert, each with its row's correlation id
# (schema/0013). The same rules as claim + apply: a claimed delivery's message found by
# email_id, else by lead_email as FIND_BY_LEAD_EMAIL; claims in key order and rows in the
# order of the key their constraint holds (provider_event_id: a webhook-id header can make
# the two differ), so two batches sharing keys wait for each other instead of deadlocking.
# Engagement ids are drawn first so that each row's result can be matched to its delivery
# even without a provider_event_id. One row per delivery, in the order given. The arrays
# are parallel, one element per delivery, keys unique: $1 key, $2 event name, $3 verified,
# $4 correlation id, $5 email_id, $6 lead_email, $7 step, $8 kind, $9 link_url, $10 metadata
# (jsonb text), $11 provider_event_id, $12 occurred at.
RECORD_ENGAGEMENTS: LiteralString = """
    WITH delivery AS (
        SELECT *
          FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::text[],
                      $6::text[], $7::integer[], $8::text[], $9::text[], $10::text[],
                      $11::text[], $12::timestamptz[])
            WITH ORDINALITY
            AS d(event_key, event_name, verified, correlation_id, email_id, lead_email, step,
                 kind, url, metadata, provider_event_id, occurred_at, position)
    ),
    claimed AS (
        INSERT INTO marketing.processed_webhook_events
            (provider, event_key, event_name, verified, correlation_id)
        SELECT 'instantly', event_key, event_name, verified, correlation_id
          FROM delivery
         ORDER BY event_key
        ON CONFLICT (provider, event_key) DO NOTHING
        RETURNING event_key
    ),
    target AS (
        SELECT d.event_key, d.correlation_id, d.kind, d.url, d.metadata, d.provider_event_id,
               d.occurred_at,
               coalesce(by_id.contact_id, by_email.contact_id) AS contact_id,
               coalesce(by_id.message_id, by_email.message_id) AS message_id,
               coalesce(by_id.campaign_id, by_email.campaign_id) AS campaign_id,
               -- the column's identity sequence (needs USAGE on it, as the default does not)
               nextval('marketing.engagement_events_id_seq') AS engagement_id
          FROM delivery AS d
          JOIN claimed AS c USING (event_key)
          LEFT JOIN LATERAL (
              SELECT q.contact_id, q.id AS message_id, q.campaign_id
                FROM marketing.message_queue AS q
               WHERE q.provider = 'instantly' AND q.provider_message_id = d.email_id
               ORDER BY q.id DESC
               LIMIT 1
          ) AS by_id ON true
          LEFT JOIN LATERAL (
              SELECT ce.id AS contact_id, m.id AS message_id, m.campaign_id
                FROM marketing.contact_enrichment AS ce
                LEFT JOIN LATERAL (
                    SELECT q.id, q.campaign_id
                      FROM marketing.message_queue AS q
                     WHERE q.contact_id = ce.id AND q.channel = 'email'
                       AND (d.step IS NULL OR q.sequence_step = d.step)
                     ORDER BY q.provider IS NOT DISTINCT FROM 'instantly' DESC, q.id DESC
                     LIMIT 1
                ) AS m ON true
               WHERE by_id.contact_id IS NULL
                 AND lower(ce.email) = lower(d.lead_email) AND ce.email IS NOT NULL
               ORDER BY m.id IS NULL, ce.id DESC
               LIMIT 1
          ) AS by_email ON true
    ),
    recorded AS (
        INSERT INTO marketing.engagement_events
            (id, contact_id, message_id, campaign_id, event_type, url, metadata, provider,
             provider_event_id, occurred_at, correlation_id)
        SELECT engagement_id, contact_id, message_id, campaign_id, kind, url,
               metadata::jsonb, 'instantly', provider_event_id, coalesce(occurred_at, now()),
               correlation_id
          FROM target
         WHERE contact_id IS NOT NULL
         ORDER BY provider_event_id, event_key
        ON CONFLICT ON CONSTRAINT engagement_events_provider_event_key DO NOTHING
        RETURNING id
    )
    SELECT c.event_key IS NOT NULL AS claimed, t.contact_id, t.message_id,
           r.id AS engagement_event_id
      FROM delivery AS d
      LEFT JOIN claimed AS c USING (event_key)
      LEFT JOIN target AS t USING (event_key)
      LEFT JOIN recorded AS r ON r.id = t.engagement_id
     ORDER BY d.position
"""


class InstantlyData(BaseModel, frozen=True, extra="allow"):
    lead_email: Annotated[str, Field(min_length=3, max_length=320)]
    timestamp: Moment | None = None
    campaign_id: ProviderId = None
    step: Annotated[int, Field(ge=0, le=10_000, strict=True)] | None = None
    email_id: ProviderId = None
    link_url: OptionalText = None
    reply_subject: OptionalText = None
    reply_text: OptionalText = None
    reply_text_snippet: OptionalText = None


class InstantlyEvent(BaseModel, frozen=True):
    event_type: Literal[
        "email_opened", "email_clicked", "email_replied",
        "link_clicked", "email_link_clicked", "reply_received",
    ]  # fmt: skip
    data: InstantlyData

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, value: Any) -> Any:
        # Instantly posts one flat object; seed 000 nests the same fields under `data`.
        if isinstance(value, dict) and "data" not in value:
            data = {k: v for k, v in value.items() if k != "event_type"}
            return {**{k: v for k, v in value.items() if k == "event_type"}, "data": data}
        return value

    @property
    def kind(self) -> str:
        return KIND[self.event_type]

    def metadata(self) -> str:
        # pydantic's own JSON (its Rust serializer): ~2.6 µs against json.dumps of a dump's
        # 6.5, per open or click.
        return self.data.model_dump_json(exclude_none=True)


def composite_key(event: InstantlyEvent) -> str | None:
    """The delivery's documented key (see the module docstring); None without a timestamp."""
    data = event.data
    if data.timestamp is None:
        return None
    parts = [event.kind, data.lead_email.strip().lower(), data.campaign_id,
             data.timestamp.isoformat(), data.step]  # fmt: skip
    if event.kind == "click":
        parts.append(data.link_url)
    return bounded_key(json.dumps(parts, separators=(",", ":")))


@dataclass
class Summary:
    applied: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    unknown_lead_emails: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "skipped": self.skipped,
            "unknown_lead_emails": self.unknown_lead_emails,
        }


async def apply(conn: Connection, event: InstantlyEvent) -> Summary:
    """Records the open, click or reply for the contact it names (see the module docstring)."""
    summary = Summary()
    target = await _find(conn, event.data)
    if target is None:
        summary.unknown_lead_emails.append(event.data.lead_email)
        return summary
    found = {"contact_id": target["contact_id"], "message_id": target["message_id"]}
    key = composite_key(event)
    if event.kind == "reply":
        stored = await store_reply(
            conn, _reply(event, key), target["contact_id"], target["message_id"],
            target["campaign_id"], "email",
        )  # fmt: skip
        recorded = None if stored is None else {"response_id": stored}
    else:
        engagement = await conn.fetchval(
            RECORD_ENGAGEMENT, target["contact_id"], target["message_id"], target["campaign_id"],
            event.kind, event.data.link_url if event.kind == "click" else None,
            event.metadata(), key, event.data.timestamp,
        )  # fmt: skip
        recorded = None if engagement is None else {"engagement_event_id": engagement}
    if recorded is None:
        summary.skipped.append({"event": event.kind, **found, "reason": "recorded already"})
    else:
        summary.applied.append({"event": event.kind, **found, **recorded})
    return summary


def grouped(event: InstantlyEvent) -> bool:
    """Whether the delivery goes through the group commit: opens and clicks (the volume);
    a reply keeps a transaction of its own (`apply`)."""
    return event.kind != "reply"


async def record_engagements(
    conn: Connection, deliveries: Sequence[Delivery[InstantlyEvent]]
) -> list[dict[str, Any] | None]:
    """Claims and records many opens and clicks in one statement (RECORD_ENGAGEMENTS), so in
    one transaction (its own, or the caller's): per delivery, the summary `apply` would give,
    or None for a duplicate, a copy earlier in the same batch included."""
    first: dict[str, int] = {}
    for position, delivery in enumerate(deliveries):
        first.setdefault(delivery.key, position)
    unique = [deliveries[position] for position in first.values()]
    rows = await conn.fetch(RECORD_ENGAGEMENTS, *_columns(unique))
    outcome = {d.key: _summary(d.body, row) for d, row in zip(unique, rows, strict=True)}
    return [
        outcome[d.key] if first[d.key] == position else None
        for position, d in enumerate(deliveries)
    ]


def _columns(deliveries: Sequence[Delivery[InstantlyEvent]]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(12)]
    for delivery in deliveries:
        event, data = delivery.body, delivery.body.data
        values = (
            delivery.key, event.event_type, delivery.verified, delivery.correlation_id,
            data.email_id, data.lead_email.strip(), data.step, event.kind,
            data.link_url if event.kind == "click" else None, event.metadata(),
            delivery.composite_key, data.timestamp,
        )  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


def _summary(event: InstantlyEvent, row: asyncpg.Record) -> dict[str, Any] | None:
    if not row["claimed"]:
        return None
    summary = Summary()
    if row["contact_id"] is None:
        summary.unknown_lead_emails.append(event.data.lead_email)
        return summary.as_json()
    found = {"event": event.kind, "contact_id": row["contact_id"], "message_id": row["message_id"]}
    if row["engagement_event_id"] is None:
        summary.skipped.append({**found, "reason": "recorded already"})
    else:
        summary.applied.append({**found, "engagement_event_id": row["engagement_event_id"]})
    return summary.as_json()


async def _find(conn: Connection, data: InstantlyData) -> asyncpg.Record | None:
    if data.email_id is not None:
        target = await conn.fetchrow(FIND_BY_EMAIL_ID, data.email_id)
        if target is not None:
            return target
    return await conn.fetchrow(FIND_BY_LEAD_EMAIL, data.lead_email.strip(), data.step)


def _reply(event: InstantlyEvent, key: str | None) -> Reply:
    data = event.data
    return Reply(
        PROVIDER, key, data.lead_email, data.reply_subject,
        data.reply_text or data.reply_text_snippet, data.timestamp, event.metadata(),
    )  # fmt: skip
