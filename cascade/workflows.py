"""Seed 000's workflows: `cascade kickoff WORKFLOW` and, later, POST /webhooks/trigger/{workflow}.

`start_workflow` checks the process keys, records a marketing.workflow_runs row and starts
the branches that exist. Only the lead branch is built (Phase 1): it imports a CSV with the
run's id on every intake row, and the enrichment cascade takes it from there. The messaging
(Phase 2) and delivery (Phase 3) branches are reported as not built, never pretended; a
workflow with no built branch starts nothing and records no run.

It is synchronous (psycopg), as the importer's COPY is; an async caller runs it in a thread.
`run_progress` reads how far a run's companies have got, for `kickoff --wait`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, LiteralString, Self

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, PositiveInt, model_validator

from cascade.intake import ImportReport, Progress, check_file, import_csv

Workflow = Literal["full_pipeline", "lead_only", "messaging_only", "custom"]
Branch = Literal["lead", "messaging", "delivery"]

WORKFLOWS: tuple[Workflow, ...] = ("full_pipeline", "lead_only", "messaging_only", "custom")
BRANCHES: tuple[Branch, ...] = ("lead", "messaging", "delivery")
WORKFLOW_BRANCHES: Mapping[Workflow, tuple[Branch, ...]] = {
    "full_pipeline": ("lead", "messaging", "delivery"),
    "lead_only": ("lead",),
    "messaging_only": ("messaging",),
}
BUILT_BRANCHES: frozenset[Branch] = frozenset({"lead"})
PHASE_OF_BRANCH: Mapping[Branch, int] = {"lead": 1, "messaging": 2, "delivery": 3}

DEFAULT_BLUEPRINT_ID = "PLE-001"
DEFAULT_LEAD_UNIQUE_ID = "04.01.01.01.20000.001"
DEFAULT_BATCH_SIZE = 50

BLUEPRINT_KNOWN: LiteralString = """
    SELECT EXISTS (SELECT 1 FROM marketing.shq_process_key_reference
                    WHERE process_id = %(blueprint_id)s)
"""
PROCESS_OF_KEY: LiteralString = """
    SELECT process_id FROM marketing.shq_process_key_reference WHERE unique_id = %(unique_id)s
"""
RECORD_RUN: LiteralString = """
    INSERT INTO marketing.workflow_runs
        (workflow, branches, blueprint_id, unique_id, batch_size, test_company_id, source,
         requested_by, correlation_id, detail)
    VALUES (%(workflow)s, %(branches)s, %(blueprint_id)s, %(unique_id)s, %(batch_size)s,
            %(test_company_id)s, %(source)s, %(requested_by)s, %(correlation_id)s, %(detail)s)
    RETURNING id
"""
# `detail || ...` keeps what kickoff wrote before; `failed` also closes the run.
RECORD_OUTCOME: LiteralString = """
    UPDATE marketing.workflow_runs
       SET detail = detail || %(detail)s,
           status = %(status)s,
           finished_at = CASE WHEN %(status)s = 'running' THEN NULL ELSE now() END
     WHERE id = %(run_id)s
"""
# Compare-and-set: a run already closed (failed, or completed by another watcher) stays so.
COMPLETE_RUN: LiteralString = """
    UPDATE marketing.workflow_runs SET status = 'completed', finished_at = now()
     WHERE id = %(run_id)s AND status = 'running'
"""
# A run's companies by how far they got. Terminal: refused or a duplicate at intake, or
# promoted with every slot filled or unfilled and every contact with an email verified (for
# that email). A contact without an email stops where it is, so it counts as done.
RUN_PROGRESS: LiteralString = """
    WITH run_intake AS (
        SELECT status, company_id
          FROM intake.company_raw_intake WHERE workflow_run_id = %(run_id)s
    ), companies AS (
        SELECT c.id,
               EXISTS (SELECT 1 FROM marketing.company_slots s WHERE s.company_id = c.id)
                   AS has_slots,
               NOT EXISTS (SELECT 1 FROM marketing.company_slots s
                            WHERE s.company_id = c.id AND s.status NOT IN ('filled', 'unfilled'))
                   AS slots_done,
               NOT EXISTS (SELECT 1 FROM marketing.contact_enrichment ce
                            WHERE ce.company_id = c.id AND ce.email IS NOT NULL
                              AND NOT EXISTS (SELECT 1 FROM marketing.email_verification v
                                               WHERE v.contact_id = ce.id
                                                 AND v.email = ce.email))
                   AS contacts_done
          FROM marketing.company_master c
         WHERE c.id IN (SELECT company_id FROM run_intake WHERE status = 'validated')
    )
    SELECT count(*) AS companies,
           count(*) FILTER (WHERE i.status = 'pending') AS awaiting_validation,
           count(*) FILTER (WHERE i.status IN ('rejected', 'duplicate')) AS stopped_at_intake,
           count(*) FILTER (WHERE i.status = 'validated'
                              AND NOT coalesce(c.has_slots AND c.slots_done
                                               AND c.contacts_done, false)) AS enriching,
           count(*) FILTER (WHERE c.has_slots AND c.slots_done AND c.contacts_done)
               AS enriched
      FROM run_intake AS i
      LEFT JOIN companies AS c ON c.id = i.company_id
