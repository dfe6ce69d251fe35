"""Listeners in subprocesses (`python -m cascade.cli listen`), for tests that kill, signal or
multiply them. Each process writes its stderr to a file, so a failing test can show what the
listener said; `ListenerProcesses.close` kills whatever is still running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cascade.database import PROJECT_ROOT
from tests.support.waiting import eventually

# Short intervals so that a subprocess listener reacts within tests' timeouts.
QUICK_ENV: Mapping[str, str] = {
    "CASCADE_POLL_INTERVAL": "0.2",
    "CASCADE_LEASE_SECONDS": "2",
    "CASCADE_HEARTBEAT_INTERVAL": "0.5",
    "CASCADE_RESCUE_INTERVAL": "0.5",
    "CASCADE_LOG_LEVEL": "WARNING",
}


@dataclass
class ListenerProcess:
    name: str
    popen: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def assert_alive(self) -> None:
        """Fails the test at once, with the listener's stderr, if the process has died."""
        code = self.popen.poll()
        assert code is None, f"listener {self.name} exited with {code}:\n{self.stderr()}"

    def signal(self, signum: signal.Signals) -> None:
        self.popen.send_signal(signum)

    async def terminate(self) -> float:
        """SIGTERM, then waits for a clean exit (status 0); returns the seconds it took."""
        self.signal(signal.SIGTERM)
        signalled = time.monotonic()

        async def exited() -> bool:
            return self.exited()

        await eventually(exited, timeout=10)
        assert self.popen.returncode == 0, self.stderr()
        return time.monotonic() - signalled

    def kill(self) -> None:
        """SIGKILL, then reap: a crash, as far as the database can tell."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)


@dataclass
class ListenerProcesses:
    """Starts `cascade listen` subprocesses against one database."""

    database_url: str
    log_dir: Path
    started: list[ListenerProcess] = field(default_factory=list)

    def start(self, handlers: str, **settings: str) -> ListenerProcess:
        """A listener with `--handlers handlers`; `settings` are extra environment variables
        (CASCADE_DRAIN_TIMEOUT="1", say) on top of QUICK_ENV."""
        name = f"listener-{len(self.started) + 1}"
        env = {k: v for k, v in os.environ.items() if k != "CASCADE_HANDLERS"}
        env.update(QUICK_ENV)
        env.update(settings)
        env["DATABASE_URL"] = self.database_url
        stderr_path = self.log_dir / f"{name}.stderr"
        with stderr_path.open("wb") as stderr:
            popen = subprocess.Popen(
                [sys.executable, "-m", "cascade.cli", "listen", "--handlers", handlers],
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        process = ListenerProcess(name, popen, stderr_path)
        self.started.append(process)
        return process

    def assert_alive(self) -> None:
        for process in self.started:
            process.assert_alive()

    def close(self) -> None:
        """Kills every process still running and prints what each said (pytest shows it only
        when the test fails)."""
        for process in self.started:
            process.kill()
        for process in self.started:
            print(f"--- {process.name} (pid {process.pid}, exit {process.popen.returncode})")
            print(process.stderr())
