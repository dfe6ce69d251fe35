"""A PostgreSQL server of a test's own, which the test may restart or crash.

The session's shared server must never go down under other tests, so a test that restarts
the server gets a dedicated embedded one (pgserver) in a folder of its own, migrated like the
test template. pgserver runs the server as the user that owns the data folder (`pgserver`
when the tests run as root), and pg_ctl must run as that user too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from cascade import database

SUPPORT_SCHEMA = Path(__file__).parent / "schema.sql"


def _pg_ctl_binary() -> Path:
    import pgserver  # only these tests need it

    return Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"


@dataclass(frozen=True)
class DedicatedServer:
    url: str
    data_dir: Path

    def pg_ctl(self, *args: str, check: bool = True) -> int:
        """Runs pg_ctl on this server's data folder as the folder's owner; returns its code."""
        owner: dict[str, Any] = {"user": "pgserver"} if os.geteuid() == 0 else {}
        with tempfile.TemporaryFile() as output:
            # Output to a file, not a pipe: a server started by pg_ctl would inherit the pipe.
            done = subprocess.run(
                [str(_pg_ctl_binary()), "-D", str(self.data_dir), *args],
                stdout=output,
                stderr=output,
                timeout=60,
                check=False,
                **owner,
            )
            output.seek(0)
            said = output.read().decode(errors="replace")
        if check and done.returncode != 0:
            raise AssertionError(f"pg_ctl {' '.join(args)} failed ({done.returncode}):\n{said}")
        return done.returncode

    def restart(self, mode: str = "fast") -> None:
        """Stops the server (`fast`: clean; `immediate`: a crash, recovered on start) and
        starts it again with the options it last ran with."""
        log = str(self.data_dir / "log")
        self.pg_ctl("-m", mode, "-w", "-l", log, "restart")

    def running(self) -> bool:
        return self.pg_ctl("status", check=False) == 0


@contextlib.contextmanager
def dedicated_server(data_dir: Path) -> Iterator[DedicatedServer]:
    """An embedded server on `data_dir` (outside pytest's tmp_path: see conftest's
    `scratch_folder`) with the engine's schema and the test fixtures in its
    `postgres` database; stopped on exit, however the test left it."""
    server: DedicatedServer | None = None
    try:
        with database.embedded_postgres(data_dir) as url:
            server = DedicatedServer(url, data_dir)
            database.prepare_database(url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(SUPPORT_SCHEMA.read_text())
            yield server
    finally:
        # pgserver stops only the postmaster it started; a restarted one is ours to stop.
        if server is not None and server.running():
            server.pg_ctl("-m", "immediate", "-w", "stop", check=False)
