"""The external stages with live-mode provider clients talking over HTTP to a local stand-in:
every MillionVerifier result code (and its HTTP-200 error) as the verification stage sees it,
and an enrichment budget that runs out."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import asyncpg
import pytest

from handlers import REGISTRY
from tests.support.fake_api import Answer, FakeApi
from tests.support.listening import drain, running
from tests.support.sql import one
from tests.support.waiting import eventually

# A promoted company and a contact with an email: the contact's insert emits contact_enriched.
# (The company's own insert emits company_validated, which finds its Barton ID already set.)
ADD_CONTACT = """
    WITH company AS (
        INSERT INTO marketing.company_master
            (company_name, domain, website, country, barton_id, status)
        VALUES ('Acme Logistics', 'acme.de', 'https://acme.de', 'DE', marketing.next_barton_id(),
                'promoted')
        RETURNING id
    )
    INSERT INTO marketing.contact_enrichment
        (company_id, full_name, company_name, email, provider, provider_mode)
    SELECT id, 'Anna Berg', 'Acme Logistics', 'anna.berg@acme.de', 'peopledatalabs', 'live'
      FROM company
    RETURNING id
"""
VERDICT = "SELECT result, verdict, reason FROM marketing.email_verification"
CONTACT_STATUS = "SELECT status FROM marketing.contact_enrichment"
QUICK_RETRIES = """
    UPDATE marketing.event_types SET max_attempts = 2, backoff_base_seconds = 0.05
     WHERE event_type = $1
