"""Baseline (b): PgQueuer 1.x, installed only in bench/.venv, in its usual shape: one
QueueManager on one asyncpg connection, batch size 100, a no-op entrypoint, drain mode (it
returns once the queue is empty and every job's completion is logged).

Its jobs live in its own table (pgqueuer), installed into the same fresh database.
"""

from __future__ import annotations

import time
from datetime import timedelta

import asyncpg

# PgQueuer is installed in bench/.venv only; the project's own venv type-checks without it.
from pgqueuer import (  # type: ignore[import-not-found, unused-ignore]
    AsyncpgDriver,
    Job,
    Queries,
    QueueManager,
)
from pgqueuer.types import QueueExecutionMode  # type: ignore[import-not-found, unused-ignore]

from bench.report import Timing

ENTRYPOINT = "bench_noop"
BATCH_SIZE = 100
ENQUEUE_CHUNK = 10_000  # jobs per enqueue statement while loading


async def install_and_enqueue(url: str, jobs: int) -> None:
    """PgQueuer's schema, then `jobs` jobs with bulk enqueues (not timed)."""
    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        for first in range(0, jobs, ENQUEUE_CHUNK):
            count = min(ENQUEUE_CHUNK, jobs - first)
            payloads: list[bytes | None] = [
                f'{{"id": {n}}}'.encode() for n in range(first, first + count)
            ]
            await queries.enqueue([ENTRYPOINT] * count, payloads, [0] * count)
    finally:
        await conn.close()


async def timed_drain(url: str) -> Timing:
    """Runs a QueueManager until the queue is empty. The window ends when drain mode returns,
    which is when every job's completion has been logged (PgQueuer buffers those writes)."""
    ran = 0
    first: float | None = None
    conn = await asyncpg.connect(url)
    try:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint(ENTRYPOINT)  # type: ignore[untyped-decorator, unused-ignore]
        async def noop(job: Job) -> None:
            nonlocal ran, first
            first = first or time.perf_counter()
            ran += 1

        start = time.perf_counter()
        await qm.run(
            batch_size=BATCH_SIZE,
            mode=QueueExecutionMode.drain,
            dequeue_timeout=timedelta(seconds=1),
        )
        end = time.perf_counter()
        assert first is not None, "nothing to drain"
        return Timing(end - first, end - start, ran)
    finally:
        await conn.close()
