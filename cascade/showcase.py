"""What `cascade up` shows on a fresh machine: the shipped sample of invented companies
imported as a `lead_only` workflow run, the cascade followed until Phase 1 has settled, and
seed 003's Phase 1 success metrics at the end.

Importing is idempotent (cascade/intake.py), so a second `cascade up` adds nothing and shows
the metrics again. "Settled" means no event is running or due within SETTLED_HORIZON: what is
left is scheduled later on purpose (an `unknown` email re-checked in an hour, an Apify run's
deadline), and the summary says how many such events wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import LiteralString

import asyncpg
import psycopg

from cascade.database import PROJECT_ROOT
from cascade.workflows import WorkflowRequest, WorkflowRun, start_workflow

SAMPLE_CSV = PROJECT_ROOT / "samples" / "companies.csv"
POLL_SECONDS = 1.0
SETTLED_HORIZON_SECONDS = 30

PHASE1_PROGRESS: LiteralString = """
    SELECT (SELECT count(*) FROM intake.company_raw_intake WHERE status = 'pending')
               AS intake_pending,
           (SELECT count(*) FROM marketing.company_master) AS companies,
           (SELECT count(*) FROM marketing.company_slots
             WHERE status IN ('open', 'awaiting_provider')) AS slots_in_flight,
           (SELECT count(*) FROM marketing.company_slots WHERE status = 'filled') AS slots_filled,
           (SELECT count(*) FROM marketing.contact_enrichment WHERE status = 'ready')
               AS contacts_ready,
           (SELECT count(*) FROM marketing.pipeline_events
             WHERE status = 'processing'
                OR (status IN ('pending', 'failed')
                    AND run_after <= now() + make_interval(secs => $1))) AS events_due,
           (SELECT count(*) FROM marketing.pipeline_events
             WHERE status IN ('pending', 'failed')
               AND run_after > now() + make_interval(secs => $1)) AS events_later,
           (SELECT count(*) FROM marketing.pipeline_events WHERE status = 'dead') AS dead
"""
PHASE1_METRICS: LiteralString = """
    SELECT metric, value, unit, target, excellent, status, sample_size
      FROM marketing.vw_phase1_metrics
"""

log = logging.getLogger("cascade.showcase")


def print_now(text: str) -> None:
    print(text, flush=True)  # stdout may be a file or a pipe: show the summary at once


def import_sample(url: str) -> WorkflowRun:
    """The sample CSV as a lead_only run (a blocking call: run it in a thread)."""
    request = WorkflowRequest.from_env(
        workflow="lead_only", csv_path=SAMPLE_CSV, requested_by="cascade up (sample)"
    )
    with psycopg.connect(url) as conn:
        return start_workflow(conn, request)


async def show_phase1(url: str, out: Callable[[str], None] = print_now) -> None:
    """Imports the sample, follows Phase 1 until it settles, then prints its metrics."""
    run = await asyncio.to_thread(import_sample, url)
    report = run.lead_import
    log.info(
        "sample imported",
        extra={
            "workflow_run_id": run.id,
            "file": str(SAMPLE_CSV.relative_to(PROJECT_ROOT)),
            "imported": report.imported if report else 0,
            "already_imported": report.already_imported if report else 0,
        },
    )
    conn = await asyncpg.connect(url)
    try:
        last: dict[str, int] = {}
        while True:
            row = await conn.fetchrow(PHASE1_PROGRESS, SETTLED_HORIZON_SECONDS)
            assert row is not None  # a SELECT of scalar subqueries returns one row
            progress = dict(row)
            if progress != last:
                log.info("phase 1 progress", extra=progress)
                last = progress
            if progress["events_due"] == 0 and progress["intake_pending"] == 0:
                break
            await asyncio.sleep(POLL_SECONDS)  # progress is a read model: nothing signals it
        out(format_metrics(await conn.fetch(PHASE1_METRICS), last))
    finally:
        await conn.close()


def format_metrics(rows: list[asyncpg.Record], progress: dict[str, int]) -> str:
    lines = [
        "",
        "Phase 1 (enrichment) success metrics, seed 003",
        f"{'metric':<26}{'value':>12}{'target':>10}{'excellent':>11}  status  (sample)",
    ]
    for row in rows:
        percent = row["unit"] == "percent"
        unit, bound = ("%", "") if percent else (" s", "<")
        value = "—" if row["value"] is None else f"{row['value']:.1f}{unit}"
        lines.append(
            f"{row['metric']:<26}{value:>12}{bound + format(row['target'], '.0f') + unit:>10}"
            f"{bound + format(row['excellent'], '.0f') + unit:>11}  {row['status']}"
            f"  ({row['sample_size']})"
        )
    lines.append(
        f"{progress.get('companies', 0)} companies, {progress.get('slots_filled', 0)} slots "
        f"filled, {progress.get('contacts_ready', 0)} contacts ready for messaging; "
        f"{progress.get('events_later', 0)} events scheduled later (re-checks, deadlines), "
        f"{progress.get('dead', 0)} dead letters. The web app keeps serving: "
        "GET /webhooks/status; `cascade status`."
    )
    return "\n".join(lines)


async def show_phase1_quietly(url: str, out: Callable[[str], None] = print_now) -> None:
    """`show_phase1` for `cascade up`: a failure is logged, never fatal to the main job."""
    try:
        await show_phase1(url, out)
    except Exception:
        log.exception("the sample run could not be shown")
