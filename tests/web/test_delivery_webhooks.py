"""The delivery and engagement webhooks over real HTTP against a real database:
/webhooks/delivery (seed 000's send, bounce and reply reports), /webhooks/instantly and
/webhooks/heyreach. Each one's happy path with its rows and events, forward-only delivery
state under reordering, de-duplication under concurrent redelivery, signatures, and every
kind of bad input with its status and envelope."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from cascade.web import heyreach as heyreach_api
from cascade.web.metrics import REGISTRY as METRICS
from cascade.webhooks.signatures import sign_standard, sign_stripe
from handlers import REGISTRY
from tests.support.listening import drain
from tests.support.sql import one
from tests.web.conftest import StartServer

SECRET = "whsec_" + base64.b64encode(b"d" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
# The value Instantly is told to send in x-webhook-secret.
INSTANTLY_SHARED = "instantly-shared-value"
FAILURES = "cascade_webhook_verification_failures_total"

ADD_CONTACT = """
    WITH company AS (
        INSERT INTO marketing.company_master (company_name, domain, website, country)
        VALUES ('Acme', $1, 'https://' || $1, 'US') RETURNING id
    )
    INSERT INTO marketing.contact_enrichment
        (company_id, full_name, company_name, email, linkedin_url, provider, provider_mode)
    SELECT id, 'Ada Lovelace', 'Acme', $2, $3, 'prospeo', 'sandbox' FROM company
    RETURNING id
"""
ADD_CAMPAIGN = "INSERT INTO marketing.campaigns (campaign_name) VALUES ('Q3') RETURNING id"
ADD_MESSAGE = """
    INSERT INTO marketing.message_queue
        (campaign_id, contact_id, sequence_step, channel, provider, provider_message_id)
    VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
"""
EVENTS = """
    SELECT correlation_id, payload FROM marketing.pipeline_events
     WHERE event_type = $1 ORDER BY id
