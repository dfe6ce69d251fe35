"""Webhook ingestion over loopback, with durable commits, against a plain Starlette ceiling.

    python -m bench.webhooks run [--target instantly] [--connections 16 64] [--duration 15]
                                 [--repeats 1] [--variants walk-off ...] [--notify]
                                 [--rate R] [--loop uvloop] [--http httptools] [--profile]
    python -m bench.webhooks parse-cost [--target instantly]
    python -m bench.webhooks sql-cost

`run` measures, each in its own load process over 127.0.0.1:

* the ceiling: bench/webhook_server.py's plain Starlette app (one route: read the body,
  answer 202) under the same uvicorn settings as the real app;
* unique deliveries: the real app (`web.create_app`, one uvicorn worker) on a fresh migrated
  database, every request a new delivery of the target webhook (202);
* duplicates: the same delivery over and over (the claim finds it: 200);

each closed-loop with wrk (bench/webhook_load.lua) at each `--connections` count for peak
requests/s, and then

* latency at half the peak: bench/webhook_openloop.py sends new deliveries at a constant rate
  of half the best unique requests/s (or `--rate`; `--repeats 0 --rate R` runs only this),
  open loop, latency counted from when each request was due; the same client at the same
  rate against the ceiling shows the client's own floor. Meanwhile bench/disk.py probes the
  database's disk for flush stalls, which hold up every durable commit in flight, and the
  report gives the latency of the requests not in flight during one beside the whole.

Every run reports requests/s, p50/p90/p99/max latency, the status counts, the CPU each side
used per request (the server process, this database's PostgreSQL backends), the load
process's CPU, the cores everything else used meanwhile, and how busy the machine was (each
round first waits up to a minute for a quiet machine). Commits are durable: the database is
set to synchronous_commit = on and the server's fsync is reported (a server with fsync off
makes the numbers meaningless, and the report says so). Afterwards the claims in
marketing.processed_webhook_events are counted against the answers the load processes saw.

`--variants` adds unique-deliveries runs of the app changed in the server process only
(bench/webhook_server.py: `walk-off` skips http.parse's unstorable() walk; `a+b` combines
variants), to measure a proposal before anyone makes it.
`--notify` adds unique-deliveries runs with a listener that seems asleep, so that each
event's insert also sends the wake-up NOTIFY (no listener runs otherwise, and
triggers/900_wake_listeners.sql skips it). `--profile` runs the real server under py-spy (on
PATH) during the closed-loop runs and writes its collapsed stacks (flamegraph.pl or
speedscope read them) to bench/out/webhooks/. `parse-cost` times http.parse and its walk in
this process with timeit; `sql-cost` (bench/webhook_sql.py) splits PostgreSQL's CPU per
Instantly open by the shape of its SQL.

The PostgreSQL server is DATABASE_URL's, or bench/server.py's embedded one. Output: a
markdown report on stdout and in bench/out/webhooks/, raw numbers beside it (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import timeit
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel

from bench import webhook_sql
from bench.disk import STALL, DiskProbe, probe_directory
from bench.phase1 import _cpu_seconds, _machine_cpu, _wait_for_quiet
from bench.server import BENCH_DIR, _installed, fresh_database, server_url, settle
from bench.server import machine_facts as server_machine_facts
from bench.webhook_scenarios import TARGETS, Load, Target
from bench.webhook_server import VARIANTS
from cascade.web.http import parse as http_parse
from cascade.web.http import unstorable

ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out" / "webhooks"
LUA_SCRIPT = BENCH_DIR / "webhook_load.lua"
START_TIMEOUT = 30.0  # seconds for a server process to accept connections
STOP_TIMEOUT = 15.0  # seconds for a server process to exit after SIGTERM
WRK_TIMEOUT = "10s"  # a request slower than this counts as a wrk timeout error
QUIET_THRESHOLD = 0.25  # share of all cores busy below which the machine counts as quiet
QUIET_PATIENCE = 60.0  # seconds to wait for a quiet window before a round; then go on anyway
# Cores used by others during a run above which it is marked disturbed. PostgreSQL's WAL
# writer and the kernel's loopback work take about 0.1 on their own.
DISTURBED_CORES = 0.3
# What the app must not inherit from the caller: other secrets, other databases.
DROPPED_ENV_PREFIXES = ("WEBHOOK_SECRET_", "WEBHOOK_SCHEME_", "NEON_DATABASE_URL")

DURABLE_COMMITS: LiteralString = "ALTER DATABASE {} SET synchronous_commit = on"
DURABILITY: LiteralString = """
    SELECT current_setting('fsync') AS fsync,
           current_setting('synchronous_commit') AS synchronous_commit,
           current_setting('wal_sync_method') AS wal_sync_method,
           current_setting('full_page_writes') AS full_page_writes
