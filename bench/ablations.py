"""`python -m bench.ablations [--profile] [--writers]`: the experiments behind RESULTS.md's
engine findings. Not part of bench/run.sh (about nine minutes; --writers alone about three).

Each variant is the current Listener with one proposed change applied from outside (a subclass
or a patched dependency; listener.py itself is untouched):

* draining scenario 1's no-op backlog and scenario 2's five-stage cascade, reporting events/s
  over the processing window and this process's CPU time per event (the listener's Python,
  comparable across variants), the hand loop as the reference;
* the claim's cost with unvacuumed entries in the claimable index, bitmap against index scan;
* scenario 4's writers (shipped wake trigger) against the listener as is, with an
  index-ordered claim, and with a cooldown after short batches.

`--profile` also writes a pyinstrument profile of the current Listener's no-op drain to
bench/out/profile-noop.txt. Results go to bench/out/ablations.md.

The variants are sketches for measurement, written against the engine of commit 5517ca3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import LiteralString

import asyncpg

import listener
from bench import hand_loop, handlers, probes, throughput, writers
from bench.report import Timing, fmt
from bench.server import BENCH_DIR, fresh_database, server_url, settle
from cascade import handling, logs
from cascade.handling import Registry
from listener import Listener, ListenerSettings

OUT_DIR = BENCH_DIR / "out"

# The writers experiment's proposal: the same claim, in a function whose SET clause keeps the
# planner on an ordered scan of pipeline_events_claimable_idx. An index scan marks the entries
# of rows it finds dead (LP_DEAD) and skips them afterwards; a bitmap scan cannot, so it
# revisits every processed-but-unvacuumed entry on every claim.
CREATE_INDEX_CLAIM: LiteralString = """
    CREATE FUNCTION bench.claim_locked(p_exclude text[], p_limit integer)
    RETURNS TABLE (id bigint, event_type text, payload text, record_id bigint,
                   unique_id text, run_id bigint, correlation_id text, attempts integer)
    LANGUAGE sql SET enable_bitmapscan = off AS $$
        SELECT id, event_type, payload::text, record_id, unique_id, run_id, correlation_id,
               attempts
          FROM marketing.pipeline_events
         WHERE status IN ('pending', 'failed') AND run_after <= now()
           AND event_type <> ALL (p_exclude)
         ORDER BY id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    $$
"""
CLAIM_VIA_FUNCTION: LiteralString = "SELECT * FROM bench.claim_locked($1::text[], $2)"
COOLDOWN = 0.005  # seconds
COOLDOWN_FROM = 2  # events in a batch: fewer means a quiet stream, so no cooldown
DEAD_ENTRIES = 30_000
MARK_ALL_PROCESSED: LiteralString = """
    UPDATE marketing.pipeline_events SET status = 'processed' WHERE status = 'pending'
