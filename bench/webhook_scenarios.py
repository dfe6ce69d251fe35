"""The webhooks the ingestion benchmark (bench/webhooks.py) can drive, and how it can drive
them: an endpoint, the app environment that configures its provider, a request template and
the rows the database needs first.

A template's body and header values may hold ID_TOKEN and LEAD_TOKEN. A unique delivery
replaces ID_TOKEN with a fresh id per request (`<nonce>-<thread>-<n>`) and LEAD_TOKEN with the
next of the target's `leads` seeded people (1, 2, ... leads, 1, ...), so the load is spread
over many rows as real traffic is; wrk's Lua script and the open-loop client do the same
substitution. A duplicate replaces them with DUPLICATE_ID and lead 1 every time, so every
request is the same delivery and only the first is new. ID_TOKEN must sit wherever the
endpoint takes its de-duplication key from (a delivery-id header, or a body field of a
composite key).

Both providers are configured with the `shared_secret` scheme and a secret, so deliveries are
verified (the realistic path, and no "unverified" warning in the log): Apify can only send a
fixed header (cascade/web/deliveries.py), and Instantly signs nothing (signatures.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import LiteralString

ID_TOKEN = "@ID@"  # noqa: S105 (a placeholder, not a password)
LEAD_TOKEN = "@LEAD@"  # noqa: S105 (a placeholder)
DUPLICATE_ID = "bench-duplicate-0"
# A benchmark-only secret, sent in the scheme's default header (signatures.DEFAULT_SECRET_HEADER).
SHARED_SECRET = "bench-webhook-secret-0123456789"  # noqa: S105
SECRET_HEADER = "x-webhook-secret"  # noqa: S105 (a header name)


@dataclass(frozen=True)
class Template:
    """One request with ID_TOKEN where deliveries differ, LEAD_TOKEN where the person does."""

    path: str
    headers: tuple[tuple[str, str], ...]
    body: str

    def render(self, delivery_id: str, lead: int = 1) -> tuple[dict[str, str], bytes]:
        headers = {k: _fill(v, delivery_id, lead) for k, v in self.headers}
        return headers, _fill(self.body, delivery_id, lead).encode()

    def fixed(self, delivery_id: str) -> Template:
        """The same request every time: the tokens already replaced."""
        headers, body = self.render(delivery_id)
        return Template(self.path, tuple(headers.items()), body.decode())


def _fill(text: str, delivery_id: str, lead: int) -> str:
    return text.replace(ID_TOKEN, delivery_id).replace(LEAD_TOKEN, str(lead))


@dataclass(frozen=True)
class Target:
    """A webhook endpoint under load. `new_status` answers a first delivery (a repeated one
    gets 200); `seed` runs once on the fresh database before the server starts, with
    %(leads)s standing for `leads`."""

    name: str
    provider: str
    model: str  # "module:Class", the pydantic model the endpoint parses the body with
    template: Template
    environ: Mapping[str, str]
    seed: tuple[LiteralString, ...] = ()
    new_status: int = 202
    notes: str = ""
    leads: int = 1  # how many people the seed made, for LEAD_TOKEN
    # Counts what first deliveries wrote besides the claim (checked after the run), if any.
    writes: LiteralString | None = None

    def unique(self) -> Load:
        return Load(self.template, self.leads)

    def duplicate(self) -> Load:
        return Load(self.template.fixed(DUPLICATE_ID), 1)


@dataclass(frozen=True)
class Load:
    """What a load process sends: the template, and how many leads LEAD_TOKEN cycles over."""

    template: Template
    leads: int


def _shared_secret_env(provider: str) -> dict[str, str]:
    upper = provider.upper()
    return {f"WEBHOOK_SCHEME_{upper}": "shared_secret", f"WEBHOOK_SECRET_{upper}": SHARED_SECRET}


# -- Apify: a scrape_done for slots the database does not know ----------------------------------

# cascade/web/apify.py claims the delivery, locks the named slots (none found), records no
# attempt and answers 202 naming them unknown: the cheapest complete path of a real webhook,
# one durable INSERT (the claim) and no event.
APIFY = Target(
    name="apify",
    provider="apify",
    model="cascade.web.apify:ApifyDelivery",
    template=Template(
        path="/webhooks/apify",
        headers=(
            ("content-type", "application/json"),
            (SECRET_HEADER, SHARED_SECRET),
            ("x-apify-webhook-dispatch-id", ID_TOKEN),
        ),
        body=(
            '{"event": "scrape_done", "payload": {"slot_ids": ["slot_900000001", 900000002],'
            ' "contacts": [], "run_id": "bench-run-1", "unique_id": "04.01.01.04.20000.003",'
            ' "process_id": "PLE-001"}}'
        ),
    ),
    environ=_shared_secret_env("apify"),
    notes="scrape_done naming two unknown slots: the claim only, no event",
)


# -- Instantly: an email_opened for a known contact ---------------------------------------------

INSTANTLY_LEADS = 1000
# One company, INSTANTLY_LEADS contacts (lead-N@bench-instantly.example) and a campaign with
# one email per contact sent through Instantly, whose provider_message_id ("lead-N") is the
# `email_id` Instantly reports back. The seed's own events (company_validated,
# contact_enriched) are removed afterwards: no listener runs, and the load should find an
# event log holding only what it wrote.
SEED_COMPANY: LiteralString = """
    INSERT INTO marketing.company_master (company_name, domain, website, country)
    VALUES ('Bench Instantly', 'bench-instantly.example', 'https://bench-instantly.example', 'US')