"""
# A listener that looks asleep (no process behind it): every insert into pipeline_events then
# sends the wake-up NOTIFY (triggers/900_wake_listeners.sql), as when a real listener idles.
FAKE_SLEEPING_LISTENER: LiteralString = """
    INSERT INTO marketing.listeners (listener_id, hostname, pid, sleeping, event_types)
    VALUES ('bench-asleep', 'bench', 0, true, '{email_opened,email_clicked,reply_received}')
"""
FORGET_FAKE_LISTENER: LiteralString = """
    DELETE FROM marketing.listeners WHERE listener_id = 'bench-asleep'
"""
CLAIMS: LiteralString = """
    SELECT count(*) FROM marketing.processed_webhook_events WHERE provider = %(provider)s
"""


# -- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uvicorn:
    """The uvicorn settings both servers run with (bench/webhook_server.py)."""

    loop: str = "asyncio"
    http: str = "h11"

    def describe(self) -> str:
        return (
            f"uvicorn {_installed('uvicorn')}, 1 worker, loop={self.loop}, http={self.http}, "
            "access_log=False, log_config=None"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    label: str
    # Every answer any load process got from this server, warm-ups included, by status.
    answered: dict[str, int] = field(default_factory=dict)
    # Requests possibly in flight when a wrk run stopped: the server may still have committed
    # them, but wrk closes its connections without reading their answers.
    unread: int = 0

    def tally(self, statuses: dict[str, int]) -> None:
        for status, n in statuses.items():
            self.answered[str(status)] = self.answered.get(str(status), 0) + int(n)


@contextlib.contextmanager
def serving(
    app: str,
    settings: Uvicorn,
    environ: dict[str, str],
    label: str,
    *,
    variants: Sequence[str] = (),
    profile_to: Path | None = None,
) -> Iterator[Server]:
    """A bench/webhook_server.py process, accepting connections; stopped on exit."""
    port = _free_port()
    command = [sys.executable, "-m", "bench.webhook_server", app, "--port", str(port),
               "--loop", settings.loop, "--http", settings.http]  # fmt: skip
    for variant in variants:
        command += ["--variant", variant]
    if profile_to is not None:
        command[:0] = ["py-spy", "record", "--rate", "250", "--format", "raw",
                       "--output", str(profile_to), "--"]  # fmt: skip
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with (OUT_DIR / f"{label}.server.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=log)
        try:
            _wait_accepting(process, port)
            yield Server(process, port, label)
        finally:
            _stop(process)


def _wait_accepting(process: subprocess.Popen[bytes], port: int) -> None:
    # uvicorn binds only after the lifespan (the real app's pool) has started.
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see its log")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the server did not accept connections within {START_TIMEOUT} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT if _is_py_spy(process) else signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _is_py_spy(process: subprocess.Popen[bytes]) -> bool:
    args = process.args
    return isinstance(args, list) and bool(args) and args[0] == "py-spy"


def _server_pid(server: Server) -> int:
    """The Python process serving (py-spy's child when profiling)."""
    if not _is_py_spy(server.process):
        return server.process.pid
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    with contextlib.suppress(OSError, ValueError):
        return int(children.read_text().split()[0])
    return server.process.pid


# -- one measurement ----------------------------------------------------------------------------


@dataclass
class Run:
    """One load run against one server."""

    subject: str  # ceiling, unique, duplicates, unique (walk off), open loop ...
    load: str  # what generated it: "wrk -c 16", "open loop 400/s"
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    server_cpu_us: float = 0.0  # per request, the uvicorn process
    postgres_cpu_us: float = 0.0  # per request, this database's client backends
    load_cpu_share: float = 0.0  # of one core, the load process
    machine_busy: float = 0.0  # share of all cores, everything on the machine
    # Cores used meanwhile by everything else: PostgreSQL's own processes (WAL writer,
    # checkpointer) and whatever else runs on the machine (other people's work).
    other_cores: float = 0.0
    busy_before: float = 0.0  # share of all cores busy just before the round
    client: dict[str, Any] = field(default_factory=dict)  # the open-loop client's own report
    disk: dict[str, Any] = field(default_factory=dict)  # bench/disk.py's, for an open loop


@contextlib.contextmanager
def _accounting(server: Server, url: str | None, run: Run) -> Iterator[None]:
    """CPU over the block of the server process, the database's backends, the load process
    (the child that ran to completion inside it) and everything else; per request once
    `run.requests` is known."""
    pid = _server_pid(server)
    backends = _BackendCpu(str(conninfo_to_dict(url)["dbname"]) if url else None)
    server_before = _cpu_seconds(pid)
    children_before = _children_cpu()
    began = time.monotonic()
    with _machine_cpu() as busy, backends:
        yield
    wall = time.monotonic() - began
    requests = max(1, run.requests)
    server_cpu = _cpu_seconds(pid) - server_before
    backends_cpu = backends.used
    load_cpu = _children_cpu() - children_before
    run.server_cpu_us = server_cpu / requests * 1e6
    run.postgres_cpu_us = backends_cpu / requests * 1e6
    run.load_cpu_share = load_cpu / wall
    run.machine_busy = busy()
    run.other_cores = max(0.0, busy.seconds - server_cpu - backends_cpu - load_cpu) / wall


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _BackendCpu:
    """CPU used while the block runs by the server processes of one database (the app's pool
    connections; ours idle). Sampled from /proc in a thread, so that connections opened or
    closed meanwhile count too: asyncpg's pool replaces a connection after 50,000 queries. A
    process that ends loses at most its last SAMPLE seconds. The server must be local."""

    SAMPLE = 0.2  # seconds

    def __init__(self, dbname: str | None) -> None:
        self.dbname = dbname
        self.used = 0.0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _BackendCpu:
        if self.dbname is not None:
            self._first = self._scan()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.dbname is None:
            return
        self._stop.set()
        self._thread.join()
        self._last.update(self._scan())
        # A process first seen during the block started during it: all its CPU counts.
        self.used = sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())

    def _run(self) -> None:
        while not self._stop.wait(self.SAMPLE):
            self._last.update(self._scan())

    def _scan(self) -> dict[int, float]:
        found = {}
        name = (self.dbname or "").encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                words = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
                # "postgres: 15/main: USER DBNAME HOST(PORT) STATE" on Debian's server
                if words[:1] == [b"postgres:"] and name in words:
                    found[int(entry.name)] = _cpu_seconds(int(entry.name))
        return found


