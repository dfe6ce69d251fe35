"""Scenario 3: commit-to-handler-start latency at a steady 200 events/s.

A Cascade listener (default settings, one no-op database handler that notes time.time() when
it starts) runs in this process; bench/pinger.py, a separate process, commits one ping every
5 ms, each emitting an event through marketing.emit_event. Latency = handler start - the
moment the writer's COMMIT was acknowledged, both from time.time() on the same machine. A
handler may start a hair before the writer hears its acknowledgement, so a few samples can be
slightly negative; the report also gives latency from the moment the INSERT was sent, an upper
bound that includes the writer's own durable commit.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from bench import handlers, probes
from bench.report import Measurement, Section, Verdict
from bench.server import BENCH_DIR, fresh_database
from listener import Listener, ListenerSettings

RATE = 200.0  # events per second
SECONDS = 15.0
WARM_UP = 1.0  # seconds of pings left out of the statistics


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


async def run_pinger(url: str) -> list[tuple[int, float, float]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.pinger",
        url,
        "--rate",
        str(RATE),
        "--seconds",
        str(SECONDS),
        cwd=BENCH_DIR.parent,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"bench.pinger exited with {process.returncode}")
    return [(int(i), float(s), float(c)) for i, s, c in json.loads(out)]


async def wait_for_handlers(expected: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(handlers.PING_STARTS) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(handlers.PING_STARTS)} of {expected} pings handled")
        await asyncio.sleep(0.01)


async def measure(server: str, kind: type[Listener] = Listener) -> tuple[list[float], list[float]]:
    """(ms from commit acknowledged, ms from INSERT sent) per ping after the warm-up."""
    handlers.PING_STARTS.clear()
    with fresh_database(server, "latency") as url:
        listener = kind(ListenerSettings(database_url=url), handlers.PINGS)
        task = asyncio.create_task(listener.run())
        try:
            await probes.wait_until_asleep(url)
            written = await run_pinger(url)
            await wait_for_handlers(len(written))
        finally:
            listener.stop()
            await task
    counted = written[int(RATE * WARM_UP) :]
    from_commit = [(handlers.PING_STARTS[i] - committed) * 1000 for i, _, committed in counted]
    from_send = [(handlers.PING_STARTS[i] - sent) * 1000 for i, sent, _ in counted]
    return from_commit, from_send


async def latency(server: str, repeats: int) -> Section:
    from_commit: list[float] = []
    from_send: list[float] = []
    for _ in range(repeats):
        commit_ms, send_ms = await measure(server)
        from_commit += commit_ms
        from_send += send_ms
    section = Section(
        "3. Commit-to-handler-start latency at 200 events/s",
        f"A separate writer process commits one event every {1000 / RATE:g} ms for "
        f"{SECONDS:g} s ({repeats} run(s)); the first {WARM_UP:g} s are left out "
        f"({len(from_commit)} samples). Listener: default settings, in the bench process, "
        "woken by NOTIFY (writers notify only while it sleeps). Times from time.time() in "
        "both processes.",
    )
    p50, p90, p99 = (percentile(from_commit, q) for q in (0.50, 0.90, 0.99))
    worst = max(from_commit)
    for name, value in (("p50", p50), ("p90", p90), ("p99", p99), ("max", worst)):
        section.measurements.append(
            Measurement(section.title, "Cascade", f"{name}, from commit ack", [value], "ms")
        )
    negative = sum(1 for v in from_commit if v < 0)
    section.measurements += [
        Measurement(
            section.title,
            "Cascade",
            "p50 / p99, from INSERT sent",
            [percentile(from_send, 0.5)],
            "ms",
            f"p99 {percentile(from_send, 0.99):.2f} ms (includes the writer's durable commit)",
        ),
        Measurement(
            section.title, "Cascade", "handler started before ack", [float(negative)], "samples"
        ),
    ]
    section.verdicts += [
        Verdict(section.title, "p50 ≤ 1 ms", f"{p50:.2f} ms", p50 <= 1.0),
        Verdict(section.title, "p99 ≤ 3 ms", f"{p99:.2f} ms", p99 <= 3.0),
    ]
    return section
