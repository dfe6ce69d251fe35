"""Scenarios 4 and 5: what emitting events costs the writers, and the listener's memory.

pgbench runs 4 clients for a fixed time, each transaction one INSERT with a durable commit
(synchronous_commit as the server has it: on), into a table whose row trigger emits an event
through marketing.emit_event. A Cascade listener runs throughout as its own process, exactly as
deployed (`python -m cascade.cli listen`, default settings, one no-op handler), and keeps up.
Variants, each in a fresh database:

* shipped: the statement-level wake trigger _900_wake_listeners as it is (NOTIFY only while
  a listener sleeps, behind a shared advisory lock);
* no NOTIFY: _900_wake_listeners disabled; the listener finds events by polling;
* plain NOTIFY (reference): _900 disabled and an unconditional pg_notify per transaction;
* no event (reference): the same INSERT into a table without any trigger.

The listener's resident memory is sampled with psutil every 50 ms; VmHWM (the kernel's peak)
is read from /proc before the listener is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import LiteralString

import asyncpg
import psutil  # type: ignore[import-untyped, unused-ignore]
import psycopg

from bench import probes
from bench.report import Measurement, Section, Verdict, fmt
from bench.server import BENCH_DIR, fresh_database, settle
from cascade import database

CLIENTS = 4
THREADS = 2
SECONDS = 10
SAMPLE_EVERY = 0.05  # seconds between RSS samples

DISABLE_WAKE: LiteralString = (
    "ALTER TABLE marketing.pipeline_events DISABLE TRIGGER _900_wake_listeners"
)
ATTACH_PLAIN_NOTIFY: LiteralString = """
    CREATE TRIGGER _900_bench_plain_notify
        AFTER INSERT ON marketing.pipeline_events
        FOR EACH STATEMENT EXECUTE FUNCTION bench.always_notify()
"""
# The listener's own connections (its pools set this application_name); their server processes'
# CPU time is the listener's cost on the database side, read with psutil when the server runs
# on this machine (the embedded one).
LISTENER_BACKENDS: LiteralString = """
    SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND application_name = 'cascade-listener'
"""
INSERT_LEAD = BENCH_DIR / "pgbench" / "insert_lead.sql"
INSERT_PLAIN_LEAD = BENCH_DIR / "pgbench" / "insert_plain_lead.sql"


@dataclass(frozen=True)
class Variant:
    name: str
    script: Path
    setup: tuple[LiteralString, ...] = ()
    listener: bool = True


SHIPPED = Variant("shipped wake trigger (NOTIFY only while a listener sleeps)", INSERT_LEAD)
NO_NOTIFY = Variant("no NOTIFY (_900_wake_listeners disabled)", INSERT_LEAD, (DISABLE_WAKE,))
PLAIN_NOTIFY = Variant(
    "plain pg_notify per transaction (reference)",
    INSERT_LEAD,
    (DISABLE_WAKE, ATTACH_PLAIN_NOTIFY),
)
NO_LISTENER = Variant(
    "shipped wake trigger, no listener running (reference: events pile up)",
    INSERT_LEAD,
    listener=False,
)
NO_EVENT = Variant("no trigger, no event (reference)", INSERT_PLAIN_LEAD)
VARIANTS = (SHIPPED, NO_NOTIFY, PLAIN_NOTIFY, NO_LISTENER, NO_EVENT)


@dataclass
class Outcome:
    inserts_per_s: float
    backlog_at_end: int  # events still unfinished when pgbench stopped
    drain_s: float  # then, seconds until none was left
    rss_peak_mib: float  # highest sample
    hwm_mib: float  # the kernel's VmHWM for the listener process
    listener_cpu: float  # the listener's CPU time over the pgbench run, in cores
    backends_cpu: float | None = None  # its server processes' CPU, in cores (embedded only)
    claim_ms: float = 0.0  # one claim after the run, before any VACUUM
    claim_plan: str = ""


def apply_setup(url: str, statements: tuple[LiteralString, ...]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def pgbench_binary() -> str:
    """The pgbench shipped with the embedded server's binaries, else the one on PATH."""
    import pgserver

    shipped = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
    found = str(shipped) if shipped.exists() else shutil.which("pgbench")
    if found is None:
        raise RuntimeError("pgbench not found (pgserver's or on PATH)")
    return found


def pgbench_command(script: Path, url: str) -> list[str]:
    return [
        pgbench_binary(), "--no-vacuum", "--protocol=prepared",
        f"--client={CLIENTS}", f"--jobs={THREADS}", f"--time={SECONDS}",
        f"--file={script}", url,
    ]  # fmt: skip


