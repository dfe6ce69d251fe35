"""POST /webhooks/trigger/{workflow}: seed 000's manual workflow trigger.

The body (every field optional; an absent one falls back to seed 000's environment variables,
as `cascade kickoff` does: BLUEPRINT_ID, LEAD_UNIQUE_ID, BATCH_SIZE, TEST_COMPANY_ID,
CSV_FILE_PATH, CUSTOM_BRANCHES):

    {"batch_size": 25, "blueprint_id": "PLE-001", "unique_id": "04.01.01.01.20000.001",
     "test_company_id": "cmp_12345", "csv_path": "/data/leads.csv",
     "branches": ["lead"]}                      # custom workflows only

`begin` does, before answering, everything that can refuse the request: the branches that are
built, the process keys (seed 000's UNMAPPED UNIQUE_ID), the CSV's header; then it records
the run. `import_leads` loads the CSV afterwards, in a worker thread, so a large file never
holds the request past the seed's 30-second webhook timeout; its batches commit as they go
and the enrichment cascade starts on the first. These are cascade/workflows.py's own steps,
in start_workflow's order, split at the point where the run id is known.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, PositiveInt

from cascade import workflows
from cascade.database import PROJECT_ROOT
from cascade.web.http import ApiError
from cascade.workflows import Branch, WorkflowRequest

log = logging.getLogger("cascade.web")


class TriggerBody(BaseModel):
    # A misspelt field would otherwise fall back to the environment without a word.
    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: PositiveInt | None = None
    blueprint_id: str | None = None
    unique_id: str | None = None
    test_company_id: str | None = None
    csv_path: str | None = None
    branches: list[Branch] | None = None


def import_folder(environ: Mapping[str, str]) -> Path:
    """The folder a request's csv_path must lie in: CASCADE_IMPORT_DIR, by default the shipped
    samples. A webhook caller names files on our disk, so it may not name just any file;
    CSV_FILE_PATH, set by the operator, is trusted as it is."""
    return Path(environ.get("CASCADE_IMPORT_DIR") or PROJECT_ROOT / "samples").resolve()


def confined(csv_path: str, environ: Mapping[str, str]) -> Path:
    folder = import_folder(environ)
    try:
        path = (folder / csv_path).resolve()  # relative to the folder; symlinks and .. resolved
    except (ValueError, OSError):  # a NUL byte, a loop of links
        path = None
    if path is None or not path.is_relative_to(folder):
        raise ApiError(
            422,
            "csv_path_refused",
            f"csv_path must name a file inside the import folder {folder} (CASCADE_IMPORT_DIR)",
            {"csv_path": csv_path},
        )
    return path


def request_for(
    workflow: str, body: TriggerBody, correlation_id: str, environ: Mapping[str, str]
) -> WorkflowRequest:
    """The workflow request; raises pydantic.ValidationError for a value it refuses, and
    ApiError for a csv_path outside the import folder."""
    fields = body.model_dump()
    if body.csv_path is not None:
        fields["csv_path"] = confined(body.csv_path, environ)
    return WorkflowRequest.from_env(
        environ,
        workflow=workflow,
        requested_by="webhook",
        correlation_id=correlation_id,
        **fields,
    )


@dataclass(frozen=True)
class Started:
    run_id: int
    branches: tuple[Branch, ...]
    not_built: tuple[str, ...]
    csv_path: Path


def begin(url: str, request: WorkflowRequest) -> Started:
    """Checks and records the run (blocking: call it in a thread). Raises NothingBuilt,
    UnmappedProcessKey, WorkflowError or IntakeFileError, having recorded nothing."""
    not_built = workflows.check_buildable(request)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            workflows.check_process_keys(conn, request)
        csv_path = workflows.lead_csv(request)
        run_id = workflows.record_run(conn, request, csv_path.name)
    return Started(run_id, request.run_branches, not_built, csv_path)


def import_leads(url: str, request: WorkflowRequest, started: Started) -> None:
    """The lead branch's import (blocking: run it in a thread). A failure closes the run as
    failed with the reason, since no caller is left to tell."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            workflows.run_lead_branch(conn, request, started.run_id, started.csv_path, None)
        except Exception as exc:
            log.exception("workflow run %s: lead import failed", started.run_id)
            detail: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
            workflows.record_outcome(conn, started.run_id, detail, "failed")
