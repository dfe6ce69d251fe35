"""Phase 1 end to end: companies from a CSV through enrichment and verification, with the
production handlers and sandbox providers, on listeners run as separate processes.

    python -m bench.phase1 full  [--rows 10000] [--listeners 1 2] [--max-leased 16 64]
    python -m bench.phase1 bound [--rows 1000] [--latency-ms 200] [--concurrency 8 16 32]

Every run gets a fresh migrated database (bench/server.py: DATABASE_URL's server, or the
embedded one). The listeners (`python listener.py`, the production registry) start first and
are left to fall asleep; the clock starts when the import begins (cascade.intake.import_csv,
the CSV written by samples.make_companies) and stops when nothing is pending, processing or
retrying and no slot is open or waiting for a provider ("quiescent"). The last email_verified
event's finished_at, on the server's clock, is reported beside it.

`full` is the issue's 10,000-company run with no artificial latency, over a grid of listener
counts and CASCADE_MAX_LEASED values. `bound` adds CASCADE_SANDBOX_LATENCY_MS to every
provider call and varies the concurrency bounds, to show that throughput is then set by the
configured concurrency (see `predicted_bounds`), not by the engine.

Each run's raw numbers are written to bench/out/phase1/<label>.json, the listeners' logs
beside them, and a markdown summary to bench/out/phase1/<mode>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, LiteralString

import psycopg

from bench import probes
from bench.server import (
    BENCH_DIR,
    _cpu_model,
    _memory_total,
    _revision,
    fresh_database,
    server_url,
)
from cascade import database
from cascade.intake import import_csv
from samples.make_companies import write_csv

ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out" / "phase1"
# Seconds between looks at the database while the pipeline runs. The timings reported come from
# the server's own timestamps; this only sets the "to quiescent" resolution, and looking more
# often cost the server CPU the pipeline was being measured on.
POLL = 0.25
RSS_SAMPLE = 0.05  # seconds between RSS samples of each listener
TIMEOUT = 900.0  # seconds: a run that has not gone quiescent by then is reported as such
SEED = 7

# What the run's own variables override; anything a provider needs to go live is removed, so
# every provider is in sandbox mode whatever the caller's environment holds.
LIVE_CREDENTIALS = (
    "PEOPLEDATALABS_API_KEY", "PROSPEO_API_KEY", "APIFY_TOKEN", "MILLIONVERIFIER_API_KEY",
    "NEON_DATABASE_URL",
)  # fmt: skip
BASE_ENV = {
    "ENRICHMENT_PROVIDERS": "peopledatalabs,prospeo",  # Apify's sandbox needs the web app
    "VERIFICATION_UNKNOWN_RETRY_SECONDS": "0.1",
    "CASCADE_LOG_LEVEL": "WARNING",
}

SERVER_NOW: LiteralString = "SELECT clock_timestamp()"
# Each NOT EXISTS matches a partial index's predicate exactly, so none scans the table.
QUIESCENT: LiteralString = """
    SELECT NOT EXISTS (SELECT 1 FROM marketing.pipeline_events
                        WHERE status IN ('pending', 'failed'))
       AND NOT EXISTS (SELECT 1 FROM marketing.pipeline_events WHERE status = 'processing')
       AND NOT EXISTS (SELECT 1 FROM marketing.company_slots
                        WHERE status IN ('open', 'awaiting_provider'))
       AND EXISTS (SELECT 1 FROM intake.company_raw_intake)
"""
# Per event type: how many, how often retried, and the window in which that stage ran, in
# seconds from the start of the import (%(start)s, the server's clock then).
STAGES: LiteralString = """
    SELECT event_type, status, count(*) AS events, sum(attempts) AS attempts,
           extract(epoch FROM min(started_at) - %(start)s) AS first_start,
           extract(epoch FROM max(finished_at) - %(start)s) AS last_finish,
           avg(duration_ms) AS mean_ms,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms
      FROM marketing.pipeline_events
     GROUP BY event_type, status
     ORDER BY min(id)