"""


def millionverifier(result: str, quality: str = "good", error: str = "") -> Answer:
    return Answer(
        200,
        {
            "email": "anna.berg@acme.de", "quality": quality, "result": result,
            "resultcode": 1, "subresult": result, "free": False, "role": False,
            "didyoumean": "", "credits": 999, "executiontime": 1, "error": error,
            "livemode": True,
        },
    )  # fmt: skip


@pytest.fixture
def verifier_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    with FakeApi() as api:
        monkeypatch.setenv("MILLIONVERIFIER_API_KEY", "test-key")
        monkeypatch.setenv("MILLIONVERIFIER_BASE_URL", api.url)
        monkeypatch.setenv("VERIFICATION_UNKNOWN_RETRY_SECONDS", "0.05")
        monkeypatch.setenv("VERIFICATION_MAX_UNKNOWN", "2")
        yield api


@pytest.mark.parametrize(
    ("answer", "verdict", "contact_status"),
    [
        (millionverifier("ok"), "deliverable", "ready"),
        (millionverifier("catch_all", "risky"), "risky", "risky"),
        (millionverifier("invalid", "bad"), "undeliverable", "undeliverable"),
        (millionverifier("disposable", "bad"), "undeliverable", "undeliverable"),
    ],
    ids=["ok", "catch_all", "invalid", "disposable"],
)
async def test_verification__each_result_code_gives_its_verdict(
    db: asyncpg.Connection,
    database_url: str,
    verifier_api: FakeApi,
    answer: Answer,
    verdict: str,
    contact_status: str,
) -> None:
    verifier_api.queue(answer)
    await db.fetchval(ADD_CONTACT)

    await drain(database_url, REGISTRY)

    assert (await one(db, VERDICT))["verdict"] == verdict
    assert await db.fetchval(CONTACT_STATUS) == contact_status
    assert "api=test-key" in verifier_api.requests[0].path
    assert verifier_api.requests[0].headers["Idempotency-Key"].startswith("cascade-event-")


async def test_verification__unknown_is_asked_again_then_ends_unverifiable(
    db: asyncpg.Connection, database_url: str, verifier_api: FakeApi
) -> None:
    verifier_api.queue(millionverifier("unknown", "risky"), millionverifier("unknown", "risky"))
    await db.fetchval(ADD_CONTACT)

    await drain(database_url, REGISTRY)

    assert dict(await one(db, VERDICT)) == {
        "result": "unknown",
        "verdict": "unverifiable",
        "reason": "unknown after 2 checks",
    }
    assert len(verifier_api.requests) == 2
    attempts = await db.fetchval(
        "SELECT attempts FROM marketing.pipeline_events WHERE event_type = 'contact_enriched'"
    )
    assert attempts == 1  # asking again later spends no attempt


async def test_verification__an_http_200_error_is_a_provider_fault_not_a_verdict(
    db: asyncpg.Connection, database_url: str, verifier_api: FakeApi
) -> None:
    verifier_api.default = millionverifier("error", "", error="Insufficient credits")
    await db.execute(QUICK_RETRIES, "contact_enriched")
    await db.fetchval(ADD_CONTACT)

    await drain(database_url, REGISTRY)

    assert await db.fetchval("SELECT count(*) FROM marketing.email_verification") == 0
    assert await db.fetchval(CONTACT_STATUS) == "enriched"
    dead = await one(db, "SELECT event_type, last_error FROM marketing.vw_dead_letters")
    assert dead["event_type"] == "contact_enriched"
    assert "Insufficient credits" in dead["last_error"]


async def test_verification__a_429_waits_for_retry_after_without_spending_an_attempt(
    db: asyncpg.Connection,
    database_url: str,
    verifier_api: FakeApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROVIDER_MAX_RETRY_WAIT_SECONDS", "0")  # no in-process sleeping
    verifier_api.queue(
        Answer(429, {"error": "slow down"}, {"Retry-After": "1"}), millionverifier("ok")
    )
    await db.fetchval(ADD_CONTACT)

    await drain(database_url, REGISTRY)

    assert (await one(db, VERDICT))["verdict"] == "deliverable"
    event = await one(
        db,
        "SELECT attempts, finished_at - created_at AS took FROM marketing.pipeline_events"
        " WHERE event_type = 'contact_enriched'",
    )
    assert event["attempts"] == 1
    assert event["took"].total_seconds() >= 1


PDL_PERSON = {
    "status": 200,
    "total": 1,
    "data": [
        {
            "full_name": "Anna Berg", "first_name": "Anna", "last_name": "Berg",
            "job_title": "Chief Executive Officer", "work_email": "anna.berg@acme.de",
            "linkedin_url": "linkedin.com/in/annaberg", "location_country": "germany",
            "likelihood": 9,
        }
    ],
}  # fmt: skip


async def test_enrichment__stops_spending_when_the_budget_is_used_up_and_says_so(
    db: asyncpg.Connection, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeApi(default=Answer(200, PDL_PERSON)) as pdl:
        monkeypatch.setenv("PEOPLEDATALABS_API_KEY", "test-key")
        monkeypatch.setenv("PEOPLEDATALABS_BASE_URL", pdl.url)
        monkeypatch.setenv("PEOPLEDATALABS_COST_PER_CALL", "0.10")
        monkeypatch.setenv("ENRICHMENT_PROVIDERS", "peopledatalabs")
        await db.execute(
            "UPDATE marketing.shq_guardrails SET limit_value = 0.10"
            " WHERE guardrail_key = 'enrichment_budget'"
        )
        await db.execute(
            "INSERT INTO intake.company_raw_intake (company_name, website, country)"
            " VALUES ('Acme Logistics', 'https://acme.de', 'DE')"
        )

        async def three_slots_settled() -> bool:
            rows = await db.fetch(
                "SELECT status, retry_at FROM marketing.company_slots"
                " WHERE status = 'filled' OR retry_at IS NOT NULL"
            )
            return len(rows) == 3

        async with running(database_url, REGISTRY):
            await eventually(three_slots_settled, timeout=20)

        assert len(pdl.requests) == 1
    statuses = await db.fetch(
        "SELECT status, count(*) FROM marketing.company_slots GROUP BY 1 ORDER BY 1"
    )
    assert [(s["status"], s["count"]) for s in statuses] == [("filled", 1), ("open", 2)]
    exhausted = await db.fetch(
        "SELECT detail FROM marketing.provider_attempts WHERE status = 'budget_exhausted'"
    )
    assert len(exhausted) == 2
    assert all("enrichment_budget used up" in e["detail"] for e in exhausted)
    assert await db.fetchval(
        "SELECT used FROM marketing.shq_guardrails WHERE guardrail_key = 'enrichment_budget'"
    ) == Decimal("0.10")
