"""Phase 1's edges, each once a bug found in review: an Apify webhook that beats the handler,
a deadline judged by another clock, a deferral leaving a wait, a webhook verdict racing an API
check, tenants of one hosting platform, a NUL in a requested path."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

import handlers.slots_created
from cascade.enrichment.services import Enrichment
from cascade.enrichment.settings import EnrichmentSettings
from cascade.handling import Registry
from cascade.web import apify as apify_webhook
from handlers import (
    company_created,
    company_promoted,
    company_validated,
    contact_enriched,
    email_verified,
    slots_created,
)
from providers import open_providers
from providers.base import ContactQuery, EmailCheck, Mode, RunStarter, StartedRun
from tests.support.listening import drain
from tests.support.waiting import eventually

MODULES = (
    company_created,
    company_validated,
    company_promoted,
    slots_created,
    contact_enriched,
    email_verified,
)

ADD_COMPANY = """
    INSERT INTO marketing.company_master (company_name, domain, website, country)
    VALUES ('Acme', 'acme-review.com', 'https://acme-review.com', 'US') RETURNING id
"""


@pytest.fixture(autouse=True)
def sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (
        "PEOPLEDATALABS_API_KEY",
        "PROSPEO_API_KEY",
        "APIFY_TOKEN",
        "MILLIONVERIFIER_API_KEY",
    ):
        monkeypatch.delenv(key, raising=False)


def registry_with(apify_starter: RunStarter | None = None, **settings: object) -> Registry:
    """The production handlers, with sandbox providers, the given settings and, if given, a
    replacement for the Apify run starter."""

    @contextlib.asynccontextmanager
    async def open_enrichment() -> AsyncIterator[Enrichment]:
        base = EnrichmentSettings.from_env(os.environ)
        async with open_providers(os.environ) as providers:
            if apify_starter is not None:
                providers = dataclasses.replace(providers, apify=apify_starter)
            yield Enrichment(base.model_copy(update=settings), providers)

    return Registry(MODULES, resources=(open_enrichment,))


# -- The Apify webhook can arrive before the run has even been started ------------------------


class EagerApify:
    """An Apify whose run finishes (and POSTs scrape_done) before start_run has returned to
    the handler, i.e. before the handler's write-back commits `awaiting_provider`. A real
    actor that fails at once, or the sandbox (1 s) behind a slow sibling slot, does this."""

    name = "apify"
    mode: Mode = "sandbox"
    cost_per_call = Decimal(0)

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.summaries: list[apify_webhook.Summary] = []

    async def start_run(
        self,
        query: ContactQuery,
        *,
        slot_ids: tuple[int, ...],
        webhook_url: str,
        idempotency_key: str,
    ) -> StartedRun:
        run_id = f"run-eager-{slot_ids[0]}"
        delivery = apify_webhook.ApifyDelivery.model_validate(
            {
                "event": "scrape_done",
                "payload": {
                    "slot_ids": list(slot_ids),
                    "run_id": run_id,
                    "contacts": [
                        {
                            "slot_id": slot_ids[0],
                            "full_name": "Ada Lovelace",
                            "email": "ada@acme-review.com",
                            "confidence": 0.95,
                        }
                    ],
                },
            }
        )
        conn = await asyncpg.connect(self.url)
        try:
            async with conn.transaction():
                self.summaries.append(await apify_webhook.settle(conn, delivery, 0.7))
        finally:
            await conn.close()
        return StartedRun("apify", "sandbox", run_id, Decimal(0), 1.0)


async def test_apify__a_webhook_that_beats_the_write_back_is_not_lost(
    db: asyncpg.Connection, database_url: str
) -> None:
    company = await db.fetchval(ADD_COMPANY)
    # PDL and Prospeo already answered: the next pass hands the slot to Apify.
    slot = await db.fetchval(
        "INSERT INTO marketing.company_slots (company_id, role, providers_tried)"
        " VALUES ($1, 'CEO', '{peopledatalabs,prospeo}') RETURNING id",
        company,
    )
    eager = EagerApify(database_url)

    # roles=(): company_promoted adds no slots of its own; only the slot above is enriched.
    await drain(database_url, registry_with(eager, apify_timeout=0.5, roles=()))

    # The slot was marked waiting before the run started, so the webhook found it.
    assert [s.filled for s in eager.summaries] == [[slot]]
    row = await db.fetchrow(
        "SELECT status, unfilled_reason FROM marketing.company_slots WHERE id = $1", slot
    )
    assert row is not None
    assert row["status"] == "filled", dict(row)
    assert await db.fetchval("SELECT full_name FROM marketing.contact_enrichment") == "Ada Lovelace"


# -- A deadline is the database's, not the listener's clock ------------------------------------


async def test_slots__a_deadline_is_judged_by_the_database_clock_not_the_listeners(
    db: asyncpg.Connection, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    company = await db.fetchval(ADD_COMPANY)
    await db.execute(
        "INSERT INTO marketing.company_slots (company_id, role, status, providers_tried,"
        " pending_provider, pending_run_id, pending_deadline)"
        " VALUES ($1, 'CEO', 'awaiting_provider', '{peopledatalabs,prospeo,apify}', 'apify',"
        " 'run-1', now())",
        company,
    )
    # The slot's deadline event (as the UPDATE trigger makes it: due at pending_deadline).
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload, record_id)"
        " VALUES ('slots_created', jsonb_build_object('company_id', $1::bigint,"
        " 'reason', 'deadline'), $1)",
        company,
    )
    # The listener's clock runs 2 s behind the database's (another host, NTP drift): the
    # database says the deadline has passed, the handler thinks it has not.
    monkeypatch.setattr(
        handlers.slots_created, "_now", lambda: dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    )

    await drain(database_url, registry_with(roles=()))

    pending = await db.fetchval(
        "SELECT count(*) FROM marketing.pipeline_events WHERE status IN ('pending', 'failed')"
    )
    status = await db.fetchval("SELECT status FROM marketing.company_slots")
    # The deadline is the database's: the slot timed out and ended, whatever our clock says.
    assert (status, pending) == ("unfilled", 0)


# -- A slot timed out into a deferral is asked again at retry_at, not at once -----------------


async def test_slots_trigger__a_deferred_slot_leaving_awaiting_is_due_at_its_retry_at(
    db: asyncpg.Connection,
) -> None:
    company = await db.fetchval(ADD_COMPANY)
    slot = await db.fetchval(
        "INSERT INTO marketing.company_slots (company_id, role, status, providers_tried,"
        " pending_provider, pending_run_id, pending_deadline)"
        " VALUES ($1, 'CEO', 'awaiting_provider', '{apify}', 'apify', 'run-1', now())"
        " RETURNING id",
        company,
    )
    await db.execute("DELETE FROM marketing.pipeline_events")
    # What SAVE_SLOTS writes when the run timed out and the next provider answered 429
    # "Retry-After: 3600": the slot is open again, to be asked at retry_at.
    await db.execute(
        "UPDATE marketing.company_slots SET status = 'open', pending_provider = NULL,"
        " pending_run_id = NULL, pending_deadline = NULL,"
        " retry_at = now() + interval '1 hour' WHERE id = $1",
        slot,
    )

    event = await db.fetchrow(
        "SELECT payload->>'reason' AS reason, run_after - now() AS due_in"
        " FROM marketing.pipeline_events WHERE event_type = 'slots_created'"
    )
    assert event is not None
    # Due at retry_at: the provider that asked for an hour is not asked again at once.
    assert event["reason"] == "retry"
    assert event["due_in"] > dt.timedelta(minutes=59), dict(event)


# -- The validator webhook and the API check of one contact race ------------------------------


class SlowVerifier:
    """MillionVerifier answering `catch_all` (held as risky) only after the validator webhook
    has delivered `valid` for the same address and email_verified has made the contact ready:
    the API check was in flight while the bulk result came in."""

    name = "millionverifier"
    mode: Mode = "sandbox"
    cost_per_call = Decimal(0)

    def __init__(self, database_url: str) -> None:
        self.url = database_url

    async def verify(self, email: str, *, idempotency_key: str) -> EmailCheck:
        from cascade.web import validator

        conn = await asyncpg.connect(self.url)
        try:
            contact = await conn.fetchval(
                "SELECT id FROM marketing.contact_enrichment WHERE email = $1", email
            )
            delivery = validator.ValidatorDelivery.model_validate(
                {
                    "event": "validate_result",
                    "payload": {
                        "results": [
                            {"person_id": contact, "email": email, "status": "valid", "score": 0.95}
                        ]
                    },
                }
            )
            async with conn.transaction():
                await validator.apply(conn, delivery, EnrichmentSettings())

            async def ready() -> bool:
                status = await conn.fetchval(
                    "SELECT status FROM marketing.contact_enrichment WHERE id = $1", contact
                )
                return bool(status == "ready")

            await eventually(ready)
        finally:
            await conn.close()
        return EmailCheck(
            "millionverifier", "sandbox", email, "catch_all", 0.9, "risky", None, Decimal(0), 1.0
        )


async def test_verification__an_api_verdict_never_contradicts_the_stored_one(
    db: asyncpg.Connection, database_url: str
) -> None:
    company = await db.fetchval(ADD_COMPANY)
    await db.execute(
        "INSERT INTO marketing.contact_enrichment (company_id, full_name, company_name, email,"
        " provider, provider_mode) VALUES ($1, 'Ada', 'Acme', 'ada@acme-review.com',"
        " 'prospeo', 'sandbox')",
        company,
    )

    @contextlib.asynccontextmanager
    async def open_enrichment() -> AsyncIterator[Enrichment]:
        async with open_providers(os.environ) as providers:
            slow = dataclasses.replace(providers, verifier=SlowVerifier(database_url))
            yield Enrichment(EnrichmentSettings(roles=()), slow)

    await drain(database_url, Registry(MODULES, resources=(open_enrichment,)))

    row = await db.fetchrow(
        "SELECT c.status, v.verdict FROM marketing.contact_enrichment c"
        " JOIN marketing.email_verification v ON v.contact_id = c.id"
    )
    assert row is not None
    # The webhook's verdict came first and stands; the API check's later answer changes
    # neither the verdict nor the contact.
    assert (row["status"], row["verdict"]) == ("ready", "deliverable"), dict(row)


# -- Companies on one hosting platform stay apart -----------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("https://acme.myshopify.com", "https://borealis.myshopify.com"),
        ("https://acme.github.io", "https://borealis.github.io"),
        ("acme.herokuapp.com", "borealis.herokuapp.com"),
    ],
)
def test_domains__two_shops_on_one_platform_are_two_companies(first: str, second: str) -> None:
    from cascade.enrichment.domains import registrable_domain

    # Each tenant of a hosting platform is its own company, not a duplicate of the platform.
    assert registrable_domain(first) != registrable_domain(second)


# -- A csv_path with a NUL byte is refused as bad input -----------------------------------------


def test_trigger__a_nul_in_csv_path_is_refused_as_bad_input(tmp_path: Path) -> None:
    from cascade.web.http import ApiError
    from cascade.web.trigger import confined

    # Refused in the 422 envelope, not a 500 from Path.resolve.
    with pytest.raises(ApiError):
        confined("leads\x00.csv", {"CASCADE_IMPORT_DIR": str(tmp_path)})


# -- Two events for one company never pay the providers twice ---------------------------------


async def test_slots__two_events_for_one_company_ask_the_providers_once(
    db: asyncpg.Connection, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASCADE_SANDBOX_LATENCY_MS", "300")  # the two passes would overlap
    company = await db.fetchval(ADD_COMPANY)
    await db.execute(
        "INSERT INTO marketing.company_slots (company_id, role)"
        " SELECT $1, unnest(ARRAY['CEO', 'CFO', 'HR'])",
        company,
    )
    await db.execute(
        "INSERT INTO marketing.pipeline_events (event_type, payload, record_id)"
        " SELECT 'slots_created', jsonb_build_object('company_id', $1::bigint, 'reason', r), $1"
        "   FROM unnest(ARRAY['created', 'reopened']) AS r",
        company,
    )

    await drain(database_url, registry_with(roles=(), providers=("peopledatalabs", "prospeo")))

    asked = await db.fetch(
        "SELECT slot_id, provider, count(*) FROM marketing.provider_attempts"
        " WHERE purpose = 'enrichment' GROUP BY 1, 2 HAVING count(*) > 1"
    )
    assert asked == []
    assert (
        await db.fetchval(
            "SELECT count(*) FROM marketing.company_slots WHERE status IN ('filled', 'unfilled')"
        )
        == 3
    )
