"""Phase 1 through the real handlers, triggers and listener, with sandbox providers: intake
rows become validated companies with Barton IDs, role slots, enriched contacts and verdicts;
each stage's contract; and a listener killed mid-phase."""

from __future__ import annotations

import re
import signal

import asyncpg
import pytest

from cascade.barton import is_valid_barton_id
from handlers import REGISTRY
from tests.support.listening import drain
from tests.support.processes import ListenerProcesses
from tests.support.sql import one
from tests.support.waiting import eventually

COMPANIES = [
    ("Northwind Logistics GmbH", "https://www.northwind-logistics.de", "DE"),
    ("Bluefin Analytics", "bluefin-analytics.io", "US"),
    ("Harbour & Vale Ltd", "http://harbourvale.co.uk/about", "GB"),
    ("Maple Ridge Software", "mapleridge.ca", "Canada"),
    ("Coral Sea Freight", "https://coralseafreight.com.au", "AU"),
    ("Lumen Robotics", "https://lumenrobotics.com", "US"),
]

INSERT_INTAKE = """
    INSERT INTO intake.company_raw_intake (company_name, website, country)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
"""
# Sandbox providers, no Apify (its webhook needs the web app: tests/web covers it), and an
# `unknown` verdict asked again at once rather than in an hour.
SANDBOX_ENV = {
    "ENRICHMENT_PROVIDERS": "peopledatalabs,prospeo",
    "VERIFICATION_UNKNOWN_RETRY_SECONDS": "0.1",
}
EVENT_STATUSES = "SELECT status, count(*) FROM marketing.pipeline_events GROUP BY 1"
UNFINISHED_SLOTS = """
    SELECT count(*) FROM marketing.company_slots WHERE status IN ('open', 'awaiting_provider')
"""


