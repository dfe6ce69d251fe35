"""marketing.vw_alerts raises each of seed 003's seven operational alerts from the rows that
should trip it, and no other; thresholds live in marketing.shq_guardrails, so an UPDATE there
changes the verdict. marketing.vw_pipeline_health answers with one row of sane numbers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import LiteralString

import asyncpg

ACTIVE_ALERTS: LiteralString = "SELECT alert, scope FROM marketing.vw_alerts ORDER BY alert"
SET_THRESHOLD: LiteralString = """
    UPDATE marketing.shq_guardrails SET limit_value = $2 WHERE guardrail_key = $1
"""

# n events of one type and status, created `age` ago and due since then.
EVENTS: LiteralString = """
    INSERT INTO marketing.pipeline_events (event_type, status, created_at, run_after)
    SELECT $1, $2, now() - $4::text::interval, now() - $4::text::interval
      FROM generate_series(1, $3)
"""
# n finished events whose processing took `latency` each, finished just now.
PROCESSED_EVENTS: LiteralString = """
    INSERT INTO marketing.pipeline_events
        (event_type, status, outcome, created_at, processed_at, finished_at)
    SELECT 'company_created', 'processed', 'ok', now() - $2::text::interval, now(), now()
      FROM generate_series(1, $1)
"""
# An error for each of the first n events of a type.
ERRORS: LiteralString = """
    INSERT INTO marketing.pipeline_errors (event_id, event_type, error_message, severity)
    SELECT id, event_type, 'provider said no', 'error'
      FROM marketing.pipeline_events WHERE event_type = $1 ORDER BY id LIMIT $2
"""
# A company with contacts 1..$1, a campaign and one sent message per contact.
AUDIENCE: tuple[LiteralString, ...] = (
    """INSERT INTO marketing.company_master (id, company_name, domain, website)
       SELECT 1, 'Acme', 'acme.example', 'https://acme.example' WHERE $1::int > 0""",
    """INSERT INTO marketing.contact_enrichment
           (id, company_id, full_name, company_name, email, provider, provider_mode)
       SELECT n, 1, 'Contact ' || n, 'Acme', 'c' || n || '@acme.example', 'apify', 'sandbox'
         FROM generate_series(1, $1::int) AS n""",
    "INSERT INTO marketing.campaigns (id, campaign_name) SELECT 1, 'Spring' WHERE $1::int > 0",
    """INSERT INTO marketing.campaign_contacts (campaign_id, contact_id)
       SELECT 1, n FROM generate_series(1, $1::int) AS n""",
    """INSERT INTO marketing.message_queue (id, campaign_id, contact_id, status, sent_at)
       SELECT n, 1, n, 'sent', now() FROM generate_series(1, $1::int) AS n""",
)
# Delivery outcome `status` for messages first..last.
OUTCOMES: LiteralString = """
    INSERT INTO marketing.delivery_log (message_id, campaign_id, contact_id, status)
    SELECT n, 1, n, $3 FROM generate_series($1::int, $2::int) AS n
"""
# The same, logged `$4` ago.
OUTCOMES_AGO: LiteralString = """
    INSERT INTO marketing.delivery_log (message_id, campaign_id, contact_id, status, created_at)
    SELECT n, 1, n, $3, now() - $4::text::interval FROM generate_series($1::int, $2::int) AS n
"""
DELIVERABILITY_SINCE: LiteralString = (
    "SELECT since FROM marketing.vw_alerts WHERE alert = 'deliverability_drop'"
)
CAMPAIGN_DELIVERED: LiteralString = (
    "SELECT delivered FROM marketing.vw_campaign_overview WHERE campaign_id = 1"
)
FUNNEL_DELIVERED: LiteralString = (
    "SELECT count FROM marketing.vw_dashboard_funnel WHERE stage = 'delivered'"
)
REPLIES: LiteralString = """
    INSERT INTO marketing.responses (contact_id, message_id, campaign_id, body)
    SELECT n, n, 1, 'Interested' FROM generate_series(1, $1) AS n
"""
# One CRM sync attempt of `status`, made `age` ago.
CRM_SYNC: LiteralString = """
    INSERT INTO marketing.crm_sync_log (contact_id, crm, status, error_message, created_at)
    VALUES (1, 'sandbox', $1, CASE WHEN $1 = 'failed' THEN 'HTTP 401' END,
            now() - $2::text::interval)
