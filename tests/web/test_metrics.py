"""Monitoring over real HTTP against a real database (cascade/web/metrics.py): /metrics in the
Prometheus text format from events inserted with known types, states and durations, the
webhook verification-failure counter, and the JSON endpoints over the monitoring views."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cascade.web.auth import create_token
from cascade.webhooks.signatures import sign_standard
from tests.web.conftest import StartServer

SECRET = "whsec_" + base64.b64encode(b"m" * 32).decode()
MONITORING = ["health", "alerts", "pending", "latency", "errors", "phase1", "dead-letters"]

# $4: seconds ago the event was created and became due.
ADD_QUEUED = """
    INSERT INTO marketing.pipeline_events (event_type, status, attempts, created_at, run_after)
    VALUES ($1, $2, $3, now() - make_interval(secs => $4), now() - make_interval(secs => $4))
"""
# Created a minute ago, processed now, after $2 attempts of which the last took $3 ms.
ADD_PROCESSED = """
    INSERT INTO marketing.pipeline_events
        (event_type, status, outcome, attempts, created_at, started_at, processed_at,
         finished_at, duration_ms)
    VALUES ($1, 'processed', 'ok', $2, now() - interval '1 minute', now(), now(), now(), $3)
"""
# Died $2 seconds ago.
ADD_DEAD = """
    INSERT INTO marketing.pipeline_events
        (event_type, status, outcome, attempts, payload, last_error, finished_at)
    VALUES ($1, 'dead', 'dead', 5, $3::jsonb, 'gave up', now() - make_interval(secs => $2))
    RETURNING id
"""
ADD_ERROR = """
    INSERT INTO marketing.pipeline_errors (event_type, error_message, severity, resolved)
    VALUES ($1, $2, 'error', $3) RETURNING id
"""
# Any stuck event trips "pipeline stalled".
STALL_AT_ONE = """
    UPDATE marketing.shq_guardrails SET limit_value = 0
     WHERE guardrail_key = 'alert_pipeline_stalled'
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def viewer(db: asyncpg.Connection) -> str:
    return await create_token(db, "dashboard", "viewer", "test")


