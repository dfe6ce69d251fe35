"""`cascade`: the one command line. `cascade --help` lists the subcommands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, LiteralString, TypeVar

import asyncpg
import psycopg
import pydantic
import uvicorn
from psycopg.rows import dict_row

from cascade import database, logs, showcase
from cascade.intake import ImportReport
from cascade.web import auth
from cascade.web.fields import whole_number
from cascade.workflows import BRANCHES, WORKFLOWS

DEFAULT_PORT = 8080
PROGRESS_FROM_LINES = 2000  # shorter files load in a moment; a progress line would be noise
DEFAULT_WAIT_TIMEOUT = 900.0  # seconds
WAIT_POLL_SECONDS = 1.0
# WorkflowRequest's fields as the user sets them, for error messages.
KICKOFF_SETTINGS = {
    "blueprint_id": "BLUEPRINT_ID",
    "unique_id": "LEAD_UNIQUE_ID",
    "batch_size": "BATCH_SIZE",
    "test_company_id": "TEST_COMPANY_ID",
    "csv_path": "CSV_FILE_PATH",
    "branches": "--branches / CUSTOM_BRANCHES",
}

QUEUE_STATUS: LiteralString = """
    SELECT event_type, status, count(*) AS events,
           round(extract(epoch FROM now() - min(created_at))::numeric, 1) AS oldest_age_s
      FROM marketing.pipeline_events
     WHERE status <> 'processed'
     GROUP BY event_type, status
     ORDER BY event_type, status
"""
LISTENERS: LiteralString = """
    SELECT listener_id, sleeping, round(extract(epoch FROM now() - heartbeat_at)::numeric, 1)
           AS heartbeat_age_s
      FROM marketing.listeners ORDER BY started_at
"""
DEAD_LETTERS: LiteralString = """
    SELECT event_id, event_type, record_id, attempts, last_error, died_at
      FROM marketing.vw_dead_letters ORDER BY event_id LIMIT %(limit)s
"""
REPLAY: LiteralString = "SELECT marketing.replay_dead_letters(%(ids)s, %(event_type)s)"

Result = TypeVar("Result")


def _port() -> int:
    return int(os.environ.get("PORT", DEFAULT_PORT))


class _SharedServer(uvicorn.Server):
    """uvicorn inside `cascade up`, where the command owns SIGTERM and SIGINT and stops the
    listener and the web app together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn_server(url: str, host: str, port: int, *, shared: bool = False) -> uvicorn.Server:
    from web import create_app

    config = uvicorn.Config(
        create_app(url), host=host, port=port, log_config=None, access_log=False
    )
    return (_SharedServer if shared else uvicorn.Server)(config)


def _listener_settings(url: str) -> Any:
    from listener import ListenerSettings

    return ListenerSettings.from_env(url)


def _registry(spec: str | None) -> Any:
    from listener import load_registry

    return load_registry(spec or os.environ.get("CASCADE_HANDLERS", "handlers:REGISTRY"))


# -- subcommands ------------------------------------------------------------------------------


def _wants_sample(args: argparse.Namespace) -> bool:
    """The sample runs on the embedded database unless switched off; on a configured one
    (someone's real data) only when asked for."""
    if args.sample is not None:
        return bool(args.sample)
    flag = os.environ.get("CASCADE_SAMPLE", "").strip().lower()
    if flag:
        return flag in {"1", "true", "yes", "on"}
    return database.configured_url() is None


def cmd_up(args: argparse.Namespace) -> int:
    """Database, migrations and triggers, then the listener and the web app in one process;
    on a fresh embedded database, the sample companies through Phase 1 (cascade/showcase.py)."""
    from listener import Listener

    sample = _wants_sample(args)
    with database.database_url() as url:
        database.prepare_database(url)
        listener = Listener(_listener_settings(url), _registry(args.handlers))
        server = _uvicorn_server(url, args.host, args.port, shared=True)

        async def both() -> None:
            loop = asyncio.get_running_loop()

            def stop() -> None:
                listener.stop()
                server.should_exit = True

            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop)
            web = asyncio.create_task(server.serve())
            logs_started = asyncio.create_task(_announce_web(server, args.host, args.port))
            sample_run: asyncio.Task[None] | None = None
            if sample:
                # After the web app is up: the sandbox Apify posts its results back to it.
                shown = showcase.show_phase1_quietly(url)
                sample_run = asyncio.create_task(_after(logs_started, shown))
            await listener.run()
            server.should_exit = True
            if sample_run is not None:
                sample_run.cancel()
            await asyncio.gather(web, logs_started, *([sample_run] if sample_run else []),
                                 return_exceptions=True)  # fmt: skip

        run_fast(both())
    return 0


