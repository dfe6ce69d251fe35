"""The server the benchmarks run on, a fresh database per measurement, and the machine's facts.

The server is DATABASE_URL's, or an embedded PostgreSQL whose data lives in bench/.pgdata.
Every measurement gets its own database, migrated by cascade.database.prepare_database (the
one function production calls) and given bench/schema.sql's fixtures, so that no run sees
another's rows, dead tuples or index bloat.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import LiteralString

import psycopg
from psycopg import sql

from cascade import database

BENCH_DIR = Path(__file__).resolve().parent
EMBEDDED_DATA_DIR = BENCH_DIR / ".pgdata"
FIXTURES = BENCH_DIR / "schema.sql"
# What "the engine" is, for the revision recorded with the results.
ENGINE_PATHS = ("listener.py", "cascade", "schema", "triggers")

CREATE_DATABASE: LiteralString = "CREATE DATABASE {}"
DROP_DATABASE: LiteralString = "DROP DATABASE IF EXISTS {} WITH (FORCE)"
# Before a timed run: fresh statistics and visibility map, and no checkpoint debt left over
# from the bulk load to be paid in the middle of the measurement.
VACUUM_EVENTS: LiteralString = "VACUUM ANALYZE marketing.pipeline_events"
CHECKPOINT: LiteralString = "CHECKPOINT"
SERVER_FACTS: LiteralString = """
    SELECT version() AS version,
           current_setting('shared_buffers') AS shared_buffers,
           current_setting('fsync') AS fsync,
           current_setting('synchronous_commit') AS synchronous_commit,
           current_setting('wal_sync_method') AS wal_sync_method,
           current_setting('max_connections') AS max_connections
"""


@contextlib.contextmanager
def server_url() -> Iterator[str]:
    """DATABASE_URL's server, or the embedded one for as long as the block runs."""
    configured = database.configured_url()
    if configured is not None:
        yield configured
        return
    with database.embedded_postgres(EMBEDDED_DATA_DIR) as url:
        yield url


@contextlib.contextmanager
def fresh_database(server: str, label: str) -> Iterator[str]:
    """A new database on `server`, migrated and with the bench fixtures; dropped on exit."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL(CREATE_DATABASE).format(sql.Identifier(name)))
    url = database.with_database(server, name)
    try:
        database.prepare_database(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FIXTURES.read_text())
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL(DROP_DATABASE).format(sql.Identifier(name)))


def settle(url: str) -> None:
    """Vacuums the event table and checkpoints (CHECKPOINT needs superuser or pg_checkpoint;
    on a server that refuses it the run goes on without)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(VACUUM_EVENTS)
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute(CHECKPOINT)


def machine_facts(
    server: str, packages: tuple[str, ...] = ("asyncpg", "pgqueuer")
) -> dict[str, str]:
    """What RESULTS.md records about the machine, the server and the client; `packages` are
    the client's packages whose versions matter to the benchmark at hand."""
    with psycopg.connect(server) as conn:
        row = conn.execute(SERVER_FACTS).fetchone()
        assert row is not None
        version, shared_buffers, fsync, synchronous_commit, wal_sync_method, max_conn = row
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "ram": _memory_total(),
        "kernel": platform.release(),
        "postgresql": str(version),
        "postgresql settings": (
            f"shared_buffers={shared_buffers} fsync={fsync} "
            f"synchronous_commit={synchronous_commit} wal_sync_method={wal_sync_method} "
            f"max_connections={max_conn}"
        ),
        "server": "DATABASE_URL" if database.configured_url() else "embedded (pgserver)",
        "cascade revision": _revision(),
        "python": platform.python_version(),
        "packages": ", ".join(f"{name} {_installed(name)}" for name in packages),
    }


def _installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _revision() -> str:
    """The commit measured, and whether the engine's files differed from it."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *ENGINE_PATHS],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown (no git)"
    return f"{head or 'unknown'}{' with uncommitted engine changes' if dirty else ''}"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            kib = int(line.split()[1])
            return f"{kib / 1024 / 1024:.1f} GiB"
    return "unknown"