def wrk(
    server: Server, load: Load, connections: int, seconds: float, *, threads: int = 1
) -> dict[str, Any]:
    """One wrk run; its WRK_JSON line."""
    template = load.template
    headers = [f"{name}: {value}" for name, value in template.headers]
    nonce = uuid.uuid4().hex[:10]
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
               f"--timeout={WRK_TIMEOUT}", "-s", str(LUA_SCRIPT),
               f"http://127.0.0.1:{server.port}", "--", template.path, nonce, str(load.leads),
               template.body, *headers]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            server.tally(result["statuses"])
            server.unread += connections
            return result
    raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")


def closed_loop(
    server: Server,
    url: str | None,
    subject: str,
    load: Load,
    connections: int,
    args: argparse.Namespace,
) -> Run:
    wrk(server, load, connections, args.warmup)  # pool filled, code paths warm
    if url:
        settle(url)
    run = Run(subject, f"wrk -t1 -c{connections}")
    with _accounting(server, url, run):
        result = wrk(server, load, connections, args.duration)
        run.requests = int(result["requests"])
    run.seconds = result["duration_us"] / 1e6
    run.rps = run.requests / run.seconds
    run.latency_ms = {k: v / 1000 for k, v in result["latency_us"].items()}
    run.statuses = {str(k): int(v) for k, v in result["statuses"].items()}
    run.errors = {k: int(v) for k, v in result["errors"].items() if v and k != "status"}
    return run


