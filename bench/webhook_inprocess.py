"""The web app's own CPU per webhook delivery, without sockets or HTTP parsing.

    python -m bench.webhook_inprocess real    [--mode unique|duplicate] [--requests N]
    python -m bench.webhook_inprocess ceiling [--requests N]

The app (`web.create_app`, on a fresh migrated database seeded as bench/webhooks.py seeds
its target; or the plain Starlette ceiling of bench/webhook_server.py) is called as an ASGI
application from this process, `--concurrency` requests at a time, on uvloop, with the
garbage collector tuned as `cascade web` tunes it. It reports requests/s and this process's
CPU time per request: the app's code (middleware, routing, parsing, the group commit's
Python side, asyncpg) without uvicorn, the socket and the load generator, which
bench/webhooks.sh measures end to end. PostgreSQL's own CPU is not counted. Useful to see
what a change to the request path costs, with less noise than the end-to-end bench; py-spy
on this process (`py-spy record -- python -m bench.webhook_inprocess real`) shows where.
DATABASE_URL names the server (else bench/server.py's embedded PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvloop
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message

from bench.server import server_url
from bench.webhook_scenarios import DUPLICATE_ID, TARGETS, Target
from bench.webhook_server import ceiling_app
from bench.webhooks import app_environ, prepare
from cascade.cli import tune_gc

WARMUP_REQUESTS = 2_000
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Outcome:
    requests: int
    seconds: float
    cpu_seconds: float
    statuses: dict[int, int]

    def line(self, subject: str) -> str:
        return (
            f"{subject}: {self.requests / self.seconds:,.0f} requests/s, "
            f"{self.cpu_seconds / self.requests * 1e6:.1f} µs of this process's CPU per "
            f"request; statuses {self.statuses}"
        )


def requests(
    target: Target, count: int, *, first: int, unique: bool
) -> list[tuple[Headers, bytes]]:
    made = []
    for n in range(count):
        delivery_id = f"inprocess-{first + n}" if unique else DUPLICATE_ID
        headers, body = target.template.render(delivery_id, n % target.leads + 1)
        encoded = [(k.encode(), v.encode()) for k, v in headers.items()]
        made.append(([*encoded, (b"content-length", str(len(body)).encode())], body))
    return made


async def call(app: ASGIApp, path: str, headers: Headers, body: bytes) -> int:
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent = False
    statuses: list[int] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def drive(
    app: ASGIApp, path: str, load: Sequence[tuple[Headers, bytes]], concurrency: int
) -> Outcome:
    pending: Iterator[tuple[Headers, bytes]] = iter(load)
    statuses: dict[int, int] = {}

    async def client() -> None:
        for headers, body in pending:
            status = await call(app, path, headers, body)
            statuses[status] = statuses.get(status, 0) + 1

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return Outcome(len(load), seconds, cpu, statuses)


async def measure(args: argparse.Namespace, url: str, target: Target) -> Outcome:
    app: Starlette
    if args.app == "real":
        from web import create_app

        app = create_app(url, app_environ(url, target))
    else:
        app = ceiling_app()
    tune_gc()
    unique = args.mode == "unique"
    warmup = requests(target, WARMUP_REQUESTS, first=10_000_000, unique=unique)
    load = requests(target, args.requests, first=0, unique=unique)
    async with app.router.lifespan_context(app):
        await drive(app, target.template.path, warmup, args.concurrency)
        return await drive(app, target.template.path, load, args.concurrency)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_inprocess")
    parser.add_argument("app", choices=["real", "ceiling"])
    parser.add_argument("--target", choices=sorted(TARGETS), default="instantly")
    parser.add_argument("--mode", choices=["unique", "duplicate"], default="unique")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    target = TARGETS[args.target]
    with server_url() as server, prepare(server, target) as url:
        outcome = uvloop.run(measure(args, url, target))
    print(outcome.line(f"{args.app} {args.target} {args.mode}"))


if __name__ == "__main__":
    main()
