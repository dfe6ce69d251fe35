"""The group commit's statement (instantly.RECORD_ENGAGEMENTS) does what a delivery's own
transaction does (claim + instantly.apply): the same answer, engagement row and event, for
each way a delivery finds its person or fails to. Each path runs in a transaction rolled
back afterwards, on the same seeded database."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from cascade.web import instantly
from cascade.web.deliveries import CLAIM_DELIVERY, Delivery

SEED = """
    WITH company AS (
        INSERT INTO marketing.company_master (company_name, domain, website, country)
        VALUES ('Acme', 'acme.com', 'https://acme.com', 'US') RETURNING id
    ),
    campaign AS (
        INSERT INTO marketing.campaigns (campaign_name) VALUES ('Q3') RETURNING id
    ),
    person AS (
        INSERT INTO marketing.contact_enrichment
            (company_id, full_name, company_name, email, provider, provider_mode)
        SELECT company.id, x.name, 'Acme', x.email, 'prospeo', 'sandbox'
          FROM company, (VALUES ('A', 'a@acme.com'), ('B', 'b@acme.com'), ('B2', 'B@acme.com'),
                                ('C', 'c@acme.com')) AS x(name, email)
        RETURNING id, full_name
    )
    INSERT INTO marketing.message_queue
        (campaign_id, contact_id, sequence_step, channel, provider, provider_message_id)
    SELECT campaign.id, person.id, s.step, 'email', s.provider, s.pmid
      FROM campaign, person
      JOIN (VALUES ('A', 1, 'instantly', 'email-a1'), ('A', 2, 'smtp', 'x-a2'),
                   ('B', 1, 'instantly', 'email-b1'), ('B2', 2, 'instantly', 'email-b2'))
           AS s(name, step, provider, pmid) ON s.name = person.full_name
"""

# Found by email_id; email_id unknown, so by lead email and step; lead email in another case
# with spaces; two contacts sharing an address (the one with a message of that step wins);
# no step; a contact without messages; nobody; a click's link; an open's stray link_url
# (not kept); an email_id that names another contact's email.
SCENARIOS: list[dict[str, Any]] = [
    {"event_type": "email_opened", "lead_email": "a@acme.com", "email_id": "email-a1", "step": 1},
    {"event_type": "email_opened", "lead_email": "a@acme.com", "email_id": "nope", "step": 2},
    {"event_type": "email_opened", "lead_email": " A@ACME.com ", "step": 3},
    {"event_type": "email_opened", "lead_email": "b@acme.com", "step": 1},
    {"event_type": "email_opened", "lead_email": "b@acme.com", "step": 2},
    {"event_type": "email_opened", "lead_email": "b@acme.com"},
    {"event_type": "email_opened", "lead_email": "c@acme.com", "step": 1},
    {"event_type": "email_opened", "lead_email": "nobody@acme.com", "step": 1},
    {"event_type": "link_clicked", "lead_email": "a@acme.com", "link_url": "https://x.y/1"},
    {"event_type": "email_opened", "lead_email": "a@acme.com", "link_url": "https://x.y/1"},
    {"event_type": "email_clicked", "lead_email": "a@acme.com", "email_id": "email-b1"},
]

ROW = """
    SELECT contact_id, message_id, campaign_id, event_type, url, metadata, provider,
           provider_event_id, occurred_at = created_at AS at_now, correlation_id
      FROM marketing.engagement_events ORDER BY id
"""
EVENTS = "SELECT event_type, correlation_id FROM marketing.pipeline_events ORDER BY id"


def delivery(data: dict[str, Any], stamped: bool) -> Delivery[instantly.InstantlyEvent]:
    body = dict(data)
    if stamped:
        body["timestamp"] = "2025-06-02T09:30:00Z"
    event = instantly.InstantlyEvent.model_validate_json(json.dumps(body))
    composite = instantly.composite_key(event)
    key = composite or "sha256:" + json.dumps(body)
    return Delivery("instantly", event, key, False, "corr-1", composite)


Written = tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]


async def rolled_back(db: asyncpg.Connection, write: Callable[[], Awaitable[Any]]) -> Written:
    """What `write` answered (engagement ids left out: each path draws its own), and the rows
    and events it wrote; then undone."""
    transaction = db.transaction()
    await transaction.start()
    try:
        summary = await write()
        rows = [dict(r) for r in await db.fetch(ROW)]
        events = [dict(r) for r in await db.fetch(EVENTS)]
    finally:
        await transaction.rollback()
    for applied in summary["applied"] if summary else []:
        applied.pop("engagement_event_id")
    return summary, rows, events


async def apply_alone(
    db: asyncpg.Connection, d: Delivery[instantly.InstantlyEvent]
) -> dict[str, Any]:
    claimed = await db.fetchval(
        CLAIM_DELIVERY, "instantly", d.key, d.body.event_type, False, d.correlation_id
    )
    assert claimed
    return (await instantly.apply(db, d.body)).as_json()


async def apply_grouped(
    db: asyncpg.Connection, d: Delivery[instantly.InstantlyEvent]
) -> dict[str, Any] | None:
    (summary,) = await instantly.record_engagements(db, [d])
    return summary


@pytest.mark.parametrize("stamped", [True, False])
@pytest.mark.parametrize("data", SCENARIOS)
async def test_the_batch_statement_matches_a_deliverys_own_transaction(
    db: asyncpg.Connection, data: dict[str, Any], stamped: bool
) -> None:
    await db.execute(SEED)
    await db.execute("DELETE FROM marketing.pipeline_events")
    d = delivery(data, stamped)

    alone = await rolled_back(db, lambda: apply_alone(db, d))
    grouped = await rolled_back(db, lambda: apply_grouped(db, d))

    assert grouped == alone
