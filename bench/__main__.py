"""`python -m bench [SCENARIO ...]`: runs the benchmarks (all, by default) on DATABASE_URL's
server or an embedded one, prints the report and writes bench/out/report.md and
bench/out/results.json. bench/run.sh sets up bench/.venv and calls this."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from bench import latency, throughput, writers
from bench.report import Section, render
from bench.server import BENCH_DIR, machine_facts, server_url
from cascade import logs

OUT_DIR = BENCH_DIR / "out"

Scenario = Callable[[str, int], Awaitable[Section]]
SCENARIOS: dict[str, Scenario] = {
    "noop": throughput.noop_throughput,
    "cascade": throughput.cascade_throughput,
    "latency": latency.latency,
    "writers": writers.writers_cost,
    "history": throughput.history_growth,
}
# Runs per measurement, interleaved across subjects; the report gives the median.
DEFAULT_REPEATS = {"noop": 5, "cascade": 3, "latency": 3, "writers": 3, "history": 2}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--repeats", type=int, help="runs per measurement (default: per scenario)")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


async def run_all(server: str, names: Sequence[str], repeats: int | None) -> list[Section]:
    sections = []
    for name in names:
        began = time.monotonic()
        section = await SCENARIOS[name](server, repeats or DEFAULT_REPEATS[name])
        print(f"bench: {name} took {time.monotonic() - began:.0f} s", file=sys.stderr)
        sections.append(section)
    return sections


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    names = args.scenarios or list(SCENARIOS)
    logs.configure("WARNING")
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    with server_url() as server:
        facts = machine_facts(server)
        sections = asyncio.run(run_all(server, names, args.repeats))
    report = render(facts, sections, command)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "report.md").write_text(report)
    raw = {"facts": facts, "sections": [dataclasses.asdict(s) for s in sections]}
    (OUT_DIR / "results.json").write_text(json.dumps(raw, indent=2))
    print(report)


if __name__ == "__main__":
    main()
