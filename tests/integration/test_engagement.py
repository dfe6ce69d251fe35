"""Phase 3's first stages through the real triggers, handlers and listener: an engagement or
reply row emits its event (triggers/400_engagement.sql), and email_opened, email_clicked and
reply_received put it on the contact's timeline, once, with nothing left dead."""

from __future__ import annotations

import json

import asyncpg
import pytest

from handlers import REGISTRY
from tests.support.listening import drain

ADD_CONTACT = """
    WITH company AS (
        INSERT INTO marketing.company_master (company_name, domain, website, country)
        VALUES ('Acme', 'acme.com', 'https://acme.com', 'US') RETURNING id
    )
    INSERT INTO marketing.contact_enrichment
        (company_id, full_name, company_name, email, provider, provider_mode)
    SELECT id, 'Ada Lovelace', 'Acme', 'ada@acme.com', 'prospeo', 'sandbox' FROM company
    RETURNING id
"""
ADD_MESSAGE = """
    WITH campaign AS (
        INSERT INTO marketing.campaigns (campaign_name) VALUES ('Q3') RETURNING id
    )
    INSERT INTO marketing.message_queue (campaign_id, contact_id, provider)
    SELECT id, $1, 'instantly' FROM campaign
    RETURNING id, campaign_id
"""
# Two opens, a click and an unsubscribe in one statement, as a batch webhook would write them.
ADD_ENGAGEMENT = """
    INSERT INTO marketing.engagement_events
        (contact_id, message_id, campaign_id, event_type, url, provider, provider_event_id,
         occurred_at)
    VALUES ($1, $2, $3, 'open', NULL, 'instantly', 'o-1', '2025-06-02 09:00+00'),
           ($1, $2, $3, 'open', NULL, 'instantly', 'o-2', '2025-06-02 09:05+00'),
           ($1, $2, $3, 'click', 'https://ours.example/pricing', 'instantly', 'c-1',
            '2025-06-02 09:06+00'),
           ($1, $2, $3, 'unsubscribe', NULL, 'instantly', 'u-1', '2025-06-02 09:07+00')
    RETURNING id, event_type
"""
ADD_REPLY = """
    INSERT INTO marketing.responses
        (contact_id, message_id, campaign_id, subject, body, provider, provider_message_id,
         received_at)
    VALUES ($1, $2, $3, 'Re: Q3', 'Let''s talk', 'instantly', 'r-1', '2025-06-02 10:00+00')
    RETURNING id
"""
TIMELINE = """
    SELECT event_type, event_data, event_timestamp, source, source_id
      FROM marketing.contact_timeline WHERE contact_id = $1 ORDER BY event_timestamp
"""
EVENTS = """
    SELECT event_type, status, record_id, payload FROM marketing.pipeline_events
     WHERE event_type IN ('email_opened', 'email_clicked', 'reply_received') ORDER BY id
"""
REPLAY = """
    INSERT INTO marketing.pipeline_events (event_type, payload, record_id)
    VALUES ($1, jsonb_build_object('id', $2::bigint), $2)
"""


@pytest.fixture
async def sent(db: asyncpg.Connection) -> asyncpg.Record:
    """A message sent to Ada: (contact_id, message_id, campaign_id). The enrichment events
    that making Ada emitted are removed: this test is about engagement alone."""
    contact_id = await db.fetchval(ADD_CONTACT)
    message = await db.fetchrow(ADD_MESSAGE, contact_id)
    assert message is not None
    await db.execute("DELETE FROM marketing.pipeline_events")
    row = await db.fetchrow(
        "SELECT $1::bigint AS contact_id, $2::bigint AS message_id, $3::bigint AS campaign_id",
        contact_id, message["id"], message["campaign_id"],
    )  # fmt: skip
    assert row is not None
    return row


async def test_engagement__each_open_click_and_reply_emits_its_event_with_a_slim_payload(
    db: asyncpg.Connection, sent: asyncpg.Record
) -> None:
    rows = await db.fetch(ADD_ENGAGEMENT, *sent)
    reply = await db.fetchval(ADD_REPLY, *sent)

    events = await db.fetch(EVENTS)
    assert [(e["event_type"], e["record_id"]) for e in events] == [
        ("email_opened", rows[0]["id"]), ("email_opened", rows[1]["id"]),
        ("email_clicked", rows[2]["id"]), ("reply_received", reply),
    ]  # fmt: skip
    replied = json.loads(events[-1]["payload"])
    assert replied == {
        "id": reply, "contact_id": sent["contact_id"], "message_id": sent["message_id"],
        "campaign_id": sent["campaign_id"], "channel": "email", "provider": "instantly",
        "received_at": replied["received_at"],
    }  # fmt: skip
    assert "body" not in replied


async def test_engagement__the_handlers_put_each_on_the_timeline_once(
    db: asyncpg.Connection, database_url: str, sent: asyncpg.Record
) -> None:
    rows = await db.fetch(ADD_ENGAGEMENT, *sent)
    reply = await db.fetchval(ADD_REPLY, *sent)

    await drain(database_url, REGISTRY)

    assert {e["status"] for e in await db.fetch(EVENTS)} == {"processed"}
    timeline = await db.fetch(TIMELINE, sent["contact_id"])
    assert [(t["event_type"], t["source"], t["source_id"]) for t in timeline] == [
        ("email_opened", "engagement_events", rows[0]["id"]),
        ("email_opened", "engagement_events", rows[1]["id"]),
        ("email_clicked", "engagement_events", rows[2]["id"]),
        ("reply_received", "responses", reply),
    ]  # fmt: skip
    assert timeline[0]["event_timestamp"].isoformat() == "2025-06-02T09:00:00+00:00"
    assert json.loads(timeline[2]["event_data"]) == {
        "engagement_event_id": rows[2]["id"], "message_id": sent["message_id"],
        "campaign_id": sent["campaign_id"], "provider": "instantly",
        "provider_event_id": "c-1", "url": "https://ours.example/pricing",
    }  # fmt: skip
    assert json.loads(timeline[3]["event_data"])["subject"] == "Re: Q3"


async def test_engagement__a_replayed_event_adds_nothing_to_the_timeline(
    db: asyncpg.Connection, database_url: str, sent: asyncpg.Record
) -> None:
    opened = (await db.fetch(ADD_ENGAGEMENT, *sent))[0]["id"]
    reply = await db.fetchval(ADD_REPLY, *sent)
    await drain(database_url, REGISTRY)

    await db.execute(REPLAY, "email_opened", opened)
    await db.execute(REPLAY, "reply_received", reply)
    await drain(database_url, REGISTRY)

    assert await db.fetchval("SELECT count(*) FROM marketing.contact_timeline") == 4
    assert (
        await db.fetchval(
            "SELECT count(*) FROM marketing.pipeline_events WHERE status <> 'processed'"
        )
        == 0
    )


async def test_engagement__an_event_whose_contact_was_erased_is_done_with_nothing_written(
    db: asyncpg.Connection, database_url: str, sent: asyncpg.Record
) -> None:
    await db.fetch(ADD_ENGAGEMENT, *sent)
    await db.fetchval(ADD_REPLY, *sent)
    # Seed 003's GDPR erasure, between the webhook and the stage.
    await db.execute("DELETE FROM marketing.contact_enrichment WHERE id = $1", sent["contact_id"])

    await drain(database_url, REGISTRY)

    assert {e["status"] for e in await db.fetch(EVENTS)} == {"processed"}
    assert await db.fetchval("SELECT count(*) FROM marketing.contact_timeline") == 0
    assert await db.fetchval("SELECT count(*) FROM marketing.pipeline_errors") == 0
