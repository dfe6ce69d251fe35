"""The webhooks' shortcut (web.CascadeApp): a POST to a provider's webhook goes straight to its
`Webhook`, without Starlette's middleware and router. It must not show: the same requests get
the same answers, byte for byte, as through the router; a bug is still a 500 in the envelope
that the server gets to log; a client that hangs up mid-body leaves nothing behind."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from cascade.webhooks.signatures import sign_standard
from tests.conftest import fresh_database
from tests.web.conftest import StartServer
from web import CascadeApp, Webhook, create_app

APIFY_SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
INSTANTLY_SHARED = "instantly-shared-value"
ENVIRON = {"WEBHOOK_SECRET_APIFY": APIFY_SECRET, "WEBHOOK_SECRET_INSTANTLY": INSTANTLY_SHARED}
TIMESTAMP = int(time.time())

# method, path, headers (a list where one repeats), body
Request = tuple[str, str, dict[str, str] | list[tuple[str, str]], bytes]


def instantly(event_type: str = "email_opened", **fields: Any) -> bytes:
    return json.dumps({
        "event_type": event_type, "lead_email": "ada@acme.com", "campaign_id": "c-1",
        "timestamp": "2026-11-02T10:00:00Z", "step": 1, **fields,
    }).encode()  # fmt: skip


def apify(slot: str = "slot_999") -> bytes:
    payload = {"slot_ids": [slot], "contacts": [], "run_id": "run_1",
               "unique_id": "04.01.01.04.20000.004", "process_id": "PLE-001"}  # fmt: skip
    return json.dumps({"event": "scrape_done", "payload": payload}).encode()


def requests() -> list[Request]:
    """Every kind of answer a webhook gives, each request with its own correlation id."""
    shared = {"x-webhook-secret": INSTANTLY_SHARED, "content-type": "application/json"}
    signed_body = apify()
    signed = sign_standard(APIFY_SECRET, "msg_1", TIMESTAMP, signed_body)
    made: list[tuple[str, str, dict[str, str], bytes]] = [
        ("POST", "/webhooks/instantly", shared, instantly()),  # 202, an unknown lead
        ("POST", "/webhooks/instantly", shared, instantly()),  # 200, its duplicate
        ("POST", "/webhooks/instantly", shared, instantly("email_replied", reply_text="Hi")),
        ("POST", "/webhooks/instantly", {**shared, "x-webhook-secret": "wrong"}, instantly()),
        ("POST", "/webhooks/instantly", shared, b'{"event_type": "email_opened",'),
        ("POST", "/webhooks/instantly", shared, instantly("email_bounced")),
        ("POST", "/webhooks/instantly", shared, json.dumps({"event_type": "x"}).encode()),
        ("POST", "/webhooks/instantly", {**shared, "content-type": "text/plain"}, instantly()),
        ("POST", "/webhooks/instantly", shared, b" " * (1024 * 1024 + 1)),
        ("POST", "/webhooks/apify", {**signed, "content-type": "application/json"}, signed_body),
        ("POST", "/webhooks/apify", {**signed, "content-type": "application/json"}, apify("x")),
        ("GET", "/webhooks/instantly", {}, b""),
    ]
    return [
        (method, path, {**headers, "x-correlation-id": f"request-{n}"}, body)
        for n, (method, path, headers, body) in enumerate(made)
    ]


@pytest.fixture
def second_database_url(server_url: str, template_name: str) -> Iterator[str]:
    with fresh_database(server_url, template_name) as url:
        yield url


@contextlib.asynccontextmanager
async def serving(database_url: str) -> AsyncIterator[CascadeApp]:
    """The app on `database_url`, its lifespan (the pool) started as uvicorn would."""
    app = create_app(database_url, ENVIRON)
    async with app.router.lifespan_context(app):
        yield app


def through_router(app: CascadeApp) -> Callable[[Scope, Receive, Send], Any]:
    """The app without its shortcut: Starlette's own __call__, middleware then router."""

    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        await Starlette.__call__(app, scope, receive, send)

    return routed


