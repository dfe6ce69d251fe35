"""PostgreSQL's share of one Instantly open, by how the delivery's SQL is shaped
(`python -m bench.webhooks sql-cost`; bench/webhooks.py's `run` measures the whole request).

The statements are the app's own constants (cascade/web/deliveries.py, cascade/web/
instantly.py) and the `one-statement` prototype's (below), sent through
asyncpg as the app sends them, by CONNECTIONS connections in a loop for SECONDS each, on a
fresh database seeded like the `instantly` target. What is reported is the CPU of the
server backends serving those connections (from /proc, so the server must be local) per
delivery: the client's own cost, and HTTP, are left out.

Cases:
* production: BEGIN, the claim (which sets the correlation id), find by email_id, record the
  open, COMMIT: five round trips (the web app's pool no longer sends a reset query; before
  the fused claim and that change there were seven);
* one statement: the prototype, in an implicit transaction: one round trip;
* one statement with synchronous_commit off, for this session only: what the WAL flush at
  each commit costs the backend;
* one statement with the engagement table's event trigger disabled: what emitting
  email_opened into marketing.pipeline_events costs;
* one statement, duplicate: the same delivery each time (the claim finds it, nothing else);
* group commit: the app's statement for many deliveries (instantly.RECORD_ENGAGEMENTS) in
  batches of 1, 4, 16 and 64, with PostgreSQL's default choice of plan and with the generic
  plan the app's writers use (web.PLAN_ONCE): what planning each batch afresh costs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import LiteralString

import asyncpg

from bench.phase1 import _cpu_seconds
from bench.webhook_scenarios import DUPLICATE_ID, INSTANTLY
from cascade.web.deliveries import CLAIM_DELIVERY
from cascade.web.instantly import FIND_BY_EMAIL_ID, RECORD_ENGAGEMENT, RECORD_ENGAGEMENTS
from web import PLAN_ONCE

# The `one-statement` prototype (once a variant of bench/webhook_server.py): set the
# correlation id, claim, find the message Instantly names, record the engagement (whose
# statement trigger emits the event, reading the correlation id), in one implicit
# transaction. `claimed` is false for a duplicate.
INSTANTLY_IN_ONE_STATEMENT: LiteralString = """
    WITH correlation AS (SELECT set_config('cascade.correlation_id', $5, true)),
    claimed AS (
        INSERT INTO marketing.processed_webhook_events
            (provider, event_key, event_name, verified, correlation_id)
        SELECT 'instantly', $1, $2, $3, $5 FROM correlation
        ON CONFLICT (provider, event_key) DO NOTHING
        RETURNING event_key
    ),
    target AS (
        SELECT contact_id, id AS message_id, campaign_id
          FROM marketing.message_queue
         WHERE provider = 'instantly' AND provider_message_id = $6
         ORDER BY id DESC
         LIMIT 1
    ),
    recorded AS (
        INSERT INTO marketing.engagement_events
            (contact_id, message_id, campaign_id, event_type, metadata, provider,
             provider_event_id, occurred_at)
        SELECT t.contact_id, t.message_id, t.campaign_id, $4, $7::jsonb, 'instantly',
               c.event_key, coalesce($8, now())
          FROM claimed AS c, target AS t
        ON CONFLICT ON CONSTRAINT engagement_events_provider_event_key DO NOTHING
        RETURNING id, contact_id, message_id
    )
    SELECT EXISTS (SELECT FROM claimed) AS claimed, r.id, r.contact_id, r.message_id
      FROM (SELECT) AS one LEFT JOIN recorded AS r ON true
"""

CONNECTIONS = 8
SECONDS = 8.0
GROUP_COMMIT_BATCHES = (1, 4, 16, 64)
METADATA = '{"workspace": "bench-workspace", "email_account": "sender@bench-instantly.example"}'

FLUSH_OFF: LiteralString = "SET synchronous_commit = off"
TRIGGER_OFF: LiteralString = """
    ALTER TABLE marketing.engagement_events DISABLE TRIGGER _400_engagement_recorded
"""
TRIGGER_ON: LiteralString = """
    ALTER TABLE marketing.engagement_events ENABLE TRIGGER _400_engagement_recorded
