"""Where the database is, and bringing it up to date.

`DATABASE_URL` (or `NEON_DATABASE_URL`) names a server; with neither set, Cascade runs an
embedded PostgreSQL (the `pgserver` package) whose data lives in a project-local folder and is
reused across runs. `prepare_database` is the one function that production, the CLI and the
test template all call: yoyo migrations first, then every file of `triggers/` in name order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, LiteralString
from urllib.parse import urlsplit, urlunsplit

import psycopg
from yoyo import get_backend, read_migrations

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = PROJECT_ROOT / "schema"
TRIGGERS_DIR = PROJECT_ROOT / "triggers"
DEFAULT_EMBEDDED_DIR = PROJECT_ROOT / ".cascade" / "pgdata"

# Serialises trigger application when several processes start at once (docker's migrate
# service and a listener, say): CREATE OR REPLACE on one function from two sessions can fail.
LOCK_TRIGGERS: LiteralString = "SELECT pg_advisory_xact_lock(1667331939, 2)"

log = logging.getLogger("cascade.database")


def configured_url(environ: Mapping[str, str] = os.environ) -> str | None:
    """The server the user named, if any: DATABASE_URL, else NEON_DATABASE_URL."""
    return environ.get("DATABASE_URL") or environ.get("NEON_DATABASE_URL") or None


@contextlib.contextmanager
def embedded_postgres(data_dir: Path = DEFAULT_EMBEDDED_DIR) -> Iterator[str]:
    """Starts (or joins) the embedded server on `data_dir`, yields its URL, stops it on exit."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime folder at import and never uses it here.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import get_server  # only the embedded mode needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    log.info("embedded PostgreSQL running", extra={"data_dir": str(data_dir)})
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        log.info("embedded PostgreSQL stopped", extra={"data_dir": str(data_dir)})


@contextlib.contextmanager
def database_url(environ: Mapping[str, str] = os.environ) -> Iterator[str]:
    """The configured server's URL, or an embedded server's for as long as the block runs."""
    url = configured_url(environ)
    if url is not None:
        yield url
        return
    data_dir = Path(environ.get("CASCADE_DATA_DIR", DEFAULT_EMBEDDED_DIR))
    with embedded_postgres(data_dir) as embedded_url:
        yield embedded_url


def _yoyo_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return f"postgresql+psycopg://{rest}"


def _migrations() -> Any:
    return read_migrations(str(SCHEMA_DIR))


@contextlib.contextmanager
def _yoyo_backend(url: str) -> Iterator[Any]:
    backend = get_backend(_yoyo_url(url))
    try:
        with backend.lock():
            yield backend
    finally:
        backend.connection.close()  # yoyo keeps it open; a template database must have none


def migrate(url: str) -> int:
    """Applies pending migrations; returns how many ran."""
    with _yoyo_backend(url) as backend:
        pending = backend.to_apply(_migrations())
        backend.apply_migrations(pending)
    return len(pending)


def rollback_all(url: str) -> int:
    """Rolls every applied migration back (tests and `cascade migrate --rollback-all`)."""
    with _yoyo_backend(url) as backend:
        applied = backend.to_rollback(_migrations())
        backend.rollback_migrations(applied)
    return len(applied)


def trigger_files() -> list[Path]:
    return sorted(TRIGGERS_DIR.glob("*.sql"))


def apply_triggers(url: str) -> list[str]:
    """Runs every triggers/*.sql file in name order, in one transaction; idempotent."""
    applied = []
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(LOCK_TRIGGERS)
        for path in trigger_files():
            # A whole file is one simple-protocol batch: its statements are ours, not input.
            conn.execute(path.read_text())
            applied.append(path.name)
    return applied


def prepare_database(url: str) -> None:
    """Migrations, then triggers: the one way a database is brought up to date."""
    ran = migrate(url)
    files = apply_triggers(url)
    log.info("database ready", extra={"migrations_applied": ran, "trigger_files": len(files)})


def with_database(url: str, dbname: str) -> str:
    """The same server's URL with another database name (keeps host, port, user, query)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def psql_executable() -> str:
    """The psql shipped with the embedded server (so it matches it), else the one on PATH."""
    from pgserver._commands import POSTGRES_BIN_PATH

    bundled = Path(POSTGRES_BIN_PATH) / "psql"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("psql")
    if found is None:
        raise FileNotFoundError("no psql: neither pgserver's nor one on PATH")
    return found