"""
SEED_CONTACTS: LiteralString = """
    INSERT INTO marketing.contact_enrichment
        (company_id, full_name, company_name, email, email_type, provider, provider_mode, status)
    SELECT c.id, 'Lead ' || n, c.company_name, 'lead-' || n || '@bench-instantly.example',
           'professional', 'bench', 'sandbox', 'ready'
      FROM marketing.company_master AS c, generate_series(1, %(leads)s) AS n
     WHERE c.domain = 'bench-instantly.example'
"""
SEED_CAMPAIGN: LiteralString = """
    INSERT INTO marketing.campaigns (campaign_name) VALUES ('Bench Instantly campaign')
"""
SEED_MESSAGES: LiteralString = """
    INSERT INTO marketing.message_queue
        (campaign_id, contact_id, to_address, subject, body, status, sent_at, provider,
         provider_message_id)
    SELECT k.id, e.id, e.email, 'Hello', 'Hello there', 'sent', now(), 'instantly',
           split_part(e.email, '@', 1)
      FROM marketing.contact_enrichment AS e, marketing.campaigns AS k
     WHERE k.campaign_name = 'Bench Instantly campaign'
"""
FORGET_SEED_EVENTS: LiteralString = "DELETE FROM marketing.pipeline_events"
# Opens recorded with the email_opened event their insert emitted.
OPENS_WITH_EVENT: LiteralString = """
    SELECT count(*)
      FROM marketing.engagement_events AS e
      JOIN marketing.pipeline_events AS p ON p.event_type = 'email_opened' AND p.record_id = e.id
     WHERE e.provider = 'instantly'
"""

# Seed 000's shape (`event_type` and `data`) with the fields Instantly sends
# (cascade/web/instantly.py). Instantly sends no event id: the key is the composite
# [event, lead_email, campaign_id, timestamp, step], so the unique id rides in campaign_id (an
# Instantly campaign id is only kept, never looked up), with the timestamp fixed. The contact
# is found by email_id, as a real delivery finds it.
INSTANTLY = Target(
    name="instantly",
    provider="instantly",
    model="cascade.web.instantly:InstantlyEvent",
    template=Template(
        path="/webhooks/instantly",
        headers=(("content-type", "application/json"), (SECRET_HEADER, SHARED_SECRET)),
        body=(
            '{"event_type": "email_opened", "data": {"timestamp": "2026-12-02T10:15:00.000Z",'
            ' "workspace": "bench-workspace", "campaign_id": "' + ID_TOKEN + '",'
            ' "campaign_name": "Bench campaign",'
            ' "lead_email": "lead-' + LEAD_TOKEN + '@bench-instantly.example",'
            ' "email_account": "sender@bench-instantly.example", "step": 1, "variant": 1,'
            ' "is_first": true, "email_id": "lead-' + LEAD_TOKEN + '"}}'
        ),
    ),
    environ=_shared_secret_env("instantly"),
    seed=(SEED_COMPANY, SEED_CONTACTS, SEED_CAMPAIGN, SEED_MESSAGES, FORGET_SEED_EVENTS),
    leads=INSTANTLY_LEADS,
    writes=OPENS_WITH_EVENT,
    notes=(
        f"email_opened for one of {INSTANTLY_LEADS:,} known contacts, found by email_id: the "
        "claim, an engagement_events row and the email_opened event its trigger emits (no "
        "listener runs, so no wake-up NOTIFY unless --notify)"
    ),
)

TARGETS: dict[str, Target] = {target.name: target for target in (APIFY, INSTANTLY)}