"""

# A step writes one delivery, or a batch of them, and says how many.
Step = Callable[[asyncpg.Connection, str, int], Awaitable[int]]


@dataclass(frozen=True)
class Cost:
    case: str
    deliveries: int
    per_second: float
    backend_cpu_us: float  # per delivery


async def production(conn: asyncpg.Connection, key: str, lead: int) -> int:
    async with conn.transaction():
        await conn.fetchval(CLAIM_DELIVERY, "instantly", key, "email_opened", True, key)
        target = await conn.fetchrow(FIND_BY_EMAIL_ID, f"lead-{lead}")
        assert target is not None
        await conn.fetchval(
            RECORD_ENGAGEMENT, target["contact_id"], target["message_id"],
            target["campaign_id"], "open", None, METADATA, key, None,
        )  # fmt: skip
    return 1


async def one_statement(conn: asyncpg.Connection, key: str, lead: int) -> int:
    await conn.fetchrow(
        INSTANTLY_IN_ONE_STATEMENT, key, "email_opened", True, "open", key, f"lead-{lead}",
        METADATA, None,
    )  # fmt: skip
    return 1


async def duplicate(conn: asyncpg.Connection, key: str, lead: int) -> int:
    return await one_statement(conn, DUPLICATE_ID, 1)


def group_commit(size: int) -> Step:
    """RECORD_ENGAGEMENTS for `size` opens of consecutive leads, as the group commit sends it."""

    async def batch(conn: asyncpg.Connection, key: str, lead: int) -> int:
        keys = [f"{key}-{k}" for k in range(size)]
        leads = [(lead + k - 1) % INSTANTLY.leads + 1 for k in range(size)]
        nothing: list[None] = [None] * size
        await conn.fetch(
            RECORD_ENGAGEMENTS, keys, ["email_opened"] * size, [True] * size, keys,
            [f"lead-{n}" for n in leads], [f"lead-{n}@bench-instantly.example" for n in leads],
            [1] * size, ["open"] * size, nothing, [METADATA] * size, nothing, nothing,
        )  # fmt: skip
        return size

    return batch


async def measure(url: str, case: str, step: Step, *, setup: LiteralString | None = None) -> Cost:
    conns = [await asyncpg.connect(url) for _ in range(CONNECTIONS)]
    try:
        if setup is not None:
            for conn in conns:
                await conn.execute(setup)
        pids = [conn.get_server_pid() for conn in conns]
        before = sum(_cpu_seconds(pid) for pid in pids)
        deadline = time.monotonic() + SECONDS
        counts = await asyncio.gather(
            *(_loop(conn, step, f"{case}-{k}", deadline) for k, conn in enumerate(conns))
        )
        used = sum(_cpu_seconds(pid) for pid in pids) - before
    finally:
        for conn in conns:
            await conn.close()
    total = sum(counts)
    return Cost(case, total, total / SECONDS, used / max(1, total) * 1e6)


async def _loop(conn: asyncpg.Connection, step: Step, prefix: str, deadline: float) -> int:
    n = written = 0
    while time.monotonic() < deadline:
        written += await step(conn, f"{prefix}-{n}", n % INSTANTLY.leads + 1)
        n += 1
    return written


async def all_cases(url: str) -> list[Cost]:
    costs = [
        await measure(url, "production: 5 round trips", production),
        await measure(url, "one statement", one_statement),
        await measure(url, "one statement, synchronous_commit off", one_statement, setup=FLUSH_OFF),
        await measure(url, "one statement, duplicate", duplicate),
    ]
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(TRIGGER_OFF)
        costs.append(await measure(url, "one statement, no event trigger", one_statement))
        await admin.execute(TRIGGER_ON)
    finally:
        await admin.close()
    for size in GROUP_COMMIT_BATCHES:
        case = f"group commit, batches of {size}"
        costs.append(await measure(url, f"{case}, default plan choice", group_commit(size)))
        costs.append(
            await measure(url, f"{case}, generic plan", group_commit(size), setup=PLAN_ONCE)
        )
    return costs


def render(costs: list[Cost]) -> str:
    lines = [
        f"| case ({CONNECTIONS} connections, {SECONDS:g} s) | deliveries/s | "
        "backend CPU µs per delivery |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {c.case} | {c.per_second:,.0f} | {c.backend_cpu_us:,.0f} |" for c in costs]
    return "\n".join(lines)
