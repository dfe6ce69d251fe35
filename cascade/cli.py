"""`cascade`: the one command line. `cascade --help` lists the subcommands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any, LiteralString

import psycopg
import uvicorn
from psycopg.rows import dict_row

from cascade import database, logs

DEFAULT_PORT = 8080

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


def cmd_up(args: argparse.Namespace) -> int:
    """Database, migrations and triggers, then the listener and the web app in one process."""
    from listener import Listener

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
            await listener.run()
            server.should_exit = True
            await asyncio.gather(web, logs_started)

        asyncio.run(both())
    return 0


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
        asyncio.run(serve(_listener_settings(url), _registry(args.handlers)))
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    with database.database_url() as url:
        database.prepare_database(url)
        _uvicorn_server(url, args.host, args.port).run()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with database.database_url() as url, psycopg.connect(url, row_factory=dict_row) as conn:
        report = {
            "queue": conn.execute(QUEUE_STATUS).fetchall(),
            "listeners": conn.execute(LISTENERS).fetchall(),
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


def cmd_not_built(args: argparse.Namespace) -> int:
    print(
        f"cascade {args.command}: not available yet; it arrives with the enrichment phase "
        "(issue 3). The event engine is running; see README.md.",
        file=sys.stderr,
    )
    return 2


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

    up = sub.add_parser("up", help="the main job: database, migrations, listener and web app")
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

    status = sub.add_parser("status", help="queue depth per event type and status, listeners")
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

    for name in ("kickoff", "import"):
        not_built = sub.add_parser(name, help="arrives with the enrichment phase (issue 3)")
        not_built.add_argument("rest", nargs="*")
        not_built.set_defaults(func=cmd_not_built)
    return parser


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
