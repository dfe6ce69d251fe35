"""Seed 000's workflows: kickoff records a run and imports with its id, refuses unmapped
process keys with the seed's message, reports unbuilt branches plainly and starts nothing for
them, and TEST_COMPANY_ID narrows the import to one line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from cascade.database import PROJECT_ROOT
from cascade.workflows import (
    NothingBuilt,
    UnmappedProcessKey,
    WorkflowError,
    WorkflowRequest,
    run_progress,
    start_workflow,
)
from samples.make_companies import write_csv

RUN = "SELECT * FROM marketing.workflow_runs WHERE id = $1"


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database_url) as connection:
        yield connection


@pytest.fixture
def companies(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "companies.csv", rows=30, seed=5)


def _request(workflow: str, csv_path: Path | None = None, **fields: object) -> WorkflowRequest:
    return WorkflowRequest.from_env(
        {}, workflow=workflow, csv_path=csv_path, requested_by="test", **fields
    )


def _kickoff(database_url: str, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": database_url, "CASCADE_LOG_LEVEL": "WARNING"}
    for name in ("CSV_FILE_PATH", "TEST_COMPANY_ID", "LEAD_UNIQUE_ID", "BLUEPRINT_ID"):
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "cascade.cli", "kickoff", *arguments],
        cwd=PROJECT_ROOT,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_start_workflow__lead_only_records_a_run_and_imports_with_its_id(
    db: asyncpg.Connection, conn: psycopg.Connection[tuple[object, ...]], companies: Path
) -> None:
    run = start_workflow(conn, _request("lead_only", companies, batch_size=7))

    assert (run.branches, run.not_built) == (("lead",), ())
    assert run.lead_import is not None
    assert run.lead_import.imported == 30
    row = await db.fetchrow(RUN, run.id)
    assert row is not None
    assert (row["workflow"], row["branches"], row["status"]) == ("lead_only", ["lead"], "running")
    assert (row["blueprint_id"], row["unique_id"], row["batch_size"]) == (
        "PLE-001",
        "04.01.01.01.20000.001",
        7,
    )
    assert row["source"] == "companies.csv"
    runs = await db.fetch("SELECT DISTINCT workflow_run_id FROM intake.company_raw_intake")
    assert [r["workflow_run_id"] for r in runs] == [run.id]


async def test_start_workflow__unmapped_unique_id_fails_with_the_seed_message(
    db: asyncpg.Connection, conn: psycopg.Connection[tuple[object, ...]], companies: Path
) -> None:
    request = _request("lead_only", companies, unique_id="04.01.09.09.20000.999")

    with pytest.raises(UnmappedProcessKey) as failure:
        start_workflow(conn, request)

    assert str(failure.value) == (
        "UNMAPPED UNIQUE_ID: 04.01.09.09.20000.999 not found in shq_process_key_reference"
    )
    assert await db.fetchval("SELECT count(*) FROM marketing.workflow_runs") == 0
    assert await db.fetchval("SELECT count(*) FROM intake.company_raw_intake") == 0


def test_start_workflow__unknown_blueprint_is_refused(
    conn: psycopg.Connection[tuple[object, ...]], companies: Path
) -> None:
    with pytest.raises(UnmappedProcessKey, match="UNMAPPED BLUEPRINT_ID: PLE-404"):
        start_workflow(conn, _request("lead_only", companies, blueprint_id="PLE-404"))


def test_start_workflow__messaging_only_is_not_built_and_starts_nothing(
    conn: psycopg.Connection[tuple[object, ...]], companies: Path
) -> None:
    with pytest.raises(NothingBuilt) as failure:
        start_workflow(conn, _request("messaging_only", companies))

    assert str(failure.value) == (
        "messaging branch: not built yet (Phase 2) — nothing was started for it"
    )


async def test_cli_kickoff__messaging_only_exits_2_and_records_nothing(
    db: asyncpg.Connection, database_url: str, companies: Path
) -> None:
    result = _kickoff(database_url, "messaging_only", CSV_FILE_PATH=str(companies))

    assert result.returncode == 2
    assert "messaging branch: not built yet (Phase 2) — nothing was started for it" in (
        result.stderr
    )
    assert await db.fetchval("SELECT count(*) FROM marketing.workflow_runs") == 0
    assert await db.fetchval("SELECT count(*) FROM intake.company_raw_intake") == 0


async def test_cli_kickoff__full_pipeline_runs_lead_and_names_the_unbuilt_branches(
    db: asyncpg.Connection, database_url: str, companies: Path
) -> None:
    result = _kickoff(database_url, "full_pipeline", CSV_FILE_PATH=str(companies), BATCH_SIZE="10")

    assert result.returncode == 0, result.stderr
    run_id = await db.fetchval("SELECT id FROM marketing.workflow_runs")
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {run_id}: full_pipeline (branches: lead, messaging, delivery)"
    assert "messaging branch: not built yet (Phase 2) — nothing was started for it" in lines
    assert "delivery branch: not built yet (Phase 3) — nothing was started for it" in lines
    assert await db.fetchval("SELECT count(*) FROM intake.company_raw_intake") == 30


def test_cli_kickoff__unmapped_lead_unique_id_exits_2_with_the_seed_message(
    database_url: str, companies: Path
) -> None:
    result = _kickoff(
        database_url, "lead_only", "--csv", str(companies), LEAD_UNIQUE_ID="04.99.99.99.99999.999"
    )

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "UNMAPPED UNIQUE_ID: 04.99.99.99.99999.999 not found in shq_process_key_reference"
    )


async def test_start_workflow__test_company_id_imports_that_line_alone(
    db: asyncpg.Connection, conn: psycopg.Connection[tuple[object, ...]], companies: Path
) -> None:
    run = start_workflow(conn, _request("lead_only", companies, test_company_id="cmp_00017"))

    assert run.lead_import is not None
    assert (run.lead_import.imported, run.lead_import.skipped) == (1, 29)
    row = await db.fetchrow("SELECT external_id, source_line FROM intake.company_raw_intake")
    assert row is not None
    assert (row["external_id"], row["source_line"]) == ("cmp_00017", 18)


async def test_start_workflow__test_company_id_matching_no_line_fails_the_run(
    db: asyncpg.Connection, conn: psycopg.Connection[tuple[object, ...]], companies: Path
) -> None:
    with pytest.raises(WorkflowError, match="TEST_COMPANY_ID cmp_99999: no line"):
        start_workflow(conn, _request("lead_only", companies, test_company_id="cmp_99999"))

    assert await db.fetchval("SELECT status FROM marketing.workflow_runs") == "failed"
    assert await db.fetchval("SELECT count(*) FROM intake.company_raw_intake") == 0


async def test_run_progress__done_once_every_company_is_terminal(
    db: asyncpg.Connection, conn: psycopg.Connection[tuple[object, ...]], tmp_path: Path
) -> None:
    run = start_workflow(conn, _request("lead_only", write_csv(tmp_path / "three.csv", rows=3)))
    first, second, third = [r["id"] for r in await db.fetch(
        "SELECT id FROM intake.company_raw_intake ORDER BY id"
    )]  # fmt: skip
    assert run_progress(conn, run.id).awaiting_validation == 3

    await db.execute(
        "UPDATE intake.company_raw_intake SET status = 'rejected' WHERE id = $1", first
    )
    await db.execute(
        "UPDATE intake.company_raw_intake SET status = 'duplicate' WHERE id = $1", second
    )
    company = await db.fetchval(
        "INSERT INTO marketing.company_master (company_name, domain, website)"
        " VALUES ('Acme', 'acme-widgets.com', 'acme-widgets.com') RETURNING id"
    )
    await db.execute(
        "UPDATE intake.company_raw_intake SET status = 'validated', company_id = $2 WHERE id = $1",
        third,
        company,
    )
    slot = await db.fetchval(
        "INSERT INTO marketing.company_slots (company_id, role) VALUES ($1, 'CEO') RETURNING id",
        company,
    )
    assert (run_progress(conn, run.id).enriching, run_progress(conn, run.id).done) == (1, False)

    await db.execute(
        "UPDATE marketing.company_slots SET status = 'unfilled', unfilled_reason = 'none found'"
        " WHERE id = $1",
        slot,
    )

    progress = run_progress(conn, run.id)
    assert (progress.stopped_at_intake, progress.enriched, progress.done) == (2, 1, True)


def test_cli_kickoff__wait_gives_up_after_the_timeout_with_exit_3(
    database_url: str, companies: Path
) -> None:
    result = _kickoff(
        database_url, "lead_only", "--csv", str(companies), "--wait", "--timeout", "0"
    )

    assert result.returncode == 3, result.stderr
    assert "0/30 companies finished" in result.stderr
    assert "Is a listener running" in result.stderr