async def _after(first: asyncio.Task[None], then: Coroutine[Any, Any, None]) -> None:
    await asyncio.shield(first)
    await then


async def _announce_web(server: uvicorn.Server, host: str, port: int) -> None:
    import logging

    # uvicorn offers no "started" event to wait on, only this flag.
    while not server.started and not server.should_exit:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if server.started:
        logging.getLogger("cascade.web").info(
            "web app listening", extra={"url": f"http://{host}:{port}", "health": "/health"}
        )


def cmd_migrate(args: argparse.Namespace) -> int:
    with database.database_url() as url:
        if args.rollback_all:
            print(f"rolled back {database.rollback_all(url)} migration(s)")
            return 0
        ran = database.migrate(url)
        files = database.apply_triggers(url)
        print(f"applied {ran} migration(s) and {len(files)} trigger file(s)")
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    from listener import serve

    with database.database_url() as url:
        database.prepare_database(url)
        run_fast(serve(_listener_settings(url), _registry(args.handlers)))
    return 0


def tune_gc() -> None:
    """Tells the cyclic garbage collector what a long-running server looks like: what exists
    at start (modules, routes, registry, settings) is frozen out of its scans, and it runs
    after 50,000 allocations instead of 700. Measured in the Phase 1 bench (gc.callbacks), it
    took 11 % of a listener's CPU in ~740 collections; now 4 % in 6, for ~2 MiB more memory.
    In the web app, a full collection walked the ~74,000 objects of the loaded app (~47 ms, a
    pause for every request in flight) every few hundred requests. Full collections still
    come every ten million allocations or so, for the cycles that exceptions and tracebacks
    leave behind. Call it once everything of the process's lifetime is loaded: start-up's
    garbage is collected first, so none of it is frozen for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def run_fast(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run on uvloop where it exists (not on Windows): the listener's work is mostly
    round trips to PostgreSQL, and uvloop's socket path costs a fraction of asyncio's. The
    garbage collector is tuned first (tune_gc)."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def cmd_web(args: argparse.Namespace) -> int:
    with database.database_url() as url:
        database.prepare_database(url)
        server = _uvicorn_server(url, args.host, args.port)
        tune_gc()
        server.run()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with database.database_url() as url, psycopg.connect(url, row_factory=dict_row) as conn:
        report = {
            "queue": conn.execute(QUEUE_STATUS).fetchall(),
            "listeners": conn.execute(LISTENERS).fetchall(),
            "phase1_metrics": conn.execute(showcase.PHASE1_METRICS).fetchall(),
        }
    print(json.dumps(report, indent=2, default=str))
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    with database.database_url() as url, psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute(DEAD_LETTERS, {"limit": args.limit}).fetchall()
    for row in rows:
        print(json.dumps(row, default=str))
    if not rows:
        print("no dead letters", file=sys.stderr)
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    if not (args.ids or args.event_type or args.all):
        print("say which: --id N (repeatable), --event-type TYPE, or --all", file=sys.stderr)
        return 2
    with database.database_url() as url, psycopg.connect(url) as conn:
        row = conn.execute(
            REPLAY, {"ids": args.ids or None, "event_type": args.event_type}
        ).fetchone()
    replayed = row[0] if row else 0
    print(f"replayed {replayed} dead letter(s)")
    return 0


def cmd_psql(psql_args: Sequence[str]) -> int:
    """psql on Cascade's database, e.g. `cascade psql -f maintenance/vacuum.sql`."""
    with database.database_url() as url:
        return subprocess.call([database.psql_executable(), url, *psql_args])