"""
ROW_COUNTS: LiteralString = """
    SELECT 'intake ' || status, count(*) FROM intake.company_raw_intake GROUP BY status
    UNION ALL SELECT 'company ' || status, count(*) FROM marketing.company_master GROUP BY status
    UNION ALL SELECT 'slot ' || status, count(*) FROM marketing.company_slots GROUP BY status
    UNION ALL SELECT 'contact ' || status, count(*)
                FROM marketing.contact_enrichment GROUP BY status
    UNION ALL SELECT 'verdict ' || verdict, count(*)
                FROM marketing.email_verification GROUP BY verdict
    UNION ALL SELECT 'call ' || provider || ' ' || status, count(*)
                FROM marketing.provider_attempts GROUP BY provider, status
    ORDER BY 1
"""
LAST_ERRORS: LiteralString = """
    SELECT event_type, left(last_error, 200) AS error, count(*)
      FROM marketing.pipeline_events WHERE status = 'dead'
     GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10
"""
# The server processes of this database (the listeners' pools, the importer's and ours).
BACKENDS: LiteralString = """
    SELECT pid FROM pg_stat_activity WHERE datname = current_database()
"""
# The server's own CPU time is not visible from here when it runs elsewhere; transactions are.
XACTS: LiteralString = """
    SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()
