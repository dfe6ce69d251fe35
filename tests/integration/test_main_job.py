"""The main job, as a user runs it: `cascade up` brings up the database (embedded when
DATABASE_URL is unset, kept across runs, stopped on exit), the listener and the web app; on
the embedded database it runs the shipped sample through Phase 1 and prints the metrics (a
second run imports nothing new); SIGTERM stops them all cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from cascade.barton import is_valid_barton_id
from cascade.database import PROJECT_ROOT
from tests.support.waiting import eventually

SEED_MANUAL_EVENT = """
    INSERT INTO marketing.pipeline_events (event_type, payload, status)
    VALUES ('company_created',
            jsonb_build_object('record_id', 999, 'company_name', 'Test Company',
                               'website', 'https://test.com', 'trigger_time', NOW()),
            'pending')
"""


SAMPLE_COMPANIES = "SELECT count(*) FROM marketing.company_master"
PHASE1_METRICS = (
    "validation_success_rate",
    "email_enrichment_rate",
    "email_deliverability",
    "end_to_end_latency_p95",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class CascadeUp:
    """`cascade up` in a subprocess, with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cascade.cli", "up", "--port", str(self.port)],
            cwd=PROJECT_ROOT,
            env={**env, "CASCADE_LOG_LEVEL": "INFO", "CASCADE_HEARTBEAT_INTERVAL": "0.5"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    async def showed_metrics(self) -> bool:
        """Whether the sample's Phase 1 metrics table has been printed, all four rows."""
        assert self.process.poll() is None, self.log()
        log = self.log()
        return "Phase 1 (enrichment) success metrics" in log and all(
            metric in log for metric in PHASE1_METRICS
        )

    async def ready(self) -> bool:
        assert self.process.poll() is None, self.log()
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{self.base_url}/ready")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            self._log.close()


@pytest.fixture
def env_without_database() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "NEON_DATABASE_URL"}}


async def test_cascade_up__serves_health_and_processes_events_then_stops_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    up = CascadeUp({**os.environ, "DATABASE_URL": database_url}, tmp_path / "up.log")
    try:
        await eventually(up.ready, timeout=30)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{up.base_url}/health")
        assert health.json() == {"status": "ok"}
        assert f'"url": "{up.base_url}"' in up.log()

        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(SEED_MANUAL_EVENT)

            async def promoted() -> str:
                barton_id: str | None = await conn.fetchval(
                    "SELECT barton_id FROM marketing.company_master WHERE domain = 'test.com'"
                )
                return barton_id or ""

            # Seed 003's hand-made event runs the enrichment cascade like an intake row.
            assert is_valid_barton_id(await eventually(promoted, timeout=10))
        finally:
            await conn.close()
    finally:
        returncode = up.stop()
    assert returncode == 0, up.log()
    assert '"message": "listener stopped"' in up.log()


async def test_cascade_up__without_database_url_runs_an_embedded_server_kept_across_runs(
    env_without_database: dict[str, str], scratch: Path, tmp_path: Path
) -> None:
    data_dir = scratch / "pgdata"
    env = {**env_without_database, "CASCADE_DATA_DIR": str(data_dir)}
    embedded_url = f"postgresql://postgres:@/postgres?host={data_dir}"

    first = CascadeUp(env, tmp_path / "first.log")
    try:
        await eventually(first.ready, timeout=60)
        await eventually(first.showed_metrics, timeout=120)
        conn = await asyncpg.connect(embedded_url)
        assert await conn.fetchval(SAMPLE_COMPANIES) == 288
        await conn.execute(
            "INSERT INTO marketing.shq_guardrails "
            "(guardrail_key, kind, limit_value, unit, period, description) "
            "VALUES ('kept', 'budget', 1, 'USD', '1 day', 'survives a restart')"
        )
        await conn.close()
    finally:
        assert first.stop() == 0, first.log()
    assert not (data_dir / "postmaster.pid").exists(), "the embedded server was left running"

    second = CascadeUp(env, tmp_path / "second.log")
    try:
        await eventually(second.ready, timeout=60)
        await eventually(second.showed_metrics, timeout=60)
        conn = await asyncpg.connect(embedded_url)
        assert await conn.fetchval(SAMPLE_COMPANIES) == 288  # imported again: nothing new
        kept = await conn.fetchval(
            "SELECT description FROM marketing.shq_guardrails WHERE guardrail_key = 'kept'"
        )
        await conn.close()
    finally:
        assert second.stop() == 0, second.log()
    assert kept == "survives a restart"