"""
# Companies 1..$1, each with three role slots finished just now; the first $2 are filled.
SLOTS: LiteralString = """
    WITH company AS (
        INSERT INTO marketing.company_master (id, company_name, domain, website)
        SELECT n, 'Company ' || n, 'c' || n || '.example', 'https://c' || n || '.example'
          FROM generate_series(1, $1::int) AS n
        RETURNING id
    )
    INSERT INTO marketing.company_slots (company_id, role, status, finished_at)
    SELECT company.id, role,
           CASE WHEN row_number() OVER (ORDER BY company.id, role) <= $2::int
                THEN 'filled' ELSE 'unfilled' END,
           now()
      FROM company, unnest(ARRAY['CEO', 'CFO', 'HR']) AS role
"""


async def active_alerts(db: asyncpg.Connection) -> list[tuple[str, str | None]]:
    return [(row["alert"], row["scope"]) for row in await db.fetch(ACTIVE_ALERTS)]


async def run_all(
    db: asyncpg.Connection, statements: tuple[LiteralString, ...], *args: int
) -> None:
    # One statement at a time: asyncpg binds parameters only in a single-statement execute.
    for statement in statements:
        await db.execute(statement, *args)


async def audience(db: asyncpg.Connection, contacts: int) -> None:
    await run_all(db, AUDIENCE, contacts)


async def test_vw_alerts__quiet_database_has_none(db: asyncpg.Connection) -> None:
    assert await active_alerts(db) == []


async def test_vw_alerts__pipeline_stalled_when_over_100_events_wait_5_minutes(
    db: asyncpg.Connection,
) -> None:
    await db.execute(EVENTS, "company_created", "pending", 101, "6 minutes")
    await db.execute(EVENTS, "company_created", "pending", 50, "1 minute")

    assert await active_alerts(db) == [("pipeline_stalled", None)]
    row = await db.fetchrow("SELECT * FROM marketing.vw_alerts")
    assert row is not None
    assert (row["severity"], row["observed"], row["threshold"]) == ("critical", 101, 100)
    assert "5 minutes" in row["condition"]
    assert row["action"].startswith("Check the listeners")
    assert row["since"] is not None


async def test_vw_alerts__pipeline_not_stalled_at_exactly_the_threshold(
    db: asyncpg.Connection,
) -> None:
    await db.execute(EVENTS, "company_created", "pending", 100, "6 minutes")

    assert await active_alerts(db) == []


async def test_vw_alerts__high_error_rate_names_the_stage(db: asyncpg.Connection) -> None:
    await db.execute(EVENTS, "contact_enriched", "pending", 20, "10 minutes")
    await db.execute(EVENTS, "company_created", "pending", 20, "10 minutes")
    await db.execute(ERRORS, "contact_enriched", 3)  # 15 %
    await db.execute(ERRORS, "company_created", 1)  # 5 %

    assert await active_alerts(db) == [("high_error_rate", "contact_enriched")]


async def test_vw_alerts__high_error_rate_counts_an_events_retries_once(
    db: asyncpg.Connection,
) -> None:
    await db.execute(EVENTS, "contact_enriched", "pending", 20, "10 minutes")
    for _ in range(5):
        await db.execute(ERRORS, "contact_enriched", 1)  # one event, five attempts: 5 %

    assert await active_alerts(db) == []


async def test_vw_alerts__deliverability_drop_over_20_percent_bounces(
    db: asyncpg.Connection,
) -> None:
    await audience(db, 20)
    await db.execute(OUTCOMES, 1, 15, "delivered")
    await db.execute(OUTCOMES, 16, 20, "bounced")  # 5 of 20: 25 %

    assert await active_alerts(db) == [("deliverability_drop", None)]


async def test_vw_alerts__soft_bounce_then_delivered_is_no_bounce(
    db: asyncpg.Connection,
) -> None:
    await audience(db, 25)
    await db.execute(OUTCOMES, 1, 10, "bounced")
    await db.execute(OUTCOMES, 1, 25, "delivered")
    await db.execute(REPLIES, 1)  # 4 %: no reply-rate alert either

    assert await active_alerts(db) == []


async def test_vw_alerts__delivered_then_bounced_is_a_bounce(
    db: asyncpg.Connection,
) -> None:
    await audience(db, 20)
    await db.execute(OUTCOMES, 1, 20, "delivered")
    await db.execute(OUTCOMES, 16, 20, "bounced")  # after delivery: 5 of 20, 25 %

    assert await active_alerts(db) == [("deliverability_drop", None)]


async def test_vw_alerts__reply_rate_leaves_out_messages_delivered_then_bounced(
    db: asyncpg.Connection,
) -> None:
    await audience(db, 40)
    await db.execute(OUTCOMES, 1, 40, "delivered")
    await db.execute(REPLIES, 1)  # 1 of 40: 2.5 %
    assert await active_alerts(db) == [("reply_rate_drop", None)]

    await db.execute(OUTCOMES, 21, 40, "bounced")  # 1 of 20 delivered: 5 %, no alert

    assert await active_alerts(db) == [("deliverability_drop", None)]  # 20 of 40 bounced


async def test_vw_alerts__deliverability_since_is_the_first_bounce_that_stands(
    db: asyncpg.Connection,
) -> None:
    await audience(db, 20)
    await db.execute(OUTCOMES_AGO, 1, 10, "bounced", "3 hours")  # soft: delivered later
    await db.execute(OUTCOMES_AGO, 1, 15, "delivered", "2 hours")
    await db.execute(OUTCOMES_AGO, 16, 20, "delivered", "2 hours")
    await db.execute(OUTCOMES_AGO, 16, 20, "bounced", "1 hour")

    since = await db.fetchval(DELIVERABILITY_SINCE)

    assert since is not None
    age = await db.fetchval("SELECT now()") - since
    assert dt.timedelta(minutes=59) < age < dt.timedelta(minutes=61)


async def test_delivered_then_bounced_counts_as_delivered_nowhere(
    db: asyncpg.Connection,
) -> None:
    await audience(db, 20)
    await db.execute(OUTCOMES, 1, 20, "delivered")
    await db.execute(OUTCOMES, 16, 20, "bounced")
    await db.execute(OUTCOMES, 1, 2, "bounced")
    await db.execute(OUTCOMES, 1, 2, "delivered")  # a soft bounce a retry delivered

    overview = await db.fetchval(CAMPAIGN_DELIVERED)
    funnel = await db.fetchval(FUNNEL_DELIVERED)

    assert (overview, funnel) == (15, 15)


async def test_vw_alerts__crm_sync_failure_when_attempts_fail_for_30_minutes(
    db: asyncpg.Connection,
) -> None:
    await audience(db, 1)
    await db.execute(CRM_SYNC, "success", "40 minutes")
    await db.execute(CRM_SYNC, "failed", "10 minutes")

    assert await active_alerts(db) == [("crm_sync_failure", None)]


async def test_vw_alerts__crm_sync_quiet_without_requests_or_with_a_recent_success(
    db: asyncpg.Connection,
) -> None:
    await audience(db, 1)
    await db.execute(CRM_SYNC, "success", "2 hours")
    assert await active_alerts(db) == []

    await db.execute(CRM_SYNC, "failed", "20 minutes")
    await db.execute(CRM_SYNC, "success", "5 minutes")
    assert await active_alerts(db) == []


async def test_vw_alerts__crm_sync_failure_when_a_sync_waits_untried(
    db: asyncpg.Connection,
) -> None:
    await audience(db, 1)
    await db.execute(CRM_SYNC, "pending", "3 hours")

    assert await active_alerts(db) == [("crm_sync_failure", None)]


async def test_vw_alerts__slow_processing_over_10_seconds_on_average(
    db: asyncpg.Connection,
) -> None:
    await db.execute(PROCESSED_EVENTS, 5, "12 seconds")
    await db.execute(PROCESSED_EVENTS, 5, "9 seconds")

    assert await active_alerts(db) == [("slow_processing", None)]
    assert await db.fetchval("SELECT observed FROM marketing.vw_alerts") == Decimal("10.50")


async def test_vw_alerts__slow_processing_counts_events_that_waited_days(
    db: asyncpg.Connection,
) -> None:
    # A backlog drained after a two-day outage, or dead letters replayed two days on (replay
    # keeps created_at): the slowest events of all, processed in the window.
    await db.execute(PROCESSED_EVENTS, 5, "2 days")
    await db.execute(PROCESSED_EVENTS, 5, "1 second")

    assert await active_alerts(db) == [("slow_processing", None)]


async def test_vw_alerts__low_enrichment_rate_under_70_percent(db: asyncpg.Connection) -> None:
    await db.execute(SLOTS, 4, 8)  # 8 of 12 slots filled: 66.67 %

    assert await active_alerts(db) == [("low_enrichment_rate", None)]


async def test_vw_alerts__reply_rate_drop_under_3_percent(db: asyncpg.Connection) -> None:
    await audience(db, 40)
    await db.execute(OUTCOMES, 1, 40, "delivered")
    await db.execute(REPLIES, 1)  # 1 of 40: 2.5 %

    assert await active_alerts(db) == [("reply_rate_drop", None)]

    # A reply matched to no message counts for its contact's delivered message: 2 of 40.
    await db.execute(
        "INSERT INTO marketing.responses (contact_id, body) VALUES (2, 'Unthreaded reply')"
    )
    assert await active_alerts(db) == []


async def test_vw_alerts__rates_wait_for_their_minimum_sample(db: asyncpg.Connection) -> None:
    await audience(db, 5)
    await db.execute(OUTCOMES, 1, 5, "bounced")  # 100 %, but only five messages

    assert await active_alerts(db) == []


async def test_vw_alerts__thresholds_are_guardrail_rows(db: asyncpg.Connection) -> None:
    await db.execute(EVENTS, "company_created", "pending", 150, "6 minutes")
    assert await active_alerts(db) == [("pipeline_stalled", None)]

    await db.execute(SET_THRESHOLD, "alert_pipeline_stalled", 200)
    assert await active_alerts(db) == []

    await db.execute(SET_THRESHOLD, "alert_pipeline_stalled", 10)
    assert await db.fetchval("SELECT threshold FROM marketing.vw_alerts") == 10

    await db.execute(
        "UPDATE marketing.shq_guardrails SET period = '10 minutes'"
        " WHERE guardrail_key = 'alert_pipeline_stalled'"
    )
    assert await active_alerts(db) == []


async def test_vw_alerts__deleting_a_threshold_switches_its_alert_off(
    db: asyncpg.Connection,
) -> None:
    await db.execute(PROCESSED_EVENTS, 3, "30 seconds")
    assert await active_alerts(db) == [("slow_processing", None)]

    await db.execute(
        "DELETE FROM marketing.shq_guardrails WHERE guardrail_key = 'alert_slow_processing'"
    )
    assert await active_alerts(db) == []


async def test_vw_pipeline_health__one_row_with_sane_numbers(db: asyncpg.Connection) -> None:
    await db.execute(PROCESSED_EVENTS, 3, "2 seconds")
    await db.execute(EVENTS, "company_created", "pending", 2, "1 minute")
    await db.execute(EVENTS, "company_created", "dead", 1, "1 minute")
    await db.execute(
        "UPDATE marketing.pipeline_events SET finished_at = now() WHERE status = 'dead'"
    )
    await db.execute(ERRORS, "company_created", 1)

    rows = await db.fetch("SELECT * FROM marketing.vw_pipeline_health")

    assert len(rows) == 1
    health = rows[0]
    assert health["processed_last_5m"] == 3
    assert health["events_24h"] == 6
    assert health["success_rate_24h"] == Decimal("75.0")
    assert health["avg_latency_seconds_24h"] == Decimal("2.00")
    assert health["unresolved_errors"] == 1
    assert (health["pending"], health["retrying"], health["dead_letters"]) == (2, 0, 1)
    assert 60 <= health["oldest_pending_age_seconds"] < 120
    assert (health["critical_alerts"], health["warning_alerts"]) == (0, 0)


async def test_vw_pipeline_health__counts_events_created_days_ago_and_finished_now(
    db: asyncpg.Connection,
) -> None:
    await db.execute(PROCESSED_EVENTS, 3, "3 days")
    await db.execute(EVENTS, "company_created", "dead", 1, "3 days")
    await db.execute(
        "UPDATE marketing.pipeline_events SET finished_at = now() WHERE status = 'dead'"
    )

    health = await db.fetchrow("SELECT * FROM marketing.vw_pipeline_health")

    assert health is not None
    assert (health["processed_last_5m"], health["processed_24h"], health["dead_24h"]) == (3, 3, 1)
    assert health["avg_latency_seconds_24h"] > 2 * 86400


async def test_vw_pipeline_health__empty_database_reads_zero_not_nothing(
    db: asyncpg.Connection,
) -> None:
    health = await db.fetchrow("SELECT * FROM marketing.vw_pipeline_health")

    assert health is not None
    assert (health["events_24h"], health["pending"], health["dead_letters"]) == (0, 0, 0)
    assert health["success_rate_24h"] is None