"""


# -- one run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    label: str
    rows: int
    listeners: int
    max_leased: int
    provider_concurrency: int = 8
    latency_ms: float = 0.0
    workers: int | None = None  # CASCADE_WORKERS; None: the default (2)
    profile: bool = False  # run each listener under pyinstrument (bench-only dependency)

    def environ(self, url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in LIVE_CREDENTIALS}
        env.update(BASE_ENV)
        env.update(
            DATABASE_URL=url,
            CASCADE_MAX_LEASED=str(self.max_leased),
            PROVIDER_CONCURRENCY=str(self.provider_concurrency),
            CASCADE_SANDBOX_LATENCY_MS=f"{self.latency_ms:g}",
        )
        if self.workers is not None:
            env["CASCADE_WORKERS"] = str(self.workers)
        return env


@dataclass
class Result:
    config: Config
    import_seconds: float = 0.0
    imported: int = 0
    to_last_verified: float | None = None  # seconds, import start -> last email_verified done
    to_quiescent: float | None = None  # seconds, import start -> nothing left to do
    events_processed: int = 0
    events_dead: int = 0
    server_transactions: int = 0
    listener_startup: float = 0.0  # seconds until every listener was asleep
    peak_rss_mib: list[float] = field(default_factory=list)  # sampled VmRSS, per listener
    vm_hwm_mib: list[float] = field(default_factory=list)  # the kernel's peak, per listener
    listener_cpu_seconds: list[float] = field(default_factory=list)
    machine_cpu_busy: float = 0.0  # share of all cores busy during the run (all processes)
    busy_before: float = 0.0  # share of all cores busy in the quiet check before the run
    # Seconds of CPU a fixed pure-Python loop took just before and just after the run: this
    # machine's cores run at different speeds from one minute to the next (a shared host), so
    # runs are comparable only beside this.
    speed_probe: tuple[float, float] = (0.0, 0.0)
    # CPU seconds during the run: the listeners, their server processes (and the importer's),
    # the bench process, and everything else on the machine (other work sharing it).
    cpu_breakdown: dict[str, float] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    dead_reasons: list[list[Any]] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events_processed / self.to_quiescent if self.to_quiescent else 0.0


def run_one(server: str, config: Config, csv_path: Path) -> Result:
    result = Result(config)
    with fresh_database(server, "phase1") as url, _listeners(url, config) as procs:
        began = time.perf_counter()
        asyncio.run(_all_asleep(url, config.listeners))
        result.listener_startup = time.perf_counter() - began
        result.busy_before = _wait_for_quiet()
        probe_before = speed_probe()
        samplers = [_RssSampler(p.pid) for p in procs]
        with psycopg.connect(url, autocommit=True) as conn, _machine_cpu() as busy:
            xacts_before = _scalar(conn, XACTS)
            cpu_before = _all_cpu()
            started = time.perf_counter()
            server_start = _scalar(conn, SERVER_NOW)
            result.imported = import_csv(url, csv_path).imported
            result.import_seconds = time.perf_counter() - started
            result.to_quiescent = _wait_quiescent(conn, started)
            backends = {int(pid) for (pid,) in conn.execute(BACKENDS).fetchall()}
            cpu_after = _all_cpu()
            result.server_transactions = _scalar(conn, XACTS) - xacts_before
        result.machine_cpu_busy = busy()
        result.cpu_breakdown = _breakdown(
            cpu_before, cpu_after, {p.pid for p in procs}, backends, busy_seconds=busy.seconds
        )
        for sampler in samplers:
            sampler.stop()
        result.peak_rss_mib = [s.peak_mib for s in samplers]
        result.vm_hwm_mib = [_proc_status_mib(p.pid, "VmHWM") for p in procs]
        result.listener_cpu_seconds = [_cpu_seconds(p.pid) for p in procs]
        _collect(url, server_start, result)
    result.speed_probe = (probe_before, speed_probe())
    return result


def speed_probe() -> float:
    """CPU seconds for ten million additions in pure Python: ~0.87 s when this machine's cores
    run at full speed (seen 0.87 to 1.7 s on the same machine within minutes)."""
    begin = time.process_time()
    total = 0
    for number in range(10_000_000):
        total += number
    return time.process_time() - begin


@contextlib.contextmanager
def _listeners(url: str, config: Config) -> Iterator[list[subprocess.Popen[bytes]]]:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    env = config.environ(url)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for n in range(config.listeners):
            log = (OUT_DIR / f"{config.label}.listener{n}.log").open("wb")
            logs.append(log)
            command = [sys.executable, "listener.py"]
            if config.profile:
                report = OUT_DIR / f"{config.label}.listener{n}.profile.txt"
                command[1:1] = ["-m", "pyinstrument", "--renderer", "text", "-o", str(report)]
            procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stderr=log, stdout=log))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


async def _all_asleep(url: str, listeners: int) -> None:
    await probes.wait_until_asleep(url)
    if listeners > 1:  # wait_until_asleep returns on the first; give the rest a moment
        await asyncio.sleep(1.0)


def _wait_quiescent(conn: psycopg.Connection[Any], started: float) -> float | None:
    deadline = started + TIMEOUT
    while time.perf_counter() < deadline:
        if _scalar(conn, QUIESCENT):
            return time.perf_counter() - started
        time.sleep(POLL)
    return None


def _collect(url: str, server_start: Any, result: Result) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(STAGES, {"start": server_start})
        columns = [d.name for d in cur.description or ()]
        result.stages = [
            {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "is_finite") else v)
             for k, v in zip(columns, row, strict=True)}
            for row in cur.fetchall()
        ]  # fmt: skip
        result.rows = {name: int(n) for name, n in conn.execute(ROW_COUNTS).fetchall()}
        result.dead_reasons = [list(r) for r in conn.execute(LAST_ERRORS).fetchall()]
    processed = [s for s in result.stages if s["status"] == "processed"]
    result.events_processed = int(sum(s["events"] for s in processed))
    result.events_dead = int(sum(s["events"] for s in result.stages if s["status"] == "dead"))
    verified = [s for s in processed if s["event_type"] == "email_verified"]
    if verified:
        result.to_last_verified = verified[0]["last_finish"]


def _scalar(conn: psycopg.Connection[Any], query: LiteralString) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


# -- the listener process and the machine, from /proc ------------------------------------------


def _proc_status_mib(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of the process so far (fields 14 and 15 of /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _RssSampler:
    """VmRSS of one process every RSS_SAMPLE seconds, in a thread, until stop()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE):
            self.peak_mib = max(self.peak_mib, _proc_status_mib(self.pid, "VmRSS"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _all_cpu() -> dict[int, tuple[str, float]]:
    """Every process's (command, CPU seconds so far)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            command = text.split("(", 1)[1].rsplit(")", 1)[0]
            found[int(entry.name)] = (command, _cpu_seconds(int(entry.name)))
    return found


def _breakdown(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    listeners: set[int],
    backends: set[int],
    *,
    busy_seconds: float,
) -> dict[str, float]:
    """CPU seconds spent during the run by each kind of process. Processes that began and
    ended within the run are not seen one by one; they are in `unaccounted`."""
    spent = {"listeners": 0.0, "this database's server processes": 0.0, "bench process": 0.0,
             "other postgres processes": 0.0, "other processes": 0.0}  # fmt: skip
    for pid, (command, seconds) in after.items():
        used = seconds - before.get(pid, (command, 0.0))[1]
        if pid in listeners:
            spent["listeners"] += used
        elif pid in backends:
            spent["this database's server processes"] += used
        elif pid == os.getpid():
            spent["bench process"] += used
        elif command == "postgres" or command.startswith("postgres"):
            spent["other postgres processes"] += used
        else:
            spent["other processes"] += used
    spent["unaccounted (short-lived processes)"] = max(0.0, busy_seconds - sum(spent.values()))
    return {k: round(v, 2) for k, v in spent.items()}


def _wait_for_quiet(threshold: float = 0.25, window: float = 2.0, patience: float = 120.0) -> float:
    """Waits (up to `patience` s) for a `window` in which under `threshold` of all cores are
    busy, since the machine may be shared; returns the last window's busy share."""
    deadline = time.monotonic() + patience
    while True:
        before = _cpu_jiffies()
        time.sleep(window)
        after = _cpu_jiffies()
        share = (after[0] - before[0]) / max(1, after[1] - before[1])
        if share < threshold or time.monotonic() > deadline:
            return share


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class _MachineCpu:
    """The share of all cores busy, and busy CPU seconds, between entry and exit."""

    share = 0.0
    seconds = 0.0

    def __call__(self) -> float:
        return self.share


@contextlib.contextmanager
def _machine_cpu() -> Iterator[_MachineCpu]:
    before = _cpu_jiffies()
    measured = _MachineCpu()
    try:
        yield measured
    finally:
        after = _cpu_jiffies()
        total = after[1] - before[1]
        measured.share = (after[0] - before[0]) / total if total else 0.0
        measured.seconds = (after[0] - before[0]) / os.sysconf("SC_CLK_TCK")


# -- the two modes ----------------------------------------------------------------------------


def full_configs(rows: int, listeners: Sequence[int], leased: Sequence[int]) -> list[Config]:
    return [Config(f"full-{rows}-l{n}-m{m}", rows, n, m) for n in listeners for m in leased]


def bound_configs(rows: int, latency_ms: float, concurrency: Sequence[int]) -> list[Config]:
    """Two families: the provider bound alone (64 leases, plenty), and the lease bound alone
    (256 provider calls in flight, plenty)."""
    configs = []
    for c in concurrency:
        configs.append(Config(f"bound-{rows}-prov{c}", rows, 1, 64, c, latency_ms))
    for c in concurrency:
        configs.append(Config(f"bound-{rows}-lease{c}", rows, 1, c, 256, latency_ms))
    return configs


def predicted_bounds(config: Config, roles: int = 3, batch: int = 25) -> dict[str, float]:
    """What the configuration allows, in slots/s, with latency t = latency_ms / 1000:

    * provider bound: every slot costs one call to each of the two synchronous providers
      (the parallel phase asks both at once; nothing is left for a fallback phase), and each
      provider has PROVIDER_CONCURRENCY calls in flight per process, so
      slots/s <= listeners * PROVIDER_CONCURRENCY / (1 call per slot per provider * t).
      Verification is one MillionVerifier call per contact, at most one contact per slot,
      under its own provider's bound, and runs beside enrichment (a batch call holds one
      lease for up to CASCADE_LEASED_BATCH_SIZE events, so enrichment no longer takes every
      lease): it never binds tighter.
    * lease bound: a handler call holds one lease for about t while its events (up to
      `batch`, CASCADE_LEASED_BATCH_SIZE) are asked at once; a slot costs 1/roles of a
      slots_created event plus one contact_enriched per contact found, so
      slots/s <= listeners * CASCADE_MAX_LEASED * batch / (t * (1/roles + fill rate)).
    """
    t = config.latency_ms / 1000
    if t <= 0:
        return {}
    leased_events = config.listeners * config.max_leased * batch
    return {
        "provider": config.listeners * config.provider_concurrency / t,
        "lease_per_fill_rate_1": leased_events / (t * (1 / roles + 1)),
    }


# -- reporting --------------------------------------------------------------------------------


def stage_rate(result: Result, event_type: str) -> tuple[int, float, float]:
    """(events, window seconds, events/s over the window) of a stage's processed events."""
    for stage in result.stages:
        if stage["event_type"] == event_type and stage["status"] == "processed":
            window = (stage["last_finish"] or 0) - (stage["first_start"] or 0)
            return int(stage["events"]), window, stage["events"] / window if window else 0.0
    return 0, 0.0, 0.0


STAGE_ORDER = (
    "company_created", "company_validated", "company_promoted", "slots_created",
    "contact_enriched", "email_verified",
)  # fmt: skip


def summarise(results: Sequence[Result]) -> str:
    lines = [
        "| run | listeners | max leased | provider conc. | latency ms | import s | "
        "to last email_verified s | to quiescent s | events | events/s | dead | "
        "slots/s | peak RSS MiB (VmHWM) | listener CPU s | machine CPU busy |",
        "| --- " * 15 + "|",
    ]
    for r in results:
        c = r.config
        slots_done = r.rows.get("slot filled", 0) + r.rows.get("slot unfilled", 0)
        slots_rate = slots_done / r.to_quiescent if r.to_quiescent else 0.0
        hwm = ", ".join(f"{v:.0f}" for v in r.vm_hwm_mib)
        rss = ", ".join(f"{v:.0f}" for v in r.peak_rss_mib)
        cpu = ", ".join(f"{v:.1f}" for v in r.listener_cpu_seconds)
        lines.append(
            f"| {c.label} | {c.listeners} | {c.max_leased} | {c.provider_concurrency} | "
            f"{c.latency_ms:g} | {r.import_seconds:.2f} | {_s(r.to_last_verified)} | "
            f"{_s(r.to_quiescent)} | {r.events_processed:,} | {r.events_per_second:,.0f} | "
            f"{r.events_dead} | {slots_rate:.1f} | {rss} ({hwm}) | {cpu} | "
            f"{r.machine_cpu_busy:.0%} |"
        )
    lines += ["", "Per stage (processed events; window from its first start to its last finish, "
              "seconds from the import's start; events/s over that window):", ""]  # fmt: skip
    lines.append("| run | " + " | ".join(STAGE_ORDER) + " |")
    lines.append("| --- " * (len(STAGE_ORDER) + 1) + "|")
    for r in results:
        cells = []
        for event_type in STAGE_ORDER:
            events, window, rate = stage_rate(r, event_type)
            first = next(
                (s["first_start"] for s in r.stages
                 if s["event_type"] == event_type and s["status"] == "processed"), 0.0,
            )  # fmt: skip
            cells.append(f"{events:,} in {first or 0:.1f}-{(first or 0) + window:.1f} s: "
                         f"{rate:,.0f}/s")  # fmt: skip
        lines.append(f"| {r.config.label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Speed probe (bench.phase1.speed_probe, CPU s; lower is faster), before / after:",
        "",
    ]
    lines += [
        f"- {r.config.label}: {r.speed_probe[0]:.2f} / {r.speed_probe[1]:.2f}" for r in results
    ]
    lines += ["", "CPU seconds during the run (machine busy before the run in brackets):", ""]
    kinds = list(results[0].cpu_breakdown) if results else []
    lines.append("| run | " + " | ".join(kinds) + " |")
    lines.append("| --- " * (len(kinds) + 1) + "|")
    for r in results:
        cells = [f"{r.cpu_breakdown.get(k, 0):.1f}" for k in kinds]
        lines.append(f"| {r.config.label} ({r.busy_before:.0%}) | " + " | ".join(cells) + " |")
    lines += ["", "Rows at the end (first run):", ""]
    if results:
        lines.append(", ".join(f"{k}: {v:,}" for k, v in results[0].rows.items()))
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def facts(server: str) -> dict[str, str]:
    with psycopg.connect(server) as conn:
        version = _scalar(conn, "SELECT version()")
        settings = conn.execute(
            "SELECT current_setting('shared_buffers'), current_setting('synchronous_commit'),"
            " current_setting('max_connections')"
        ).fetchone()
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "ram": _memory_total(),
        "postgresql": str(version),
        "postgresql settings": "shared_buffers={} synchronous_commit={} max_connections={}".format(
            *(settings or ())
        ),
        "server": "DATABASE_URL" if database.configured_url() else "embedded (pgserver)",
        "cascade revision": _revision(),
        "python": sys.version.split()[0],
    }


# -- entry point ------------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.phase1",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    full = modes.add_parser("full", help="10,000 companies, no artificial latency")
    full.add_argument("--rows", type=int, default=10_000)
    full.add_argument("--listeners", type=int, nargs="+", default=[1, 2])
    full.add_argument("--max-leased", type=int, nargs="+", default=[16, 64])
    full.add_argument("--workers", type=int, help="CASCADE_WORKERS (default: the listener's)")
    full.add_argument("--profile", action="store_true", help="listeners under pyinstrument")
    bound = modes.add_parser("bound", help="slow providers: throughput set by concurrency")
    bound.add_argument("--rows", type=int, default=1_000)
    bound.add_argument("--latency-ms", type=float, default=200.0)
    bound.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    for sub in (full, bound):
        sub.add_argument("--repeats", type=int, default=1, help="runs per configuration")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.mode == "full":
        configs = full_configs(args.rows, args.listeners, args.max_leased)
        if args.workers or args.profile:
            suffix = (f"-w{args.workers}" if args.workers else "") + (
                "-prof" if args.profile else ""
            )
            configs = [
                Config(f"{c.label}{suffix}", c.rows, c.listeners, c.max_leased,
                       workers=args.workers, profile=args.profile)
                for c in configs
            ]  # fmt: skip
    else:
        configs = bound_configs(args.rows, args.latency_ms, args.concurrency)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(OUT_DIR / f"companies-{args.rows}.csv", args.rows, SEED)
    command = shlex.join(
        ["python", "-m", "bench.phase1", *(sys.argv[1:] if argv is None else argv)]
    )
    results = []
    with server_url() as server:
        machine = facts(server)
        for repeat in range(args.repeats):
            for config in configs:
                if args.repeats > 1:
                    config = Config(**{**asdict(config), "label": f"{config.label}-r{repeat}"})
                result = run_one(server, config, csv_path)
                (OUT_DIR / f"{config.label}.json").write_text(
                    json.dumps({**asdict(result), "events_per_second": result.events_per_second,
                                "predicted_slots_per_s": predicted_bounds(config)},
                               indent=2, default=str)
                )  # fmt: skip
                print(summarise([result]).split("\n\n")[0], file=sys.stderr, flush=True)
                results.append(result)
    report = "\n".join(
        [f"# Phase 1 ({args.mode})", "", f"Command: `{command}`", "", "| fact | value |",
         "| --- | --- |", *(f"| {k} | {v} |" for k, v in machine.items()), "",
         summarise(results), ""]
    )  # fmt: skip
    (OUT_DIR / f"{args.mode}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
