"""Baseline (a): the smallest correct consumer one would write by hand with asyncpg.

Each worker owns one connection and loops: begin; claim up to 100 pending events with
FOR UPDATE SKIP LOCKED; run the per-event write, if any; mark the batch processed in one
UPDATE; commit. No payload validation, no lineage, no retries, no dead letters, no wake-up
protocol: it is the floor Cascade's overhead is measured against, on the same table and index.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import LiteralString

import asyncpg

from bench.report import Timing

# Uses pipeline_events_claimable_idx: status = 'pending' implies the index's predicate.
CLAIM: LiteralString = """
    SELECT id, event_type, record_id, payload::text AS payload
      FROM marketing.pipeline_events
     WHERE status = 'pending'
     ORDER BY id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
"""
MARK_DONE: LiteralString = """
    UPDATE marketing.pipeline_events SET status = 'processed' WHERE id = ANY ($1::bigint[])
"""
# The same lineage Cascade's Tx sets before a handler's first statement: only for the
# `with_lineage` variant, which isolates what that round trip costs.
SET_EVENT_CONTEXT: LiteralString = """
    SELECT set_config('cascade.event_id', $1, true),
           set_config('cascade.run_id', $2, true),
           set_config('cascade.correlation_id', $3, true)
"""


@dataclass
class Work:
    """What each claimed event does: `write` (a statement taking the event's record_id and
    `stages[event_type]`) or nothing."""

    write: LiteralString | None = None
    stages: Mapping[str, int] = field(default_factory=dict)
    with_lineage: bool = False


@dataclass
class Progress:
    processed: int = 0
    busy: int = 0
    first_rows_at: float | None = None  # time.perf_counter() when a claim first found events
    last_commit_at: float = 0.0  # ... and when the last batch that had events committed


async def drain(url: str, work: Work, *, workers: int = 2, batch_size: int = 100) -> Progress:
    """Runs `workers` loops until nothing is pending and no loop is mid-batch."""
    progress = Progress()
    connections = [await asyncpg.connect(url) for _ in range(workers)]
    try:
        await asyncio.gather(*(_loop(c, work, batch_size, progress) for c in connections))
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return progress


async def _loop(conn: asyncpg.Connection, work: Work, batch_size: int, progress: Progress) -> None:
    while True:
        progress.busy += 1
        try:
            claimed = await _claim_and_run(conn, work, batch_size, progress)
        finally:
            progress.busy -= 1
        if claimed:
            progress.processed += claimed
            progress.last_commit_at = time.perf_counter()
            continue
        # Another loop's open batch may still emit events (a cascade's next stage).
        if progress.busy == 0:
            return
        await asyncio.sleep(0.001)


async def _claim_and_run(
    conn: asyncpg.Connection, work: Work, batch_size: int, progress: Progress
) -> int:
    async with conn.transaction():
        rows = await conn.fetch(CLAIM, batch_size)
        if rows and progress.first_rows_at is None:
            progress.first_rows_at = time.perf_counter()
        if work.write is not None:
            for row in rows:
                if work.with_lineage:
                    await conn.execute(SET_EVENT_CONTEXT, str(row["id"]), str(row["id"]), "")
                await conn.execute(work.write, row["record_id"], work.stages[row["event_type"]])
        if rows:
            await conn.execute(MARK_DONE, [r["id"] for r in rows])
    return len(rows)


async def timed_drain(url: str, work: Work, *, workers: int = 2) -> Timing:
    start = time.perf_counter()
    progress = await drain(url, work, workers=workers)
    wall = time.perf_counter() - start
    assert progress.first_rows_at is not None, "nothing to drain"
    return Timing(progress.last_commit_at - progress.first_rows_at, wall, progress.processed)
