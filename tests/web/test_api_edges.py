"""The operations API at its edges: input PostgreSQL cannot store (NUL characters, NaN and
infinities), digits that are not ASCII, schedules written by SQL, runs left queued by a pause
or an archive, and /metrics reading only what it needs as history grows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from cascade.enrichment.domains import NotACompany, website_domain
from cascade.web.auth import create_token
from cascade.web.metrics import (
    DURATION_BUCKETS,
    QUEUE_STATE,
    RECENT_EVENTS_SCANNED,
    RECENT_FINISHED,
    RECENT_SECONDS,
)
from tests.web.conftest import StartServer
from web import create_app

NO_LIMIT = {"CASCADE_RATE_LIMIT_PER_MINUTE": "6000", "CASCADE_RATE_LIMIT_BURST": "1000"}


@dataclass(frozen=True)
class Api:
    http: httpx.AsyncClient
    viewer: dict[str, str]
    ops: dict[str, str]


@pytest.fixture
async def api(start_server: StartServer, db: asyncpg.Connection) -> AsyncIterator[Api]:
    viewer = await create_token(db, "dashboard", "viewer", "test")
    ops = await create_token(db, "operator", "ops", "test")
    async with httpx.AsyncClient(base_url=start_server(NO_LIMIT), timeout=30) as http:
        yield Api(http, {"Authorization": f"Bearer {viewer}"}, {"Authorization": f"Bearer {ops}"})


def assert_not_500(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)


# -- 500s on bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["\u00b2", "\u2460", "\u00b9\u00b2"])  # '²', '①', '¹²'
async def test_dead_letters_limit_of_a_superscript_digit_is_not_a_500(api: Api, limit: str) -> None:
    # str.isdigit() is True for them, int() refuses them: ValueError escapes _limit.
    response = await api.http.get(
        "/api/monitoring/dead-letters", params={"limit": limit}, headers=api.viewer
    )
    assert_not_500(response)


@pytest.mark.parametrize(
    "body",
    [
        {"campaign_name": "a\u0000b"},
        {"campaign_name": "x", "description": "a\u0000b"},
        {"campaign_name": "x", "config": {"note": "a\u0000b"}},
        {"campaign_name": "x", "config": {"k\u0000": 1}},
    ],
    ids=["nul-name", "nul-description", "nul-config-value", "nul-config-key"],
)
async def test_create_with_a_nul_character_is_not_a_500(api: Api, body: dict[str, Any]) -> None:
    # PostgreSQL text and jsonb cannot hold U+0000; pydantic lets it through.
    response = await api.http.post("/api/campaigns", json=body, headers=api.ops)
    assert_not_500(response)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
async def test_create_with_a_non_finite_number_in_config_is_not_a_500(
    api: Api, number: bytes
) -> None:
    # pydantic's JSON parser accepts NaN/Infinity (and 1e400 becomes inf); json.dumps writes
    # them back as NaN/Infinity, which is not JSON to PostgreSQL's jsonb input.
    body = b'{"campaign_name": "x", "config": {"n": ' + number + b"}}"
    response = await api.http.post(
        "/api/campaigns",
        content=body,
        headers=api.ops | {"Content-Type": "application/json"},
    )
    assert_not_500(response)


async def test_pause_reason_with_a_nul_character_is_not_a_500(api: Api) -> None:
    created = await api.http.post("/api/campaigns", json={"campaign_name": "x"}, headers=api.ops)
    assert created.status_code == 201
    response = await api.http.post(
        f"/api/campaigns/{created.json()['id']}/pause",
        json={"reason": "a\u0000b"},
        headers=api.ops,
    )
    assert_not_500(response)


@pytest.mark.parametrize(
    ("cron", "timezone"),
    [("0 9 * * MON", "Mars/Olympus_Mons"), ("61 * * * *", "UTC"), ("0 0 30 2 *", "UTC")],
    ids=["unknown-timezone", "out-of-range-minute", "never-fires"],
)
async def test_resume_of_a_campaign_written_by_sql_is_not_a_500(
    api: Api, db: asyncpg.Connection, cron: str, timezone: str
) -> None:
    # The schema allows these (5 fields; "a CHECK cannot consult pg_timezone_names"), and the
    # schema says a bare INSERT is a valid campaign; resume re-parses them with no guard.
    campaign_id = await db.fetchval(
        """INSERT INTO marketing.campaigns (campaign_name, status, paused_at, schedule_cron,
                                            timezone)
           VALUES ('sql', 'paused', now(), $1, $2) RETURNING id""",
        cron,
        timezone,
    )
    response = await api.http.post(f"/api/campaigns/{campaign_id}/resume", headers=api.ops)
    assert_not_500(response)


# -- state -------------------------------------------------------------------------------------


async def test_archive_leaves_an_open_run_queued(api: Api, db: asyncpg.Connection) -> None:
    created = await api.http.post("/api/campaigns", json={"campaign_name": "x"}, headers=api.ops)
    campaign_id = created.json()["id"]
    run = await api.http.post(f"/api/campaigns/{campaign_id}/run", headers=api.ops)
    assert run.status_code == 202
    archived = await api.http.delete(f"/api/campaigns/{campaign_id}", headers=api.ops)
    assert archived.status_code == 200
    open_runs = await db.fetchval(
        "SELECT count(*) FROM marketing.campaign_runs"
        " WHERE campaign_id = $1 AND status IN ('queued', 'running')",
        campaign_id,
    )
    # An archived ("final") campaign keeps a queued run the future executor will pick up.
    assert open_runs == 0


# -- /metrics query plans ----------------------------------------------------------------------

FILL_PROCESSED = """
    INSERT INTO marketing.pipeline_events
        (event_type, status, outcome, attempts, created_at, started_at, processed_at,
         finished_at, duration_ms)
    SELECT 'company_created', 'processed', 'ok', 1, t, t, t, t, 5
      FROM generate_series(now() - interval '30 days', now() - interval '1 hour',
                           interval '10 seconds') AS t