async def answers(app: Any, sent: list[Request]) -> list[tuple[int, list[Any], bytes]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cascade") as client:
        got = []
        for method, path, headers, body in sent:
            response = await client.request(method, path, headers=headers, content=body)
            got.append((response.status_code, sorted(response.headers.items()), response.content))
        return got


async def test_a_webhook_answers_byte_for_byte_as_it_would_through_the_router(
    database_url: str, second_database_url: str
) -> None:
    # Two fresh databases from one template, so the ids in the answers match too.
    async with serving(database_url) as app:
        shortcut = await answers(app, requests())
    async with serving(second_database_url) as app:
        routed = await answers(through_router(app), requests())

    assert [status for status, _, _ in shortcut] == [
        202, 200, 202, 401, 400, 422, 422, 415, 413, 202, 401, 405,
    ]  # fmt: skip
    assert shortcut == routed


async def test_a_webhook_makes_a_correlation_id_when_none_is_given(database_url: str) -> None:
    headers = {"x-webhook-secret": INSTANTLY_SHARED, "content-type": "application/json"}
    async with serving(database_url) as app:
        [(status, answer_headers, body)] = await answers(
            app, [("POST", "/webhooks/instantly", headers, instantly())]
        )

    assert status == 202
    given = dict(answer_headers)["x-correlation-id"]
    assert len(given) == 32
    assert json.loads(body)["correlation_id"] == given


async def test_a_bug_in_a_webhook_is_a_500_in_the_envelope_and_reaches_the_server(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> dict[str, Any]:
        raise RuntimeError("a bug")

    route = next(r for r in create_app(database_url, ENVIRON).routes
                 if isinstance(r, Route) and r.path == "/webhooks/instantly")  # fmt: skip
    assert isinstance(route.endpoint, Webhook)
    monkeypatch.setattr(route.endpoint, "apply", broken)  # a reply goes through `apply`
    headers = {"x-webhook-secret": INSTANTLY_SHARED, "content-type": "application/json",
               "x-correlation-id": "trace-42"}  # fmt: skip
    reply = instantly("email_replied", reply_text="Hi")

    async with serving(database_url) as app:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cascade") as client:
            response = await client.post("/webhooks/instantly", headers=headers, content=reply)
        loud = httpx.ASGITransport(app=app)  # the exception reaches the server, which logs it
        async with httpx.AsyncClient(transport=loud, base_url="http://cascade") as client:
            with pytest.raises(RuntimeError, match="a bug"):
                await client.post("/webhooks/instantly", headers=headers, content=reply)

    assert response.status_code == 500
    assert response.json()["error"] == {
        "code": "internal_error",
        "message": "the server failed on this request; the failure is logged",
        "details": {"correlation_id": "trace-42"},
    }
    assert response.headers["x-correlation-id"] == "trace-42"


async def test_a_client_that_hangs_up_mid_body_gets_no_answer_and_leaves_nothing(
    database_url: str, db: asyncpg.Connection
) -> None:
    body = instantly()
    arriving: list[Message] = [
        {"type": "http.request", "body": body[:20], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return arriving.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http", "method": "POST", "path": "/webhooks/instantly", "query_string": b"",
        "headers": [(b"content-type", b"application/json"),
                    (b"x-webhook-secret", INSTANTLY_SHARED.encode())],
    }  # fmt: skip
    async with serving(database_url) as app:
        await app(scope, receive, send)

    assert sent == []
    assert await db.fetchval("SELECT count(*) FROM marketing.processed_webhook_events") == 0


async def test_a_signed_delivery_replayed_under_an_extra_leading_webhook_id_is_refused(
    database_url: str, second_database_url: str
) -> None:
    # Headers are read as their first copy, for the signature and for the key alike: a
    # replay that puts a fresh webhook-id before the signed one is checked against "fresh"
    # and refused, not verified under the signed id and then stored as a new delivery.
    body = apify()
    signed = list(sign_standard(APIFY_SECRET, "msg_1", TIMESTAMP, body).items())
    json_body = [("content-type", "application/json")]
    original = ("POST", "/webhooks/apify", json_body + signed, body)
    replay = ("POST", "/webhooks/apify", [*json_body, ("webhook-id", "fresh"), *signed], body)

    async with serving(database_url) as app:
        shortcut = await answers(app, [original, replay])
    async with serving(second_database_url) as app:
        routed = await answers(through_router(app), [original, replay])

    assert [status for status, _, _ in shortcut] == [202, 401]
    assert [status for status, _, _ in routed] == [202, 401]


async def test_a_webhook_over_http_takes_a_chunked_body_and_a_query_and_refuses_other_methods(
    start_server: StartServer,
) -> None:
    base = start_server(ENVIRON)
    headers = {"x-webhook-secret": INSTANTLY_SHARED, "content-type": "application/json"}
    body = instantly(step=2)

    async def in_three_byte_chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 3):
            yield body[start : start + 3]

    async with httpx.AsyncClient(base_url=base) as client:
        chunked = await client.post("/webhooks/instantly", headers=headers,
                                    content=in_three_byte_chunks())  # fmt: skip
        query = await client.post("/webhooks/instantly?x=1", headers=headers,
                                  content=instantly(step=3))  # fmt: skip
        empty = await client.post("/webhooks/instantly", headers=headers, content=b"")
        head = await client.head("/webhooks/instantly")

    assert (chunked.status_code, query.status_code, empty.status_code) == (202, 202, 422)
    assert chunked.headers["x-correlation-id"] == chunked.json()["correlation_id"]
    assert (head.status_code, head.headers["allow"]) == (405, "POST")
