"""An open-loop, constant-rate HTTP/1.1 load process for bench/webhooks.py.

    python -m bench.webhook_openloop --port P --rate 400 --duration 20 --warmup 3 \\
        --template '{"path": ..., "headers": [[name, value], ...], "body": ...}' --nonce N

Request i is due at start + i / rate whatever happened to the earlier ones (wrk and other
closed-loop tools wait for a response before sending the next request, so a slow server
slows the load and its latency hides the queueing: coordinated omission). Each request is
sent on an idle keep-alive connection, or a new one if none is idle, at most
`--max-connections` at once; its latency is measured from when it was due, not from when it
went out, so any lag of this client counts against the server, never for it. The client's
own lag (when it got round to a request - when it was due), the wait for a free connection
and its CPU share are reported, to show it kept up.

Raw asyncio streams rather than httpx: a request costs this process a few tens of
microseconds, so at a few hundred requests/s it is far from being the bottleneck.
Prints one JSON object on stdout; the warm-up's requests are sent but not counted. Times are
asyncio's loop.time(), that is time.monotonic(), which other processes here read alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.webhook_scenarios import ID_TOKEN, LEAD_TOKEN, Template

HOST = "127.0.0.1"
DRAIN_TIMEOUT = 30.0  # seconds to wait for the last responses after the last request is due
START_DELAY = 0.2  # seconds between opening the first connections and the first due time

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class Sample:
    due: float  # when the schedule said to send it
    started: float  # when this client got round to it (its own lag: started - due)
    sent: float  # when it went out (sent - started: waiting for a free connection)
    done: float
    status: int  # 0: no response (connection error)


@dataclass
class Client:
    port: int
    max_connections: int
    idle: list[Connection] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    opened: int = 0
    retried: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_connections)

    async def connect(self) -> Connection:
        self.opened += 1
        return await asyncio.open_connection(HOST, self.port)

    async def send(self, payload: bytes, due: float) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with self.slots:
            conn = self.idle.pop() if self.idle else await self.connect()
            sent = loop.time()
            try:
                status = await _exchange(conn, payload)
            except (OSError, asyncio.IncompleteReadError):
                # Most likely a keep-alive connection the server closed while idle: once more
                # on a fresh one (a unique delivery so retried may be answered as a duplicate).
                _close(conn)
                self.retried += 1
                try:
                    conn = await self.connect()
                    status = await _exchange(conn, payload)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    name = type(exc).__name__
                    self.errors[name] = self.errors.get(name, 0) + 1
                    self.samples.append(Sample(due, started, sent, loop.time(), 0))
                    return
            self.idle.append(conn)
            self.samples.append(Sample(due, started, sent, loop.time(), status))


async def _exchange(conn: Connection, payload: bytes) -> int:
    """Sends one request and reads its whole response; returns the status code."""
    reader, writer = conn
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


def _close(conn: Connection) -> None:
    conn[1].close()


def request_bytes(template: Template, delivery_id: str, lead: int, port: int) -> bytes:
    headers, body = template.render(delivery_id, lead)
    lines = [f"POST {template.path} HTTP/1.1", f"host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run(args: argparse.Namespace, template: Template) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    client = Client(args.port, args.max_connections)
    client.idle = [await client.connect() for _ in range(args.initial_connections)]
    total = round(args.rate * (args.warmup + args.duration))
    measured_from = round(args.rate * args.warmup)
    pending: set[asyncio.Task[None]] = set()
    start = loop.time() + START_DELAY
    cpu_before = 0.0
    for i in range(total):
        due = start + i / args.rate
        if i == measured_from:
            cpu_before = time.process_time()
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        payload = request_bytes(template, f"{args.nonce}-o-{i}", i % args.leads + 1, args.port)
        task = asyncio.create_task(client.send(payload, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=DRAIN_TIMEOUT)
    cpu = time.process_time() - cpu_before
    for conn in client.idle:
        _close(conn)
    window_start = start + measured_from / args.rate
    measured = [s for s in client.samples if s.due >= window_start]
    report = summarise(args, measured, client, total - measured_from, cpu)
    # The server's CPU is read around this whole process, warm-up included.
    report["answered_with_warmup"] = sum(1 for s in client.samples if s.status)
    report["statuses_with_warmup"] = _statuses(client.samples)
    return report


def summarise(
    args: argparse.Namespace, samples: list[Sample], client: Client, due: int, cpu: float
) -> dict[str, Any]:
    answered = [s for s in samples if s.status]
    span = max((s.done for s in answered), default=0.0) - min((s.due for s in samples), default=0)
    return {
        "rate_asked": args.rate,
        "duration": args.duration,
        "due": due,
        "answered": len(answered),
        "unfinished": due - len(samples),
        "achieved_rate": len(answered) / span if span > 0 else 0.0,
        "statuses": _statuses(samples),
        "latency_ms": _percentiles([s.done - s.due for s in answered]),
        "service_ms": _percentiles([s.done - s.sent for s in answered]),
        "client_lag_ms": _percentiles([s.started - s.due for s in samples]),
        "connection_wait_ms": _percentiles([s.sent - s.started for s in samples]),
        "connections_opened": client.opened,
        "retried": client.retried,
        "errors": client.errors,
        "client_cpu_share": cpu / args.duration,
        # Each answered request's due and done times (time.monotonic()), for bench/disk.py.
        "requests": [(s.due, s.done) for s in answered],
    }


def _statuses(samples: list[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sample in samples:
        counts[str(sample.status)] = counts.get(str(sample.status), 0) + 1
    return counts


def _percentiles(seconds: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles, in milliseconds."""
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p99.9": at(0.999),
        "max": ordered[-1] * 1000,
        "mean": sum(ordered) / len(ordered) * 1000,
    }


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook_openloop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds sent, not counted")
    parser.add_argument("--template", required=True, help="JSON: path, headers, body")
    parser.add_argument("--nonce", required=True, help=f"prefix of the ids put for {ID_TOKEN}")
    parser.add_argument("--leads", type=int, default=1, help=f"{LEAD_TOKEN} cycles 1..leads")
    parser.add_argument("--initial-connections", type=int, default=8)
    parser.add_argument("--max-connections", type=int, default=256)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    spec = json.loads(args.template)
    headers = tuple((str(name), str(value)) for name, value in spec["headers"])
    template = Template(str(spec["path"]), headers, str(spec["body"]))
    print(json.dumps(asyncio.run(run(args, template))))


if __name__ == "__main__":
    main()
