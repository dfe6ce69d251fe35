"""The latency scenario's writer, run as a process of its own: commits one ping every
1/rate seconds on a fixed schedule (a late write does not shift the ones after it) and prints,
as JSON, each ping's id with the wall-clock time (time.time()) just before its INSERT was sent
and just after its commit was acknowledged.

    python -m bench.pinger URL [--rate 200] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import LiteralString

import asyncpg

# One ping per transaction (autocommit): its row trigger emits bench_ping.
INSERT_PING: LiteralString = "INSERT INTO bench.pings DEFAULT VALUES RETURNING id"
# Before the clock starts, so that the first ping does not pay for the connection's setup.
WARM_UP: LiteralString = "SELECT 1"


async def write(url: str, rate: float, seconds: float) -> list[tuple[int, float, float]]:
    """(ping id, sent, committed) for each ping, times from time.time()."""
    conn = await asyncpg.connect(url)
    written: list[tuple[int, float, float]] = []
    try:
        await conn.fetchval(WARM_UP)
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.time()
            ping_id = await conn.fetchval(INSERT_PING)
            written.append((ping_id, sent, time.time()))
    finally:
        await conn.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pinger", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=200.0, help="pings per second")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(write(args.url, args.rate, args.seconds))))


if __name__ == "__main__":
    main()
