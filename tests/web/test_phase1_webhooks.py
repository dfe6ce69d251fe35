"""Phase 1's webhooks over real HTTP against a real database: Apify results settling waiting
slots, the validator's bulk results, signatures, bad input, the workflow trigger, status."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from cascade.webhooks.signatures import sign_standard
from tests.support.waiting import eventually
from tests.web.conftest import StartServer

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
RUN_ID = "run_abc"

ADD_COMPANY = """
    INSERT INTO marketing.company_master (company_name, domain, website, country)
    VALUES ($1, $2, 'https://' || $2, $3) RETURNING id
"""
ADD_WAITING_SLOT = """
    INSERT INTO marketing.company_slots
        (company_id, role, status, providers_tried, pending_provider, pending_run_id,
         pending_deadline)
    VALUES ($1, $2, 'awaiting_provider', '{peopledatalabs,prospeo,apify}', 'apify', $3,
            now() + interval '15 minutes')
    RETURNING id
"""
ADD_OPEN_SLOT = """
    INSERT INTO marketing.company_slots (company_id, role, providers_tried)
    VALUES ($1, $2, '{peopledatalabs,prospeo,apify}') RETURNING id
"""
ADD_CONTACT = """
    INSERT INTO marketing.contact_enrichment
        (company_id, full_name, company_name, email, provider, provider_mode)
    VALUES ($1, 'Ada Lovelace', 'Acme', $2, 'prospeo', 'sandbox') RETURNING id
"""
EVENTS = """
    SELECT event_type, correlation_id, payload FROM marketing.pipeline_events
     WHERE event_type = $1 ORDER BY id