def open_loop(
    server: Server, url: str | None, subject: str, load: Load, rate: float,
    args: argparse.Namespace, disk: Path | None,
) -> Run:  # fmt: skip
    template = load.template
    spec = json.dumps({"path": template.path, "headers": template.headers, "body": template.body})
    command = [sys.executable, "-m", "bench.webhook_openloop", "--port", str(server.port),
               "--rate", f"{rate:.1f}", "--duration", f"{args.duration:g}",
               "--warmup", f"{args.warmup:g}", "--template", spec,
               "--leads", str(load.leads), "--nonce", uuid.uuid4().hex[:10]]  # fmt: skip
    # A short closed-loop burst first: the app's pool full and its code warm before the
    # client's own warm-up, which only opens as many connections as its rate needs.
    wrk(server, load, args.connections[-1], 1.0)
    if url:
        settle(url)
    run = Run(subject, f"open loop {rate:,.0f}/s")
    with DiskProbe(disk) as probe, _accounting(server, url, run):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        report: dict[str, Any] = json.loads(done.stdout)
        run.requests = int(report["answered_with_warmup"])  # CPU per request, all it sent
    run.disk = probe.summary([(due, done) for due, done in report.pop("requests")])
    server.tally(report["statuses_with_warmup"])
    run.client = report
    run.seconds = float(args.duration)
    run.rps = float(report["achieved_rate"])
    run.latency_ms = dict(report["latency_ms"])
    run.statuses = dict(report["statuses"])
    run.errors = dict(report["errors"])
    return run


# -- the whole benchmark ------------------------------------------------------------------------


def app_environ(url: str, target: Target) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV_PREFIXES)}
    env.update(target.environ)
    env.update(DATABASE_URL=url, CASCADE_LOG_LEVEL="WARNING")
    return env


def ceiling_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


@contextlib.contextmanager
def prepare(server: str, target: Target) -> Iterator[str]:
    """A fresh migrated database with the target's rows and durable commits."""
    with fresh_database(server, "webhooks") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            name = conn.info.dbname
            conn.execute(sql.SQL(DURABLE_COMMITS).format(sql.Identifier(name)))
            for statement in target.seed:
                conn.execute(statement, {"leads": target.leads})
        yield url


@dataclass
class Outcome:
    runs: list[Run] = field(default_factory=list)
    durability: dict[str, str] = field(default_factory=dict)
    claims: int = 0
    # What the real app answered, warm-ups included: its first-delivery answers must equal
    # the claims, one each.
    real_answers: dict[str, int] = field(default_factory=dict)
    unread: int = 0  # at most this many requests were cut off by wrk stopping
    written: int | None = None
    load_before: str = ""
    load_after: str = ""

    def count(self, server: Server) -> None:
        for status, n in server.answered.items():
            self.real_answers[status] = self.real_answers.get(status, 0) + n
        self.unread += server.unread

    def exactly_once(self, new_status: int) -> str:
        """Each first-delivery answer has its claim; claims without an answer seen are at
        most the requests wrk cut off."""
        unanswered = self.claims - self.real_answers.get(str(new_status), 0)
        verdict = "consistent" if 0 <= unanswered <= self.unread else "**INCONSISTENT**"
        return (
            f"{verdict}: {unanswered:,} claims without a {new_status} seen, at most "
            f"{self.unread:,} requests cut off when wrk stopped"
        )


def benchmark(server: str, target: Target, args: argparse.Namespace) -> Outcome:
    outcome = Outcome(load_before=_loadavg())
    settings = Uvicorn(args.loop, args.http)
    with prepare(server, target) as url:
        outcome.durability = _durability(url)
        for round_ in range(args.repeats):
            busy = _wait_for_quiet(QUIET_THRESHOLD, patience=QUIET_PATIENCE)
            _closed_loop_round(url, target, settings, args, outcome, round_, busy)
        rate = args.rate or _peak(outcome.runs, "unique") / 2
        disk = probe_directory(url)
        with serving("real", settings, app_environ(url, target), "open-real") as real:
            outcome.runs.append(open_loop(real, url, "unique, open loop", target.unique(),
                                          rate, args, disk))  # fmt: skip
        outcome.count(real)
        with serving("ceiling", settings, ceiling_environ(), "open-ceiling") as ceiling:
            outcome.runs.append(open_loop(ceiling, None, "ceiling, open loop", target.unique(),
                                          rate, args, disk))  # fmt: skip
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(CLAIMS, {"provider": target.provider}).fetchone()
            outcome.claims = int(row[0]) if row else 0
            if target.writes:
                written = conn.execute(target.writes).fetchone()
                outcome.written = int(written[0]) if written else 0
    outcome.load_after = _loadavg()
    return outcome