"""


class CooldownListener(Listener):
    """After a batch of several events but less than a full batch, wait COOLDOWN before
    claiming again (with the lane disarmed, so writers do not notify meanwhile): under steady
    load each claim then carries many events instead of a few. A lone event (a quiet stream)
    does not trigger it, so latency at low rates is untouched, and a backlog still drains at
    full speed because full batches claim again at once."""

    async def _claim_and_run_locked(self) -> int:
        claimed = await super()._claim_and_run_locked()
        if COOLDOWN_FROM <= claimed < self.settings.batch_size:
            assert self._gate is not None
            await self._gate.disarm("locked")
            await asyncio.sleep(COOLDOWN)
        return claimed


@contextlib.contextmanager
def no_lineage() -> Iterator[None]:
    """Handlers' transactions without the per-event set_config round trip (events lose their
    parent and run: this measures what lineage costs, it is not a proposal to drop it)."""
    original = handling.Tx._context

    async def skip(self: handling.Tx) -> None:
        return None

    handling.Tx._context = skip  # type: ignore[method-assign]
    try:
        yield
    finally:
        handling.Tx._context = original  # type: ignore[method-assign]


@dataclass(frozen=True)
class Variant:
    name: str
    listener: type[Listener] = Listener
    patches: tuple[Callable[[], contextlib.AbstractContextManager[None]], ...] = ()
    hand: bool = False


# The pool-reset and savepoint variants that RESULTS.md reports were measured on 15c6077; commit
# 5517ca3 made both part of the engine (no reset per batch, a lazy batch savepoint).
VARIANTS = (
    Variant("hand loop (reference)", hand=True),
    Variant("Cascade as is"),
    Variant("no lineage round trip", patches=(no_lineage,)),
)


@dataclass
class Results:
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # this process's CPU per event


@contextlib.asynccontextmanager
async def loaded(server: str, cascade: bool) -> AsyncIterator[tuple[str, int]]:
    with fresh_database(server, "ablation") as url:
        if cascade:
            await throughput.execute(url, throughput.LOAD_ROOTS, throughput.CASCADE_ROOTS)
            events = throughput.CASCADE_ROOTS * handlers.STAGES
        else:
            await throughput.execute(url, throughput.LOAD_NOOP_EVENTS, throughput.NOOP_EVENTS)
            events = throughput.NOOP_EVENTS
        settle(url)
        yield url, events


async def drain(url: str, variant: Variant, registry: Registry, events: int) -> Timing:
    if variant.hand:
        work = throughput.STAGE_WORK if registry is handlers.CASCADE else hand_loop.Work()
        return await hand_loop.timed_drain(url, work)
    with contextlib.ExitStack() as stack:
        for patch in variant.patches:
            stack.enter_context(patch())
        return await throughput.cascade_drain(url, registry, events, variant.listener)


async def ablate(server: str, cascade: bool, repeats: int) -> dict[str, Results]:
    registry = handlers.CASCADE if cascade else handlers.NOOP
    results = {v.name: Results() for v in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            async with loaded(server, cascade) as (url, events):
                cpu = time.process_time()
                timing = await drain(url, variant, registry, events)
                cpu = time.process_time() - cpu
            results[variant.name].rates.append(events / timing.window)
            results[variant.name].cpu_us.append(cpu / events * 1e6)
    return results


async def profile_noop(server: str) -> None:
    # Only this option needs it; bench/run.sh installs it into bench/.venv.
    from pyinstrument import Profiler  # type: ignore[import-not-found, unused-ignore]

    async with loaded(server, cascade=False) as (url, _):
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        await Listener(ListenerSettings(database_url=url), handlers.NOOP).run(until_idle=True)
        profiler.stop()
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "profile-noop.txt").write_text(profiler.output_text(unicode=True, color=False))


@contextlib.contextmanager
def claim_via_function() -> Iterator[None]:
    original = listener.CLAIM_LOCKED
    listener.CLAIM_LOCKED = CLAIM_VIA_FUNCTION
    try:
        yield
    finally:
        listener.CLAIM_LOCKED = original


async def claim_cost(server: str) -> str:
    """One claim with DEAD_ENTRIES processed-but-unvacuumed entries in the claimable index,
    statistics from an empty table (as after a quiet night): the planner's default scan
    against the ordered index scan."""
    with fresh_database(server, "claimcost") as url:
        settle(url)
        await throughput.execute(url, throughput.LOAD_NOOP_EVENTS, DEAD_ENTRIES)
        await throughput.execute(url, MARK_ALL_PROCESSED)
        await throughput.execute(url, throughput.LOAD_NOOP_EVENTS, 10)
        default_ms, default_plan = await probes.time_claims(url, 20)
        await throughput.execute(url, CREATE_INDEX_CLAIM)
        conn = await asyncpg.connect(url)
        try:
            times = []
            for _ in range(20):
                tx = conn.transaction()
                await tx.start()
                start = time.perf_counter()
                await conn.fetch(CLAIM_VIA_FUNCTION, [], 100)
                times.append((time.perf_counter() - start) * 1000)
                await tx.rollback()
        finally:
            await conn.close()
    return (
        f"Claim of 100 with {DEAD_ENTRIES:,} unvacuumed entries, empty-table statistics: "
        f"CLAIM_LOCKED {default_ms:.2f} ms ({default_plan}); via bench.claim_locked (index "
        f"scan) median {statistics.median(times):.2f} ms, first {times[0]:.2f} ms."
    )


@dataclass
class WriterRun:
    inserts_per_s: float
    listener_cpu: float  # cores: this process, which runs only the listener meanwhile
    backends_cpu: float  # cores: the listener's server processes
    claim_ms: float


async def writers_run(server: str, variant: str) -> WriterRun:
    indexed_claim = variant == "index"
    kind = CooldownListener if variant == "cooldown" else Listener
    with fresh_database(server, "writers") as url:
        if indexed_claim:
            await throughput.execute(url, CREATE_INDEX_CLAIM)
        settle(url)
        with contextlib.ExitStack() as stack:
            if indexed_claim:
                stack.enter_context(claim_via_function())
            consumer = kind(ListenerSettings(database_url=url), handlers.LEADS)
            running = asyncio.create_task(consumer.run())
            try:
                await probes.wait_until_asleep(url)
                cpu = time.process_time()
                backends = await writers.backend_cpu_times(url)
                rate = await writers.run_pgbench(writers.INSERT_LEAD, url)
                cpu = (time.process_time() - cpu) / writers.SECONDS
                after = await writers.backend_cpu_times(url)
                used = sum(t - backends.get(pid, 0.0) for pid, t in after.items())
                await probes.wait_until_drained(url)
            finally:
                consumer.stop()
                await running
        claim_ms, _ = await probes.time_claims(url, 20)
    return WriterRun(rate, cpu, used / writers.SECONDS, claim_ms)


async def writers_experiment(server: str, repeats: int) -> str:
    names = {
        "as is": "CLAIM_LOCKED as is",
        "index": "bench.claim_locked (index scan)",
        "cooldown": f"cooldown {COOLDOWN * 1000:g} ms after a short batch of >= 2",
    }
    runs: dict[str, list[WriterRun]] = {v: [] for v in names}
    for _ in range(repeats):
        for variant, done in runs.items():
            done.append(await writers_run(server, variant))
    lines = [
        "### Writers (scenario 4, shipped wake trigger) with the listener in this process",
        "",
        "| listener | inserts/s (median) | runs | listener CPU | its server processes "
        "| claim after |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for variant, done in runs.items():
        name = names[variant]
        lines.append(
            f"| {name} | {fmt(statistics.median(r.inserts_per_s for r in done))} | "
            f"{', '.join(fmt(r.inserts_per_s) for r in done)} | "
            f"{statistics.median(r.listener_cpu for r in done):.2f} cores | "
            f"{statistics.median(r.backends_cpu for r in done):.2f} cores | "
            f"{statistics.median(r.claim_ms for r in done):.2f} ms |"
        )
    return "\n".join(lines)


def table(title: str, results: dict[str, Results]) -> str:
    lines = [f"### {title}", "", "| variant | events/s (median) | runs | CPU µs/event |"]
    lines.append("| --- | --- | --- | --- |")
    for name, r in results.items():
        runs = ", ".join(fmt(x) for x in r.rates)
        lines.append(
            f"| {name} | {fmt(statistics.median(r.rates))} | {runs} | "
            f"{statistics.median(r.cpu_us):.1f} |"
        )
    return "\n".join(lines)


async def run(server: str, repeats: int, profile: bool, only_writers: bool) -> str:
    claims = await claim_cost(server)
    writer_runs = await writers_experiment(server, max(2, repeats - 2))
    if only_writers:
        return "\n\n".join([claims, writer_runs])
    noop = await ablate(server, cascade=False, repeats=repeats)
    stages = await ablate(server, cascade=True, repeats=max(1, repeats - 2))
    if profile:
        await profile_noop(server)
    return "\n\n".join(
        [
            table("No-op, 50,000 events", noop),
            table("Five-stage cascade, 50,000 events", stages),
            claims,
            writer_runs,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ablations", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--writers", action="store_true", help="only the claim experiments")
    args = parser.parse_args()
    logs.configure("WARNING")
    with server_url() as server:
        report = asyncio.run(run(server, args.repeats, args.profile, args.writers))
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "ablations.md").write_text(report + "\n")
    print(report)
    print(f"command: python -m bench.ablations {' '.join(sys.argv[1:])}", file=sys.stderr)


if __name__ == "__main__":
    main()