"""


async def waiting_slot(db: asyncpg.Connection, country: str = "US", role: str = "CEO") -> int:
    company = await db.fetchval(ADD_COMPANY, "Acme", f"acme-{country.lower()}.com", country)
    slot_id: int = await db.fetchval(ADD_WAITING_SLOT, company, role, RUN_ID)
    return slot_id


def contact(
    slot_id: int, email: str = "ada@acme-us.com", confidence: float = 0.92
) -> dict[str, Any]:
    return {
        "slot_id": f"slot_{slot_id}", "full_name": "Ada Lovelace", "first_name": "Ada",
        "last_name": "Lovelace", "title": "Chief Executive Officer", "email": email,
        "linkedin_url": "https://www.linkedin.com/in/ada", "country": None,
        "confidence": confidence,
    }  # fmt: skip


def apify_body(event: str, slot_ids: list[Any], contacts: list[dict[str, Any]]) -> bytes:
    payload = {"slot_ids": slot_ids, "contacts": contacts, "run_id": RUN_ID,
               "unique_id": "04.01.01.04.20000.004", "process_id": "PLE-001"}  # fmt: skip
    return json.dumps({"event": event, "payload": payload}).encode()


async def post(client: httpx.AsyncClient, path: str, body: bytes, **headers: str) -> httpx.Response:
    sent = {
        "content-type": "application/json",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return await client.post(path, content=body, headers=sent)


async def slot_row(db: asyncpg.Connection, slot_id: int) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM marketing.company_slots WHERE id = $1", slot_id)
    assert row is not None
    return row


async def attempts(db: asyncpg.Connection, slot_id: int) -> list[tuple[str, str | None]]:
    rows = await db.fetch(
        "SELECT status, external_id FROM marketing.provider_attempts WHERE slot_id = $1", slot_id
    )
    return [(r["status"], r["external_id"]) for r in rows]


# -- Apify ------------------------------------------------------------------------------------


async def test_apify__scrape_done_fills_the_waiting_slot(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    slot_id = await waiting_slot(db)

    body = apify_body("scrape_done", [f"slot_{slot_id}"], [contact(slot_id)])

    response = await post(client, "/webhooks/apify", body, x_correlation_id="corr-fill-1")

    assert response.status_code == 202, response.text
    assert response.headers["x-correlation-id"] == "corr-fill-1"
    assert response.json()["filled"] == [slot_id]
    assert response.json()["verified"] is False
    person = await db.fetchrow(
        "SELECT * FROM marketing.contact_enrichment WHERE slot_id = $1", slot_id
    )
    assert person is not None
    assert (person["email"], person["provider"], person["provider_mode"]) == (
        "ada@acme-us.com", "apify", "webhook",
    )  # fmt: skip
    slot = await slot_row(db, slot_id)
    assert (slot["status"], slot["contact_id"], slot["pending_run_id"]) == (
        "filled", person["id"], None,
    )  # fmt: skip
    assert slot["finished_at"] is not None
    assert await attempts(db, slot_id) == [("completed", RUN_ID)]
    events = await db.fetch(EVENTS, "contact_enriched")
    assert [(e["correlation_id"], json.loads(e["payload"])["id"]) for e in events] == [
        ("corr-fill-1", person["id"])
    ]


async def test_apify__scrape_failed_reopens_the_slot(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    slot_id = await waiting_slot(db)

    response = await post(
        client, "/webhooks/apify", apify_body("scrape_failed", [slot_id], []),
        x_correlation_id="corr-failed",
    )  # fmt: skip

    assert response.status_code == 202, response.text
    assert response.json()["reopened"] == [slot_id]
    slot = await slot_row(db, slot_id)
    assert (slot["status"], slot["pending_provider"], slot["pending_run_id"]) == (
        "open", None, None,
    )  # fmt: skip
    assert list(slot["providers_tried"]) == ["peopledatalabs", "prospeo", "apify"]
    assert await attempts(db, slot_id) == [("failed", RUN_ID)]
    events = await db.fetch(EVENTS, "slots_created")
    assert [(e["correlation_id"], json.loads(e["payload"])["reason"]) for e in events] == [
        ("corr-failed", "reopened")
    ]


async def test_apify__late_delivery_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    company = await db.fetchval(ADD_COMPANY, "Acme", "acme.com", "US")
    slot_id = await db.fetchval(ADD_OPEN_SLOT, company, "CFO")  # timed out: moved on
    before = await slot_row(db, slot_id)
    events_before = await db.fetchval("SELECT count(*) FROM marketing.pipeline_events")

    response = await post(
        client, "/webhooks/apify", apify_body("scrape_done", [slot_id], [contact(slot_id)])
    )

    assert response.status_code == 202, response.text
    assert response.json()["late"] == [slot_id]
    assert await slot_row(db, slot_id) == before
    assert await db.fetchval("SELECT count(*) FROM marketing.contact_enrichment") == 0
    assert await db.fetchval("SELECT count(*) FROM marketing.pipeline_events") == events_before
    assert [status for status, _ in await attempts(db, slot_id)] == ["late"]


async def test_apify__unknown_slot_is_reported(client: httpx.AsyncClient) -> None:
    response = await post(client, "/webhooks/apify", apify_body("scrape_done", [424242], []))

    assert response.status_code == 202, response.text
    assert response.json()["unknown_slot_ids"] == [424242]


async def test_apify__personal_email_for_a_gb_company_is_filtered(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    slot_id = await waiting_slot(db, country="GB")
    person = contact(slot_id, email="ada.lovelace@gmail.com", confidence=0.99)

    response = await post(client, "/webhooks/apify", apify_body("scrape_done", [slot_id], [person]))

    assert response.status_code == 202, response.text
    assert response.json()["reopened"] == [slot_id]
    assert await db.fetchval("SELECT count(*) FROM marketing.contact_enrichment") == 0
    assert [status for status, _ in await attempts(db, slot_id)] == ["filtered"]
    assert (await slot_row(db, slot_id))["status"] == "open"


async def test_apify__duplicate_delivery_is_stored_once(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    slot_id = await waiting_slot(db)
    body = apify_body("scrape_done", [slot_id], [contact(slot_id)])

    first = await post(client, "/webhooks/apify", body, x_apify_webhook_dispatch_id="dispatch-1")
    again = await post(client, "/webhooks/apify", body, x_apify_webhook_dispatch_id="dispatch-1")

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["status"] == "duplicate"
    assert await db.fetchval("SELECT count(*) FROM marketing.contact_enrichment") == 1
    assert await db.fetchval("SELECT count(*) FROM marketing.processed_webhook_events") == 1
    assert len(await attempts(db, slot_id)) == 1


async def test_apify__twenty_concurrent_copies_apply_once(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    slot_id = await waiting_slot(db)
    body = apify_body("scrape_done", [slot_id], [contact(slot_id)])  # no id header: body hash

    responses = await asyncio.gather(*(post(client, "/webhooks/apify", body) for _ in range(20)))

    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert await db.fetchval("SELECT count(*) FROM marketing.contact_enrichment") == 1
    assert len(await db.fetch(EVENTS, "contact_enriched")) == 1
    assert len(await attempts(db, slot_id)) == 1
    keys = await db.fetch("SELECT event_key FROM marketing.processed_webhook_events")
    assert [k["event_key"][:7] for k in keys] == ["sha256:"]


# -- validator --------------------------------------------------------------------------------


async def test_validator__bulk_results_store_verdicts_and_skip_unknown_contacts(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    company = await db.fetchval(ADD_COMPANY, "Acme", "acme.com", "US")
    ok, bad, catch_all = [
        await db.fetchval(ADD_CONTACT, company, email)
        for email in ("ada@acme.com", "nobody@acme.com", "anyone@acme.com")
    ]
    results = [
        {"person_id": f"person_{ok}", "email": "ada@acme.com", "status": "valid", "score": 0.95},
        {"person_id": bad, "email": "nobody@acme.com", "status": "invalid", "score": 0.1},
        {"person_id": str(catch_all), "email": "anyone@acme.com", "status": "catch_all",
         "score": 0.9},
        {"person_id": "person_999999", "email": "ghost@acme.com", "status": "ok", "score": 1},
    ]  # fmt: skip
    body = json.dumps({"event": "validate_result", "payload": {"results": results}}).encode()

    response = await post(client, "/webhooks/validator", body, x_correlation_id="corr-mv")

    assert response.status_code == 202, response.text
    assert response.json()["skipped"] == [{"person_id": 999999, "reason": "unknown contact"}]
    verdicts = await db.fetch(
        "SELECT contact_id, verdict, source FROM marketing.email_verification ORDER BY contact_id"
    )
    assert [tuple(v) for v in verdicts] == [
        (ok, "deliverable", "webhook"), (bad, "undeliverable", "webhook"),
        (catch_all, "risky", "webhook"),
    ]  # fmt: skip
    statuses = await db.fetch("SELECT id, status FROM marketing.contact_enrichment ORDER BY id")
    assert [tuple(s) for s in statuses] == [
        (ok, "enriched"), (bad, "undeliverable"), (catch_all, "risky"),
    ]  # fmt: skip
    verified = await db.fetch(EVENTS, "email_verified")
    assert [(e["correlation_id"], json.loads(e["payload"])["contact_id"]) for e in verified] == [
        ("corr-mv", ok)
    ]


async def test_validator__changed_email_is_skipped(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    company = await db.fetchval(ADD_COMPANY, "Acme", "acme.com", "US")
    person = await db.fetchval(ADD_CONTACT, company, "new@acme.com")
    result = {"person_id": person, "email": "old@acme.com", "status": "ok", "score": 0.99}
    body = json.dumps({"event": "validate_result", "payload": {"results": [result]}}).encode()

    response = await post(client, "/webhooks/validator", body)

    assert response.status_code == 202, response.text
    assert response.json()["applied"] == []
    assert "email changed" in response.json()["skipped"][0]["reason"]
    assert await db.fetchval("SELECT count(*) FROM marketing.email_verification") == 0


# -- signatures -------------------------------------------------------------------------------


async def test_apify__valid_standard_webhooks_signature_is_verified(
    start_server: StartServer, db: asyncpg.Connection
) -> None:
    slot_id = await waiting_slot(db)
    body = apify_body("scrape_done", [slot_id], [contact(slot_id)])
    headers = sign_standard(SECRET, "msg_1", int(time.time()), body)
    base = start_server({"WEBHOOK_SECRET_APIFY": SECRET})

    async with httpx.AsyncClient(base_url=base) as client:
        response = await post(client, "/webhooks/apify", body, **_kw(headers))

    assert response.status_code == 202, response.text
    assert response.json()["verified"] is True
    stored = await db.fetchrow("SELECT event_key, verified FROM marketing.processed_webhook_events")
    assert stored is not None
    assert tuple(stored) == ("msg_1", True)


async def test_apify__tampered_body_is_rejected(
    start_server: StartServer, db: asyncpg.Connection
) -> None:
    slot_id = await waiting_slot(db)
    body = apify_body("scrape_done", [slot_id], [contact(slot_id)])
    headers = sign_standard(SECRET, "msg_2", int(time.time()), body)
    base = start_server({"WEBHOOK_SECRET_APIFY": SECRET})

    async with httpx.AsyncClient(base_url=base) as client:
        response = await post(
            client, "/webhooks/apify", body.replace(b"0.92", b"0.99"), **_kw(headers)
        )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert (await slot_row(db, slot_id))["status"] == "awaiting_provider"
    assert await db.fetchval("SELECT count(*) FROM marketing.processed_webhook_events") == 0


async def test_apify__without_a_secret_is_accepted_unverified(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    response = await post(client, "/webhooks/apify", apify_body("scrape_failed", [1], []))

    assert response.status_code == 202, response.text
    assert response.json()["verified"] is False
    assert await db.fetchval("SELECT verified FROM marketing.processed_webhook_events") is False


def _kw(headers: dict[str, str]) -> dict[str, str]:
    return {name.replace("-", "_"): value for name, value in headers.items()}


# -- bad input --------------------------------------------------------------------------------


async def test_apify__malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await post(client, "/webhooks/apify", b'{"event": "scrape_done", ')

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


async def test_apify__missing_field_is_422_naming_it(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = json.dumps({"event": "scrape_done", "payload": {"contacts": []}}).encode()

    response = await post(client, "/webhooks/apify", body)

    assert response.status_code == 422
    error = response.json()["error"]
    assert "payload.slot_ids" in error["message"]
    assert error["details"]["errors"][0]["field"] == "payload.slot_ids"
    assert await db.fetchval("SELECT count(*) FROM marketing.processed_webhook_events") == 0


async def test_apify__body_over_one_megabyte_is_413(client: httpx.AsyncClient) -> None:
    body = apify_body("scrape_failed", [1], []) + b" " * (1024 * 1024)

    response = await post(client, "/webhooks/apify", body)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_apify__wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/webhooks/apify", content=b"event=scrape_done",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


# -- trigger and status -----------------------------------------------------------------------


@pytest.fixture
async def importing_client(
    start_server: StartServer, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server whose import folder (CASCADE_IMPORT_DIR) is tmp_path."""
    base_url = start_server({"CASCADE_IMPORT_DIR": str(tmp_path)})
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        yield http