def _closed_loop_round(
    url: str,
    target: Target,
    settings: Uvicorn,
    args: argparse.Namespace,
    outcome: Outcome,
    round_: int,
    busy: float,
) -> None:
    runs: list[Run] = []
    with serving("ceiling", settings, ceiling_environ(), f"ceiling-r{round_}") as ceiling:
        for c in args.connections:
            runs.append(closed_loop(ceiling, None, "ceiling", target.unique(), c, args))
    profile = OUT_DIR / f"real-r{round_}.collapsed.txt" if args.profile else None
    environ = app_environ(url, target)
    with serving("real", settings, environ, f"real-r{round_}", profile_to=profile) as real:
        for c in args.connections:
            runs.append(closed_loop(real, url, "unique", target.unique(), c, args))
        for c in args.connections:
            runs.append(closed_loop(real, url, "duplicates", target.duplicate(), c, args))
    outcome.count(real)
    if args.notify:
        with (
            _sleeping_listener(url),
            serving("real", settings, environ, f"real-notify-r{round_}") as real,
        ):
            for c in args.connections:
                runs.append(closed_loop(real, url, "unique, NOTIFY", target.unique(), c, args))
        outcome.count(real)
    for spec in args.variants:
        label = f"real-{spec}-r{round_}"
        with serving("real", settings, environ, label, variants=spec.split("+")) as real:
            for c in args.connections:
                runs.append(closed_loop(real, url, f"unique, {spec}", target.unique(), c, args))
        outcome.count(real)
    for run in runs:
        run.busy_before = busy
        print(_row(run), file=sys.stderr, flush=True)
    outcome.runs += runs


@contextlib.contextmanager
def _sleeping_listener(url: str) -> Iterator[None]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FAKE_SLEEPING_LISTENER)
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FORGET_FAKE_LISTENER)


def _durability(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(DURABILITY)
        row = cur.fetchone()
        names = [d.name for d in cur.description or ()]
    return dict(zip(names, map(str, row or ()), strict=True))


def _peak(runs: Sequence[Run], subject: str) -> float:
    """The best requests/s over connection counts, median over rounds."""
    by_load: dict[str, list[float]] = {}
    for run in runs:
        if run.subject == subject:
            by_load.setdefault(run.load, []).append(run.rps)
    return max((statistics.median(v) for v in by_load.values()), default=0.0)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the parse walk, timed in process -----------------------------------------------------------


def parse_cost(target: Target, number: int) -> dict[str, float]:
    """Microseconds per call: the whole http.parse, and its parts (pydantic's JSON validation;
    the model_dump and unstorable walk that parse adds), for the target's body as sent."""
    module, _, name = target.model.partition(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), name)
    _, body = target.template.render("bench-parse-cost-1")
    parsed = model.model_validate_json(body)
    dumped = parsed.model_dump()
    timings: dict[str, Callable[[], object]] = {
        "http.parse (validate + dump + walk)": lambda: http_parse(model, body),
        "model_validate_json only": lambda: model.model_validate_json(body),
        "model_dump only": parsed.model_dump,
        "unstorable walk only": lambda: unstorable(dumped),
    }
    return {
        label: min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6
        for label, call in timings.items()
    }


# -- the report ---------------------------------------------------------------------------------


def machine_facts(server: str) -> dict[str, str]:
    """bench/server.py's facts, with the web stack's versions."""
    packages = ("uvicorn", "starlette", "h11", "httptools", "uvloop", "asyncpg", "pydantic")
    return server_machine_facts(server, packages)