async def run_pgbench(script: Path, url: str) -> float:
    process = await asyncio.create_subprocess_exec(
        *pgbench_command(script, url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.decode())
    if process.returncode or match is None:
        raise RuntimeError(f"pgbench failed: {err.decode()}")
    return float(match.group(1))


async def start_listener(url: str) -> asyncio.subprocess.Process:
    environment = {**os.environ, "DATABASE_URL": url, "CASCADE_LOG_LEVEL": "WARNING"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cascade.cli",
        "listen",
        "--handlers",
        "bench.handlers:LEADS",
        cwd=BENCH_DIR.parent,
        env=environment,
    )


async def sample_rss(process: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        await asyncio.sleep(SAMPLE_EVERY)


async def backend_cpu_times(url: str) -> dict[int, float]:
    """CPU seconds so far of each of the listener's server processes."""
    conn = await asyncpg.connect(url)
    try:
        pids = [r["pid"] for r in await conn.fetch(LISTENER_BACKENDS)]
    finally:
        await conn.close()
    times = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times[pid] = sum(psutil.Process(pid).cpu_times()[:2])
    return times


def high_water_mark(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def measure(server: str, variant: Variant) -> Outcome:
    local_server = database.configured_url() is None
    with fresh_database(server, "writers") as url:
        apply_setup(url, variant.setup)
        settle(url)
        if not variant.listener:
            rate = await run_pgbench(variant.script, url)
            return Outcome(rate, await probes.unfinished(url), 0.0, 0.0, 0.0, 0.0)
        listener = await start_listener(url)
        try:
            await probes.wait_until_asleep(url)
            watched = psutil.Process(listener.pid)
            peak, stop = [0], asyncio.Event()
            sampler = asyncio.create_task(sample_rss(watched, peak, stop))
            cpu_before = sum(watched.cpu_times()[:2])
            backends_before = await backend_cpu_times(url) if local_server else {}
            rate = await run_pgbench(variant.script, url)
            cpu = (sum(watched.cpu_times()[:2]) - cpu_before) / SECONDS
            backends = None
            if local_server:
                after = await backend_cpu_times(url)
                used = sum(t - backends_before.get(pid, 0.0) for pid, t in after.items())
                backends = used / SECONDS
            backlog = await probes.unfinished(url)
            drain = await probes.wait_until_drained(url)
            claim_ms, claim_plan = await probes.time_claims(url, 20)
            stop.set()
            await sampler
            hwm = high_water_mark(listener.pid)
        finally:
            if listener.returncode is None:
                listener.send_signal(signal.SIGTERM)
            await listener.wait()
    mib = 1024 * 1024
    return Outcome(
        rate, backlog, drain, peak[0] / mib, hwm / mib, cpu, backends, claim_ms, claim_plan
    )


async def writers_cost(server: str, repeats: int) -> Section:
    outcomes: dict[str, list[Outcome]] = {v.name: [] for v in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            outcomes[variant.name].append(await measure(server, variant))
    command = " ".join(pgbench_command(Path("<script>"), "<fresh database url>"))
    section = Section(
        "4-5. Cost to writers, and the listener's memory",
        f"`{command}` with bench/pgbench/insert_lead.sql (or insert_plain_lead.sql for the "
        f"no-event reference); {repeats} interleaved runs per variant, median reported. A "
        "listener (`python -m cascade.cli listen --handlers bench.handlers:LEADS`) runs "
        "throughout every variant; backlog = events unfinished when pgbench stopped, drained "
        "in the time given.",
    )
    for variant in VARIANTS:
        runs = outcomes[variant.name]
        detail = f"unfinished events at end {max(o.backlog_at_end for o in runs):,}"
        if variant.listener:
            detail += (
                f", drained in ≤ {max(o.drain_s for o in runs):.2f} s; listener process CPU "
                f"{statistics.median(o.listener_cpu for o in runs):.2f} cores"
            )
            backends = [o.backends_cpu for o in runs if o.backends_cpu is not None]
            if backends:
                detail += f", its server processes {statistics.median(backends):.2f} cores"
            if variant.script == INSERT_LEAD:
                claim = statistics.median(o.claim_ms for o in runs)
                detail += f"; an empty claim afterwards {claim:.2f} ms ({runs[-1].claim_plan})"
        section.measurements.append(
            Measurement(
                section.title,
                variant.name,
                "inserts/s",
                [o.inserts_per_s for o in runs],
                "tx/s",
                detail,
            )
        )
    shipped = outcomes[SHIPPED.name]
    section.measurements.append(
        Measurement(
            section.title,
            "listener, shipped variant",
            "peak RSS (sampled)",
            [o.rss_peak_mib for o in shipped],
            "MiB",
            f"VmHWM {max(o.hwm_mib for o in shipped):.1f} MiB",
        )
    )
    every = [o for v in VARIANTS if v.listener for o in outcomes[v.name]]
    section.measurements.append(
        Measurement(
            section.title,
            "listener, all variants",
            "peak RSS (sampled)",
            [max(o.rss_peak_mib for o in every)],
            "MiB",
            f"VmHWM {max(o.hwm_mib for o in every):.1f} MiB",
        )
    )
    cascade = statistics.median(o.inserts_per_s for o in shipped)
    silent = statistics.median(o.inserts_per_s for o in outcomes[NO_NOTIFY.name])
    section.verdicts.append(
        Verdict(
            section.title,
            "shipped ≥ 90% of no NOTIFY",
            f"{100 * cascade / silent:.0f}% ({fmt(cascade)} vs {fmt(silent)} inserts/s)",
            cascade >= 0.9 * silent,
        )
    )
    return section