"""
MESSAGE = "SELECT * FROM marketing.message_queue WHERE id = $1"
LOG = "SELECT status, bounce_type, provider_message_id FROM marketing.delivery_log ORDER BY id"
CLAIMS = "SELECT count(*) FROM marketing.processed_webhook_events"
UPDATE_LINKEDIN = "UPDATE marketing.contact_enrichment SET linkedin_url = $1 WHERE id = $2"


@pytest.fixture
async def contact(db: asyncpg.Connection) -> int:
    """Ada at Acme, with an email and a LinkedIn profile."""
    contact_id: int = await db.fetchval(
        ADD_CONTACT, "acme.com", "Ada@Acme.com", "https://www.linkedin.com/in/ada/"
    )
    return contact_id


@pytest.fixture
async def campaign(db: asyncpg.Connection) -> int:
    campaign_id: int = await db.fetchval(ADD_CAMPAIGN)
    return campaign_id


async def message(
    db: asyncpg.Connection,
    campaign: int,
    contact: int,
    *,
    step: int = 1,
    channel: str = "email",
    provider: str | None = "instantly",
    provider_message_id: str | None = None,
) -> int:
    message_id: int = await db.fetchval(
        ADD_MESSAGE, campaign, contact, step, channel, provider, provider_message_id
    )
    return message_id


def report(event: str, message_ids: list[Any], **payload: Any) -> bytes:
    body = {"event": event, "payload": {"message_ids": message_ids, "success": True, **payload}}
    return json.dumps(body).encode()


async def post(
    client: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    sent = {"content-type": "application/json", **(headers or {})}
    return await client.post(path, content=body, headers=sent)


def failures(provider: str) -> float:
    # The counter lives in this process: the test server runs in a thread of it.
    return METRICS.get_sample_value(FAILURES, {"provider": provider}) or 0.0


async def correlated(db: asyncpg.Connection, event_type: str) -> list[tuple[str, int]]:
    """(correlation id, payload id) of every event of this type."""
    rows = await db.fetch(EVENTS, event_type)
    return [(r["correlation_id"], json.loads(r["payload"])["id"]) for r in rows]


# -- /webhooks/delivery -----------------------------------------------------------------------


async def test_delivery__send_result_marks_the_message_sent_and_logs_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact, provider="instantly")

    body = report("send_result", [f"msg_{sent}"], external_id="instantly_abc123",
                  unique_id="04.01.01.04.20000.003")  # fmt: skip
    response = await post(client, "/webhooks/delivery", body, {"x-correlation-id": "corr-send"})

    assert response.status_code == 202, response.text
    assert response.headers["x-correlation-id"] == "corr-send"
    answer = response.json()
    assert (answer["applied"], answer["skipped"], answer["unknown_message_ids"]) == ([sent], [], [])
    row = await one(db, MESSAGE, sent)
    assert (row["delivery_status"], row["provider_message_id"]) == ("sent", "instantly_abc123")
    logged = await one(db, "SELECT * FROM marketing.delivery_log")
    assert (logged["message_id"], logged["contact_id"], logged["campaign_id"]) == (
        sent, contact, campaign,
    )  # fmt: skip
    assert (logged["status"], logged["provider"]) == ("sent", "instantly")
    assert json.loads(logged["metadata"]) == {
        "external_id": "instantly_abc123", "unique_id": "04.01.01.04.20000.003",
    }  # fmt: skip


async def test_delivery__a_failed_send_and_a_hard_bounce_are_logged(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    failed, bounced = [await message(db, campaign, contact, step=s) for s in (1, 2)]

    payload = {"message_ids": [failed], "success": False, "reason": "mailbox unavailable"}
    refused = await post(
        client,
        "/webhooks/delivery",
        json.dumps({"event": "send_result", "payload": payload}).encode(),
    )
    bounce = await post(
        client, "/webhooks/delivery",
        report("bounce_event", [bounced], bounce_type="hard", reason="550 no such user"),
    )  # fmt: skip

    assert (refused.status_code, bounce.status_code) == (202, 202)
    assert [tuple(r) for r in await db.fetch(LOG)] == [
        ("failed", None, None), ("bounced", "hard", None),
    ]  # fmt: skip
    assert (await one(db, MESSAGE, failed))["delivery_status"] == "failed"
    assert (await one(db, MESSAGE, bounced))["delivery_status"] == "bounced"


async def test_delivery__reply_event_stores_the_reply_and_emits_reply_received(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact)

    body = report("reply_event", [sent], reply_id="reply-1", from_address="ada@acme.com",
                  subject="Re: hello", body="Tell me more")  # fmt: skip
    response = await post(client, "/webhooks/delivery", body, {"x-correlation-id": "corr-reply"})

    assert response.status_code == 202, response.text
    assert response.json()["applied"] == [sent]
    reply = await one(db, "SELECT * FROM marketing.responses")
    assert (reply["contact_id"], reply["message_id"], reply["campaign_id"]) == (
        contact, sent, campaign,
    )  # fmt: skip
    assert (reply["provider"], reply["provider_message_id"], reply["body"]) == (
        "instantly", "reply-1", "Tell me more",
    )  # fmt: skip
    assert await correlated(db, "reply_received") == [("corr-reply", reply["id"])]


async def test_delivery__unknown_message_ids_are_reported_and_the_known_ones_applied(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact)

    response = await post(client, "/webhooks/delivery", report("send_result", [sent, 987654]))

    assert response.status_code == 202, response.text
    assert response.json()["applied"] == [sent]
    assert response.json()["unknown_message_ids"] == [987654]
    assert (await one(db, MESSAGE, sent))["delivery_status"] == "sent"


# -- forward-only state -----------------------------------------------------------------------


async def test_delivery__a_late_delivered_never_overwrites_bounced(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact)

    bounce = await post(client, "/webhooks/delivery", report("bounce_event", [sent]))
    late = await post(
        client, "/webhooks/delivery", report("send_result", [sent], status="delivered")
    )

    assert (bounce.status_code, late.status_code) == (202, 202)
    assert late.json()["applied"] == []
    assert late.json()["skipped"][0] | {"reason": ""} == {
        "message_id": sent, "reported": "delivered", "current": "bounced", "reason": "",
    }  # fmt: skip
    assert (await one(db, MESSAGE, sent))["delivery_status"] == "bounced"
    assert [r["status"] for r in await db.fetch(LOG)] == ["bounced"]


async def test_delivery__delivered_then_bounced_ends_bounced(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact)

    for body in (
        report("send_result", [sent]),
        report("send_result", [sent], status="delivered"),
        report("bounce_event", [sent], bounce_type="soft"),
        report("send_result", [sent], reason="late"),  # a 'sent' that took the long way
    ):
        assert (await post(client, "/webhooks/delivery", body)).status_code == 202

    assert (await one(db, MESSAGE, sent))["delivery_status"] == "bounced"
    assert [r["status"] for r in await db.fetch(LOG)] == ["sent", "delivered", "bounced"]


async def test_delivery__fifty_concurrent_copies_are_stored_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact)
    body = report("reply_event", [sent], body="Interested")  # no id header: keyed by its hash

    responses = await asyncio.gather(*(post(client, "/webhooks/delivery", body) for _ in range(50)))

    assert sorted(r.status_code for r in responses) == [200] * 49 + [202]
    assert {r.json()["status"] for r in responses if r.status_code == 200} == {"duplicate"}
    assert await db.fetchval("SELECT count(*) FROM marketing.responses") == 1
    assert len(await correlated(db, "reply_received")) == 1
    assert await db.fetchval(CLAIMS) == 1


async def test_delivery__a_redelivery_with_the_same_webhook_id_changes_nothing(
    start_server: StartServer, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact)
    body = report("send_result", [sent])
    base = start_server({"WEBHOOK_SECRET_DELIVERY": SECRET})

    async with httpx.AsyncClient(base_url=base) as client:
        first = await post(client, "/webhooks/delivery", body,
                           sign_standard(SECRET, "msg_1", int(time.time()), body))  # fmt: skip
        again = await post(client, "/webhooks/delivery", body,
                           sign_standard(SECRET, "msg_1", int(time.time()), body))  # fmt: skip

    assert (first.status_code, again.status_code) == (202, 200)
    assert (first.json()["delivery_id"], first.json()["verified"]) == ("msg_1", True)
    assert await db.fetchval("SELECT count(*) FROM marketing.delivery_log") == 1


# -- /webhooks/instantly ----------------------------------------------------------------------


def instantly_event(event_type: str, **data: Any) -> dict[str, Any]:
    """Instantly's flat payload, as its API v2 documents it."""
    return {
        "timestamp": "2025-06-02T09:30:00.000Z", "event_type": event_type,
        "workspace": "0f6b0c4e-workspace", "campaign_id": "5c1f-instantly-campaign",
        "campaign_name": "Q3 outbound", "lead_email": "ada@acme.com",
        "email_account": "sales@ours.example", "step": 1, "variant": 1, "is_first": True,
        **data,
    }  # fmt: skip