def _row(run: Run) -> str:
    lat = run.latency_ms
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(run.statuses.items()))
    errors = ", ".join(f"{k}: {v}" for k, v in run.errors.items()) or "none"
    return (
        f"| {run.subject} | {run.load} | {run.rps:,.0f} | {lat.get('p50', 0):.2f} | "
        f"{lat.get('p90', 0):.2f} | {lat.get('p99', 0):.2f} | {lat.get('max', 0):.1f} | "
        f"{statuses} | {errors} | {run.server_cpu_us:,.0f} | {run.postgres_cpu_us:,.0f} | "
        f"{run.load_cpu_share:.0%} | {run.other_cores:.2f}"
        f"{' (disturbed)' if run.other_cores > DISTURBED_CORES else ''} | "
        f"{run.machine_busy:.0%} ({run.busy_before:.0%}) |"
    )


HEADER = (
    "| subject | load | requests/s | p50 ms | p90 ms | p99 ms | max ms | statuses | errors | "
    "server CPU µs/req | PostgreSQL CPU µs/req | load process CPU | other cores | "
    "machine busy (before) |\n" + "| --- " * 14 + "|"
)


def verdicts(outcome: Outcome) -> list[str]:
    ceiling = _peak(outcome.runs, "ceiling")
    unique = _peak(outcome.runs, "unique")
    duplicates = _peak(outcome.runs, "duplicates")
    share = unique / ceiling if ceiling else 0.0
    met = "met" if share >= 0.4 else "not met"
    lines = []
    if ceiling:
        lines += [
            f"* peak requests/s (best connection count, median of rounds): ceiling "
            f"{ceiling:,.0f}, unique {unique:,.0f}, duplicates {duplicates:,.0f}",
            f"* unique / ceiling = {share:.1%} — target ≥ 40 %: **{met}**",
        ]
    opened = next((r for r in outcome.runs if r.subject == "unique, open loop"), None)
    if opened is not None:
        p99 = opened.latency_ms.get("p99", float("inf"))
        lines.append(
            f"* unique at {opened.client.get('rate_asked', 0):,.0f}/s, "
            f"open loop: p50 {opened.latency_ms.get('p50', 0):.2f} ms, p99 {p99:.2f} ms — "
            f"target p99 < 20 ms: **{'met' if p99 < 20 else 'not met'}**"
        )
    return lines


def report(
    command: str, facts: dict[str, str], target: Target, args: argparse.Namespace,
    outcome: Outcome, costs: dict[str, float],
) -> str:  # fmt: skip
    settings = Uvicorn(args.loop, args.http)
    lines = [
        f"# Webhook ingestion: {target.name}",
        "",
        f"Command: `{command}`",
        "",
        "| fact | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        f"| durability (bench database) | {_pairs(outcome.durability)} |",
        f"| web servers | {settings.describe()}; wrk {_wrk_version()} -t1 |",
        f"| target | POST {target.template.path}: {target.notes} |",
        f"| load average before / after | {outcome.load_before} / {outcome.load_after} |",
        "",
        HEADER,
        *(_row(run) for run in outcome.runs),
        "",
        *verdicts(outcome),
        f"* claims in processed_webhook_events: {outcome.claims:,}; the real app's answers, "
        f"warm-ups included: {_pairs(outcome.real_answers)}; "
        + outcome.exactly_once(target.new_status),
    ]
    for run in outcome.runs:
        if run.client:
            lag = run.client.get("client_lag_ms", {})
            wait = run.client.get("connection_wait_ms", {})
            lines.append(
                f"* {run.subject}: {run.client['achieved_rate']:,.0f}/s answered of "
                f"{run.client['rate_asked']:,.0f}/s sent; the client's own lag behind its "
                f"schedule p99 {lag.get('p99', 0):.2f} ms (max {lag.get('max', 0):.1f} ms), "
                f"waits for a free connection p99 {wait.get('p99', 0):.2f} ms; "
                f"{run.load_cpu_share:.0%} of a core, {run.client['connections_opened']} "
                f"connections, {run.client['retried']} retried"
            )
        if run.disk:
            lines.append(f"* {run.subject}: {_disk_line(run.disk)}")
    if outcome.written is not None:
        lines.append(f"* rows the deliveries wrote besides the claims: {outcome.written:,}")
    _warn_if_not_durable(outcome.durability, lines)
    if costs:
        lines += ["", "http.parse per call, this process (timeit, best of 5):", ""]
        lines += [f"* {label}: {us:.2f} µs" for label, us in costs.items()]
    return "\n".join(lines) + "\n"