class _ImportProgress:
    """A progress line on stderr per batch, once a file is long enough to need one, and at
    most every `min_interval` seconds (kickoff's batches are small)."""

    def __init__(self, min_interval: float = 0.0) -> None:
        self.min_interval = min_interval
        self.last = -math.inf

    def __call__(self, report: ImportReport) -> None:
        now = time.monotonic()
        if report.lines_read <= PROGRESS_FROM_LINES or now - self.last < self.min_interval:
            return
        self.last = now
        print(
            f"{report.source}: {report.lines_read} lines read, {report.imported} imported, "
            f"{report.already_imported} already there, {len(report.rejected)} rejected ...",
            file=sys.stderr,
        )


def _print_import(report: ImportReport) -> None:
    print(report.summary())
    for rejection in report.rejected:
        print(f"line {rejection.line}: {rejection.reason}")


def _write_errors(path: Path, report: ImportReport) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("line", "reason"))
        writer.writerows((r.line, r.reason) for r in report.rejected)


def cmd_import(args: argparse.Namespace) -> int:
    from cascade.intake import IntakeFileError, check_file, import_csv

    try:
        check_file(args.file)  # a typo in the path fails before any database starts
        with database.database_url() as url:
            database.prepare_database(url)
            report = import_csv(url, args.file, progress=_ImportProgress())
    except IntakeFileError as exc:
        print(f"cascade import: {exc}", file=sys.stderr)
        return 2
    _print_import(report)
    if args.errors is not None:
        _write_errors(args.errors, report)
    return 1 if report.rejected else 0


def _kickoff_request(args: argparse.Namespace) -> Any:
    from cascade.workflows import WorkflowRequest

    user = os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
    return WorkflowRequest.from_env(
        workflow=args.workflow,
        csv_path=args.csv,
        branches=args.branches,
        requested_by=f"cli:{user}",
    )


def _request_problem(exc: pydantic.ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    setting = KICKOFF_SETTINGS.get(where, where)
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{setting}: {message}" if setting else message


def _follow(url: str, run_id: int, timeout: float) -> int:
    from cascade.workflows import complete_run, run_progress

    deadline = time.monotonic() + timeout
    last = None
    with psycopg.connect(url) as conn:
        while True:
            progress = run_progress(conn, run_id)
            if progress != last:
                print(f"run {run_id}: {progress.summary()}", file=sys.stderr)
                last = progress
            if progress.done:
                complete_run(conn, run_id)
                print(f"run {run_id}: completed")
                return 0
            if time.monotonic() >= deadline:
                print(
                    f"run {run_id}: not finished after {timeout:g}s; it goes on without "
                    "--wait. Is a listener running (`cascade up` or `cascade listen`)?",
                    file=sys.stderr,
                )
                return 3
            time.sleep(WAIT_POLL_SECONDS)  # a CLI poll: the run's progress has no signal


def cmd_kickoff(args: argparse.Namespace) -> int:
    from cascade import workflows
    from cascade.intake import IntakeFileError

    try:
        request = _kickoff_request(args)
        workflows.check_buildable(request)
    except pydantic.ValidationError as exc:
        print(f"cascade kickoff: {_request_problem(exc)}", file=sys.stderr)
        return 2
    except workflows.NothingBuilt as exc:
        print(exc, file=sys.stderr)
        return 2
    with database.database_url() as url:
        database.prepare_database(url)
        try:
            with psycopg.connect(url) as conn:
                run = workflows.start_workflow(conn, request, progress=_ImportProgress(1.0))
        except (workflows.WorkflowError, IntakeFileError) as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"run {run.id}: {run.workflow} (branches: {', '.join(run.branches)})")
        rejected = bool(run.lead_import and run.lead_import.rejected)
        if run.lead_import is not None:
            _print_import(run.lead_import)
        for message in run.not_built:
            print(message)
        if not args.wait:
            print(f"run {run.id} started; the listener carries it on (`cascade status`)")
            return 1 if rejected else 0
        return max(int(rejected), _follow(url, run.id, args.timeout))


def _token_creator() -> str:
    user = os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
    return f"cli:{user}"


