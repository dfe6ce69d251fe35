"""The dashboard's JSON API over real HTTP against a real database (cascade/web/dashboard.py):
who am I, the funnel, throughput and latency, the timeline of a company or a contact, dead-letter
replay (exactly once under concurrent clicks), roles, and keys that must never reach a 500.
Funnel and timeline read a real Phase 1 run: the handlers, triggers and listener, with sandbox
providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from cascade.web import dashboard
from cascade.web.auth import create_token
from handlers import REGISTRY
from tests.support.listening import drain
from tests.support.sql import one

COMPANIES = [
    ("Northwind Logistics GmbH", "https://www.northwind-logistics.de", "DE"),
    ("Bluefin Analytics", "bluefin-analytics.io", "US"),
    ("Lumen Robotics", "https://lumenrobotics.com", "US"),
    ("Lumen Robotics (again)", "https://www.lumenrobotics.com/about", "US"),  # a duplicate
    ("N/A", "https://placeholder-name.com", "US"),  # rejected
]
INSERT_INTAKE = """
    INSERT INTO intake.company_raw_intake (company_name, website, country)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
"""
SANDBOX_ENV = {
    "ENRICHMENT_PROVIDERS": "peopledatalabs,prospeo",
    "VERIFICATION_UNKNOWN_RETRY_SECONDS": "0.1",
}
# $1 type, $2 created this many seconds ago, $3 processed this many seconds ago.
ADD_PROCESSED = """
    INSERT INTO marketing.pipeline_events
        (event_type, status, outcome, attempts, created_at, started_at, processed_at, finished_at)
    SELECT $1, 'processed', 'ok', 1, now() - make_interval(secs => $2),
           now() - make_interval(secs => $3), now() - make_interval(secs => $3),
           now() - make_interval(secs => $3)
    RETURNING id, processed_at
"""
ADD_DEAD = """
    INSERT INTO marketing.pipeline_events
        (event_type, status, outcome, attempts, record_id, last_error, finished_at)
    VALUES ($1, 'dead', 'dead', 5, $2, 'gave up', now())
    RETURNING id