def _disk_line(disk: Mapping[str, Any]) -> str:
    if not disk["probed"]:
        why = disk.get("failure") or "not local, or not writable"
        return f"the database's disk was not probed (bench/disk.py: {why})"
    stalls = disk["stalls_ms"]
    line = (
        f"the database's disk (bench/disk.py: {disk['flushes']:,} flushes of 8 KiB beside its "
        f"data directory) stalled {len(stalls)} time(s) for {STALL * 1000:g} ms or more"
    )
    if not stalls:
        return line
    others = disk["p99_of_others_ms"]
    return (
        f"{line} (longest {max(stalls):,.0f} ms; in all {sum(stalls):,.0f} ms); "
        f"{disk['requests_caught']:.1%} of the requests were in flight during one; p99 of the "
        "others " + ("—" if others is None else f"{others:.2f} ms")
    )


def _pairs(values: Mapping[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def _warn_if_not_durable(durability: dict[str, str], lines: list[str]) -> None:
    if durability.get("fsync") != "on" or durability.get("synchronous_commit") != "on":
        lines.append("* **WARNING: commits were not durable (fsync or synchronous_commit off)**")


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).split(" [")[0].removeprefix("wrk ").strip()


# -- entry point --------------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhooks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    run = modes.add_parser("run", help="the whole benchmark")
    cost = modes.add_parser("parse-cost", help="time http.parse and its walk with timeit")
    modes.add_parser("sql-cost", help="PostgreSQL's CPU per Instantly open, by SQL shape")
    for sub in (run, cost):
        sub.add_argument("--target", choices=sorted(TARGETS), default="instantly")
    run.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    run.add_argument("--duration", type=float, default=15.0, help="seconds per measured run")
    run.add_argument("--warmup", type=float, default=3.0, help="seconds before each run")
    run.add_argument("--repeats", type=int, default=1, help="closed-loop rounds (0: none)")
    run.add_argument("--rate", type=float, help="open-loop requests/s (default: unique peak / 2)")
    run.add_argument(
        "--loop", default="uvloop", help="uvicorn loop (both servers; `cascade web` uses uvloop)"
    )
    run.add_argument(
        "--http",
        default="httptools",
        help="uvicorn http (both servers; `cascade web` uses httptools)",
    )
    run.add_argument("--variants", nargs="+", default=[], metavar="V[+V...]",
                     help="also run unique deliveries with these changes to the app "
                          f"(bench/webhook_server.py: {', '.join(VARIANTS)})")  # fmt: skip
    run.add_argument("--notify", action="store_true",
                     help="also run unique deliveries with a listener seemingly asleep, so "
                          "every event's insert sends the wake-up NOTIFY")  # fmt: skip
    run.add_argument("--profile", action="store_true", help="py-spy on the real server")
    cost.add_argument("--number", type=int, default=20_000, help="calls per timing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse(raw)
    target = TARGETS[getattr(args, "target", "instantly")]
    if args.mode == "parse-cost":
        for label, us in parse_cost(target, args.number).items():
            print(f"{label}: {us:.2f} µs")
        return
    if args.mode == "sql-cost":
        with server_url() as server, prepare(server, TARGETS["instantly"]) as url:
            print(webhook_sql.render(asyncio.run(webhook_sql.all_cases(url))))
        return
    for tool in ("wrk", *(["py-spy"] if args.profile else [])):
        if shutil.which(tool) is None:
            sys.exit(f"bench.webhooks: {tool} is not on PATH (bench/webhooks.sh installs wrk)")
    command = shlex.join(["python", "-m", "bench.webhooks", *raw])
    with server_url() as server:
        facts = machine_facts(server)
        outcome = benchmark(server, target, args)
    costs = parse_cost(target, 20_000)
    text = report(command, facts, target, args, outcome, costs)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{target.name}-{stamp}.md").write_text(text)
    raw_numbers = {"facts": facts, "outcome": asdict(outcome), "parse_cost_us": costs}
    (OUT_DIR / f"{target.name}-{stamp}.json").write_text(json.dumps(raw_numbers, indent=2))
    print(text)


if __name__ == "__main__":
    main()