@pytest.fixture(autouse=True)
def sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every provider in sandbox mode, with SANDBOX_ENV, unless a test says otherwise."""
    for key in (
        "PEOPLEDATALABS_API_KEY",
        "PROSPEO_API_KEY",
        "APIFY_TOKEN",
        "MILLIONVERIFIER_API_KEY",
    ):
        monkeypatch.delenv(key, raising=False)
    for name, value in SANDBOX_ENV.items():
        monkeypatch.setenv(name, value)


async def insert_companies(db: asyncpg.Connection, rows: list[tuple[str, str, str]]) -> None:
    names, websites, countries = (list(column) for column in zip(*rows, strict=True))
    await db.execute(INSERT_INTAKE, names, websites, countries)


async def test_phase1__intake_rows_end_as_verified_contacts(
    db: asyncpg.Connection, database_url: str
) -> None:
    await insert_companies(db, COMPANIES)

    await drain(database_url, REGISTRY)

    assert {r["status"]: r["count"] for r in await db.fetch(EVENT_STATUSES)} == {
        "processed": await db.fetchval("SELECT count(*) FROM marketing.pipeline_events")
    }
    companies = await db.fetch("SELECT barton_id, domain FROM marketing.company_master")
    assert sorted(c["domain"] for c in companies) == [
        "bluefin-analytics.io", "coralseafreight.com.au", "harbourvale.co.uk",
        "lumenrobotics.com", "mapleridge.ca", "northwind-logistics.de",
    ]  # fmt: skip
    assert all(is_valid_barton_id(c["barton_id"]) for c in companies)
    assert await db.fetchval("SELECT count(*) FROM marketing.company_slots") == 18
    assert await db.fetchval(UNFINISHED_SLOTS) == 0
    filled = await db.fetchval(
        "SELECT count(*) FROM marketing.company_slots WHERE status = 'filled'"
    )
    assert filled == await db.fetchval("SELECT count(*) FROM marketing.contact_enrichment")
    assert filled == await db.fetchval("SELECT count(*) FROM marketing.email_verification")
    assert await db.fetchval(
        "SELECT count(*) FROM marketing.contact_enrichment WHERE status = 'ready'"
    ) == await db.fetchval(
        "SELECT count(*) FROM marketing.email_verification WHERE verdict = 'deliverable'"
    )
    metrics = {r["metric"]: r for r in await db.fetch("SELECT * FROM marketing.vw_phase1_metrics")}
    assert metrics["validation_success_rate"]["value"] == 100
    assert metrics["end_to_end_latency_p95"]["sample_size"] == 6


async def test_phase1__every_contact_outside_the_region_rule_has_a_professional_email(
    db: asyncpg.Connection, database_url: str
) -> None:
    await insert_companies(db, COMPANIES)

    await drain(database_url, REGISTRY)

    personal_in_protected_regions = await db.fetchval(
        "SELECT count(*) FROM marketing.contact_enrichment"
        " WHERE email_type = 'personal' AND country IN ('DE', 'GB', 'CA', 'AU')"
    )
    assert personal_in_protected_regions == 0
    attempts = await db.fetchval(
        "SELECT count(*) FROM marketing.provider_attempts WHERE purpose = 'enrichment'"
    )
    assert attempts >= 18


@pytest.mark.parametrize(
    ("name", "website", "reason"),
    [
        ("", "https://acme.com", "missing company name"),
        ("N/A", "https://acme.com", "company name 'N/A' is a placeholder, not a name"),
        ("Acme", None, "missing website"),
        (
            "Acme",
            "https://gmail.com",
            "website 'https://gmail.com' is gmail.com, not a company's own domain",
        ),
        ("Acme", "localhost", "website 'localhost' has no registrable domain"),
    ],
)
async def test_validation__rejects_what_cannot_be_a_company_with_the_reason(
    db: asyncpg.Connection, database_url: str, name: str, website: str | None, reason: str
) -> None:
    await db.execute(
        "INSERT INTO intake.company_raw_intake (company_name, website) VALUES ($1, $2)",
        name, website,
    )  # fmt: skip

    await drain(database_url, REGISTRY)

    intake = await one(db, "SELECT status, reject_reason FROM intake.company_raw_intake")
    assert dict(intake) == {"status": "rejected", "reject_reason": reason}
    assert await db.fetchval("SELECT count(*) FROM marketing.company_master") == 0


async def test_validation__a_known_domain_links_to_the_existing_company(
    db: asyncpg.Connection, database_url: str
) -> None:
    await insert_companies(db, [("Lumen Robotics", "https://lumenrobotics.com", "US")])
    await drain(database_url, REGISTRY)

    await insert_companies(db, [("Lumen Robotics Inc.", "http://www.LumenRobotics.com/", "US")])
    await drain(database_url, REGISTRY)

    rows = await db.fetch("SELECT status, company_id FROM intake.company_raw_intake ORDER BY id")
    company_id = await db.fetchval("SELECT id FROM marketing.company_master")
    assert [(r["status"], r["company_id"]) for r in rows] == [
        ("validated", company_id),
        ("duplicate", company_id),
    ]
    assert await db.fetchval("SELECT count(*) FROM marketing.company_slots") == 3


async def test_promotion__assigns_a_barton_id_once_even_when_the_event_comes_again(
    db: asyncpg.Connection, database_url: str
) -> None:
    await insert_companies(db, COMPANIES[:1])
    await drain(database_url, REGISTRY)
    first = await one(db, "SELECT id, barton_id FROM marketing.company_master")

    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload)"
        " VALUES ('company_validated', jsonb_build_object('id', $1::bigint))",
        first["id"],
    )
    await drain(database_url, REGISTRY)

    assert await db.fetchval("SELECT barton_id FROM marketing.company_master") == first["barton_id"]
    assert re.fullmatch(r"04\.04\.01\.\d{2}\.\d{5}\.\d{3}", first["barton_id"])


async def test_slots__follow_the_include_flags(
    db: asyncpg.Connection, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INCLUDE_CFO", "false")
    monkeypatch.setenv("INCLUDE_HR", "no")
    await insert_companies(db, COMPANIES[:2])

    await drain(database_url, REGISTRY)

    roles = await db.fetch("SELECT DISTINCT role FROM marketing.company_slots")
    assert [r["role"] for r in roles] == ["CEO"]


async def test_manual_event__seed_003s_insert_runs_the_cascade_from_its_payload(
    db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute(
        """INSERT INTO marketing.pipeline_events (event_type, payload, status)
           VALUES ('company_created',
                   jsonb_build_object('record_id', 999, 'company_name', 'Test Company',
                                      'website', 'https://test.com', 'trigger_time', NOW()),
                   'pending')"""
    )

    await drain(database_url, REGISTRY)

    company = await one(db, "SELECT company_name, domain, status FROM marketing.company_master")
    assert dict(company) == {
        "company_name": "Test Company",
        "domain": "test.com",
        "status": "promoted",
    }
    assert await db.fetchval(UNFINISHED_SLOTS) == 0


async def test_apify__a_run_whose_webhook_never_comes_times_out_and_the_slot_ends(
    db: asyncpg.Connection, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENRICHMENT_PROVIDERS", "apify")
    monkeypatch.setenv("APIFY_RUN_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("CASCADE_PUBLIC_URL", "http://127.0.0.1:9")  # nobody listens there
    await insert_companies(db, COMPANIES[:1])

    await drain(database_url, REGISTRY)

    slots = await db.fetch("SELECT status, unfilled_reason FROM marketing.company_slots")
    assert {s["status"] for s in slots} == {"unfilled"}
    assert all("apify timeout" in s["unfilled_reason"] for s in slots)
    statuses = await db.fetch(
        "SELECT status FROM marketing.provider_attempts WHERE provider = 'apify' ORDER BY id"
    )
    assert [s["status"] for s in statuses] == ["started"] * 3 + ["timeout"] * 3


async def test_listener__killed_mid_phase_leaves_no_company_stuck_and_no_contact_twice(
    db: asyncpg.Connection, listener_processes: ListenerProcesses
) -> None:
    rows = [(f"Company {n:03d}", f"https://company{n:03d}.com", "US") for n in range(150)]
    await insert_companies(db, rows)
    env = {**SANDBOX_ENV, "CASCADE_SANDBOX_LATENCY_MS": "20"}
    first = listener_processes.start("handlers:REGISTRY", **env)

    async def contacts_appear() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM marketing.contact_enrichment") > 20)

    await eventually(contacts_appear, timeout=60)
    first.signal(signal.SIGKILL)
    listener_processes.start("handlers:REGISTRY", **env, CASCADE_LEASE_SECONDS="1")

    async def phase_done() -> bool:
        pending = await db.fetchval(
            "SELECT count(*) FROM marketing.pipeline_events WHERE status <> 'processed'"
        )
        return bool(pending == 0 and await db.fetchval(UNFINISHED_SLOTS) == 0)

    await eventually(phase_done, timeout=90, interval=0.2)
    assert await db.fetchval("SELECT count(*) FROM marketing.company_master") == 150
    assert await db.fetchval("SELECT count(*) FROM marketing.company_slots") == 450
    duplicates = await db.fetchval(
        "SELECT count(*) FROM (SELECT slot_id FROM marketing.contact_enrichment"
        " GROUP BY slot_id HAVING count(*) > 1) AS twice"
    )
    assert duplicates == 0
    unverified = await db.fetchval(
        "SELECT count(*) FROM marketing.contact_enrichment AS c"
        " LEFT JOIN marketing.email_verification AS v ON v.contact_id = c.id"
        " WHERE v.id IS NULL"
    )
    assert unverified == 0