@pytest.fixture
async def http(server: str, viewer: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {viewer}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as client:
        yield client


async def seed(db: asyncpg.Connection) -> list[int]:
    """A known mix of events and errors; returns the dead letters' ids, oldest death first."""
    for age in (10, 400, 30):
        await db.execute(ADD_QUEUED, "company_created", "pending", 0, age)
    await db.execute(ADD_QUEUED, "company_validated", "failed", 2, 0)
    await db.execute(ADD_QUEUED, "slots_created", "processing", 1, 0)
    # 50 ms lies exactly on a bucket bound: it belongs to le="0.05".
    for attempts, duration_ms in ((1, 50.0), (3, 300.0), (1, 2000.0)):
        await db.execute(ADD_PROCESSED, "email_verified", attempts, duration_ms)
    dead = [
        await db.fetchval(ADD_DEAD, "contact_enriched", 120, json.dumps({"contact_id": 7})),
        await db.fetchval(ADD_DEAD, "contact_enriched", 60, json.dumps({"contact_id": 8})),
    ]
    await db.execute(ADD_ERROR, "contact_enriched", "provider timeout", False)
    await db.execute(ADD_ERROR, "contact_enriched", "bad address", True)
    await db.execute(STALL_AT_ONE)
    return dead


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def get_json(http: httpx.AsyncClient, path: str) -> Any:
    response = await http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


# -- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", *(f"/api/monitoring/{p}" for p in MONITORING)])
async def test_monitoring__needs_a_token(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


# -- /metrics ----------------------------------------------------------------------------------


async def test_metrics__queue_depth_and_oldest_pending_age_per_type(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await seed(db)

    samples = await scrape(http)

    depth = "cascade_queue_depth"
    assert value(samples, depth, event_type="company_created", status="pending") == 3
    assert value(samples, depth, event_type="company_validated", status="failed") == 1
    assert value(samples, depth, event_type="slots_created", status="processing") == 1
    assert value(samples, depth, event_type="email_verified", status="pending") == 0
    age = value(samples, "cascade_oldest_pending_age_seconds", event_type="company_created")
    assert 400 <= age < 460
    assert value(samples, "cascade_oldest_pending_age_seconds", event_type="slots_created") == 0


async def test_metrics__handler_durations_are_a_histogram_of_recent_events(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await seed(db)

    samples = await scrape(http)

    bucket = "cascade_handler_duration_seconds_bucket"
    cumulative = {
        le: value(samples, bucket, event_type="email_verified", le=le)
        for le in ("0.025", "0.05", "0.25", "0.5", "1.0", "2.5", "+Inf")
    }
    assert cumulative == {
        "0.025": 0, "0.05": 1, "0.25": 1, "0.5": 2, "1.0": 2, "2.5": 3, "+Inf": 3,
    }  # fmt: skip
    gsum = value(samples, "cascade_handler_duration_seconds_gsum", event_type="email_verified")
    assert gsum == pytest.approx(2.35)
    assert (
        value(samples, "cascade_handler_duration_seconds_gcount", event_type="email_verified") == 3
    )
    assert value(samples, "cascade_recent_retries", event_type="email_verified") == 2


async def test_metrics__dead_letters_alerts_and_notification_queue(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await seed(db)

    samples = await scrape(http)

    assert value(samples, "cascade_dead_letters", event_type="contact_enriched") == 2
    assert value(samples, "cascade_dead_letters", event_type="company_created") == 0
    alerts = {
        labels: firing for (name, labels), firing in samples.items()
        if name == "cascade_active_alerts"
    }  # fmt: skip
    assert alerts == {
        (("alert", "pipeline_stalled"), ("severity", "critical")): 1,
        (("alert", "slow_processing"), ("severity", "warning")): 1,
    }
    assert 0 <= value(samples, "cascade_notification_queue_usage") < 1


async def test_metrics__a_failed_webhook_signature_is_counted_per_provider(
    start_server: StartServer, db: asyncpg.Connection, viewer: str
) -> None:
    base_url = start_server({"WEBHOOK_SECRET_APIFY": SECRET})
    body = json.dumps({"event": "scrape_failed", "payload": {"slot_ids": [1]}}).encode()
    signed = sign_standard(SECRET, "msg_1", int(time.time()), body)
    failures = "cascade_webhook_verification_failures_total"

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {viewer}"
        # The counter belongs to the process, which earlier tests may have counted in.
        before = (await scrape(client)).get((failures, (("provider", "apify"),)), 0.0)
        refused = await client.post(
            "/webhooks/apify",
            content=body.replace(b"scrape_failed", b"scrape_done"),
            headers={"content-type": "application/json", **signed},
        )
        after = await scrape(client)

    assert refused.status_code == 401
    assert value(after, failures, provider="apify") == before + 1


# -- JSON --------------------------------------------------------------------------------------


async def test_monitoring__health_is_the_pipeline_health_row(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await seed(db)

    body = await get_json(http, "/api/monitoring/health")

    row = await db.fetchrow("SELECT * FROM marketing.vw_pipeline_health")
    assert row is not None
    assert set(body) == set(row.keys())
    counts = ["pending", "retrying", "processing", "dead_letters", "unresolved_errors"]
    assert {k: body[k] for k in counts} == {k: row[k] for k in counts}
    assert body["critical_alerts"] == 1
    assert body["success_rate_24h"] == float(row["success_rate_24h"])


async def test_monitoring__alerts_are_the_alerts_view(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await seed(db)

    body = await get_json(http, "/api/monitoring/alerts")

    rows = await db.fetch("SELECT alert, severity, observed FROM marketing.vw_alerts")
    assert sorted((a["alert"], a["severity"], a["observed"]) for a in body) == sorted(
        (r["alert"], r["severity"], float(r["observed"])) for r in rows
    )
    assert {a["alert"] for a in body} == {"pipeline_stalled", "slow_processing"}


async def test_monitoring__pending_and_latency_are_their_views(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await seed(db)

    pending = await get_json(http, "/api/monitoring/pending")
    latency = await get_json(http, "/api/monitoring/latency")

    assert [(p["event_type"], p["pending_count"], p["due_count"]) for p in pending] == [
        ("company_created", 3, 3)
    ]
    by_stage = await db.fetch("SELECT * FROM marketing.vw_latency_by_stage")
    assert [
        (s["event_type"], s["processed_count"], s["avg_seconds"]) for s in latency["last_hour"]
    ] == [(r["event_type"], r["processed_count"], float(r["avg_seconds"])) for r in by_stage]
    assert [(s["event_type"], s["total_events"]) for s in latency["all_time"]] == [
        ("email_verified", 3)
    ]


async def test_monitoring__errors_are_recent_rate_and_unresolved(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await seed(db)

    body = await get_json(http, "/api/monitoring/errors")

    assert [e["error_message"] for e in body["recent"]] == ["provider timeout"]
    assert [(e["event_type"], e["error_count"]) for e in body["error_rate_24h"]] == [
        ("contact_enriched", 2)
    ]
    assert body["unresolved_count"] == 1


async def test_monitoring__phase1_is_the_metrics_view(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = await get_json(http, "/api/monitoring/phase1")

    rows = await db.fetch("SELECT metric, status, sample_size FROM marketing.vw_phase1_metrics")
    assert [(m["metric"], m["status"], m["sample_size"]) for m in body] == [tuple(r) for r in rows]
    assert len(body) == 4


async def test_monitoring__dead_letters_newest_first_with_a_limit(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    older, newer = await seed(db)

    everything = await get_json(http, "/api/monitoring/dead-letters")
    one = await get_json(http, "/api/monitoring/dead-letters?limit=1")
    refused = await http.get("/api/monitoring/dead-letters?limit=0")

    assert [d["event_id"] for d in everything["dead_letters"]] == [newer, older]
    assert everything["dead_letters"][0]["payload"] == {"contact_id": 8}
    assert everything["total"] == 2
    assert (one["total"], one["limit"], len(one["dead_letters"])) == (2, 1, 1)
    assert refused.status_code == 422
    assert refused.json()["error"]["details"] == {"field": "limit"}
