"""Scenarios 1, 2 and 6: how fast a backlog drains.

1. No-op, single stage: 50,000 bulk-inserted events, drained by Cascade (one no-op database
   handler), the hand loop and PgQueuer.
2. A five-stage cascade of 10,000 roots: every stage's handler UPDATEs its item, whose trigger
   emits the next stage; Cascade against the hand loop doing the same UPDATE per event.
6. History: Cascade's claim and no-op throughput with a million processed events already in
   marketing.pipeline_events, against an empty table.

Every run starts a consumer on a loaded, vacuumed, checkpointed database of its own. Rates are
events over the processing window, from the first event in hand to the last one committed,
so that a one-off startup (pools, an HTTP client, PgQueuer's schema check) is not counted as
throughput; the wall time from start to return is reported beside them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import LiteralString

import asyncpg

from bench import hand_loop, handlers, pgqueuer_baseline, probes
from bench.report import Measurement, Section, Timing, Verdict
from bench.server import fresh_database, settle
from cascade.handling import Registry
from listener import Listener, ListenerSettings

NOOP_EVENTS = 50_000
CASCADE_ROOTS = 10_000
HISTORY_EVENTS = 1_000_000
HISTORY_BACKLOG = 50_000
CLAIM_SAMPLES = 200
PROGRESS_POLL = 0.005  # seconds between looks at the listener's counters

LOAD_NOOP_EVENTS: LiteralString = """
    INSERT INTO marketing.pipeline_events (event_type, payload, record_id)
    SELECT 'bench_noop', jsonb_build_object('id', g), g FROM generate_series(1, $1) AS g
"""
# A million finished events, as a long-running pipeline leaves them behind.
LOAD_HISTORY: LiteralString = """
    INSERT INTO marketing.pipeline_events
           (event_type, payload, record_id, status, outcome, attempts,
            started_at, processed_at, finished_at, duration_ms)
    SELECT 'bench_noop', jsonb_build_object('id', g), g, 'processed', 'ok', 1,
           now(), now(), now(), 0.1
      FROM generate_series(1, $1) AS g
"""
# Each root's insert emits bench_stage_1 through marketing.emit_event.
LOAD_ROOTS: LiteralString = "INSERT INTO bench.items (stage) SELECT 0 FROM generate_series(1, $1)"
COUNT_PROCESSED: LiteralString = """
    SELECT count(*) FROM marketing.pipeline_events WHERE status = 'processed'