async def test_trigger__lead_only_imports_the_csv_under_a_new_run(
    importing_client: httpx.AsyncClient, db: asyncpg.Connection, tmp_path: Path
) -> None:
    client = importing_client
    csv = tmp_path / "leads.csv"
    csv.write_text(
        "company_id,company_name,website,country\n"
        "cmp_1,Acme Analytics,https://acme-analytics.com,United States\n"
        "cmp_2,Borealis Tools,https://borealis-tools.io,Canada\n"
    )
    body = json.dumps({"csv_path": "leads.csv", "batch_size": 25}).encode()

    response = await post(client, "/webhooks/trigger/lead_only", body)

    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert response.json()["branches"] == {"lead": "started"}
    run = await db.fetchrow(
        "SELECT workflow, batch_size FROM marketing.workflow_runs WHERE id = $1", run_id
    )
    assert run is not None
    assert tuple(run) == ("lead_only", 25)

    async def imported() -> bool:
        count = await db.fetchval(
            "SELECT count(*) FROM intake.company_raw_intake WHERE workflow_run_id = $1", run_id
        )
        return bool(count == 2)

    await eventually(imported)


async def test_trigger__full_pipeline_names_the_branches_not_built(
    importing_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    csv = tmp_path / "leads.csv"
    csv.write_text("company_name,website\nAcme,https://acme.com\n")

    response = await post(
        importing_client,
        "/webhooks/trigger/full_pipeline",
        json.dumps({"csv_path": "leads.csv"}).encode(),
    )

    assert response.status_code == 202, response.text
    assert response.json()["branches"] == {
        "lead": "started", "messaging": "not built yet", "delivery": "not built yet",
    }  # fmt: skip


@pytest.mark.parametrize("outside", ["../leads.csv", "/etc/passwd"])
async def test_trigger__a_csv_path_outside_the_import_folder_is_refused(
    importing_client: httpx.AsyncClient, db: asyncpg.Connection, outside: str
) -> None:
    response = await post(
        importing_client, "/webhooks/trigger/lead_only", json.dumps({"csv_path": outside}).encode()
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "csv_path_refused"
    assert await db.fetchval("SELECT count(*) FROM marketing.workflow_runs") == 0


async def test_trigger__unmapped_unique_id_is_422_with_the_seed_message(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = json.dumps({"unique_id": "04.01.01.04.20000.003", "blueprint_id": "PLE-001"}).encode()

    response = await post(client, "/webhooks/trigger/lead_only", body)

    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "UNMAPPED UNIQUE_ID: 04.01.01.04.20000.003 not found in shq_process_key_reference"
    )
    assert await db.fetchval("SELECT count(*) FROM marketing.workflow_runs") == 0


async def test_trigger__unknown_workflow_is_404(client: httpx.AsyncClient) -> None:
    response = await post(client, "/webhooks/trigger/everything", b"{}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_workflow"


async def test_status__reports_branches_and_webhooks_and_points_to_the_metrics(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await waiting_slot(db)

    response = await client.get("/webhooks/status")

    assert response.status_code == 200, response.text
    status = response.json()
    lead = status["branches"]["lead"]
    assert lead["slots"] == {"awaiting_provider": 1}
    assert set(lead) >= {"intake", "slots", "contacts", "verdicts", "latest_workflow_runs"}
    assert status["branches"]["messaging"]["status"] == "not built yet"
    assert status["branches"]["delivery"]["status"] == "not built yet"
    assert status["webhooks"]["unverified_providers"] == [
        "apify", "delivery", "heyreach", "instantly", "trigger", "validator",
    ]  # fmt: skip
    assert "WEBHOOK_SECRET_APIFY" in status["webhooks"]["warning"]
    # Public route: the metrics stay behind a viewer token, named, not repeated.
    assert status["phase1_metrics"] == {
        "route": "/api/monitoring/phase1",
        "needs": "a viewer token",
    }