"""
EVENT = "SELECT status, attempts, replay_count FROM marketing.pipeline_events WHERE id = $1"


@pytest.fixture(autouse=True)
def sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PEOPLEDATALABS_API_KEY", "PROSPEO_API_KEY", "APIFY_TOKEN",
                "MILLIONVERIFIER_API_KEY"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    for name, value in SANDBOX_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def viewer(db: asyncpg.Connection) -> str:
    return await create_token(db, "Vera (viewer)", "viewer", "test")


@pytest.fixture
async def ops(db: asyncpg.Connection) -> str:
    return await create_token(db, "Otto (ops)", "ops", "test")


@pytest.fixture
async def http(server: str, viewer: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, headers=bearer(viewer), timeout=30) as client:
        yield client


@pytest.fixture
async def ops_http(server: str, ops: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, headers=bearer(ops), timeout=30) as client:
        yield client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


async def run_phase1(db: asyncpg.Connection, database_url: str) -> None:
    names, websites, countries = (list(column) for column in zip(*COMPANIES, strict=True))
    await db.execute(INSERT_INTAKE, names, websites, countries)
    await drain(database_url, REGISTRY)


async def get_json(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


# -- access ------------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/api/me"),
    ("GET", "/api/dashboard/funnel"),
    ("GET", "/api/dashboard/throughput"),
    ("GET", "/api/timeline/company/1"),
    ("GET", "/api/timeline/contact/1"),
    ("POST", "/api/dead-letters/1/replay"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_dashboard_api__every_route_needs_a_token(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert response.status_code == 401
    assert error(response)["code"] == "unauthorized"


async def test_me__names_the_token_and_whether_it_may_replay(
    http: httpx.AsyncClient, ops_http: httpx.AsyncClient
) -> None:
    viewer_me = await get_json(http, "/api/me")
    ops_me = await get_json(ops_http, "/api/me")

    assert {k: viewer_me[k] for k in ("name", "role", "can_replay")} == {
        "name": "Vera (viewer)", "role": "viewer", "can_replay": False,
    }  # fmt: skip
    assert (ops_me["role"], ops_me["can_replay"]) == ("ops", True)


async def test_page__needs_no_token_and_runs_only_its_own_files(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    script = await client.get("/static/dashboard.js")
    style = await client.get("/static/dashboard.css")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from another origin
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    missing = await client.get("/static/nothing.js")
    assert (missing.status_code, error(missing)["code"]) == (404, "not_found")


@pytest.mark.parametrize("path", ["/static/dashboard.js", "/static/dashboard.css"])
async def test_page__a_deploy_reaches_the_browser_at_once_script_and_style_like_the_page(
    client: httpx.AsyncClient, path: str
) -> None:
    # The page is no-cache, but its script's name never changes: a browser that cached the
    # script heuristically (no Cache-Control means "fresh for a tenth of its age") would run
    # last release's script on this release's page and API. Each load asks again; an
    # unchanged file costs a 304.
    first = await client.get(path)
    again = await client.get(path, headers={"If-None-Match": first.headers["etag"]})

    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304


# -- funnel ------------------------------------------------------------------------------------


async def test_funnel__counts_what_phase1_wrote_at_every_stage(
    http: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    await run_phase1(db, database_url)

    stages = {s["stage"]: s for s in (await get_json(http, "/api/dashboard/funnel"))["stages"]}

    async def scalar(query: str) -> int:
        value: int = await db.fetchval(query)
        return value

    companies = await scalar("SELECT count(*) FROM marketing.company_master")
    slots = await scalar("SELECT count(*) FROM marketing.company_slots")
    filled = await scalar("SELECT count(*) FROM marketing.company_slots WHERE status = 'filled'")
    deliverable = await scalar(
        "SELECT count(*) FROM marketing.email_verification WHERE verdict = 'deliverable'"
    )
    ready = await scalar("SELECT count(*) FROM marketing.contact_enrichment WHERE status = 'ready'")
    assert (companies, slots) == (3, 9)
    assert [(s, stages[s]["count"], stages[s]["out_of"]) for s in stages if stages[s]["built"]] == [
        ("intake_rows", 5, None),
        ("validated", 3, 5),
        ("promoted", 3, 3),
        ("slots_filled", filled, 9),
        ("contacts_enriched", filled, filled),
        ("verified", deliverable, filled),
        ("ready", ready, deliverable),
    ]
    assert stages["validated"]["note"] == "1 rejected, 1 duplicates of a known domain"


async def test_funnel__messaging_and_engagement_show_zero_and_say_they_are_not_built(
    http: httpx.AsyncClient,
) -> None:
    stages = (await get_json(http, "/api/dashboard/funnel"))["stages"]

    later = [s for s in stages if s["phase"] in ("messaging", "engagement")]
    assert [s["stage"] for s in later] == [
        "messages_queued", "messages_sent", "delivered", "opened", "clicked", "replied",
    ]  # fmt: skip
    assert all(s["count"] == 0 and not s["built"] for s in later)
    assert all("not built yet" in s["note"] for s in later)
    assert [s["position"] for s in stages] == sorted(s["position"] for s in stages)


# -- throughput --------------------------------------------------------------------------------


async def test_throughput__counts_processed_events_per_minute_with_their_latency_percentiles(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # company_created: latencies 1, 2 and 3 s, processed 2 minutes ago; email_verified: 10
    # and 20 s, processed 10 minutes ago. Older, unfinished and dead events do not count.
    processed = [
        await one(db, ADD_PROCESSED, "company_created", 120 + latency, 120) for latency in (1, 2, 3)
    ] + [await one(db, ADD_PROCESSED, "email_verified", 600 + latency, 600) for latency in (10, 20)]
    await one(db, ADD_PROCESSED, "company_created", 7300, 7200)
    await db.execute("INSERT INTO marketing.pipeline_events (event_type) VALUES ('slots_created')")
    await db.fetchval(ADD_DEAD, "contact_enriched", None)

    body = await get_json(http, "/api/dashboard/throughput?window=1h")

    assert (body["window"], body["bucket_seconds"], body["complete"]) == ("1h", 60, True)
    assert len(body["totals"]) == 60
    start = datetime.fromisoformat(body["from"])
    expected: dict[int, int] = {}
    for row in processed:
        bucket = int((row["processed_at"] - start).total_seconds() // 60)
        expected[bucket] = expected.get(bucket, 0) + 1
    assert {i: t["processed"] for i, t in enumerate(body["totals"]) if t["processed"]} == expected
    stages = {s["event_type"]: s for s in body["stages"]}
    figures = {t: (s["processed"], s["p50_seconds"], s["p95_seconds"]) for t, s in stages.items()}
    assert figures == {"company_created": (3, 2, 2.9), "email_verified": (2, 15, 19.5)}
    created = stages["company_created"]
    assert sum(p["processed"] for p in created["points"]) == 3


async def test_throughput__a_day_has_hourly_buckets(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await one(db, ADD_PROCESSED, "company_created", 5 * 3600 + 4, 5 * 3600)

    body = await get_json(http, "/api/dashboard/throughput?window=24h")

    assert (body["bucket_seconds"], len(body["totals"])) == (3600, 24)
    assert sum(t["processed"] for t in body["totals"]) == 1
    assert body["stages"][0]["p50_seconds"] == 4


async def test_throughput__says_when_its_cap_on_events_read_cut_the_window_short(
    http: httpx.AsyncClient, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    for minutes_ago in (50, 40, 30, 20, 10):
        await one(db, ADD_PROCESSED, "company_created", minutes_ago * 60 + 1, minutes_ago * 60)
    monkeypatch.setattr(dashboard, "RECENT_EVENTS_SCANNED", 2)

    body = await get_json(http, "/api/dashboard/throughput?window=1h")

    assert body["complete"] is False
    assert sum(t["processed"] for t in body["totals"]) == 2
    newest_two = await db.fetch(
        "SELECT created_at FROM marketing.pipeline_events ORDER BY id DESC LIMIT 2"
    )
    assert datetime.fromisoformat(body["read_back_to"]) == newest_two[-1]["created_at"]


async def test_throughput__an_event_processed_after_the_window_ends_is_in_no_bucket_and_no_figure(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # The window ends with the minute that holds the read's now() (its transaction's start). A
    # listener that finishes an event just after that minute and commits before the read takes
    # its snapshot (one round trip later) leaves a processed_at past the window's end: here, two
    # minutes ahead. It belongs to the next read's window, not to a bucket beyond the last.
    await one(db, ADD_PROCESSED, "company_created", 121, 120)
    await one(db, ADD_PROCESSED, "company_created", -119, -120)

    body = await get_json(http, "/api/dashboard/throughput?window=1h")

    (stage,) = body["stages"]
    assert [p["bucket"] for p in stage["points"]] == [57]  # processed 2 min ago, in 0..59
    assert stage["processed"] == sum(t["processed"] for t in body["totals"]) == 1


@pytest.mark.parametrize("window", ["7d", "", "1H", "1h\x00"])
async def test_throughput__refuses_any_other_window(http: httpx.AsyncClient, window: str) -> None:
    response = await http.get("/api/dashboard/throughput", params={"window": window})

    assert response.status_code == 422
    assert error(response)["details"] == {"field": "window", "allowed": ["1h", "24h"]}


# -- timelines ---------------------------------------------------------------------------------


async def test_timeline__a_company_by_id_barton_id_domain_or_website_tells_one_story(
    http: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    await run_phase1(db, database_url)
    company = await one(
        db, "SELECT id, barton_id FROM marketing.company_master WHERE domain = 'lumenrobotics.com'"
    )

    stories = [
        await get_json(http, "/api/timeline/company/" + quote(str(key), safe=""))
        for key in (company["id"], company["barton_id"], "lumenrobotics.com",
                    "https://www.lumenrobotics.com/about")
    ]  # fmt: skip

    assert all(story["entries"] == stories[0]["entries"] for story in stories)
    story = stories[0]
    assert story["subjects"][0]["barton_id"] == company["barton_id"]
    assert story["truncated"] is False
    assert story["total"] == len(story["entries"])
    kinds = [(e["source"], e["kind"]) for e in story["entries"]]
    # Both intake rows: the one it came from and the duplicate.
    assert kinds.count(("state", "intake.received")) == 2
    assert ("state", "intake.duplicate") in kinds
    assert ("state", "company.promoted") in kinds
    assert any(source == "attempt" for source, _ in kinds)


async def test_timeline__is_in_time_order_with_each_state_change_before_the_event_it_emitted(
    http: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    await run_phase1(db, database_url)
    company_id = await db.fetchval(
        "SELECT id FROM marketing.company_master WHERE domain = 'bluefin-analytics.io'"
    )

    entries = (await get_json(http, f"/api/timeline/company/{company_id}"))["entries"]

    times = [datetime.fromisoformat(e["at"]) for e in entries]
    assert times == sorted(times)
    events = [e["kind"] for e in entries if e["source"] == "event"]
    assert events[:4] == ["company_created", "company_validated", "company_promoted",
                          "slots_created"]  # fmt: skip
    assert set(events) >= {"contact_enriched", "email_verified"}
    assert all(e["detail"]["status"] == "processed" for e in entries if e["source"] == "event")
    position = {(e["source"], e["kind"]): i for i, e in reversed(list(enumerate(entries)))}
    assert position[("state", "intake.received")] < position[("event", "company_created")]
    assert position[("state", "company.validated")] < position[("event", "company_validated")]
    assert position[("state", "company.promoted")] < position[("event", "company_promoted")]


async def test_timeline__a_contact_by_id_or_email_leaves_out_its_colleagues(
    http: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    await run_phase1(db, database_url)
    contacts = await db.fetch(
        "SELECT ct.id, ct.email FROM marketing.contact_enrichment AS ct"
        "  JOIN marketing.company_master AS c ON c.id = ct.company_id"
        " ORDER BY c.id, ct.id"
    )
    contact = contacts[0]
    colleagues = {c["id"] for c in contacts[1:]}

    await db.execute(
        "INSERT INTO marketing.contact_timeline (contact_id, event_type, event_data)"
        " VALUES ($1, 'email_opened', '{\"campaign_id\": 4}')",
        contact["id"],
    )

    by_id = await get_json(http, f"/api/timeline/contact/{contact['id']}")
    by_email = await get_json(http, "/api/timeline/contact/" + quote(contact["email"].upper()))

    assert by_id["entries"] == by_email["entries"]
    assert by_id["subjects"][0]["contact_id"] == contact["id"]
    enriched = [e for e in by_id["entries"] if e["kind"] == "contact_enriched"]
    assert [e["detail"]["record_id"] for e in enriched] == [contact["id"]]
    assert not any(e["detail"].get("contact_id") in colleagues for e in by_id["entries"])
    events = [e["kind"] for e in by_id["entries"] if e["source"] == "event"]
    assert events[0] == "company_created"  # the run's root: how the contact came about
    opened = [e for e in by_id["entries"] if e["kind"] == "timeline.email_opened"]
    assert [e["detail"] for e in opened] == [{"campaign_id": 4, "contact_id": contact["id"]}]


async def test_timeline__finds_unfinished_and_dead_events_beyond_the_newest_events_it_reads(
    http: httpx.AsyncClient, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No listener: the company's insert leaves company_validated pending; a second event of it
    # is dead. Twenty newer events push both out of a one-event window.
    company_id = await db.fetchval(
        "INSERT INTO marketing.company_master (company_name, domain, website)"
        " VALUES ('Quiet Co', 'quiet.example', 'https://quiet.example') RETURNING id"
    )
    dead_id = await db.fetchval(ADD_DEAD, "company_promoted", company_id)
    for _ in range(20):
        await one(db, ADD_PROCESSED, "email_verified", 2, 1)
    monkeypatch.setattr(dashboard, "TIMELINE_EVENTS_SCANNED", 1)

    story = await get_json(http, f"/api/timeline/company/{company_id}")

    events = {e["detail"]["event_id"]: e for e in story["entries"] if e["source"] == "event"}
    assert [e["kind"] for e in events.values()] == ["company_validated", "company_promoted"]
    assert events[dead_id]["detail"]["status"] == "dead"
    assert story["newest_events_searched"] == 1


async def test_timeline__a_contact_is_found_by_its_email_in_any_case_as_stored_in_any_case(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # Providers return emails as they have them: "Ada.Lovelace@…" is stored as given. The
    # person looking her up types it however they remember it.
    company_id = await db.fetchval(
        "INSERT INTO marketing.company_master (company_name, domain, website)"
        " VALUES ('Analytical Engines', 'engines.example', 'https://engines.example')"
        " RETURNING id"
    )
    contact_id = await db.fetchval(
        "INSERT INTO marketing.contact_enrichment"
        "  (company_id, full_name, company_name, email, provider, provider_mode)"
        " VALUES ($1, 'Ada Lovelace', 'Analytical Engines', 'Ada.Lovelace@Engines.example',"
        "         'peopledatalabs', 'sandbox') RETURNING id",
        company_id,
    )

    found = [
        await get_json(http, "/api/timeline/contact/" + quote(spelling))
        for spelling in ("Ada.Lovelace@Engines.example", "ada.lovelace@engines.example",
                         "ADA.LOVELACE@ENGINES.EXAMPLE")
    ]  # fmt: skip

    assert [[s["contact_id"] for s in story["subjects"]] for story in found] == [[contact_id]] * 3


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/timeline/company/%00", 422, "invalid_key"),
        ("/api/timeline/company/acme%00.com", 422, "invalid_key"),
        ("/api/timeline/company/" + "a" * 400 + ".com", 422, "invalid_key"),
        ("/api/timeline/company/04.04.01.00.00001.000", 422, "invalid_key"),  # bad check digits
        ("/api/timeline/company/04.04.01.00.00001.095", 404, "company_not_found"),
        ("/api/timeline/company/99999999999999999999999", 404, "company_not_found"),
        ("/api/timeline/company/not%20a%20domain", 422, "invalid_key"),
        ("/api/timeline/company/nobody-here.com", 404, "company_not_found"),
        ("/api/timeline/contact/someone", 422, "invalid_key"),
        ("/api/timeline/contact/nobody@example.com", 404, "contact_not_found"),
        ("/api/timeline/contact/99999999999999999999999", 404, "contact_not_found"),
        ("/api/timeline/contact/%00@x.com", 422, "invalid_key"),
    ],
)
async def test_timeline__a_bad_or_unknown_key_is_422_or_404_never_500(
    http: httpx.AsyncClient, path: str, status: int, code: str
) -> None:
    response = await http.get(path)

    assert (response.status_code, error(response)["code"]) == (status, code)


# -- replay ------------------------------------------------------------------------------------


async def test_replay__puts_a_dead_letter_back_in_the_queue(
    ops_http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    event_id = await db.fetchval(ADD_DEAD, "contact_enriched", 7)

    response = await ops_http.post(f"/api/dead-letters/{event_id}/replay")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["replayed"] is True
    assert {k: body["event"][k] for k in ("id", "status", "attempts", "replay_count")} == {
        "id": event_id, "status": "pending", "attempts": 0, "replay_count": 1,
    }  # fmt: skip
    assert dict(await one(db, EVENT, event_id)) == {
        "status": "pending", "attempts": 0, "replay_count": 1,
    }  # fmt: skip


async def test_replay__ten_concurrent_clicks_replay_it_exactly_once(
    ops_http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    event_id = await db.fetchval(ADD_DEAD, "contact_enriched", 7)

    responses = await asyncio.gather(
        *(ops_http.post(f"/api/dead-letters/{event_id}/replay") for _ in range(10))
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 9
    refused = [error(r) for r in responses if r.status_code == 409]
    assert {e["code"] for e in refused} == {"not_dead"}
    assert {e["details"]["event"]["status"] for e in refused} == {"pending"}
    assert dict(await one(db, EVENT, event_id)) == {
        "status": "pending", "attempts": 0, "replay_count": 1,
    }  # fmt: skip


async def test_replay__a_viewer_is_forbidden_and_the_letter_stays_dead(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    event_id = await db.fetchval(ADD_DEAD, "contact_enriched", 7)

    response = await http.post(f"/api/dead-letters/{event_id}/replay")

    assert response.status_code == 403
    assert error(response)["details"] == {"required_role": "ops", "role": "viewer"}
    assert (await one(db, EVENT, event_id))["status"] == "dead"


async def test_replay__an_event_that_is_not_dead_is_409_and_unchanged(
    ops_http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    event_id = await db.fetchval(
        "INSERT INTO marketing.pipeline_events (event_type) VALUES ('slots_created') RETURNING id"
    )

    response = await ops_http.post(f"/api/dead-letters/{event_id}/replay")

    assert response.status_code == 409
    message = f"event {event_id} is pending, not dead: nothing was replayed"
    assert error(response)["message"] == message
    assert dict(await one(db, EVENT, event_id)) == {
        "status": "pending", "attempts": 0, "replay_count": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("event_id", "code"),
    [("424242", "event_not_found"), ("99999999999999999999999", "event_not_found"),
     ("abc", "not_found"), ("-1", "not_found"), ("1%00", "not_found")],
)  # fmt: skip
async def test_replay__an_unknown_or_malformed_id_is_404(
    ops_http: httpx.AsyncClient, event_id: str, code: str
) -> None:
    response = await ops_http.post(f"/api/dead-letters/{event_id}/replay")

    assert (response.status_code, error(response)["code"]) == (404, code)