"""


class WorkflowError(Exception):
    """The workflow cannot start as asked; the message is for the person who asked."""


class UnmappedProcessKey(WorkflowError):
    """Seed 000: a key not in shq_process_key_reference stops the workflow."""


class NothingBuilt(WorkflowError):
    """Every branch the workflow needs is still to be built: nothing was started."""


def not_built_message(branch: Branch) -> str:
    return (
        f"{branch} branch: not built yet (Phase {PHASE_OF_BRANCH[branch]}) "
        "— nothing was started for it"
    )


class WorkflowRequest(BaseModel, frozen=True):
    """What to start; the same fields as seed 000's environment and trigger webhook."""

    workflow: Workflow
    blueprint_id: str = DEFAULT_BLUEPRINT_ID
    unique_id: str = DEFAULT_LEAD_UNIQUE_ID
    batch_size: PositiveInt = DEFAULT_BATCH_SIZE
    test_company_id: str | None = None
    csv_path: Path | None = None
    # Only for `custom`; the other workflows' branches are fixed (WORKFLOW_BRANCHES).
    branches: tuple[Branch, ...] | None = None
    requested_by: str
    correlation_id: str | None = None

    @model_validator(mode="after")
    def _branches_only_for_custom(self) -> Self:
        if self.workflow == "custom" and not self.branches:
            raise ValueError("a custom workflow needs its branches (--branches or CUSTOM_BRANCHES)")
        if self.workflow != "custom" and self.branches is not None:
            raise ValueError(f"{self.workflow} has fixed branches; --branches is for custom")
        return self

    @property
    def run_branches(self) -> tuple[Branch, ...]:
        chosen = self.branches if self.workflow == "custom" else WORKFLOW_BRANCHES[self.workflow]
        return tuple(branch for branch in BRANCHES if branch in (chosen or ()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **fields: Any) -> WorkflowRequest:
        """Seed 000's variables, under whatever `fields` sets explicitly (not None)."""
        from_environment: dict[str, Any] = {
            "blueprint_id": environ.get("BLUEPRINT_ID") or None,
            "unique_id": environ.get("LEAD_UNIQUE_ID") or None,
            "batch_size": environ.get("BATCH_SIZE") or None,
            "test_company_id": environ.get("TEST_COMPANY_ID") or None,
            "csv_path": environ.get("CSV_FILE_PATH") or None,
        }
        if fields.get("workflow") == "custom":
            from_environment["branches"] = _split(environ.get("CUSTOM_BRANCHES"))
        merged = {**from_environment, **{k: v for k, v in fields.items() if v is not None}}
        return cls.model_validate({k: v for k, v in merged.items() if v is not None})


def _split(text: str | None) -> list[str] | None:
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    return names or None


@dataclass(frozen=True)
class WorkflowRun:
    id: int
    workflow: Workflow
    branches: tuple[Branch, ...]
    not_built: tuple[str, ...]  # one plain message per branch that was not started
    lead_import: ImportReport | None


# -- starting ---------------------------------------------------------------------------------


def check_buildable(request: WorkflowRequest) -> tuple[str, ...]:
    """The messages for the branches that are not built; raises NothingBuilt if no branch of
    the workflow is (no database needed, so a CLI can say so before starting one)."""
    not_built = tuple(not_built_message(b) for b in request.run_branches if b not in BUILT_BRANCHES)
    if not set(request.run_branches) & BUILT_BRANCHES:
        raise NothingBuilt("\n".join(not_built))
    return not_built


def check_process_keys(conn: psycopg.Connection[Any], request: WorkflowRequest) -> None:
    known = conn.execute(BLUEPRINT_KNOWN, {"blueprint_id": request.blueprint_id}).fetchone()
    if not (known and known[0]):
        blueprint = request.blueprint_id
        raise UnmappedProcessKey(
            f"UNMAPPED BLUEPRINT_ID: {blueprint} not found in shq_process_key_reference"
        )
    row = conn.execute(PROCESS_OF_KEY, {"unique_id": request.unique_id}).fetchone()
    if row is None:
        raise UnmappedProcessKey(
            f"UNMAPPED UNIQUE_ID: {request.unique_id} not found in shq_process_key_reference"
        )
    if row[0] != request.blueprint_id:
        raise UnmappedProcessKey(
            f"UNIQUE_ID {request.unique_id} belongs to blueprint {row[0]}, "
            f"not {request.blueprint_id}"
        )


def lead_csv(request: WorkflowRequest) -> Path:
    if request.csv_path is None:
        raise WorkflowError("the lead branch imports a CSV: set CSV_FILE_PATH or pass --csv")
    check_file(request.csv_path)  # a bad file fails here, before a run is recorded
    return request.csv_path


def record_run(conn: psycopg.Connection[Any], request: WorkflowRequest, source: str) -> int:
    params = {
        **request.model_dump(include={"workflow", "blueprint_id", "unique_id", "batch_size",
                                      "test_company_id", "requested_by", "correlation_id"}),
        "branches": list(request.run_branches),
        "source": source,
        "detail": Jsonb({"not_built": [b for b in request.run_branches
                                       if b not in BUILT_BRANCHES]}),
    }  # fmt: skip
    with conn.transaction():
        row = conn.execute(RECORD_RUN, params).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return int(row[0])


def record_outcome(
    conn: psycopg.Connection[Any], run_id: int, detail: dict[str, Any], status: str
) -> None:
    with conn.transaction():
        conn.execute(RECORD_OUTCOME, {"run_id": run_id, "detail": Jsonb(detail), "status": status})


def _import_detail(report: ImportReport) -> dict[str, Any]:
    return {
        "lead_import": {
            "source": report.source, "lines_read": report.lines_read,
            "imported": report.imported, "already_imported": report.already_imported,
            "rejected": len(report.rejected), "skipped": report.skipped,
        }
    }  # fmt: skip


def run_lead_branch(
    conn: psycopg.Connection[Any],
    request: WorkflowRequest,
    run_id: int,
    csv_path: Path,
    progress: Progress | None,
) -> ImportReport:
    report = import_csv(
        conn,
        csv_path,
        workflow_run_id=run_id,
        only_external_id=request.test_company_id,
        batch_rows=request.batch_size,
        progress=progress,
    )
    if request.test_company_id is not None and report.matched == 0:
        record_outcome(conn, run_id, _import_detail(report), "failed")
        raise WorkflowError(
            f"TEST_COMPANY_ID {request.test_company_id}: no line of {csv_path.name} has that "
            "company_id; nothing was imported"
        )
    record_outcome(conn, run_id, _import_detail(report), "running")
    return report


def start_workflow(
    conn: psycopg.Connection[Any], request: WorkflowRequest, *, progress: Progress | None = None
) -> WorkflowRun:
    """Checks the keys, records the run and starts its built branches. Commits as it goes (the
    run row first, then each import batch), so `conn` must not be inside a transaction.
    Raises UnmappedProcessKey, NothingBuilt, WorkflowError, or IntakeFileError."""
    not_built = check_buildable(request)
    with conn.transaction():
        check_process_keys(conn, request)
    csv_path = lead_csv(request)
    run_id = record_run(conn, request, csv_path.name)
    report = run_lead_branch(conn, request, run_id, csv_path, progress)
    return WorkflowRun(run_id, request.workflow, request.run_branches, not_built, report)


# -- following --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunProgress:
    companies: int
    awaiting_validation: int
    stopped_at_intake: int
    enriching: int
    enriched: int

    @property
    def finished(self) -> int:
        return self.stopped_at_intake + self.enriched

    @property
    def done(self) -> bool:
        return self.finished == self.companies

    def summary(self) -> str:
        return (
            f"{self.finished}/{self.companies} companies finished "
            f"(awaiting validation {self.awaiting_validation}, enriching {self.enriching}, "
            f"enriched {self.enriched}, stopped at intake {self.stopped_at_intake})"
        )


def run_progress(conn: psycopg.Connection[Any], run_id: int) -> RunProgress:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(RUN_PROGRESS, {"run_id": run_id}).fetchone()
    assert row is not None  # an aggregate always returns a row
    return RunProgress(**row)


def complete_run(conn: psycopg.Connection[Any], run_id: int) -> None:
    with conn.transaction():
        conn.execute(COMPLETE_RUN, {"run_id": run_id})