"""


async def _plan(db: asyncpg.Connection, query: str, *args: object) -> str:
    rows = await db.fetch("EXPLAIN (ANALYZE, BUFFERS) " + query, *args)
    return "\n".join(row[0] for row in rows)


async def test_metrics_queries_do_not_scan_every_processed_event(db: asyncpg.Connection) -> None:
    # 30 days of processed events (the retention of maintenance/purge_old_events.sql), none in
    # the 10-minute window and none queued: both queries should touch (almost) nothing.
    await db.execute(FILL_PROCESSED)
    await db.execute("ANALYZE marketing.pipeline_events")
    recent = await _plan(
        db, RECENT_FINISHED, DURATION_BUCKETS, RECENT_SECONDS, RECENT_EVENTS_SCANNED
    )
    queue = await _plan(db, QUEUE_STATE)
    print(recent, "\n\n", queue)
    assert "Seq Scan on pipeline_events" not in recent, recent
    assert "Seq Scan on pipeline_events" not in queue, queue


# -- found by schemathesis (tests/web/test_openapi_fuzz.py) ------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/api/campaigns", "GET, HEAD, POST"),
        ("PATCH", "/api/campaigns/1", "DELETE, GET, HEAD"),
        ("DELETE", "/api/tokens", "GET, HEAD, POST"),
        ("TRACE", "/health", "GET, HEAD"),
        ("POST", "/static/dashboard.css", "GET, HEAD"),
    ],
)
async def test_405_names_every_method_of_the_path_in_allow(
    api: Api, method: str, path: str, allowed: str
) -> None:
    # Starlette's 405 named only the first route matching the path (one route per method
    # here), and the envelope handler dropped its Allow header altogether.
    response = await api.http.request(method, path, headers=api.ops)

    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("value", ["true", "false", '"0.9"'])
async def test_apify_confidence_that_is_not_a_number_is_refused(api: Api, value: str) -> None:
    # pydantic's lax mode read `true` as a confidence of 1.0: a contact accepted for certain.
    contact = f'{{"slot_id": 1, "full_name": "Ada Lovelace", "confidence": {value}}}'
    body = f'{{"event": "scrape_done", "payload": {{"slot_ids": [1], "contacts": [{contact}]}}}}'
    response = await api.http.post(
        "/webhooks/apify", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    errors = response.json()["error"]["details"]["errors"]
    assert [e["field"] for e in errors] == ["payload.contacts[0].confidence"]


@pytest.mark.parametrize("value", ["true", '"0.9"'])
async def test_validator_score_that_is_not_a_number_is_refused(api: Api, value: str) -> None:
    result = f'{{"person_id": 1, "email": "a@acme.com", "status": "valid", "score": {value}}}'
    body = f'{{"event": "validate_result", "payload": {{"results": [{result}]}}}}'
    response = await api.http.post(
        "/webhooks/validator", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    errors = response.json()["error"]["details"]["errors"]
    assert [e["field"] for e in errors] == ["payload.results[0].score"]


@pytest.mark.parametrize("website", ["acme].com", "[acme.com", "http://acme.com]/about"])
def test_website_with_a_stray_bracket_is_not_a_company_not_a_crash(website: str) -> None:
    # urlsplit raises ValueError("Invalid IPv6 URL"): a 500 from the company timeline, and a
    # CSV line with such a website would stop the whole import instead of being rejected.
    with pytest.raises(NotACompany, match="cannot be parsed"):
        website_domain(website)


async def test_company_timeline_of_a_key_with_a_bracket_is_not_a_500(api: Api) -> None:
    response = await api.http.get("/api/timeline/company/acme%5D.com", headers=api.viewer)

    assert_not_500(response)
    assert response.status_code == 422


@pytest.mark.parametrize("value", ["0", '"off"', '"no"', "1"])
async def test_create_with_a_schedule_enabled_that_is_not_a_boolean_is_refused(
    api: Api, value: str
) -> None:
    # pydantic's lax mode read 0, "off" and "no" as false, and 1 as true.
    body = f'{{"campaign_name": "x", "schedule_enabled": {value}}}'
    response = await api.http.post(
        "/api/campaigns", content=body, headers=api.ops | {"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    errors = response.json()["error"]["details"]["errors"]
    assert [e["field"] for e in errors] == ["schedule_enabled"]


# -- a bug's answer ------------------------------------------------------------------------------


async def test_an_unexpected_exception_is_a_500_in_the_envelope_with_the_correlation_id(
    database_url: str,
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = create_app(database_url, {})
    app.add_route("/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://cascade") as http:
        response = await http.get("/broken", headers={"x-correlation-id": "trace-42"})

    assert response.status_code == 500
    assert response.json()["error"] == {
        "code": "internal_error",
        "message": "the server failed on this request; the failure is logged",
        "details": {"correlation_id": "trace-42"},
    }
    assert response.headers["x-correlation-id"] == "trace-42"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/campaigns/"), ("DELETE", "/api/tokens/"), ("POST", "/api/dead-letters/")],
)
async def test_an_id_of_five_thousand_digits_is_a_404_not_a_500(
    api: Api, method: str, path: str
) -> None:
    # Starlette's int convertor called int() on it while matching routes: ValueError, a 500.
    suffix = "/replay" if "dead-letters" in path else ""
    response = await api.http.request(method, path + "9" * 5000 + suffix, headers=api.ops)

    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
