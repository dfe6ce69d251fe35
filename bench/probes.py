"""Waiting on the database's state: a listener asleep on its doorbell, a drained queue."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any, LiteralString

import asyncpg

from listener import CLAIM_LOCKED

# A listener that registered and found nothing to do has set `sleeping` (SleepGate.arm).
LISTENER_ASLEEP: LiteralString = """
    SELECT EXISTS (SELECT 1 FROM marketing.listeners WHERE sleeping)
"""
UNFINISHED: LiteralString = """
    SELECT count(*) FROM marketing.pipeline_events
     WHERE status IN ('pending', 'failed', 'processing')
"""
DRAINED: LiteralString = """
    SELECT NOT EXISTS (SELECT 1 FROM marketing.pipeline_events
                        WHERE status IN ('pending', 'failed', 'processing'))
"""

EXPLAIN_CLAIM: LiteralString = "EXPLAIN (FORMAT JSON) " + CLAIM_LOCKED


async def wait_until_asleep(url: str, timeout: float = 30.0) -> None:
    await _wait_for(url, LISTENER_ASLEEP, timeout, "no listener went to sleep")


async def wait_until_drained(url: str, timeout: float = 60.0) -> float:
    """Seconds until no event is left unfinished."""
    start = time.perf_counter()
    await _wait_for(url, DRAINED, timeout, "the queue did not drain")
    return time.perf_counter() - start


async def unfinished(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(UNFINISHED))
    finally:
        await conn.close()


async def _wait_for(url: str, probe: LiteralString, timeout: float, failure: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while not await conn.fetchval(probe):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{failure} within {timeout:g}s")
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def time_claims(
    url: str, samples: int, event_types: Sequence[str] = ("bench_noop",)
) -> tuple[float, str]:
    """Cascade's own claim query (batch 100), `samples` times, each rolled back: the median
    in milliseconds, and how the planner reads the table ('Index Scan', 'Bitmap Heap Scan')."""
    conn = await asyncpg.connect(url)
    times: list[float] = []
    try:
        for _ in range(samples):
            tx = conn.transaction()
            await tx.start()
            start = time.perf_counter()
            await conn.fetch(CLAIM_LOCKED, event_types, 100)
            times.append((time.perf_counter() - start) * 1000)
            await tx.rollback()
        plan = json.loads(await conn.fetchval(EXPLAIN_CLAIM, event_types, 100))
    finally:
        await conn.close()
    return statistics.median(times), _scan_node(plan[0]["Plan"])


def _scan_node(plan: dict[str, Any]) -> str:
    if plan.get("Relation Name") == "pipeline_events":
        return str(plan["Node Type"])
    for child in plan.get("Plans", []):
        found = _scan_node(child)
        if found:
            return found
    return ""