"""
COUNT_FINISHED_ITEMS: LiteralString = "SELECT count(*) FROM bench.items WHERE stage = $1"
COUNT_PGQUEUER_LEFT: LiteralString = "SELECT count(*) FROM pgqueuer"

Drain = Callable[[str, int], Awaitable[Timing]]


async def execute(url: str, query: LiteralString, *args: object) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


async def fetchval(url: str, query: LiteralString, *args: object) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(query, *args))
    finally:
        await conn.close()


async def cascade_drain(
    url: str, registry: Registry, expected: int, kind: type[Listener] = Listener
) -> Timing:
    """A Listener with the default settings (2 workers, batches of 100), `run(until_idle=True)`;
    the window closes when its counters show `expected` events committed."""
    listener = kind(ListenerSettings(database_url=url), registry)
    handlers.FIRST_CALL.at = None
    start = time.perf_counter()
    running = asyncio.create_task(listener.run(until_idle=True))
    # The counters have no event to wait on; a 5 ms poll costs the listener's loop nothing.
    while listener.counters.processed < expected and not running.done():  # noqa: ASYNC110
        await asyncio.sleep(PROGRESS_POLL)
    end = time.perf_counter()
    await running
    wall = time.perf_counter() - start
    assert handlers.FIRST_CALL.at is not None, "nothing to drain"
    return Timing(end - handlers.FIRST_CALL.at, wall, listener.counters.processed)


def check(what: str, expected: int, actual: int) -> None:
    if actual != expected:
        raise RuntimeError(f"{what}: expected {expected}, found {actual}")


def rate_measurement(
    section: Section, subject: str, metric: str, events: int, timings: list[Timing]
) -> Measurement:
    wall = statistics.median(t.wall for t in timings)
    return Measurement(
        section.title,
        subject,
        metric,
        [events / t.window for t in timings],
        "events/s",
        f"wall time incl. startup and shutdown {wall:.2f} s",
    )


# -- scenario 1 -------------------------------------------------------------------------------

NOOP_SUBJECTS = ("Cascade", "hand loop", "PgQueuer")


async def noop_run(server: str, subject: str) -> Timing:
    """One drain of NOOP_EVENTS events by `subject`."""
    with fresh_database(server, "noop") as url:
        if subject == "PgQueuer":
            await pgqueuer_baseline.install_and_enqueue(url, NOOP_EVENTS)
            settle(url)
            timing = await pgqueuer_baseline.timed_drain(url)
            check("PgQueuer jobs run", NOOP_EVENTS, timing.processed)
            check("PgQueuer jobs left", 0, await fetchval(url, COUNT_PGQUEUER_LEFT))
            return timing
        await execute(url, LOAD_NOOP_EVENTS, NOOP_EVENTS)
        settle(url)
        if subject == "Cascade":
            timing = await cascade_drain(url, handlers.NOOP, NOOP_EVENTS)
        else:
            timing = await hand_loop.timed_drain(url, hand_loop.Work())
        check(f"{subject} processed", NOOP_EVENTS, await fetchval(url, COUNT_PROCESSED))
        return timing


async def noop_throughput(server: str, repeats: int) -> Section:
    timings: dict[str, list[Timing]] = {s: [] for s in NOOP_SUBJECTS}
    for _ in range(repeats):  # interleaved, so that drift hurts every subject alike
        for subject in NOOP_SUBJECTS:
            timings[subject].append(await noop_run(server, subject))
    section = Section(
        "1. No-op single-stage throughput",
        f"{NOOP_EVENTS:,} events bulk-inserted before each run; each subject drains them in a "
        f"fresh database; {repeats} interleaved runs, median reported. Cascade: `Listener` "
        "with default settings (2 workers, batch 100) and one no-op database handler, "
        "`run(until_idle=True)`. Hand loop: 2 asyncpg connections, claim 100 with SKIP LOCKED, "
        "mark done, commit. PgQueuer: one QueueManager on one asyncpg connection, "
        "batch_size=100, drain mode.",
    )
    for subject in NOOP_SUBJECTS:
        section.measurements.append(
            rate_measurement(section, subject, "events/s", NOOP_EVENTS, timings[subject])
        )
    cascade, hand, pgq = (m.value for m in section.measurements)
    section.verdicts += [
        Verdict(
            section.title, "Cascade >= 3x PgQueuer", f"{cascade / pgq:.2f}x", cascade >= 3 * pgq
        ),
        Verdict(
            section.title,
            "Cascade >= 70% of the hand loop",
            f"{100 * cascade / hand:.0f}%",
            cascade >= 0.7 * hand,
        ),
    ]
    return section


# -- scenario 2 -------------------------------------------------------------------------------

STAGE_WORK = hand_loop.Work(
    write=handlers.ADVANCE,
    stages={f"bench_stage_{k}": k for k in range(1, handlers.STAGES + 1)},
)
STAGE_WORK_WITH_LINEAGE = hand_loop.Work(
    write=STAGE_WORK.write, stages=STAGE_WORK.stages, with_lineage=True
)
STAGE_SUBJECTS: dict[str, Drain] = {
    "Cascade": lambda url, events: cascade_drain(url, handlers.CASCADE, events),
    "hand loop": lambda url, _: hand_loop.timed_drain(url, STAGE_WORK),
    "hand loop + lineage round trip": lambda url, _: hand_loop.timed_drain(
        url, STAGE_WORK_WITH_LINEAGE
    ),
}


async def cascade_run(server: str, subject: str) -> Timing:
    """One five-stage cascade of CASCADE_ROOTS roots."""
    events = CASCADE_ROOTS * handlers.STAGES
    with fresh_database(server, "cascade") as url:
        await execute(url, LOAD_ROOTS, CASCADE_ROOTS)
        settle(url)
        timing = await STAGE_SUBJECTS[subject](url, events)
        check(f"{subject} processed", events, await fetchval(url, COUNT_PROCESSED))
        finished = await fetchval(url, COUNT_FINISHED_ITEMS, handlers.STAGES)
        check(f"{subject} items at the last stage", CASCADE_ROOTS, finished)
        return timing


async def cascade_throughput(server: str, repeats: int) -> Section:
    events = CASCADE_ROOTS * handlers.STAGES
    timings: dict[str, list[Timing]] = {s: [] for s in STAGE_SUBJECTS}
    for _ in range(repeats):
        for subject in STAGE_SUBJECTS:
            timings[subject].append(await cascade_run(server, subject))
    section = Section(
        "2. Five-stage cascade",
        f"{CASCADE_ROOTS:,} items inserted (each emits bench_stage_1); the handler of stage k "
        "sets its item's stage to k (bench.handlers.ADVANCE), whose trigger emits stage k+1: "
        f"{events:,} stage events per run; {repeats} interleaved runs, median reported. The "
        "hand loop claims 100 with SKIP LOCKED, runs the same UPDATE per event (item id from "
        "record_id), marks the batch done and commits; its '+ lineage' variant also sends "
        "Cascade's per-event set_config round trip, to isolate that cost.",
    )
    for subject in STAGE_SUBJECTS:
        section.measurements.append(
            rate_measurement(section, subject, "stage events/s", events, timings[subject])
        )
    cascade, hand = section.measurements[0].value, section.measurements[1].value
    section.verdicts.append(
        Verdict(
            section.title,
            "Cascade >= 70% of the hand loop",
            f"{100 * cascade / hand:.0f}%",
            cascade >= 0.7 * hand,
        )
    )
    return section


# -- scenario 6 -------------------------------------------------------------------------------


@dataclass
class HistoryRun:
    claim_before_ms: float
    plan_before: str
    timing: Timing
    claim_after_ms: float  # with the drained backlog's index entries not yet vacuumed
    plan_after: str


async def history_run(server: str, history: int) -> HistoryRun:
    with fresh_database(server, "history") as url:
        if history:
            await execute(url, LOAD_HISTORY, history)
        await execute(url, LOAD_NOOP_EVENTS, HISTORY_BACKLOG)
        settle(url)
        claim_before, plan_before = await probes.time_claims(url, CLAIM_SAMPLES)
        timing = await cascade_drain(url, handlers.NOOP, HISTORY_BACKLOG)
        check("processed", history + HISTORY_BACKLOG, await fetchval(url, COUNT_PROCESSED))
        await execute(url, LOAD_NOOP_EVENTS, 100)
        claim_after, plan_after = await probes.time_claims(url, CLAIM_SAMPLES // 4)
    return HistoryRun(claim_before, plan_before, timing, claim_after, plan_after)


async def history_growth(server: str, repeats: int) -> Section:
    runs: dict[int, list[HistoryRun]] = {0: [], HISTORY_EVENTS: []}
    for _ in range(repeats):
        for history, done in runs.items():
            done.append(await history_run(server, history))
    section = Section(
        "6. The hot path as history grows",
        f"An empty table against one holding {HISTORY_EVENTS:,} processed events (bulk-inserted "
        f"with generate_series, then VACUUM ANALYZE), each with a backlog of "
        f"{HISTORY_BACKLOG:,} no-op events. Claim: listener.CLAIM_LOCKED (batch 100) timed "
        "in rolled-back transactions, median: before the drain (freshly vacuumed) and right "
        f"after it, with 100 new events queued behind the {HISTORY_BACKLOG:,} index entries "
        "the drain left for VACUUM. Throughput: Cascade draining the backlog as in scenario 1. "
        f"{repeats} interleaved runs, median reported.",
    )
    for history, label in ((0, "empty table"), (HISTORY_EVENTS, "1M processed events")):
        done = runs[history]
        section.measurements += [
            Measurement(
                section.title, label, "claim of 100, vacuumed",
                [r.claim_before_ms for r in done], "ms", done[-1].plan_before,
            ),
            rate_measurement(
                section, label, "no-op throughput", HISTORY_BACKLOG, [r.timing for r in done]
            ),
            Measurement(
                section.title, label, "claim after the drain, before VACUUM",
                [r.claim_after_ms for r in done], "ms", done[-1].plan_after,
            ),
        ]  # fmt: skip
    empty, full = section.measurements[1].value, section.measurements[4].value
    section.verdicts.append(
        Verdict(
            section.title,
            "throughput with 1M history >= 90% of the empty table's (no target given)",
            f"{100 * full / empty:.0f}%",
            full >= 0.9 * empty,
        )
    )
    return section