def _on_database(work: Callable[[asyncpg.Connection], Awaitable[Result]]) -> Result:
    """`work` on one asyncpg connection to the prepared database: the token functions are
    the web app's (cascade/web/auth.py), so they speak its driver."""

    async def connected(url: str) -> Result:
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with database.database_url() as url:
        database.prepare_database(url)
        return asyncio.run(connected(url))


def cmd_token_create(args: argparse.Namespace) -> int:
    try:
        secret = _on_database(
            lambda conn: auth.create_token(conn, args.name, args.role, _token_creator())
        )
    except ValueError as exc:
        print(f"cascade token create: {exc}", file=sys.stderr)
        return 2
    # The secret alone on stdout, so `TOKEN=$(cascade token create ...)` captures just it.
    print(secret)
    print(
        f"token {auth.token_prefix(secret)} ({args.role}, {args.name!r}) created. Keep the "
        "secret above: it will not be shown again, only its hash is stored.",
        file=sys.stderr,
    )
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    tokens = _on_database(auth.list_tokens)
    for token in tokens:
        print(token.model_dump_json())
    if not tokens:
        print("no tokens", file=sys.stderr)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    number = whole_number(args.token) if len(args.token) <= 18 else None  # an id, or a prefix
    which: int | str = args.token if number is None else number
    try:
        revocation = _on_database(lambda conn: auth.revoke_token(conn, which))
    except LookupError as exc:
        print(f"cascade token revoke: {exc}", file=sys.stderr)
        return 1
    token = revocation.token
    was = "was already" if revocation.already_revoked else "is now"
    print(f"token {token.id} ({token.prefix}, {token.name!r}) {was} revoked "
          f"(revoked_at {token.revoked_at})")  # fmt: skip
    return 0


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cascade",
        description="Cascade: a Postgres-native outreach pipeline. With no DATABASE_URL, "
        "an embedded PostgreSQL is started in .cascade/pgdata.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def web_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        p.add_argument("--port", type=int, default=_port(), help="default: $PORT or 8080")

    def handler_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--handlers",
            help="handler registry as module:ATTRIBUTE (default: $CASCADE_HANDLERS or "
            "handlers:REGISTRY)",
        )

    up = sub.add_parser(
        "up",
        help="the main job: database, migrations, listener and web app",
        description="Database, migrations, triggers, the listener and the web app in one "
        "process. On the embedded database it also imports the shipped sample "
        "(samples/companies.csv) as a lead_only run and prints the Phase 1 metrics once the "
        "cascade settles; --no-sample (or CASCADE_SAMPLE=0) skips that, --sample asks for it "
        "on a configured DATABASE_URL.",
    )
    up.add_argument(
        "--sample", action=argparse.BooleanOptionalAction, default=None,
        help="import and follow the sample companies (default: on for the embedded database)",
    )  # fmt: skip
    web_options(up)
    handler_option(up)
    up.set_defaults(func=cmd_up)

    migrate = sub.add_parser("migrate", help="apply migrations, then triggers/")
    migrate.add_argument("--rollback-all", action="store_true", help="roll every migration back")
    migrate.set_defaults(func=cmd_migrate)

    listen = sub.add_parser("listen", help="run a listener (as many as you like, anywhere)")
    handler_option(listen)
    listen.set_defaults(func=cmd_listen)

    web = sub.add_parser("web", help="run the web app")
    web_options(web)
    web.set_defaults(func=cmd_web)

    status = sub.add_parser(
        "status", help="queue depth per event type and status, listeners, Phase 1 metrics"
    )
    status.set_defaults(func=cmd_status)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(
        dest="dlq_command", required=True
    )
    dlq_list = dlq.add_parser("list", help="list dead letters as JSON lines")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.set_defaults(func=cmd_dlq_list)
    replay = dlq.add_parser("replay", help="put dead letters back in the queue")
    replay.add_argument("--id", dest="ids", type=int, action="append", help="an event id")
    replay.add_argument("--event-type", help="every dead letter of this type")
    replay.add_argument("--all", action="store_true", help="every dead letter")
    replay.set_defaults(func=cmd_dlq_replay)

    sub.add_parser(
        "psql",
        help="psql on Cascade's database; the arguments go to psql "
        "(e.g. -f maintenance/vacuum.sql)",
        add_help=False,
    )

    importer = sub.add_parser(
        "import",
        help="import companies from a CSV file into intake (each starts the cascade)",
        description="Import companies from a CSV file with a header row. Columns: "
        "company_name and website (required), industry, employee_count, country, city, "
        "linkedin_url, company_id (optional; header names ignore case and spaces). Good lines "
        "are imported even when others are rejected; a line imported before is skipped. "
        "Exit status: 0 every line imported or already there, 1 some lines rejected, "
        "2 the file is unreadable or its header wrong.",
    )
    importer.add_argument("file", type=Path, metavar="FILE.csv", help="the CSV file")
    importer.add_argument(
        "--errors", type=Path, metavar="OUT.csv", help="also write rejected lines (line,reason)"
    )
    importer.set_defaults(func=cmd_import)

    kickoff = sub.add_parser(
        "kickoff",
        help="start a workflow run (seed 000): full_pipeline, lead_only, messaging_only, custom",
        description="Start a workflow run. Settings from the environment: BLUEPRINT_ID "
        "(default PLE-001), LEAD_UNIQUE_ID (default 04.01.01.01.20000.001), BATCH_SIZE (rows "
        "per import batch, default 50), CSV_FILE_PATH (the lead branch's CSV), TEST_COMPANY_ID "
        "(import only the line with that company_id), CUSTOM_BRANCHES (for custom). Only the "
        "lead branch is built; messaging and delivery are reported as not built. Exit status: "
        "0 started (or finished, with --wait), 1 some CSV lines rejected, 2 nothing started "
        "(bad settings, unmapped key, unreadable CSV, no built branch), 3 --wait timed out.",
    )
    kickoff.add_argument(
        "workflow", choices=WORKFLOWS, metavar="WORKFLOW", help=", ".join(WORKFLOWS)
    )
    kickoff.add_argument("--csv", type=Path, help="the lead branch's CSV (overrides CSV_FILE_PATH)")
    kickoff.add_argument(
        "--branches",
        type=_branch_list,
        help="for custom: comma-separated, from lead, messaging, delivery "
        "(overrides CUSTOM_BRANCHES)",
    )
    kickoff.add_argument(
        "--wait", action="store_true", help="follow the run until every company is finished"
    )
    kickoff.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_WAIT_TIMEOUT,
        help=f"seconds --wait follows the run (default {DEFAULT_WAIT_TIMEOUT:g})",
    )
    kickoff.set_defaults(func=cmd_kickoff)

    token = sub.add_parser(
        "token",
        help="API tokens for the operations API: create, list, revoke",
        description="Bearer tokens for the operations API. Roles, least to most: viewer "
        "(reads), ops (changes campaigns, replays), admin (also manages tokens). Only a "
        "token's hash is stored: its secret is printed once, by create.",
    ).add_subparsers(dest="token_command", required=True)
    token_create = token.add_parser(
        "create", help="make a token and print its secret (shown only this once)"
    )
    token_create.add_argument("--role", required=True, choices=auth.ROLES)
    token_create.add_argument("--name", required=True, help="who or what the token is for")
    token_create.set_defaults(func=cmd_token_create)
    token_list = token.add_parser(
        "list", help="list tokens as JSON lines (never the secret or its hash)"
    )
    token_list.set_defaults(func=cmd_token_list)
    token_revoke = token.add_parser("revoke", help="revoke a token by id or prefix")
    token_revoke.add_argument("token", metavar="ID|PREFIX", help="a token's id or prefix")
    token_revoke.set_defaults(func=cmd_token_revoke)
    return parser


def _branch_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if unknown := [name for name in names if name not in BRANCHES]:
        raise argparse.ArgumentTypeError(f"unknown branch(es): {', '.join(unknown)}")
    return names


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    logs.configure()
    if arguments[:1] == ["psql"]:
        # Everything after `psql` is psql's, options included; argparse would claim them.
        sys.exit(cmd_psql(arguments[1:]))
    args = build_parser().parse_args(arguments)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