async def test_instantly__an_open_in_seed_000s_shape_is_recorded_and_emits_email_opened(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact)
    data = {"lead_email": "ADA@acme.com", "campaign_id": "5c1f", "step": 1,
            "timestamp": "2025-06-02T09:30:00Z"}  # fmt: skip
    body = json.dumps({"event_type": "email_opened", "data": data}).encode()

    response = await post(client, "/webhooks/instantly", body, {"x-correlation-id": "corr-open"})

    assert response.status_code == 202, response.text
    opened = await one(db, "SELECT * FROM marketing.engagement_events")
    assert response.json()["applied"] == [{
        "event": "open", "contact_id": contact, "message_id": sent,
        "engagement_event_id": opened["id"],
    }]  # fmt: skip
    assert (opened["event_type"], opened["campaign_id"], opened["provider"]) == (
        "open", campaign, "instantly",
    )  # fmt: skip
    assert opened["occurred_at"].isoformat() == "2025-06-02T09:30:00+00:00"
    assert await correlated(db, "email_opened") == [("corr-open", opened["id"])]


async def test_instantly__a_click_in_instantlys_flat_shape_keeps_the_link_and_the_rest(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    await message(db, campaign, contact)
    event = instantly_event("link_clicked", link_url="https://ours.example/pricing",
                            lead_first_name="Ada")  # fmt: skip

    response = await post(client, "/webhooks/instantly", json.dumps(event).encode())

    assert response.status_code == 202, response.text
    clicked = await one(db, "SELECT * FROM marketing.engagement_events")
    assert (clicked["event_type"], clicked["url"]) == ("click", "https://ours.example/pricing")
    metadata = json.loads(clicked["metadata"])
    assert (metadata["lead_first_name"], metadata["workspace"]) == ("Ada", "0f6b0c4e-workspace")
    assert len(await correlated(db, "email_clicked")) == 1


async def test_instantly__a_reply_is_stored_as_a_response(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact, step=2)
    event = instantly_event("reply_received", step=2, reply_subject="Re: Q3",
                            reply_text="Let's talk", reply_text_snippet="Let's…")  # fmt: skip

    response = await post(client, "/webhooks/instantly", json.dumps(event).encode(),
                          {"x-correlation-id": "corr-instantly-reply"})  # fmt: skip

    assert response.status_code == 202, response.text
    reply = await one(db, "SELECT * FROM marketing.responses")
    assert (reply["contact_id"], reply["message_id"], reply["channel"]) == (contact, sent, "email")
    assert (reply["subject"], reply["body"], reply["from_address"]) == (
        "Re: Q3", "Let's talk", "ada@acme.com",
    )  # fmt: skip
    assert await correlated(db, "reply_received") == [("corr-instantly-reply", reply["id"])]


async def test_instantly__an_open_reaches_the_contacts_timeline_through_the_listener(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str, contact: int
) -> None:
    await db.execute("DELETE FROM marketing.pipeline_events")  # making Ada's: not this test's

    response = await post(client, "/webhooks/instantly",
                          json.dumps(instantly_event("email_opened")).encode())  # fmt: skip
    await drain(database_url, REGISTRY)

    assert response.status_code == 202, response.text
    timeline = await one(db, "SELECT * FROM marketing.contact_timeline")
    assert (timeline["contact_id"], timeline["event_type"]) == (contact, "email_opened")
    assert timeline["event_timestamp"].isoformat() == "2025-06-02T09:30:00+00:00"
    assert await db.fetchval("SELECT status FROM marketing.pipeline_events") == "processed"


async def test_instantly__redelivery_is_caught_by_the_composite_key(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int
) -> None:
    event = instantly_event("link_clicked")
    # The same click in seed 000's shape under seed 000's name: a different body, so only the
    # composite key can tell that it is the same click.
    data = {k: v for k, v in reversed(event.items()) if k != "event_type"}
    again_as_seed = {"event_type": "email_clicked", "data": data}

    first = await post(client, "/webhooks/instantly", json.dumps(event).encode())
    again = await post(client, "/webhooks/instantly", json.dumps(again_as_seed).encode())

    assert (first.status_code, again.status_code) == (202, 200)
    key = await db.fetchval("SELECT event_key FROM marketing.processed_webhook_events")
    assert json.loads(key) == ["click", "ada@acme.com", "5c1f-instantly-campaign",
                               "2025-06-02T09:30:00+00:00", 1, None]  # fmt: skip
    provider_event_id = await db.fetchval(
        "SELECT provider_event_id FROM marketing.engagement_events"
    )
    assert provider_event_id == key
    assert await db.fetchval("SELECT count(*) FROM marketing.engagement_events") == 1


async def test_instantly__clicks_on_two_links_in_the_same_instant_are_two_clicks(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int
) -> None:
    # A link scanner follows every link of an email at once: same lead, step and timestamp.
    pricing = instantly_event("link_clicked", link_url="https://ours.example/pricing")
    about = instantly_event("link_clicked", link_url="https://ours.example/about")

    answers = [await post(client, "/webhooks/instantly", json.dumps(e).encode())
               for e in (pricing, about, pricing)]  # fmt: skip

    assert [a.status_code for a in answers] == [202, 202, 200]
    urls = await db.fetch("SELECT url FROM marketing.engagement_events ORDER BY id")
    assert [r["url"] for r in urls] == [
        "https://ours.example/pricing",
        "https://ours.example/about",
    ]


async def test_instantly__an_unknown_lead_is_reported_and_nothing_is_stored(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    event = instantly_event("email_opened", lead_email="nobody@elsewhere.com")

    response = await post(client, "/webhooks/instantly", json.dumps(event).encode())

    assert response.status_code == 202, response.text
    assert response.json()["unknown_lead_emails"] == ["nobody@elsewhere.com"]
    assert await db.fetchval("SELECT count(*) FROM marketing.engagement_events") == 0
    assert await db.fetchval("SELECT count(*) FROM marketing.pipeline_events") == 0


# -- /webhooks/heyreach -----------------------------------------------------------------------


def heyreach(kind: str, message: dict[str, Any], **payload: Any) -> bytes:
    lead = {"linkedInUrl": "https://linkedin.com/in/Ada", "firstName": "Ada"}
    body = {"type": kind, "payload": {"leadProfile": lead, "message": message,
                                      "campaign": {"id": 77, "name": "LinkedIn Q3"},
                                      "timestamp": "2025-06-02T10:00:00Z", **payload}}  # fmt: skip
    return json.dumps(body).encode()


async def test_heyreach__message_sent_moves_the_linkedin_message_to_sent(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    await message(db, campaign, contact, channel="email")
    linkedin = await message(db, campaign, contact, step=2, channel="linkedin", provider=None)

    response = await post(client, "/webhooks/heyreach", heyreach("message_sent", {"id": "hr-1"}))

    assert response.status_code == 202, response.text
    assert response.json()["applied"] == [{"event": "sent", "message_id": linkedin}]
    row = await one(db, MESSAGE, linkedin)
    assert (row["delivery_status"], row["provider_message_id"]) == ("sent", "hr-1")
    assert [tuple(r) for r in await db.fetch(LOG)] == [("sent", None, "hr-1")]
    assert await db.fetchval("SELECT provider FROM marketing.delivery_log") == "heyreach"


async def test_heyreach__a_reply_is_stored_and_emits_reply_received(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    linkedin = await message(db, campaign, contact, channel="linkedin", provider="heyreach",
                             provider_message_id="hr-1")  # fmt: skip
    body = heyreach("message_replied", {"id": "hr-2", "text": "Happy to chat"})

    response = await post(client, "/webhooks/heyreach", body, {"x-correlation-id": "corr-hr"})

    assert response.status_code == 202, response.text
    reply = await one(db, "SELECT * FROM marketing.responses")
    assert (reply["contact_id"], reply["message_id"], reply["channel"]) == (
        contact, linkedin, "linkedin",
    )  # fmt: skip
    assert (reply["provider_message_id"], reply["body"]) == ("hr-2", "Happy to chat")
    assert json.loads(reply["metadata"])["campaign"] == {"id": 77, "name": "LinkedIn Q3"}
    assert await correlated(db, "reply_received") == [("corr-hr", reply["id"])]
    key = await db.fetchval("SELECT event_key FROM marketing.processed_webhook_events")
    assert json.loads(key) == ["message_replied", "hr-2"]


async def test_heyreach__an_unknown_person_is_reported(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    response = await post(client, "/webhooks/heyreach", heyreach("message_replied", {"id": "x"}))

    assert response.status_code == 202, response.text
    assert response.json()["unknown"] == [
        {"linkedInUrl": "https://linkedin.com/in/Ada", "emailAddress": None}
    ]
    assert await db.fetchval("SELECT count(*) FROM marketing.responses") == 0


@pytest.mark.parametrize(
    ("stored", "sent"),
    [
        ("https://www.linkedin.com/in/ada/", "www.linkedin.com/in/ada"),
        ("www.linkedin.com/in/ada", "https://linkedin.com/in/Ada/"),
        ("linkedin.com/in/ada", "WWW.LinkedIn.com/in/ada"),
    ],
    ids=["sent-without-scheme", "stored-without-scheme", "neither-has-a-scheme"],
)
async def test_heyreach__the_profile_url_matches_with_or_without_scheme_and_www(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, stored: str, sent: str
) -> None:
    await db.execute(UPDATE_LINKEDIN, stored, contact)
    reply = {"leadProfile": {"linkedInUrl": sent}, "message": {"id": "hr-w", "text": "Sure"}}
    body = {"type": "message_replied", "payload": reply}

    response = await post(client, "/webhooks/heyreach", json.dumps(body).encode())

    assert response.status_code == 202, response.text
    assert response.json()["unknown"] == []
    assert await db.fetchval("SELECT contact_id FROM marketing.responses") == contact


async def test_heyreach__the_profile_url_lookup_is_one_probe_of_its_index(
    db: asyncpg.Connection,
) -> None:
    # The lookup's expression must be the index's (schema/0010) to the character.
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        plan = await db.fetchval(
            "EXPLAIN (FORMAT JSON) " + heyreach_api.FIND_CONTACT, "linkedin.com/in/ada", None
        )

    assert "contact_enrichment_linkedin_idx" in plan


async def test_heyreach__message_sent_moves_the_message_with_that_id_not_a_newer_one(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    first = await message(db, campaign, contact, channel="linkedin", provider="heyreach",
                          provider_message_id="hr-1")  # fmt: skip
    # The next step, not sent yet: no provider message id.
    second = await message(db, campaign, contact, step=2, channel="linkedin", provider=None)

    response = await post(client, "/webhooks/heyreach", heyreach("message_sent", {"id": "hr-1"}))

    assert response.status_code == 202, response.text
    assert response.json()["applied"] == [{"event": "sent", "message_id": first}]
    assert (await one(db, MESSAGE, first))["delivery_status"] == "sent"
    untouched = await one(db, MESSAGE, second)
    assert (untouched["delivery_status"], untouched["provider_message_id"]) == (None, None)


# -- signatures -------------------------------------------------------------------------------


@pytest.fixture
async def signed(
    start_server: StartServer, contact: int, campaign: int, db: asyncpg.Connection
) -> AsyncIterator[tuple[httpx.AsyncClient, bytes]]:
    """A client of a server whose delivery webhook has two secrets (a rotation: the old one
    first), and a send_result for a real message."""
    base = start_server({"WEBHOOK_SECRET_DELIVERY": f"{OLD_SECRET},{SECRET}",
                         "WEBHOOK_SECRET_INSTANTLY": INSTANTLY_SHARED,
                         "WEBHOOK_SECRET_HEYREACH": SECRET})  # fmt: skip
    body = report("send_result", [await message(db, campaign, contact)])
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        yield client, body


@pytest.mark.parametrize("secret", [OLD_SECRET, SECRET], ids=["first", "rotated_in"])
async def test_delivery__either_secret_of_a_rotation_verifies(
    signed: tuple[httpx.AsyncClient, bytes], db: asyncpg.Connection, secret: str
) -> None:
    client, body = signed

    response = await post(
        client, "/webhooks/delivery", body, sign_standard(secret, "msg_r", int(time.time()), body)
    )

    assert response.status_code == 202, response.text
    assert response.json()["verified"] is True
    assert await db.fetchval("SELECT verified FROM marketing.processed_webhook_events") is True


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        ("tampered", "bad_signature"),
        ("stale", "stale_timestamp"),
        ("unknown_secret", "bad_signature"),
        ("stripe_scheme", "missing_signature"),
        ("unsigned", "missing_signature"),
    ],
)
async def test_delivery__a_delivery_that_fails_the_check_is_401_counted_and_not_stored(
    signed: tuple[httpx.AsyncClient, bytes], db: asyncpg.Connection, forge: str, reason: str
) -> None:
    client, body = signed
    now = int(time.time())
    sent, headers = {
        "tampered": (body.replace(b"true", b"false"), sign_standard(SECRET, "m", now, body)),
        "stale": (body, sign_standard(SECRET, "m", now - 301, body)),
        "unknown_secret": (body, sign_standard("whsec_" + "Zm9yZ2Vk", "m", now, body)),
        "stripe_scheme": (body, {"stripe-signature": sign_stripe(SECRET, now, body)}),
        "unsigned": (body, {}),
    }[forge]
    before = failures("delivery")

    response = await post(client, "/webhooks/delivery", sent, headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert response.json()["error"]["details"] == {"reason": reason}
    assert failures("delivery") == before + 1
    assert await db.fetchval(CLAIMS) == 0
    assert await db.fetchval("SELECT count(*) FROM marketing.delivery_log") == 0


async def test_instantly__the_shared_secret_header_verifies_and_a_wrong_one_is_401(
    signed: tuple[httpx.AsyncClient, bytes], db: asyncpg.Connection, contact: int
) -> None:
    client, _ = signed
    body = json.dumps(instantly_event("email_opened")).encode()
    before = failures("instantly")

    wrong = await post(client, "/webhooks/instantly", body, {"x-webhook-secret": "guess"})
    right = await post(client, "/webhooks/instantly", body, {"x-webhook-secret": INSTANTLY_SHARED})

    assert wrong.status_code == 401
    assert failures("instantly") == before + 1
    assert right.status_code == 202, right.text
    assert right.json()["verified"] is True
    assert await db.fetchval("SELECT count(*) FROM marketing.engagement_events") == 1


async def test_heyreach__standard_webhooks_signature_verifies(
    signed: tuple[httpx.AsyncClient, bytes], contact: int
) -> None:
    client, _ = signed
    body = heyreach("message_replied", {"id": "hr-9", "text": "Yes"})

    response = await post(
        client, "/webhooks/heyreach", body, sign_standard(SECRET, "hr_1", int(time.time()), body)
    )

    assert response.status_code == 202, response.text
    assert (response.json()["verified"], response.json()["delivery_id"]) == (True, "hr_1")


async def test_delivery__a_stripe_signed_delivery_replayed_under_another_webhook_id_is_a_duplicate(
    start_server: StartServer, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    # The Stripe scheme signs the timestamp and the body, not the headers: within the
    # tolerance, whoever captured a delivery can resend it with any webhook-id they like.
    sent = await message(db, campaign, contact)
    body = report("reply_event", [sent], body="Interested")
    base = start_server({"WEBHOOK_SECRET_DELIVERY": SECRET, "WEBHOOK_SCHEME_DELIVERY": "stripe"})
    signature = {"stripe-signature": sign_stripe(SECRET, int(time.time()), body)}

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        first = await post(client, "/webhooks/delivery", body, signature | {"webhook-id": "a"})
        replay = await post(client, "/webhooks/delivery", body, signature | {"webhook-id": "b"})

    assert (first.status_code, first.json()["verified"]) == (202, True)
    assert (replay.status_code, replay.json()["status"]) == (200, "duplicate")
    assert await db.fetchval("SELECT count(*) FROM marketing.responses") == 1


# -- bad input --------------------------------------------------------------------------------


UNKNOWN_EVENTS = [
    ("/webhooks/delivery", {"event": "open_event", "payload": {"message_ids": [1],
                                                              "success": True}}, "event"),
    ("/webhooks/instantly", {"event_type": "lead_interested", "lead_email": "a@b.co"},
     "event_type"),
    ("/webhooks/heyreach", {"type": "connection_accepted",
                            "payload": {"leadProfile": {"emailAddress": "a@b.co"}}}, "type"),
]  # fmt: skip
MISSING_FIELDS = [
    ("/webhooks/delivery", {"event": "send_result", "payload": {"success": True}},
     "payload.message_ids"),
    ("/webhooks/delivery", {"event": "send_result", "payload": {"message_ids": [1]}},
     "payload.success"),
    ("/webhooks/instantly", {"event_type": "email_opened", "data": {"step": 1}},
     "data.lead_email"),
    ("/webhooks/heyreach", {"type": "message_sent", "payload": {"message": {"id": "x"}}},
     "payload.leadProfile"),
    ("/webhooks/heyreach", {"type": "message_sent", "payload": {"leadProfile": {}}},
     "payload.leadProfile"),
]  # fmt: skip
PATHS = ["/webhooks/delivery", "/webhooks/instantly", "/webhooks/heyreach"]


@pytest.mark.parametrize(("path", "body", "field"), UNKNOWN_EVENTS)
async def test_webhooks__an_unknown_event_name_is_422_naming_the_field(
    client: httpx.AsyncClient, db: asyncpg.Connection, path: str, body: Any, field: str
) -> None:
    response = await post(client, path, json.dumps(body).encode())

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_payload"
    assert [e["field"] for e in error["details"]["errors"]] == [field]
    assert await db.fetchval(CLAIMS) == 0


@pytest.mark.parametrize(("path", "body", "field"), MISSING_FIELDS)
async def test_webhooks__a_missing_field_is_422_naming_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, path: str, body: Any, field: str
) -> None:
    response = await post(client, path, json.dumps(body).encode())

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_payload"
    assert field in error["message"]
    assert [e["field"] for e in error["details"]["errors"]] == [field]
    assert await db.fetchval(CLAIMS) == 0


@pytest.mark.parametrize("path", PATHS)
async def test_webhooks__malformed_json_is_400(
    client: httpx.AsyncClient, db: asyncpg.Connection, path: str
) -> None:
    response = await post(client, path, b'{"event": "send_result", ')

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert await db.fetchval(CLAIMS) == 0


@pytest.mark.parametrize("path", PATHS)
async def test_webhooks__a_wrong_content_type_is_415(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(
        path, content=b"event=send_result", headers={"content-type": "text/plain"}
    )

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("path", PATHS)
async def test_webhooks__a_body_over_one_megabyte_is_413(
    client: httpx.AsyncClient, db: asyncpg.Connection, path: str
) -> None:
    body = report("send_result", [1]) + b" " * (1024 * 1024)

    response = await post(client, path, body)

    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "payload_too_large", "message": "the body exceeds 1048576 bytes",
        "details": {"limit": 1048576},
    }  # fmt: skip
    assert await db.fetchval(CLAIMS) == 0


async def test_delivery__a_text_postgresql_cannot_store_is_422_and_nothing_is_half_written(
    client: httpx.AsyncClient, db: asyncpg.Connection, contact: int, campaign: int
) -> None:
    sent = await message(db, campaign, contact)

    response = await post(client, "/webhooks/delivery",
                          report("reply_event", [sent], body="nul \u0000 here"))  # fmt: skip

    assert response.status_code == 422
    assert response.json()["error"]["details"]["errors"][0]["field"] == "payload.body"
    assert await db.fetchval(CLAIMS) == 0
    assert await db.fetchval("SELECT count(*) FROM marketing.responses") == 0
